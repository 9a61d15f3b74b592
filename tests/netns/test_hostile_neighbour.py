"""A known device claims an IPv6 address of another prefix through neighbour discovery.

Real namespaces (``VirtualHome``): the device adds an off-link address (as if it were an
Internet server's) and pings the gateway from it; its neighbour solicitation makes the
gateway's kernel create a neighbour entry for that address with the device's MAC. The
real ``NeighbourWatcher`` must not report it (taken as the device's address, every other
device's traffic to that server would go through this device's rules); the device's
own on-link address still is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudguard.devices import MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.neighbour import NeighbourWatcher
from mudguard.discovery.sighting import Intake, Sighting
from mudguard.store import Store
from mudguard.vhome import VirtualHome, run
from mudguard.vhome._home import GW6
from tests.netns.test_dhcp_neighbour import in_ns

pytestmark = pytest.mark.root

ELSEWHERE = "2001:db8:ffff::66"  # not the home's prefix: "an Internet server"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[VirtualHome, NeighbourWatcher, Intake]]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    with VirtualHome(prefix=f"mgr{os.getpid() % 10000}", devices=1) as vhome, \
            Store(tmp_path / "m.db") as store:
        watcher = in_ns(vhome.gw_ns, lambda: NeighbourWatcher(vhome.lan_if))
        try:
            yield vhome, watcher, Intake(DeviceService(store=store))
        finally:
            watcher.close()


def gather(watcher: NeighbourWatcher, seconds: float) -> list[Sighting]:
    got: list[Sighting] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        got += watcher.receive(timeout=left)
    return got


def test_off_link_claim_is_not_an_address_of_the_device(
        home: tuple[VirtualHome, NeighbourWatcher, Intake]) -> None:
    vhome, watcher, intake = home
    d0 = vhome.nodes[0]
    intake.on_sighting(Sighting(mac=d0.mac, ip="192.0.2.10", source=MudSource.DHCP4))
    run(["ip", "-6", "addr", "add", f"{ELSEWHERE}/128", "dev", d0.iface, "nodad"], ns=d0.ns)
    run(["ping", "-6", "-c", "1", "-W", "1", "-I", ELSEWHERE, GW6], ns=d0.ns, check=False)
    entries = run(["ip", "-6", "neigh", "show", "dev", vhome.lan_if], ns=vhome.gw_ns)
    assert ELSEWHERE in entries.stdout  # the kernel did take the claim
    assert vhome.ping(d0.ns, GW6)  # and its own address, as a control
    sightings = gather(watcher, 2.0)
    assert ELSEWHERE not in [s.ip for s in sightings]
    assert d0.ipv6 in [s.ip for s in sightings]
    for sighting in sightings:
        intake.on_sighting(sighting)
    device = intake.service.device(d0.mac)
    assert device.ipv6 == (d0.ipv6,)
