"""The device store wired to the real WiFi key manager (ring, PSK files; no hostapd
socket): a bound onboarding key sets the device's key id, a mismatch is an event, and
forget revokes the device's key and rewrites the PSK file without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mudguard.devices import EventKind
from mudguard.devices.service import DeviceService
from mudguard.devices.wiring import KeyEventRecorder, KeyManagerRevoker
from mudguard.keys.core import parse_ctrl_event
from mudguard.keys.ring import KeyRing
from mudguard.keys.service import KeyFiles, KeyManager
from mudguard.store import Store

MAC = "02:00:5e:00:53:01"
OTHER = "02:00:5e:00:53:02"


@pytest.fixture
def wired(tmp_path: Path) -> Iterator[tuple[DeviceService, KeyManager]]:
    with Store(tmp_path / "m.db") as store, KeyRing(tmp_path / "keys.db") as ring:
        service = DeviceService(store=store)
        manager = KeyManager(ring, KeyFiles(psk_file=tmp_path / "hostapd.wpa_psk"),
                             notify=KeyEventRecorder(service))
        service.keys = KeyManagerRevoker(manager)
        yield service, manager


def test_onboarding_key_binds_and_forget_revokes(wired: tuple[DeviceService, KeyManager],
                                                 tmp_path: Path) -> None:
    service, manager = wired
    record = manager.issue(mac=None, now=1000.0)
    manager.on_event(parse_ctrl_event(
        f"<3>AP-STA-CONNECTED {MAC} keyid={record.entry.keyid}"), 1001.0)
    device = service.device(MAC)
    assert device.key_id == record.entry.keyid
    assert EventKind.KEY_BOUND in [e.kind for e in service.store.list_events(MAC)]
    psk = (tmp_path / "hostapd.wpa_psk").read_text()
    assert record.entry.keyid in psk
    steps = service.forget(MAC)
    assert steps.key_revoked is True
    assert record.entry.keyid not in (tmp_path / "hostapd.wpa_psk").read_text()
    assert manager.ring.by_mac(MAC) is None
    assert service.store.list_events()[-1].details["key"] == "revoked"


def test_key_of_another_device_is_a_mismatch_event(wired: tuple[DeviceService, KeyManager]
                                                   ) -> None:
    service, manager = wired
    service.observe(mac=OTHER, ip="192.0.2.20")
    record = manager.issue(mac=MAC, now=1000.0)
    manager.on_event(parse_ctrl_event(
        f"<3>AP-STA-CONNECTED {OTHER} keyid={record.entry.keyid}"), 1001.0)
    event = service.store.list_events(OTHER)[-1]
    assert event.kind is EventKind.KEY_MISMATCH and event.details["keyid"] == record.entry.keyid


def test_forget_without_a_key(wired: tuple[DeviceService, KeyManager]) -> None:
    service, _ = wired
    service.observe(mac=MAC)
    steps = service.forget(MAC)
    assert steps.key_revoked is False
    assert service.store.list_events()[-1].details["key"] == "none"
