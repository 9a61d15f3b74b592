"""A device's reasons and its events' reasons carry their catalogue key at the source
(``devices.reasons``): kept by the store (migration 8) and worded by the portal from the
key, saying in English and French what the English sentence said through the patterns."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mudguard.devices import CachedMud, Device, EventKind, HomeDefault, Settings
from mudguard.devices import SignatureStatus as Sig
from mudguard.devices import lifecycle as life
from mudguard.devices.reasons import Reason, reason_details, reason_from_json, reason_json
from mudguard.devices.repository import FolderRepository
from mudguard.devices.service import ApprovalError, DeviceService
from mudguard.mud import parse_mud
from mudguard.portal._i18n import translate
from mudguard.portal._reasons import (
    device_reason_text,
    event_reason_text,
    keyed_reason_text,
    reason_text,
)
from mudguard.store import Store

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
SOURCES = Path(life.__file__).parent
MAC = "02:00:5e:00:53:01"
URL = "https://iot-device.example.com/dnsname"


def _lifecycle_reasons() -> list[str]:
    """Every reason (device reasons and event reasons) the lifecycle gives."""
    mud = parse_mud(json.dumps({"ietf-mud:mud": {
        "mud-version": 1, "mud-url": URL, "last-update": "2026-01-01T00:00:00+00:00",
        "cache-validity": 48, "is-supported": True, "systeminfo": "x"}}).encode()).mud
    assert mud is not None
    new = life.on_seen(None, mac=MAC, now=NOW).device
    reasons: list[str] = list(new.reasons)
    lan, internet = Settings(home_default=HomeDefault.LAN), Settings()
    for settings in (lan, internet):
        for outcome in (
                life.on_no_mud(new, why="x", settings=settings, now=NOW),
                life.start_learning(new, why="y", until=NOW, settings=settings, now=NOW),
                life.on_profile(new, mud, profile_hash="a", signature=Sig.INVALID, signer=None,
                                settings=settings, now=NOW),
                life.on_profile(new, mud, profile_hash="a", signature=Sig.UNSIGNED,
                                signer=None, settings=Settings(allow_unsigned=False), now=NOW),
                life.on_profile(new, mud, profile_hash="a", signature=Sig.UNSIGNED,
                                signer=None, settings=settings, now=NOW),
                life.on_profile(new, replace(mud, is_supported=False), profile_hash="a",
                                signature=Sig.UNSIGNED, signer=None, settings=settings, now=NOW),
                life.on_profile(new, mud, profile_hash="a", signature=Sig.UNSIGNED,
                                signer=None, settings=settings, now=NOW,
                                end_of_support=NOW - timedelta(days=1))):
            reasons += outcome.device.reasons
            reasons += [n.details["reason"] for n in outcome.notices if "reason" in n.details]
        learning = life.start_learning(new, why="y", until=NOW, settings=settings,
                                       now=NOW).device
        for ready in (True, False):
            reasons += life.end_learning(learning, proposal_ready=ready, settings=settings,
                                         now=NOW).device.reasons
        reasons += life.keep_default(learning, settings=settings, now=NOW).device.reasons
        learned = replace(new, state=life.State.PROFILED, mud_source=life.MudSource.LEARNED)
        reasons += life.unlock_learned(learned, settings=settings, now=NOW).device.reasons
        quarantined = life.quarantine(new, reason="a watcher's words", now=NOW).device
        reasons += life.release(quarantined, settings=settings, now=NOW).device.reasons
        reasons += life.release(replace(quarantined, profile_hash="a"), settings=settings,
                                now=NOW, mud=mud).device.reasons
        trusted = life.trust(new, now=NOW).device
        reasons += trusted.reasons
        reasons += life.untrust(trusted, settings=settings, now=NOW).device.reasons
    reasons += life.forget(new, now=NOW).device.reasons
    eos = replace(new, state=life.State.PROFILED, end_of_support=NOW - timedelta(days=2))
    reasons += life.check_support(eos, NOW).device.reasons
    base = "https://mud.maker.example/lamp/"
    pinned = Device(mac=MAC, mud_url=base + "v1.json", pinned_signer="CN=s (CA key 01)",
                    root_mud_url=base + "v1.json", past_root_urls=(base + "v0.json",),
                    pending_mud_url=base + "v2.json")
    reasons += [r for r in (
        life.url_update_problem(pinned, "https://mud.maker.example/other.json"),
        life.url_update_problem(pinned, base + "v0.json"),
        life.url_update_problem(replace(pinned, pinned_signer=None), base + "v2.json"),
        life.url_update_problem(replace(pinned, state=life.State.QUARANTINED),
                                base + "v2.json"),
        life.signer_problem(pinned, Sig.UNSIGNED, None),
        life.signer_problem(pinned, Sig.INVALID, "bad digest"),
        life.signer_problem(pinned, Sig.SIGNED_VALID, "CN=s (CA key 02)"),
        life.accept_url(pinned, NOW).notices[0].details["reason"]) if r is not None]
    for bad in (7, "https://x.example/" + "a" * 300, "https://x.example/a b",
                "https://x.example:99999/", "http://x.example/m.json", "https:///m.json",
                "https://user:pw@x.example/m.json"):
        with pytest.raises(life.MudUrlError) as refused:
            life.check_mud_url(bad)  # type: ignore[arg-type]
        reasons.append(refused.value.reason)
    return reasons


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[DeviceService]:
    store = Store(tmp_path / "m.db")
    yield DeviceService(store=store, clock=lambda: NOW)
    store.close()


def _service_reasons(svc: DeviceService, corpus: Path, tmp_path: Path) -> list[str]:
    """The reasons the device service gives, through the real service and store: read back
    from the store (device rows and events)."""
    macs = [f"02:00:5e:00:53:{n:02x}" for n in range(1, 12)]
    svc.observe(mac=macs[0])  # no MUD URL, no repository
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.json").write_text("{not json")
    svc.repositories = [FolderRepository(broken)]
    svc.observe(mac=macs[1])  # a repository failed
    svc.observe(mac=macs[2], mud_url="https://mud.example.com/unknown.json")  # no fetcher
    svc.store.put_mud(CachedMud(url="https://mud.example.com/bad.json", data=b"{}",
                                fetched_at=NOW, cache_validity_hours=48))
    svc.observe(mac=macs[3], mud_url="https://mud.example.com/bad.json")  # invalid
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "bad.json").write_text("{}")
    (repo / "index.json").write_text(json.dumps({"entries": [
        {"manufacturer": "Acme", "model": "None"},
        {"manufacturer": "Acme", "model": "Bad", "mud_file": "bad.json"}]}))
    svc.repositories = [FolderRepository(repo)]
    svc.observe(mac=macs[4], manufacturer="Acme", model="None")
    svc.observe(mac=macs[5], manufacturer="Acme", model="Bad")
    svc.repositories = []
    data = (corpus / "mud/rfc/mudmaker-cloud-service.json").read_bytes()
    svc.observe(mac=macs[6])
    learned = svc.apply_learned(macs[6], data)
    svc.observe(mac=macs[7], mud_url=learned.mud_url)  # another device's learned profile
    svc.store.delete_mud(str(learned.mud_url))
    svc.refresh(macs[6])  # its learned profile is gone
    svc.store.put_mud(CachedMud(url=URL, data=data, fetched_at=NOW, cache_validity_hours=48))
    svc.observe(mac=macs[8], mud_url=URL)
    svc.observe(mac=macs[8], mud_url="https://iot-device.example.com/v2.json")
    with pytest.raises(ApprovalError):
        svc.approve_url(macs[8])  # cannot be fetched
    svc.store.put_mud(CachedMud(url="https://iot-device.example.com/v2.json", data=b"{}",
                                fetched_at=NOW, cache_validity_hours=48))
    with pytest.raises(ApprovalError):
        svc.approve_url(macs[8])  # invalid
    (repo / "copy.json").write_bytes(data)
    (repo / "index.json").write_text(json.dumps({"entries": [
        {"manufacturer": "Acme", "model": "Copy", "mud_file": "copy.json"}]}))
    svc.repositories = [FolderRepository(repo)]
    svc.store.put_mud(CachedMud(url=str(learned.mud_url), data=data, fetched_at=NOW,
                                cache_validity_hours=48))
    svc.observe(mac=macs[9], manufacturer="Acme", model="Copy")  # another's learned profile
    with pytest.raises(life.MudUrlError):
        svc.observe(mac=macs[0], mud_url="http://mud.example.com/plain.json")  # recorded
    svc.learns = True
    svc.start_learning(macs[0])  # the owner asks to learn it
    svc.learns = False
    reasons: list[str] = [r for d in svc.store.list_devices() for r in d.reasons]
    for event in svc.store.list_events():
        reasons += [reason_from_json(str(event.details["reason"]), {
            "key": event.details["reason_key"], "fields": event.details["reason_fields"]})
            for _ in (1,) if "reason_key" in event.details]
    return reasons


def _keys_in_sources() -> set[str]:
    """Every key a ``Reason(...)`` of the lifecycle and the service is made with."""
    text = "".join((SOURCES / name).read_text(encoding="utf-8")
                   for name in ("lifecycle.py", "service.py"))
    return set(re.findall(r'Reason\(\s*"([a-z_.]+)"', text))


def test_every_reason_of_the_lifecycle_and_service_is_worded_from_its_key(
        svc: DeviceService, corpus: Path, tmp_path: Path) -> None:
    reasons = _lifecycle_reasons() + _service_reasons(svc, corpus, tmp_path)
    rejected = [e for e in svc.store.list_events() if e.kind is EventKind.URL_REJECTED]
    assert [e.details["reason_key"] for e in rejected] == ["url_rejected.not_https"]
    keyed = [r for r in reasons if isinstance(r, Reason)]
    keyed += [f for r in keyed for f in r.fields.values() if isinstance(f, Reason)]
    # every reason the code writes has its key; plain ones are the test's own inputs
    plain = {r for r in reasons if not isinstance(r, Reason)}
    assert plain <= {"x", "y", "a watcher's words"}, plain
    seen = {r.key for r in keyed}
    assert seen == _keys_in_sources(), \
        sorted(_keys_in_sources() - seen)
    for language in ("en", "fr"):
        t = functools.partial(translate, language)
        for reason in keyed:
            stored = reason_json(reason)
            assert stored is not None
            text = keyed_reason_text(stored["key"], stored["fields"], t)
            assert text is not None, reason
            assert text == reason_text(str(reason), t), (language, reason)
            assert device_reason_text(reason, t) == text
            if language == "fr":
                assert text != str(reason) and "{" not in text, text


def test_the_key_wins_over_the_sentence_and_a_malformed_key_falls_back() -> None:
    fr = functools.partial(translate, "fr")
    reworded = Reason("profiled", "reworded sentence", url="https://x.example/m.json")
    assert device_reason_text(reworded, fr) == \
        reason_text("MUD profile from https://x.example/m.json enforced", fr)
    for key, fields in (("nope", {}), ("profiled", {}), ("profiled", {"url": True}),
                        ("profiled", {"url": ["a"]}), (7, {}), ("profiled", "x"),
                        ("no_profile", {"why": {"key": "nope", "fields": {}}})):
        stored = reason_from_json("reworded sentence", {"key": key, "fields": fields})
        assert device_reason_text(stored, fr) == "reworded sentence", (key, fields)
        details = {"reason": "reworded sentence", "reason_key": key, "reason_fields": fields}
        assert event_reason_text(details, fr) == "reworded sentence", (key, fields)
    assert reason_from_json("plain", "garbage") == "plain"
    assert not isinstance(reason_from_json("plain", None), Reason)


def test_nested_reasons_survive_the_store_and_the_event(tmp_path: Path) -> None:
    """``{why}; no MUD profile`` and ``learning … ; meanwhile {rest}`` keep their inner
    reason's key through a device row and a state-change event."""
    device = life.on_seen(None, mac=MAC, now=NOW).device
    quarantined = life.quarantine(device, reason="w", now=NOW).device
    released = life.release(quarantined, settings=Settings(), now=NOW)
    with Store(tmp_path / "m.db") as store:
        store.save_device(released.device)
        back = store.get_device(MAC)
        assert back is not None and back == released.device
        first = back.reasons[0]
        assert isinstance(first, Reason) and first.key == "no_profile"
        inner = first.fields["why"]
        assert isinstance(inner, Reason) and inner.key == "released"
        assert str(inner) == "released from quarantine"
        event = store.add_event(released.notices[-1].kind, NOW, MAC,
                                dict(released.notices[-1].details))
        assert [k["key"] for k in event.details["reason_keys"]] == \
            ["no_profile", "default.internet"]
    fr = functools.partial(translate, "fr")
    assert device_reason_text(first, fr) == reason_text(str(first), fr)
    assert reason_details({"reason": "plain"}) == {"reason": "plain"}


def test_an_old_database_upgrades_and_its_reasons_read_through_the_patterns(
        tmp_path: Path) -> None:
    """A release-6 database (no key column) opens at the current schema; its reasons are
    plain sentences the portal still words; a device saved now keeps its keys; a key
    column spoiled by hand leaves the sentences."""
    import sqlite3

    path = tmp_path / "mudguard.db"
    dump = Path(__file__).resolve().parents[1] / "data" / "store" / "schema-v6.sql"
    sentence = "MUD profile from https://mud.example.com/plug-v2.json enforced"
    with sqlite3.connect(path) as db:
        db.executescript(dump.read_text(encoding="utf-8"))
        assert db.execute("PRAGMA user_version").fetchone()[0] == 6
        db.execute("UPDATE devices SET reasons = ? WHERE mac = ?",
                   (json.dumps([sentence]), MAC))
    fr = functools.partial(translate, "fr")
    with Store(path) as store:
        plug = store.get_device(MAC)
        assert plug is not None and plug.reasons == (sentence,)
        assert not isinstance(plug.reasons[0], Reason)
        assert device_reason_text(plug.reasons[0], fr) == reason_text(sentence, fr) != sentence
        keyed = replace(plug, reasons=(Reason("profiled", sentence,
                                              url="https://mud.example.com/plug-v2.json"),))
        store.save_device(keyed)
        back = store.get_device(MAC)
        assert back is not None and isinstance(back.reasons[0], Reason)
        assert back.reasons[0].fields == {"url": "https://mud.example.com/plug-v2.json"}
    for spoiled in ("not json", '{"key": "profiled"}', '[{"key": "nope", "fields": 3}]', "[]"):
        with sqlite3.connect(path) as db:
            db.execute("UPDATE devices SET reason_keys = ? WHERE mac = ?", (spoiled, MAC))
        with Store(path) as store:
            plug = store.get_device(MAC)
            assert plug is not None and plug.reasons == (sentence,), spoiled
            assert device_reason_text(plug.reasons[0], fr) == reason_text(sentence, fr)


def test_a_watchers_quarantine_keeps_its_key_on_the_device(svc: DeviceService) -> None:
    """The daemon quarantines with ``Alert.why()``: the device's "why" line and its
    quarantined event are worded from the watcher's key, as the pattern words them."""
    from tests.unit.test_portal_i18n import _watcher_alerts

    for n, alert in enumerate(_watcher_alerts()):
        mac = f"02:00:5e:00:54:{n:02x}"
        svc.observe(mac=mac)
        quarantined = svc.quarantine(mac, alert.why())
        stored = svc.store.get_device(mac)
        assert stored == quarantined and isinstance(stored.reasons[0], Reason)
        event = svc.store.list_events(mac)[-2]
        assert event.details["reason_key"] == alert.reason_key
        for language in ("en", "fr"):
            t = functools.partial(translate, language)
            assert device_reason_text(stored.reasons[0], t) == reason_text(alert.reason, t)
            assert event_reason_text(event.details, t) == reason_text(alert.reason, t)


def test_the_end_of_learning_is_shown_in_the_owners_zone() -> None:
    """"learning what it does until 2026-12-02 12:00 UTC" keeps its moment as data: the
    "Why" line shows it in the owner's zone (Tokyo: 21:00); without a zone, as written."""
    from zoneinfo import ZoneInfo

    device = life.on_seen(None, mac=MAC, now=NOW).device
    learning = life.start_learning(device, why="y", until=NOW, settings=Settings(),
                                   now=NOW).device.reasons[1]
    assert "until 2026-12-02 12:00 UTC" in learning
    tokyo = ZoneInfo("Asia/Tokyo")
    for language, words in (("en", "until 2026-12-02 21:00; meanwhile"),
                            ("fr", "2026-12-02 21:00")):
        t = functools.partial(translate, language)
        assert words in device_reason_text(learning, t, tokyo), language
        assert "12:00 UTC" in device_reason_text(learning, t)
    spoiled = reason_from_json(str(learning), {**(reason_json(learning) or {}), "fields": {
        **(reason_json(learning) or {})["fields"], "until": "not a moment"}})
    assert "12:00 UTC" in device_reason_text(spoiled, functools.partial(translate, "fr"),
                                             tokyo)


def test_a_reason_survives_a_copy_and_a_pickle() -> None:
    import copy
    import pickle

    nested = Reason("no_profile", "released from quarantine; no MUD profile",
                    why=Reason("released", "released from quarantine"))
    for made in (copy.copy(nested), copy.deepcopy(nested), pickle.loads(pickle.dumps(nested))):
        assert isinstance(made, Reason) and made == nested
        assert reason_json(made) == reason_json(nested)


def test_the_release_dumps_of_schemas_7_and_8_open_with_their_reasons(tmp_path: Path) -> None:
    """schema-v7.sql (session 4's main before migration 8: plain reasons, a device kind)
    and schema-v8.sql (keys beside the reasons, the owner's time zone) open at the
    current schema with their data."""
    import sqlite3

    data = Path(__file__).resolve().parents[1] / "data" / "store"
    fr = functools.partial(translate, "fr")
    for version in (7, 8):
        path = tmp_path / f"v{version}.db"
        with sqlite3.connect(path) as db:
            db.executescript((data / f"schema-v{version}.sql").read_text(encoding="utf-8"))
        with Store(path) as store:
            devices = {d.mac: d for d in store.list_devices()}
            plug, camera = devices[MAC], devices["02:00:5e:00:53:02"]
            assert camera.reasons == ("scan",) and not isinstance(camera.reasons[0], Reason)
            if version == 7:
                assert plug.reasons == ("profile enforced",) and camera.kind is None
                assert store.get_settings().time_zone is None
                continue
            (reason,) = plug.reasons
            assert isinstance(reason, Reason) and reason.key == "profiled"
            assert device_reason_text(reason, fr) == reason_text(str(reason), fr) != reason
            assert camera.kind == "camera"
            assert store.get_settings().time_zone == "Europe/Paris"


def test_a_quarantine_older_than_the_events_read_keeps_its_key_on_the_alert() -> None:
    """The alerts page stands in for a quarantine whose event was pushed out of reach
    (a long flood): the stand-in carries the device's keyed reason."""
    from mudguard.portal._incidents import _with_lost_quarantines

    device = life.on_seen(None, mac=MAC, now=NOW).device
    why = Reason("watch.scan", "scanned 9 addresses in 10 s (tcp 192.0.2.7 port 23)",
                 count=9, seconds="10", more=False,
                 examples=[{"protocol": 6, "remote": "192.0.2.7", "port": 23,
                            "icmp_type": None}])
    quarantined = life.quarantine(device, reason=why, now=NOW).device
    (stand_in,) = _with_lost_quarantines([], {MAC: quarantined})
    fr = functools.partial(translate, "fr")
    assert stand_in.details["reason_key"] == "watch.scan"
    assert event_reason_text(stand_in.details, fr) == reason_text(str(why), fr) != str(why)
    assert "Telnet vers 192.0.2.7" in event_reason_text(stand_in.details, fr)
