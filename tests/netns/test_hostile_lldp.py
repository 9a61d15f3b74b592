"""A device on the LAN forges another device's MAC in an LLDP frame with a MUD URL.

A real frame over a veth between two namespaces: the attacker's interface has its own
MAC, the frame's Ethernet source is the victim's (a printer that has been on the home
default for an hour, no MUD URL). The gateway's real AF_PACKET listener reads it and the
real intake and device service handle it. The victim must not take the attacker's MUD
URL (it could grant local-networks access); it waits for the owner as a URL change.
Within the first minutes of a device (WiFi association, then its own DHCP option 161)
the first URL is still taken, as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mudguard.devices import EventKind, MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.lldp import build_lldp_frame
from mudguard.discovery.sighting import Intake
from mudguard.policy import LifecycleState
from mudguard.store import Store
from tests.netns.test_dhcp_lldp import exchange, veth_wire

pytestmark = pytest.mark.root

ATTACKER = "02:00:5e:00:53:66"
PRINTER = "02:00:5e:00:53:10"
EVIL = "https://mud.example.com/local-networks-everything.json"


@pytest.fixture
def wire() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    with veth_wire(f"mgr{os.getpid() % 10000}", ATTACKER) as ends:
        yield ends


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _forged_sighting(wire: tuple[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    gw, dev = wire
    frame = build_lldp_frame(PRINTER, mud_url=EVIL, system_name="printer")
    infos = [i for i in exchange(gw, dev, [frame], tmp_path / "ready") if i is not None]
    assert [(i.mac, i.mud_url) for i in infos] == [(PRINTER, EVIL)]  # it did arrive
    return infos[0].sighting()


def test_forged_lldp_does_not_give_a_settled_device_a_mud_url(wire: tuple[str, str],
                                                              tmp_path: Path) -> None:
    sighting = _forged_sighting(wire, tmp_path)
    clock = Clock()
    with Store(tmp_path / "m.db") as store:
        service = DeviceService(store=store, clock=clock)
        intake = Intake(service)
        printer = service.observe(mac=PRINTER, ip="192.0.2.20", hostname="printer")
        assert printer.state is LifecycleState.DEFAULT and printer.mud_url is None
        clock.now += timedelta(hours=1)
        intake.on_sighting(sighting)
        printer = service.device(PRINTER)
        assert printer.mud_url is None and printer.state is LifecycleState.DEFAULT
        assert printer.pending_mud_url == EVIL and printer.pending_source is MudSource.LLDP
        kinds = [e.kind for e in store.list_events(PRINTER)]
        assert EventKind.URL_CHANGED in kinds


def test_a_new_devices_own_first_url_is_still_taken(wire: tuple[str, str],
                                                    tmp_path: Path) -> None:
    sighting = _forged_sighting(wire, tmp_path)
    clock = Clock()
    with Store(tmp_path / "m.db") as store:
        service = DeviceService(store=store, clock=clock)
        service.observe(mac=PRINTER)  # e.g. its WiFi association, a moment before
        clock.now += timedelta(seconds=5)
        Intake(service).on_sighting(sighting)
        printer = service.device(PRINTER)
        assert printer.mud_url == EVIL and printer.pending_mud_url is None


@pytest.mark.parametrize("bad", ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:fb",
                                 "33:33:00:00:00:01"])
def test_frames_from_no_device_mac_never_become_devices(wire: tuple[str, str],
                                                        tmp_path: Path, bad: str) -> None:
    """Real LLDP frames whose Ethernet source is all-zero, broadcast or multicast, sent
    over a veth to the gateway's real listener: nothing reaches the store (#13 class 8),
    while a unicast sender in the same exchange does."""
    gw, dev = wire
    frames = [build_lldp_frame(bad, mud_url=EVIL, system_name="ghost"),
              build_lldp_frame(PRINTER, mud_url=EVIL, system_name="printer")]
    infos = [i for i in exchange(gw, dev, frames, tmp_path / "ready") if i is not None]
    with Store(tmp_path / "m.db") as store:
        intake = Intake(DeviceService(store=store, clock=Clock()))
        for info in infos:
            intake.on_sighting(info.sighting())
        assert [d.mac for d in store.list_devices()] == [PRINTER]
