"""IPv6 addresses from the gateway's real neighbour table (the kernel's rtnetlink
announcements after real neighbour discovery in the virtual home), and the intake's
rules for them: only known devices, never an address another device holds.

(Named ``test_dhcp_*`` to sit in this engineer's file set.)"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mudguard.devices import MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.neighbour import NeighbourWatcher
from mudguard.discovery.sighting import Intake, Sighting
from mudguard.store import Store
from mudguard.vhome import VirtualHome, run
from mudguard.vhome._home import GW6
from mudguard.vhome._netns import enter

pytestmark = pytest.mark.root


def in_ns(ns: str, fn: Any) -> Any:
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            enter(ns)
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(timeout=30)
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[VirtualHome, NeighbourWatcher, Intake]]:
    with VirtualHome(prefix=f"mgl{os.getpid() % 10000}", devices=2) as vhome, \
            Store(tmp_path / "m.db") as store:
        watcher = in_ns(vhome.gw_ns, lambda: NeighbourWatcher(vhome.lan_if))
        try:
            yield vhome, watcher, Intake(DeviceService(store=store))
        finally:
            watcher.close()


def collect(watcher: NeighbourWatcher, want: str, seconds: float = 5.0) -> list[Sighting]:
    """Sightings until one for address ``want`` arrives (bounded)."""
    got: list[Sighting] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        got += watcher.receive(timeout=left)
        if any(s.ip == want for s in got):
            break
    return got


def test_slaac_address_of_a_known_device_is_learned(
        home: tuple[VirtualHome, NeighbourWatcher, Intake]) -> None:
    vhome, watcher, intake = home
    d0 = vhome.nodes[0]
    intake.on_sighting(Sighting(mac=d0.mac, ip="192.0.2.10", source=MudSource.DHCP4))
    assert vhome.ping(d0.ns, GW6)  # real neighbour discovery with the gateway
    sightings = collect(watcher, d0.ipv6)
    mine = [s for s in sightings if s.ip == d0.ipv6]
    assert mine and mine[0].mac == d0.mac and mine[0].source is MudSource.NEIGHBOUR
    device = intake.on_sighting(mine[0])
    assert device is not None and device.ipv6 == (d0.ipv6,) and device.ipv4 == ("192.0.2.10",)


def test_unknown_devices_and_claimed_addresses_are_refused(
        home: tuple[VirtualHome, NeighbourWatcher, Intake]) -> None:
    vhome, watcher, intake = home
    d0, d1 = vhome.nodes
    store = intake.service.store
    # d1 is unknown to the store: its entry creates nothing.
    assert vhome.ping(d1.ns, GW6)
    for s in collect(watcher, d1.ipv6):
        intake.on_sighting(s)
    assert store.get_device(d1.mac) is None
    # d0 holds its address; d1 then claims the same address: d0 keeps it.
    intake.on_sighting(Sighting(mac=d0.mac, ip=d0.ipv6, source=MudSource.DHCP6))
    intake.on_sighting(Sighting(mac=d1.mac, ip="192.0.2.11", source=MudSource.DHCP4))
    run(["ip", "-6", "addr", "flush", "dev", d0.iface, "scope", "global"], ns=d0.ns)
    run(["ip", "-6", "addr", "add", f"{d0.ipv6}/64", "dev", d1.iface, "nodad"], ns=d1.ns)
    run(["ip", "-n", vhome.gw_ns, "-6", "neigh", "flush", "dev", vhome.lan_if], check=False)
    run(["ping", "-6", "-c", "1", "-W", "1", "-I", d0.ipv6, GW6], ns=d1.ns, check=False)
    claims = [s for s in collect(watcher, d0.ipv6) if s.ip == d0.ipv6]
    assert claims and claims[-1].mac == d1.mac  # the kernel saw d1 claim it
    for s in claims:
        intake.on_sighting(s)
    assert store.get_device(d0.mac).ipv6 == (d0.ipv6,)
    assert d0.ipv6 not in store.get_device(d1.mac).ipv6
