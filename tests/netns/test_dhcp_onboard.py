"""A real DHCP exchange in the virtual home: busybox udhcpc in a device namespace
sends option 161, dnsmasq (the real binary) on the gateway's LAN bridge leases an
address and runs ``mudguard-dhcp-hook``, which passes the sighting as JSON over a
unix socket to ``DhcpHookListener``; the intake stores the device."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mudguard.child import stop_child
from mudguard.devices import EventKind, MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.dhcp import SOCKET_ENV, DhcpHookListener
from mudguard.discovery.sighting import Intake
from mudguard.store import Store
from mudguard.vhome import VirtualHome, run

pytestmark = pytest.mark.root

URL = "https://mud.example.com/plug.json"
HOOK = Path(sys.executable).with_name("mudguard-dhcp-hook")


@dataclass
class DhcpHome:
    home: VirtualHome
    listener: DhcpHookListener
    intake: Intake
    dnsmasq: subprocess.Popen[bytes]
    log: Path


def _need(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed (scripts/setup.sh installs it)")


@contextmanager
def dnsmasq_home(prefix: str, tmp_path: Path) -> Iterator[DhcpHome]:
    """A two-device virtual home whose devices get their address from a real dnsmasq
    running the real ``mudguard-dhcp-hook``; skips when a binary is missing."""
    _need("dnsmasq")
    _need("busybox")
    if not HOOK.is_file():
        pytest.skip(f"{HOOK} missing: run pip install -e . to create the entry point")
    with VirtualHome(prefix=prefix, devices=2) as home, \
            Store(tmp_path / "m.db") as store, \
            DhcpHookListener(tmp_path / "dhcp.sock") as listener:
        for node in home.nodes:  # the devices get their address by DHCP here
            home.run(node.ns, ["ip", "-4", "addr", "flush", "dev", node.iface])
        log = tmp_path / "dnsmasq.log"
        argv = ["ip", "netns", "exec", home.gw_ns, shutil.which("dnsmasq") or "dnsmasq",
                "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                f"--interface={home.lan_if}", "--bind-interfaces",
                "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
                f"--dhcp-script={HOOK}", f"--dhcp-leasefile={tmp_path / 'leases'}",
                f"--pid-file={tmp_path / 'dnsmasq.pid'}", f"--log-facility={log}",
                "--log-dhcp", "--no-ping", "--user=root", "--group=root"]
        env = {**os.environ, SOCKET_ENV: str(listener.path)}
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            yield DhcpHome(home, listener, Intake(DeviceService(store=store)), proc, log)
        finally:
            stop_child(proc)


@pytest.fixture
def dhcp_home(tmp_path: Path) -> Iterator[DhcpHome]:
    with dnsmasq_home(f"mgl{os.getpid() % 10000}", tmp_path) as home:
        yield home


def udhcpc(home: VirtualHome, index: int, *options: str) -> str:
    node = home.nodes[index]
    argv = ["busybox", "udhcpc", "-i", node.iface, "-f", "-q", "-n", "-t", "5", "-T", "1",
            "-s", "/bin/true", *options]
    return run(argv, ns=node.ns, timeout=20).stderr


def receive(dh: DhcpHome, timeout: float = 10.0) -> list[object]:
    got: list[object] = []
    dh.listener.serve(lambda s: got.append(dh.intake.on_sighting(s)), max_messages=1,
                      timeout=timeout)
    return got


def test_lease_with_option_161_stores_the_device(dhcp_home: DhcpHome) -> None:
    start = time.monotonic()
    out = udhcpc(dhcp_home.home, 0, "-x", f'0xa1:"{URL}"', "-x", "hostname:plug")
    assert "lease of 192.0.2." in out
    sighting = dhcp_home.listener.receive(timeout=10)
    elapsed = time.monotonic() - start
    assert sighting is not None, dhcp_home.log.read_text()[-2000:]
    assert (sighting.mac, sighting.mud_url, sighting.source, sighting.hostname) == (
        dhcp_home.home.nodes[0].mac, URL, MudSource.DHCP4, "plug")
    assert sighting.ip is not None and sighting.ip.startswith("192.0.2.1")
    device = dhcp_home.intake.on_sighting(sighting)
    assert device is not None
    stored = dhcp_home.intake.service.store.get_device(sighting.mac)
    assert stored is not None and stored.mud_url == URL and stored.mud_source is MudSource.DHCP4
    assert stored.ipv4 == (sighting.ip,)
    kinds = [e.kind for e in dhcp_home.intake.service.store.list_events(sighting.mac)]
    assert kinds[0] is EventKind.JOINED
    assert elapsed < 10


def test_hostile_option_161_changes_nothing(dhcp_home: DhcpHome, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    udhcpc(dhcp_home.home, 1, "-x", f'0xa1:"http://evil.example.com/x;touch {marker}"',
           "-x", f'hostname:"$(touch {marker})"')
    got = receive(dhcp_home)
    assert got == [None]  # the sighting arrived and was refused
    assert dhcp_home.intake.service.store.list_devices() == []
    assert not marker.exists()


def test_lease_without_mud_url_gets_the_home_default(dhcp_home: DhcpHome) -> None:
    udhcpc(dhcp_home.home, 1)
    got = receive(dhcp_home)
    assert len(got) == 1
    store = dhcp_home.intake.service.store
    (device,) = store.list_devices()
    assert device.mac == dhcp_home.home.nodes[1].mac and device.mud_url is None
    assert device.state.value == "default"
    assert EventKind.NO_MUD in [e.kind for e in store.list_events(device.mac)]
