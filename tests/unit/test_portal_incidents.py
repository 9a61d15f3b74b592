"""Alerts as incidents: many events of one thing are one alert, updated while it lasts;
a quarantine is an alert with its one decision; decided alerts leave the open list and
stay in the history; the badge counts exactly what the page lists."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mudguard.devices import Device, DeviceEvent, EventKind
from mudguard.policy import LifecycleState
from mudguard.portal._incidents import (
    AlertKind,
    Incident,
    IncidentBook,
    build_incidents,
    open_incidents,
)
from tests.unit.test_portal_pages import _serve_bulb
from tests.unit.test_portal_support import page_csrf, portal, text_of

MAC = "00:11:22:33:44:55"
LAMP = "00:11:22:33:44:66"
T0 = datetime(2026, 5, 1, 14, 2, tzinfo=UTC)


def _device(mac: str = MAC, state: LifecycleState = LifecycleState.PROFILED,
            **fields: object) -> Device:
    return Device(mac=mac, state=state, **fields)  # type: ignore[arg-type]


class _Events:
    """Events with increasing ids and times, as the store returns them."""

    def __init__(self) -> None:
        self.items: list[DeviceEvent] = []

    def add(self, event_kind: EventKind, mac: str = MAC, **details: object) -> DeviceEvent:
        event = DeviceEvent(id=len(self.items) + 1, at=T0 + timedelta(seconds=10 * len(
            self.items)), kind=event_kind, mac=mac, details=dict(details))
        self.items.append(event)
        return event


def _flow(dst: str, port: int, name: str | None = None) -> dict[str, object]:
    return {"direction": "out", "src": "192.0.2.10", "dst": dst, "protocol": 6,
            "src_port": 40000, "dst_port": port, "remote_name": name}


def test_two_hundred_violations_of_one_device_are_one_open_alert() -> None:
    events = _Events()
    targets = [_flow("198.51.100.7", 23), _flow("203.0.113.9", 443, "cdn.example.net"),
               _flow("192.0.2.20", 80)]
    for i in range(200):
        events.add(EventKind.VIOLATION, count=1, evidence=[targets[i % 3]])
    lamp = _device(LAMP, name="Desk lamp", ipv4=("192.0.2.20",))
    incidents = build_incidents(events.items, {MAC: _device(), LAMP: lamp})
    assert len(incidents) == 1
    alert = incidents[0]
    assert alert.open and alert.kind is AlertKind.VIOLATION
    assert alert.count == 200 and alert.events == 200
    assert alert.first_at == T0 and alert.last_at == events.items[-1].at
    assert alert.destination_count == 3
    by_name = {d.name: d for d in alert.destinations}
    assert set(by_name) == {"198.51.100.7", "cdn.example.net", "Desk lamp"}
    assert by_name["Desk lamp"].home_device  # a home device by the name the owner knows
    assert [s.name for s in by_name["198.51.100.7"].services] == ["Telnet"]
    assert [s.name for s in by_name["cdn.example.net"].services] == ["HTTPS"]
    assert alert.actions == ("dismiss",)
    assert len(alert.samples) == 5  # the raw evidence kept for the technical fold


def test_the_gateway_itself_is_named_as_such_in_the_evidence() -> None:
    """The demo's camera scans the gateway: its alert says so, in both languages."""
    from mudguard.portal._i18n import translate

    events = _Events()
    for port in (22, 23):
        events.add(EventKind.VIOLATION, count=1, evidence=[_flow("192.0.2.1", port)])
    events.add(EventKind.VIOLATION, count=1, evidence=[_flow("198.51.100.30", 443)])
    book = IncidentBook(gateways=frozenset({"192.0.2.1"}))
    book.feed(events.items, {MAC: _device()})
    by_name = {d.name: d for d in book.incidents({MAC: _device()})[0].destinations}
    assert by_name["192.0.2.1"].gateway and not by_name["198.51.100.30"].gateway
    assert translate("fr", "alert.gateway_name", name="192.0.2.1") == \
        "192.0.2.1 (cette passerelle)"
    plain = build_incidents(events.items, {MAC: _device()})[0]  # no gateway told
    assert not any(d.gateway for d in plain.destinations)


def test_a_quarantine_is_one_alert_with_the_safe_decision_first() -> None:
    events = _Events()
    events.add(EventKind.VIOLATION, count=3, evidence=[_flow("198.51.100.7", 23)])
    events.add(EventKind.VIOLATION, kind="scan", reason="scanned 5 LAN hosts on port 23",
               evidence=[_flow(f"192.0.2.{20 + i}", 23) for i in range(5)])
    events.add(EventKind.QUARANTINED, reason="scanned 5 LAN hosts on port 23")
    for _ in range(50):  # blocked while quarantined: evidence of the same incident
        events.add(EventKind.VIOLATION, count=2, evidence=[_flow("198.51.100.7", 23)])
    quarantined = _device(state=LifecycleState.QUARANTINED)
    incidents = build_incidents(events.items, {MAC: quarantined})
    assert len(incidents) == 1
    alert = incidents[0]
    assert alert.kind is AlertKind.QUARANTINE and alert.open
    assert alert.actions == ("keep", "release")  # keeping it quarantined is the safe one
    assert alert.reasons == ("scanned 5 LAN hosts on port 23",)
    assert alert.count == 3 + 5 + 100
    assert alert.destination_count == 6


def test_deciding_closes_the_alert_and_keeps_it_in_the_history() -> None:
    events = _Events()
    events.add(EventKind.QUARANTINED, reason="telnet scan")
    events.add(EventKind.STATE_CHANGED, to="quarantined", decision="kept")
    events.add(EventKind.VIOLATION, count=1, evidence=[_flow("198.51.100.7", 23)])
    quarantined = _device(state=LifecycleState.QUARANTINED)
    incidents = build_incidents(events.items, {MAC: quarantined})
    assert [(i.kind, i.open) for i in incidents] == [(AlertKind.VIOLATION, True),
                                                     (AlertKind.QUARANTINE, False)]
    assert incidents[1].closed_by == "kept" and incidents[1].actions == ()
    events.add(EventKind.ALERT_DISMISSED, alert="violation")
    events.add(EventKind.VIOLATION, count=4)
    incidents = build_incidents(events.items, {MAC: quarantined})
    assert [(i.kind, i.open, i.count) for i in incidents] == [
        (AlertKind.VIOLATION, True, 4), (AlertKind.VIOLATION, False, 1),
        (AlertKind.QUARANTINE, False, 0)]
    # Released: the quarantine and the device's blocked traffic are decided.
    events.add(EventKind.RELEASED)
    incidents = build_incidents(events.items, {MAC: _device()})
    assert open_incidents(incidents) == []
    assert len(incidents) == 3


def test_a_quarantine_of_a_device_no_longer_quarantined_is_not_open() -> None:
    events = _Events()
    events.add(EventKind.QUARANTINED, reason="x")
    assert open_incidents(build_incidents(events.items, {MAC: _device()})) == []
    assert open_incidents(build_incidents(events.items, {})) == []


def test_a_quarantine_older_than_the_events_read_is_still_an_open_alert() -> None:
    """Only the newest events are read: a long flood must not hide a quarantine."""
    events = _Events()
    for _ in range(20):
        events.add(EventKind.VIOLATION, count=5)
    quarantined = _device(state=LifecycleState.QUARANTINED, reasons=("telnet scan",))
    incidents = build_incidents(events.items, {MAC: quarantined})
    assert [(i.kind, i.open, i.count) for i in incidents] == [
        (AlertKind.QUARANTINE, True, 100)]
    assert incidents[0].reasons == ("telnet scan",)
    assert incidents[0].actions == ("keep", "release")


def test_new_devices_url_changes_and_signature_problems() -> None:
    events = _Events()
    events.add(EventKind.JOINED, source="qr")  # the owner onboarded it: no news
    events.add(EventKind.JOINED, mac=LAMP, source="dhcp4")
    events.add(EventKind.URL_CHANGED, old="https://a.example/x", new="https://b.example/y")
    events.add(EventKind.URL_CHANGED, old="https://a.example/x", new="https://c.example/z")
    events.add(EventKind.SIGNATURE_INVALID, reason="expired")
    devices = {MAC: _device(), LAMP: _device(LAMP)}
    incidents = build_incidents(events.items, devices)
    kinds = {(i.mac, i.kind): i for i in incidents}
    assert set(kinds) == {(LAMP, AlertKind.NEW_DEVICE), (MAC, AlertKind.URL_CHANGED),
                          (MAC, AlertKind.SIGNATURE)}
    changed = kinds[(MAC, AlertKind.URL_CHANGED)]
    assert changed.events == 2 and changed.details["new"] == "https://c.example/z"
    assert changed.actions == ("dismiss", "review")
    events.add(EventKind.RENAMED, mac=LAMP, name="Lamp")
    events.add(EventKind.URL_APPROVED, old="https://a.example/x", new="https://c.example/z")
    assert open_incidents(build_incidents(events.items, devices)) == []


def test_forgetting_a_device_closes_all_its_alerts() -> None:
    events = _Events()
    events.add(EventKind.VIOLATION, count=1)
    events.add(EventKind.JOINED, source="dhcp4")
    events.add(EventKind.FORGOTTEN)
    incidents = build_incidents(events.items, {MAC: _device(state=LifecycleState.FORGOTTEN)})
    assert {i.closed_by for i in incidents} == {"forgotten"} and len(incidents) == 2
    assert build_incidents(events.items, {}) == []  # deleted: nothing of it is shown


def test_a_forgotten_device_leaves_no_alert_behind(tmp_path: Path) -> None:
    """Forgetting deletes the device's events; the alerts kept between pages follow."""
    with portal(tmp_path) as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC, name="Camera")
        st.services.devices.tell(EventKind.VIOLATION, {"count": 1, "evidence": [
            _flow("198.51.100.7", 23)]}, MAC)
        st.services.devices.quarantine(MAC, "scan")
        assert len(st.services.incidents()) == 1
        st.services.forget(MAC)
        assert st.services.incidents() == []
        assert "198.51.100.7" not in client.get("/alerts").text


def _badge(html: str) -> int:
    match = re.search(r'data-testid="alert-badge"[^>]*>(\d+)<', html)
    return int(match.group(1)) if match else 0


def test_the_page_lists_one_alert_per_device_and_kind_and_the_badge_equals_it(
        tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC, name="Camera")
        st.services.onboard(url=_serve_bulb(st, "/lamp.json"), mac=LAMP, name="Lamp")
        for i in range(200):
            st.services.devices.tell(EventKind.VIOLATION, {
                "count": 1, "evidence": [_flow("198.51.100.7", 23 if i % 2 else 443)]}, LAMP)
        st.services.devices.tell(EventKind.VIOLATION, {"count": 1}, MAC)
        st.services.devices.quarantine(MAC, "tried telnet to 198.51.100.7")
        for _ in range(50):
            st.services.devices.tell(EventKind.VIOLATION, {"count": 1}, MAC)
        for lang in ("en", "fr"):
            page = client.get(f"/alerts?lang={lang}")
            cards = re.findall(r'<li class="alert open alert-([\w-]+)" data-kind="[\w-]+" '
                               r'data-mac="([\w:]+)"', page.text)
            assert sorted(cards) == [("quarantine", MAC), ("violation", LAMP)], cards
            assert _badge(page.text) == len(cards) == st.services.open_alert_count() == 2
            assert _badge(client.get(f"/devices?lang={lang}").text) == 2
        words = text_of(client.get("/alerts?lang=en").text)
        assert "blocked 200 times, to 1 destination" in words
        assert "tried to reach 198.51.100.7 (Telnet, HTTPS)" in words
        assert "blocked 51 times" in words  # the quarantined camera's blocked traffic
        fr = client.get("/alerts?lang=fr").text
        assert "bloqué 200\u00a0fois" in fr or "bloqué 200 fois" in fr
        # The safe choice first: keep it quarantined; then release.
        card = page.text.split('data-mac="00:11:22:33:44:55"')[1].split("</li>")[0]
        assert card.index("/keep") < card.index("/release")
        assert "/forget" not in card
        # Dismissing the lamp's alert and keeping the camera quarantined: nothing open,
        # both in the history.
        token = page_csrf(client, "/alerts?lang=en")
        done = client.post("/alerts/dismiss", data={"csrf": token, "mac": LAMP,
                                                    "kind": "violation"})
        assert done.url.path == "/alerts" and _badge(done.text) == 1
        kept = client.post(f"/devices/{MAC}/keep", data={"csrf": token, "from": "alerts"})
        assert _badge(kept.text) == 0 and 'class="alert open' not in kept.text
        # The camera's earlier blocked traffic was folded into its quarantine.
        assert kept.text.count('class="alert closed"') == 2
        assert "kept quarantined" in text_of(kept.text) and "seen" in text_of(kept.text)
        refused = client.post("/alerts/dismiss", data={"csrf": token, "mac": MAC,
                                                       "kind": "quarantine"})
        assert refused.status_code == 409
        bad = client.post("/alerts/dismiss", data={"csrf": token, "mac": MAC, "kind": "x"})
        assert bad.status_code == 400


def test_the_api_lists_incidents_with_the_old_fields_and_the_new_ones(tmp_path: Path) -> None:
    from tests.unit.test_portal_api import _api_login

    with portal(tmp_path) as (client, st, _):
        headers = _api_login(client)
        st.services.onboard(url=_serve_bulb(st), mac=MAC)
        for _ in range(30):
            st.services.devices.tell(EventKind.VIOLATION, {
                "count": 2, "evidence": [_flow("198.51.100.7", 23)]}, MAC)
        alerts = client.get("/api/alerts").json()
        assert len(alerts) == 1
        alert = alerts[0]
        assert {"id", "at", "kind", "mac", "details", "open", "device"} <= set(alert)
        assert alert["alert"] == "violation" and alert["count"] == 60
        assert alert["destinations"] == [{"name": "198.51.100.7", "outgoing": True,
                                          "flows": 30, "home_device": False,
                                          "gateway": False, "services": ["Telnet"]}]
        assert alert["actions"] == ["dismiss"]
        done = client.post(f"/api/alerts/{MAC}/violation/dismiss", headers=headers)
        assert done.status_code == 200
        assert not any(a["open"] for a in client.get("/api/alerts").json())
        refused = client.post(f"/api/alerts/{MAC}/quarantine/dismiss", headers=headers)
        assert refused.status_code == 409 and refused.json()["error"] == "not_dismissable"


def _shape(incidents: list[Incident]) -> list[tuple[object, ...]]:
    return [(i.kind, i.mac, i.open, i.count, i.events, i.destination_count, i.closed_by)
            for i in incidents]


def test_fed_in_pieces_the_book_tells_the_same_as_all_at_once() -> None:
    events = _Events()
    for i in range(30):
        events.add(EventKind.VIOLATION, mac=(MAC, LAMP)[i % 2], count=2,
                   evidence=[_flow(f"198.51.100.{i % 4}", 23)])
        if i == 10:
            events.add(EventKind.QUARANTINED, reason="scan")
        if i == 20:
            events.add(EventKind.ALERT_DISMISSED, mac=LAMP, alert="violation")
    devices = {MAC: _device(state=LifecycleState.QUARANTINED), LAMP: _device(LAMP)}
    book = IncidentBook()
    book.feed(events.items[:12], devices)  # the first read holds the quarantine
    for start in range(12, len(events.items), 7):
        book.feed(events.items[start:start + 7], devices)
    assert _shape(book.incidents(devices)) == _shape(build_incidents(events.items, devices))
    assert book.last_id == len(events.items)


def test_the_services_read_only_new_events_and_stay_right(tmp_path: Path) -> None:
    with portal(tmp_path) as (_client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC, name="Camera")
        st.services.devices.tell(EventKind.VIOLATION, {"count": 1}, MAC)
        assert [i.count for i in st.services.incidents()] == [1]
        for _ in range(5):
            st.services.devices.tell(EventKind.VIOLATION, {"count": 2}, MAC)
        st.services.devices.quarantine(MAC, "scan")
        every = st.store.list_events(limit=100_000)
        devices = {d.mac: d for d in st.store.list_devices()}
        assert _shape(st.services.incidents()) == _shape(build_incidents(every, devices))
        assert _shape(st.services.incidents())[0][:4] == (AlertKind.QUARANTINE, MAC, True, 11)


def test_alert_times_are_short_today() -> None:
    from mudguard.portal._pages import short_time

    assert short_time(T0, T0 + timedelta(hours=2)) == "14:02"
    assert short_time(T0, T0 + timedelta(days=1)) == "2026-05-01 14:02"


def test_a_reason_stored_as_a_key_reads_in_french_on_the_alert_and_in_the_history(
        tmp_path: Path) -> None:
    """The watcher's alert as the daemon stores it (reason, reason_key, reason_fields):
    the alert and the device's history word it from the key, so even a sentence no
    pattern knows reads in French; the API keeps the English sentence."""
    with portal(tmp_path) as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC)
        st.services.devices.tell(EventKind.VIOLATION, {
            "kind": "scan", "reason": "probed the home (worded another way)",
            "reason_key": "watch.lan_scan", "count": 1,
            "reason_fields": {"count": 8, "seconds": "10", "more": True, "examples": [
                {"protocol": 6, "remote": "192.0.2.7", "port": 23, "icmp_type": None}]},
            "evidence": [_flow("192.0.2.7", 23)]}, MAC)
        st.services.devices.quarantine(MAC, "probed the home (worded another way)")
        expected = ("a balayé le réseau de la maison : 8 adresses en 10 s "  # text_of: spaces
                    "(Telnet vers 192.0.2.7, …)")
        alerts = text_of(client.get("/alerts?lang=fr").text)
        assert f"Pourquoi : {expected}" in alerts and "Pourquoi : probed" not in alerts
        history = text_of(client.get(f"/devices/{MAC}?lang=fr").text)
        assert expected in history
        english = text_of(client.get("/alerts?lang=en").text)
        assert "scanned the home network: 8 addresses in 10 s (Telnet to 192.0.2.7, …)" \
            in english
