"""One LAN device sending LLDP frames from invented source MACs must not fill the store
with invented devices: real frames (built and parsed as on the wire) go through the real
intake and device service; new devices from LLDP are budgeted, known ones always pass."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mudguard.devices.service import DeviceService
from mudguard.discovery.lldp import build_lldp_frame, parse_lldp_frame
from mudguard.discovery.sighting import NEW_LLDP_DEVICES, NEW_LLDP_WINDOW, Intake
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
