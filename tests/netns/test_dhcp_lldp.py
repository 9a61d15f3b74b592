"""Real LLDP frames over a veth between two namespaces: a device sends its MUD URL
in TLV 127 (OUI 00-00-5E, subtype 1); the gateway's AF_PACKET listener reads it.
Malformed frames on the same wire are dropped and the listener carries on.

(Named ``test_dhcp_*`` only to sit in this engineer's file set; it is LLDP.)"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mudguard.devices import MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.lldp import LldpInfo, LldpListener, build_lldp_frame
from mudguard.discovery.sighting import Intake
from mudguard.store import Store
from mudguard.vhome import _netns, run

pytestmark = pytest.mark.root

MAC = "02:00:5e:00:53:21"
URL = "https://mud.example.com/lldp-camera.json"


@contextmanager
def veth_wire(tag: str, mac: str) -> Iterator[tuple[str, str]]:
    """Two namespaces ``<tag>-lg`` and ``<tag>-ld`` joined by a veth; the device end has
    ``mac``. Yields (gateway ns, device ns); removes both even when a test fails."""
    gw, dev = f"{tag}-lg", f"{tag}-ld"
    for ns in (gw, dev):
        _netns.delete(ns)
        _netns.add(ns)
    try:
        run(["ip", "-n", gw, "link", "add", f"{tag}g", "type", "veth", "peer", "name",
             f"{tag}d", "netns", dev])
        run(["ip", "-n", dev, "link", "set", f"{tag}d", "address", mac])
        run(["ip", "-n", gw, "link", "set", f"{tag}g", "up"])
        run(["ip", "-n", dev, "link", "set", f"{tag}d", "up"])
        yield gw, dev
    finally:
        for ns in (gw, dev):
            _netns.delete(ns)


@pytest.fixture
def wire() -> Iterator[tuple[str, str]]:
    with veth_wire(f"mgl{os.getpid() % 10000}", MAC) as ends:
        yield ends


def listen(interface: str, count: int, seconds: float, ready: Path) -> list[LldpInfo | None]:
    """Inside the gateway namespace: up to ``count`` frames within ``seconds``."""
    results: list[LldpInfo | None] = []
    deadline = time.monotonic() + seconds
    with LldpListener(interface) as listener:
        ready.touch()
        while len(results) < count and (left := deadline - time.monotonic()) > 0:
            info = listener.receive(timeout=left)
            results.append(info)
            if info is not None and info.mud_url is not None:
                break
    return results


def send(interface: str, frames: list[bytes]) -> int:
    """Inside the device namespace: send raw Ethernet frames."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        return sum(sock.send(frame) for frame in frames)


def exchange(gw: str, dev: str, frames: list[bytes], ready: Path) -> list[LldpInfo | None]:
    tag = gw.split("-")[0]
    out: list[list[LldpInfo | None]] = []
    thread = threading.Thread(target=lambda: out.append(
        _netns.call_in(gw, listen, f"{tag}g", 8, 5.0, ready, timeout=15)))
    thread.start()
    try:
        for _ in range(100):  # wait (bounded) for the listener's socket
            if ready.exists():
                break
            time.sleep(0.02)
        _netns.call_in(dev, send, f"{tag}d", frames, timeout=10)
    finally:
        thread.join(timeout=20)
    assert out, "listener returned nothing"
    return out[0]


def test_lldp_mud_url_over_a_real_wire(wire: tuple[str, str], tmp_path: Path) -> None:
    gw, dev = wire
    good = build_lldp_frame(MAC, mud_url=URL, system_name="camera")
    truncated = good[:30]
    http = build_lldp_frame(MAC, mud_url="http://mud.example.com/x")
    results = exchange(gw, dev, [truncated, http, good], tmp_path / "ready")
    infos = [r for r in results if r is not None]
    assert results[:2] == [None, None]  # the bad frames were dropped, not fatal
    assert [(i.mac, i.mud_url, i.system_name) for i in infos] == [(MAC, URL, "camera")]
    with Store(tmp_path / "m.db") as store:
        intake = Intake(DeviceService(store=store))
        device = intake.on_sighting(infos[0].sighting())
        assert device is not None and device.mud_url == URL
        assert device.mud_source is MudSource.LLDP and device.hostname == "camera"
        assert intake.on_sighting(infos[0].sighting()) is None  # periodic repeat: ignored


def test_listener_without_interface_is_off_not_a_crash() -> None:
    assert LldpListener.open("mgl-no-such-if") is None


def listen_then_drain(interface: str, ready: Path, sent: Path) -> list[str | None]:
    """Inside the gateway namespace: wait until frames were sent, then drain them."""
    with LldpListener(interface) as listener:
        ready.touch()
        for _ in range(250):  # bounded wait for the sender (5 s)
            if sent.exists():
                break
            time.sleep(0.02)
        got: list[str | None] = []
        listener.drain(lambda info: got.append(info.mud_url))
        return got


def test_drain_reads_queued_frames_without_waiting(wire: tuple[str, str], tmp_path: Path
                                                  ) -> None:
    gw, dev = wire
    tag = gw.split("-")[0]
    ready, sent = tmp_path / "ready", tmp_path / "sent"
    out: list[list[str | None]] = []
    thread = threading.Thread(target=lambda: out.append(_netns.call_in(
        gw, listen_then_drain, f"{tag}g", ready, sent, timeout=15)))
    thread.start()
    try:
        for _ in range(100):
            if ready.exists():
                break
            time.sleep(0.02)
        frames = [build_lldp_frame(MAC, mud_url=URL), build_lldp_frame(MAC, mud_url=URL)[:25],
                  build_lldp_frame(MAC, mud_url=None)]
        _netns.call_in(dev, send, f"{tag}d", frames, timeout=10)
        time.sleep(0.1)  # let the kernel queue them
        sent.touch()
    finally:
        thread.join(timeout=20)
    assert out == [[URL, None]]  # the truncated frame was dropped
