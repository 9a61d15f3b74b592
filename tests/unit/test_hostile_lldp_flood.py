"""One LAN device sending LLDP frames or DHCP requests from invented MACs must not fill
the store (and the ruleset) with invented devices: real frames (built and parsed as on
the wire) and sightings go through the real intake and device service; new devices from
LLDP and from DHCP are budgeted and capped, known ones always pass."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mudguard.devices import MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.lldp import build_lldp_frame, parse_lldp_frame
from mudguard.discovery.sighting import (
    NEW_DHCP_DEVICES,
    NEW_LLDP_DEVICES,
    NEW_LLDP_WINDOW,
    Intake,
    Sighting,
)
from mudguard.store import Store

URL = "https://mud.example.com/lldp.json"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def frame_sighting(index: int, url: str | None = URL):  # type: ignore[no-untyped-def]
    mac = f"02:00:5e:{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"
    return parse_lldp_frame(build_lldp_frame(mac, mud_url=url)).sighting()


def test_invented_macs_from_lldp_are_budgeted(tmp_path: Path) -> None:
    clock = Clock()
    with Store(tmp_path / "m.db") as store:
        service = DeviceService(store=store, clock=clock)
        known = service.observe(mac="02:00:5e:ff:ff:01", ip="192.0.2.30")
        intake = Intake(service)
        for index in range(500):
            intake.on_sighting(frame_sighting(index))
        assert len(store.list_devices()) == NEW_LLDP_DEVICES + 1
        # a device already known still announces its MUD URL over LLDP
        assert intake.on_sighting(
            parse_lldp_frame(build_lldp_frame(known.mac, mud_url=URL)).sighting()) is not None
        assert service.device(known.mac).mud_url == URL
        clock.now += NEW_LLDP_WINDOW  # the budget refills with time
        for index in range(1000, 1010):
            intake.on_sighting(frame_sighting(index))
        assert len(store.list_devices()) == NEW_LLDP_DEVICES + 11


def dhcp_sighting(index: int, source: MudSource = MudSource.DHCP4) -> Sighting:
    mac = f"02:00:5f:{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"
    return Sighting(mac=mac, source=source, ip=f"192.0.2.{index % 200 + 20}")


def test_invented_macs_from_dhcp_are_budgeted_too(tmp_path: Path) -> None:
    """A DHCP client writes its own hardware address: a device cycling it must not make
    thousands of devices (and their rules); real devices renewing still pass."""
    clock = Clock()
    with Store(tmp_path / "m.db") as store:
        service = DeviceService(store=store, clock=clock)
        intake = Intake(service)
        known = service.observe(mac="02:00:5f:ff:ff:01", ip="192.0.2.30")
        for index in range(600):  # v4 and v6 share one budget
            intake.on_sighting(dhcp_sighting(index, MudSource.DHCP4 if index % 2
                                             else MudSource.DHCP6))
        assert len(store.list_devices()) == NEW_DHCP_DEVICES + 1
        assert intake.refused_new == 600 - NEW_DHCP_DEVICES
        renewed = Sighting(mac=known.mac, source=MudSource.DHCP4, ip="192.0.2.31",
                           mud_url=URL)
        assert intake.on_sighting(renewed) is not None  # a known device always passes
        assert service.device(known.mac).mud_url == URL
        clock.now += NEW_LLDP_WINDOW
        assert intake.on_sighting(dhcp_sighting(5000)) is not None  # the budget refilled


def test_discovery_stops_at_the_devices_cap(tmp_path: Path) -> None:
    clock = Clock()
    with Store(tmp_path / "m.db") as store:
        intake = Intake(DeviceService(store=store, clock=clock), max_devices=5)
        for index in range(20):
            intake.on_sighting(dhcp_sighting(index))
        assert store.count_devices() == 5
        clock.now += NEW_LLDP_WINDOW
        assert intake.on_sighting(dhcp_sighting(100)) is None
        assert intake.on_sighting(dhcp_sighting(3)) is None  # nothing changed for it
        assert store.count_devices() == 5
