"""What the daemon keeps of an identification (decision, confidence, clues), where it
is stored, and how the owner reads it on the device page and through the API."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mudguard.devices.service import DeviceService
from mudguard.identify.capture import load_knowledge
from mudguard.identify.knowledge import KnowledgeBase
from mudguard.identify.live import LiveEvidence, LiveIdentifier
from mudguard.identify.record import MAX_CLUES, MAX_TEXT, IdentityRecord
from mudguard.store import Store
from tests.unit.test_identify import mdns_announcement, ssdp_notify
from tests.unit.test_portal_support import OWNER, PASSWORD, portal, text_of

HUE = "00:17:88:1a:2b:3c"
SONOS = "00:0e:58:a0:b1:c2"
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_knowledge()


def _sonos(kb: KnowledgeBase) -> IdentityRecord:
    live = LiveIdentifier(kb, None)
    live.on_frame(ssdp_notify(SONOS))
    live.updates()
    ((found_mac, record),) = live.decisions()
    assert found_mac == SONOS
    return record


def test_a_decision_is_recorded_with_its_clues_and_round_trips(kb: KnowledgeBase) -> None:
    record = _sonos(kb)
    assert (record.manufacturer, record.kind) == ("Sonos", "speaker")
    assert 0.5 <= record.manufacturer_confidence <= 1 and 0.5 <= record.kind_confidence <= 1
    assert record.clues[0].field.startswith("ssdp")
    assert any(c.field.startswith("ssdp") and ("manufacturer", "Sonos") in c.supports
               for c in record.clues)
    assert IdentityRecord.loads(record.dumps()) == record
    shown = record.to_json()
    assert shown["evidence"][0]["label"].startswith("SSDP")


def test_decisions_hand_out_each_change_once(kb: KnowledgeBase) -> None:
    live = LiveIdentifier(kb, None)
    live.on_frame(ssdp_notify(SONOS))
    live.updates()
    assert len(live.decisions()) == 1
    live.on_frame(ssdp_notify(SONOS))  # the same clue again: nothing new to store
    live.updates()
    assert live.decisions() == []
    live.on_name(SONOS, "sonos.com")  # a new clue changes the record
    live.updates()
    ((_, record),) = live.decisions()
    assert any(c.field == "dns_name" for c in record.clues)


def test_pending_decisions_stay_bounded_under_many_devices(kb: KnowledgeBase) -> None:
    live = LiveIdentifier(kb, None, evidence=LiveEvidence(max_devices=8))
    for n in range(40):
        live.on_frame(ssdp_notify(f"00:0e:58:00:00:{n:02x}"))
        live.updates()
    assert len(live.decisions(limit=100)) <= 8


@pytest.mark.parametrize("stored", [
    "", "not json", "[]", '{"manufacturer": 5}', '{"manufacturer_confidence": 7}',
    '{"manufacturer_confidence": true}', '{"evidence": [1]}',
    '{"evidence": [{"field": "oui"}]}', '{"evidence": [{"field": "oui", "value": "x", '
    '"supports": [], "weight": 0.5}]}',
])
def test_a_damaged_record_reads_as_none(stored: str) -> None:
    assert IdentityRecord.loads(stored) is None


def test_a_hostile_record_is_cut_to_size() -> None:
    clue = {"field": "hostname", "value": "x" * 10_000, "weight": 0.5,
            "supports": {"manufacturer": "y" * 10_000, "access": "internet"}}
    stored = json.dumps({"manufacturer": "z" * 10_000, "manufacturer_confidence": 0.9,
                         "kind_confidence": 0, "evidence": [clue] * 500})
    record = IdentityRecord.loads(stored)
    assert record is not None and len(record.clues) == MAX_CLUES
    assert record.manufacturer is not None and len(record.manufacturer) == MAX_TEXT
    assert record.clues[0].supports == (("manufacturer", "y" * (MAX_TEXT - 1) + "…"),)


def test_the_store_keeps_it_for_known_devices_only_and_forgets_it(tmp_path: Path,
                                                                  kb: KnowledgeBase) -> None:
    record = _sonos(kb)
    with Store(tmp_path / "m.db") as store:
        service = DeviceService(store=store, clock=lambda: NOW)
        assert service.record_identity(SONOS, record) is False  # not a device yet
        assert store.get_identity(SONOS) is None
        service.observe(mac=SONOS, ip="192.0.2.40")
        assert service.record_identity(SONOS, record) is True
        assert service.identity_record(SONOS) == record
        assert store.get_identity(SONOS)[0] == NOW  # type: ignore[index]
        shown = service_device(service, SONOS)
        assert shown["identification"]["manufacturer"] == "Sonos"
        assert store.delete_device(SONOS)
        assert store.get_identity(SONOS) is None


def service_device(service: DeviceService, device: str) -> dict[str, object]:
    """``device show --json``'s object (the request handler the CLI and daemon share)."""
    from mudguard.devices.requests import handle_request
    return handle_request(service, {"op": "device", "mac": device})["device"]  # type: ignore[no-any-return]


def test_the_owner_reads_how_it_was_recognised_in_english_and_french(
        tmp_path: Path, kb: KnowledgeBase) -> None:
    live = LiveIdentifier(kb, None)
    live.on_frame(mdns_announcement(HUE))
    live.updates()
    ((_, record),) = live.decisions()
    with portal(tmp_path) as (client, st, _):
        devices = st.services.devices
        devices.observe(mac=HUE, ip="192.0.2.41")
        page = html.unescape(text_of(client.get(f"/devices/{HUE}").text))
        assert "How mudguard recognised it" not in page  # nothing recorded yet
        assert devices.record_identity(HUE, record)
        page = html.unescape(text_of(client.get(f"/devices/{HUE}").text))
        assert "How mudguard recognised it" in page
        assert f"Maker: {record.manufacturer} (" in page and "% sure)" in page
        sure = round(record.kind_confidence * 100)
        assert f"Kind: hub ({sure}% sure)" in page
        assert "→ maker Philips Hue (Signify), kind hub" in page and "(mDNS)" in page
        assert "product range" not in page  # mudguard's own inference is not a clue sent
        french = html.unescape(text_of(client.get(f"/devices/{HUE}?lang=fr").text))
        assert "Comment mudguard l’a reconnu" in french
        assert f"Type : passerelle domotique (sûr à {sure} %)" in french  # text_of: spaces
        assert "fabricant Philips Hue (Signify)" in french
        assert "How mudguard" not in french and "% sure" not in french
        login = client.post("/api/session", json={"username": OWNER, "password": PASSWORD})
        assert login.status_code == 200
        api = client.get(f"/api/devices/{HUE}").json()
        assert api["identification"]["manufacturer"] == record.manufacturer
        assert api["identification"]["evidence"][0]["field"].startswith("mdns")


def _phone_record(kb: KnowledgeBase, device: str, facts: list[tuple[str, str]]
                  ) -> IdentityRecord:
    """The record identification makes of ``facts`` (field, value) sent by ``device``."""
    live = LiveIdentifier(kb, None)
    mac_bytes = bytes.fromhex(device.replace(":", ""))
    live.evidence.add_facts(mac_bytes, facts)
    return IdentityRecord.from_identification(live.identification(mac_bytes))


PRIVATE_MAC = "02:00:5e:00:53:77"  # locally administered, as a phone's private address
FIXED_MAC = "00:17:88:00:53:77"  # a registered OUI (Philips)


@pytest.mark.parametrize(("device", "facts", "proposed"), [
    # a phone: its private address and its name say so
    (PRIVATE_MAC, [("hostname", "Johns-iPhone")], True),
    # a Windows laptop: its DHCP vendor class and its host name
    (FIXED_MAC, [("vendor_class", "MSFT 5.0"), ("hostname", "DESKTOP-4F2A9")], True),
    # one forged User-Agent from a device with a registered OUI is not enough
    (FIXED_MAC, [("user_agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)")],
     False),
    (FIXED_MAC, [("hostname", "plug-1")], False),
])
def test_trust_is_proposed_only_on_two_kinds_of_clue(tmp_path: Path, kb: KnowledgeBase,
                                                     device: str, facts: list[tuple[str, str]],
                                                     proposed: bool) -> None:
    from mudguard.portal._identified import suggests_trust
    record = _phone_record(kb, device, facts)
    assert suggests_trust(record) is proposed, record
    with portal(tmp_path) as (client, st, _):
        devices = st.services.devices
        devices.observe(mac=device, ip="192.0.2.42", kind=record.kind)
        devices.record_identity(device, record)
        page = client.get(f"/devices/{device}").text
        assert ("mudguard thinks this is a phone or a computer" in page) is proposed
        trust_button = page[page.index(f'action="/devices/{device}/trust"'):]
        trust_button = trust_button[:trust_button.index("</form>")]
        assert ('<button type="submit">Trust' in trust_button) is proposed
        if proposed:  # once trusted, nothing more to propose
            devices.trust(device)
            assert "mudguard thinks this is" not in client.get(f"/devices/{device}").text


@pytest.mark.parametrize(("confidence", "fields", "proposed"), [
    (0.8, ("mac", "hostname"), True), (0.3, ("mac", "hostname"), False),
    (0.9, ("user_agent",), False), (0.9, ("user_agent", "user_agent"), False)])
def test_trust_needs_confidence_and_two_kinds_of_clue(confidence: float,
                                                      fields: tuple[str, ...],
                                                      proposed: bool) -> None:
    from mudguard.identify.record import RecordedClue
    from mudguard.portal._identified import suggests_trust
    clues = tuple(RecordedClue(field=f, value=f"v{i}", supports=(("kind", "phone"),),
                               weight=0.8) for i, f in enumerate(fields))
    record = IdentityRecord(manufacturer=None, manufacturer_confidence=0.0, kind="phone",
                            kind_confidence=confidence, model=None, platform=None,
                            clues=clues, trusted_candidate=True)
    assert suggests_trust(record) is proposed
    assert suggests_trust(None) is False
    assert IdentityRecord.loads(record.dumps()) == record


def test_every_clue_field_has_words_in_both_languages() -> None:
    from mudguard.identify.decide import LABELS
    from mudguard.portal._i18n import catalogue
    from mudguard.portal._identified import INFERRED
    for language in ("en", "fr"):
        words = catalogue(language)
        missing = [f for f in LABELS if f not in INFERRED and f"identify.field.{f}" not in words]
        assert not missing, (language, missing)


def test_every_kind_identification_can_name_has_words_and_a_view(kb: KnowledgeBase) -> None:
    from mudguard.portal._i18n import catalogue
    from mudguard.portal._identified import KINDS
    assert set(kb.kinds) == KINDS
    for language in ("en", "fr"):
        assert all(f"kind.{k}" in catalogue(language) for k in kb.kinds)
