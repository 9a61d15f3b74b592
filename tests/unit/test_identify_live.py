"""The daemon's identifier: DHCP lease clues → the device's maker, never over a label."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mudguard.devices import MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.dhcp import hook_message, parse_hook_message
from mudguard.discovery.sighting import Intake, Sighting
from mudguard.identify.capture import load_knowledge
from mudguard.identify.knowledge import OuiRegistry
from mudguard.identify.live import DhcpIdentifier
from mudguard.store import Store

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SENSI = "34:6f:92:1d:ba:50"
ESP = "5c:cf:7f:07:ae:fb"
OUI = OuiRegistry.from_manuf("34:6F:92\tWhiteRod\tWhite Rodgers Division\n"
                             "5C:CF:7F\tEspressi\tEspressif Inc.\n")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[DeviceService]:
    store = Store(tmp_path / "m.db")
    yield DeviceService(store=store, clock=lambda: NOW)
    store.close()


@pytest.fixture
def intake(service: DeviceService) -> Intake:
    return Intake(service, enrich=DhcpIdentifier(load_knowledge(), OUI).enrich)


def lease(mac: str, hostname: str, env: dict[str, str] | None = None) -> Sighting:
    message = hook_message(["add", mac, "192.0.2.50", hostname], env or {})
    return parse_hook_message(json.dumps(message).encode())


def test_hook_carries_vendor_class_and_parameter_request_list() -> None:
    sighting = lease(SENSI, "Sensi-1DBA50", {"DNSMASQ_VENDOR_CLASS": "udhcp 1.30.1",
                                             "DNSMASQ_REQUESTED_OPTIONS": "1,3,6,15"})
    assert (sighting.vendor_class, sighting.prl) == ("udhcp 1.30.1", "1,3,6,15")


def test_dhcp_lease_stores_the_inferred_maker(intake: Intake, service: DeviceService) -> None:
    intake.on_sighting(lease(SENSI, "Sensi-1DBA50"))
    assert service.store.get_device(SENSI).manufacturer == "Emerson (Sensi)"


def test_a_module_maker_is_not_stored_as_the_maker(intake: Intake,
                                                   service: DeviceService) -> None:
    intake.on_sighting(lease(ESP, "ESP_07AEFB"))
    device = service.store.get_device(ESP)
    assert device is not None and device.manufacturer is None


def test_the_owners_label_replaces_an_inferred_maker(intake: Intake,
                                                     service: DeviceService) -> None:
    intake.on_sighting(lease(SENSI, "Sensi-1DBA50"))
    service.add_device(mac=SENSI, source=MudSource.QR, manufacturer="Copeland",
                       model="ST75")
    device = service.store.get_device(SENSI)
    assert (device.manufacturer, device.model) == ("Copeland", "ST75")
    intake.on_sighting(lease(SENSI, "Sensi-1DBA50", {"DNSMASQ_VENDOR_CLASS": "x"}))
    assert service.store.get_device(SENSI).manufacturer == "Copeland"


def test_a_failing_identifier_never_stops_discovery(service: DeviceService) -> None:
    def broken(sighting: Sighting) -> Sighting:
        raise RuntimeError("bug")

    Intake(service, enrich=broken).on_sighting(lease(SENSI, "Sensi-1DBA50"))
    assert service.store.get_device(SENSI) is not None


def test_dhcp_lease_stores_the_inferred_kind(intake: Intake, service: DeviceService) -> None:
    intake.on_sighting(lease(SENSI, "Sensi-1DBA50"))
    device = service.store.get_device(SENSI)
    assert device is not None and device.kind == "thermostat"
    assert device.as_dict()["kind"] == "thermostat"


def test_a_vague_clue_stores_no_kind(intake: Intake, service: DeviceService) -> None:
    # An Espressif module's default hostname says "some IoT thing", too weakly to show.
    intake.on_sighting(lease(ESP, "ESP_07AEFB"))
    device = service.store.get_device(ESP)
    assert device is not None and device.kind is None


def test_a_stored_kind_is_not_replaced_by_a_later_lease(intake: Intake,
                                                        service: DeviceService) -> None:
    intake.on_sighting(lease(SENSI, "Sensi-1DBA50"))
    intake.on_sighting(lease(SENSI, "HS110", {"DNSMASQ_VENDOR_CLASS": "y"}))
    assert service.store.get_device(SENSI).kind == "thermostat"


NEST_CAM = "64:16:66:49:3e:cb"  # a Nest OUI, as the MADEA camera's


def _learning_service(tmp_path: Path, identifier: DhcpIdentifier) -> DeviceService:
    store = Store(tmp_path / "learn.db")
    return DeviceService(store=store, clock=lambda: NOW, learns=True,
                         lan_prefixes=("192.168.1.0/24",), gateway_ips=("192.168.1.1",),
                         identify=identifier.from_learning)


def test_the_end_of_learning_identifies_the_device_from_the_names_it_used(
        tmp_path: Path) -> None:
    from mudguard.devices import learning
    from mudguard.mud import parse_mud

    # No OUI registry entry and no telling hostname: DHCP said nothing useful.
    service = _learning_service(tmp_path, DhcpIdentifier(load_knowledge(), OUI))
    device = service.observe(mac=NEST_CAM, ip="192.168.1.20", hostname="device")
    assert (device.manufacturer, device.kind) == (None, None)
    names = {"203.0.113.10": "nexusapi-us1.dropcam.com"}
    record = learning.flow_record(device, family=4, src="192.168.1.20", dst="203.0.113.10",
                                  protocol=6, dst_port=443, name_of=names.get)
    assert record is not None
    service.record_flows(NEST_CAM, [record])
    ended = service.end_learning(NEST_CAM)
    assert (ended.manufacturer, ended.kind) == ("Google Nest", "camera")
    proposal = service.proposal(NEST_CAM)
    assert proposal is not None
    mud = parse_mud(proposal).mud
    assert mud is not None and mud.mfg_name == "Google Nest"  # the proposal names it
    service.store.close()


def test_what_is_known_is_kept_and_a_failing_identifier_changes_nothing(
        tmp_path: Path) -> None:
    from mudguard.devices import learning

    def broken(device: object, names: object) -> tuple[str | None, str | None]:
        raise RuntimeError("bug")

    service = _learning_service(tmp_path, DhcpIdentifier(load_knowledge(), OUI))
    device = service.observe(mac=NEST_CAM, ip="192.168.1.20", manufacturer="Acme",
                             kind="doorbell")
    record = learning.flow_record(device, family=4, src="192.168.1.20", dst="203.0.113.10",
                                  protocol=6, dst_port=443,
                                  name_of={"203.0.113.10": "nexus.dropcam.com"}.get)
    assert record is not None
    service.record_flows(NEST_CAM, [record])
    ended = service.end_learning(NEST_CAM)
    assert (ended.manufacturer, ended.kind) == ("Acme", "doorbell")
    service.identify = broken
    other = service.observe(mac=SENSI, ip="192.168.1.21")
    record = learning.flow_record(other, family=4, src="192.168.1.21", dst="203.0.113.10",
                                  protocol=6, dst_port=443,
                                  name_of={"203.0.113.10": "nexus.dropcam.com"}.get)
    assert record is not None
    service.record_flows(SENSI, [record])
    ended = service.end_learning(SENSI)  # learning ends, with its proposal, all the same
    assert ended.state.value == "proposed" and ended.kind is None
    assert service.proposal(SENSI) is not None
    service.store.close()
