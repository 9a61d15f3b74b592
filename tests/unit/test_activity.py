"""Activity that is true (issue #15): allowed connections counted from conntrack in the
daemon, blocked from the drop log, per hour and destination in the store; the portal's
chart, "Recent" grouped by destination, and a history that collapses repeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mudguard.daemon.activity import ActivityLog
from mudguard.daemon.violations import ViolationLog
from mudguard.devices import Device, EventKind
from mudguard.devices.activity import (
    OTHER,
    ActivityCount,
    activity_buckets,
    clean_destination,
    group_by_destination,
)
from mudguard.devices.service import DeviceService
from mudguard.mud import Direction
from mudguard.policy import LifecycleState
from mudguard.portal import PortalServices
from mudguard.portal._services import collapse_history
from mudguard.store import Store
from mudguard.store._schema import SCHEMA_VERSION
from mudguard.watch import FlowEvent
from mudguard.watch.conntrack import ConnEvent
from tests.unit.test_portal_support import portal, text_of

NOW = datetime(2026, 5, 1, 14, 30, tzinfo=UTC)
MAC = "00:11:22:33:44:55"
BULB = "192.0.2.10"


def _conn(src: str, dst: str, port: int = 443) -> ConnEvent:
    return ConnEvent(family=4, src=src, dst=dst, protocol=6, src_port=40000, dst_port=port)


def test_allowed_connections_are_counted_per_device_and_named_destination() -> None:
    names = {("dev-bulb", "198.51.100.21"): "V2.Broker.Lifx.co."}
    log = ActivityLog({BULB: "dev-bulb"}.get, lambda dev, addr: names.get((dev, addr)))
    for _ in range(192):
        log.on_connection(_conn(BULB, "198.51.100.21"))
    log.on_connection(_conn(BULB, "203.0.113.9"))
    log.on_connection(_conn("198.51.100.7", BULB, 80))  # to the device: counted for it
    log.on_connection(_conn("192.0.2.99", "203.0.113.9"))  # no known device: nothing
    assert log.drain() == {"dev-bulb": {"v2.broker.lifx.co": 192, "203.0.113.9": 1,
                                        "198.51.100.7": 1}}
    assert log.drain() == {}
    assert log.connections == 194


def test_activity_is_bounded_per_device_and_a_naming_bug_loses_no_count() -> None:
    def broken(_dev: str, _addr: str) -> str | None:
        raise RuntimeError("bug")

    log = ActivityLog({BULB: "d"}.get, broken, max_destinations=3, max_devices=1)
    for i in range(10):
        log.on_connection(_conn(BULB, f"203.0.113.{i}"))
    log.count("another", "x.example")  # past max_devices: dropped
    counts = log.drain()
    assert list(counts) == ["d"] and len(counts["d"]) == 4
    assert counts["d"][OTHER] == 7 and sum(counts["d"].values()) == 10


def test_the_drop_log_counts_blocked_packets_per_destination() -> None:
    drops = ViolationLog()
    for i in range(20):
        drops.add(FlowEvent(device_id="d", direction=Direction.FROM_DEVICE, family=4,
                            src=BULB, dst="198.51.100.21", protocol=6, src_port=40000 + i,
                            dst_port=443, remote_name="v2.broker.lifx.co"))
    drops.add(FlowEvent(device_id="d", direction=Direction.FROM_DEVICE, family=4, src=BULB,
                        dst="203.0.113.5", protocol=6, dst_port=23))
    tally = drops.drain()["d"]
    assert tally.count == 21
    assert tally.by_destination == {"v2.broker.lifx.co": 20, "203.0.113.5": 1}


def test_destinations_are_cleaned() -> None:
    assert clean_destination("API.Example.COM.") == "api.example.com"
    assert clean_destination("bad\nname") == OTHER and clean_destination(None) == OTHER
    assert len(clean_destination("a" * 1000)) == 255


def _count(hours_ago: float, destination: str, allowed: int = 0,
           blocked: int = 0) -> ActivityCount:
    at = NOW - timedelta(hours=hours_ago)
    return ActivityCount(hour=at.replace(minute=0, second=0, microsecond=0),
                         destination=destination, allowed=allowed, blocked=blocked, last_at=at)


def test_recent_activity_is_one_line_per_destination_with_counts_and_last_time() -> None:
    counts = [_count(h, "v2.broker.lifx.co", allowed=10) for h in (5, 3, 1)]
    counts += [_count(2, "203.0.113.5", blocked=4), _count(30, "old.example", allowed=1)]
    lines = group_by_destination(counts, since=NOW - timedelta(hours=24))
    assert [(line.destination, line.allowed, line.blocked) for line in lines] == [
        ("v2.broker.lifx.co", 30, 0), ("203.0.113.5", 0, 4)]
    assert lines[0].last_at == NOW - timedelta(hours=1)
    assert lines[0].as_dict()["last"] == (NOW - timedelta(hours=1)).isoformat()


def test_chart_buckets_count_allowed_and_blocked_in_their_slot() -> None:
    start = NOW - timedelta(hours=24)
    counts = [_count(1, "a", allowed=192), _count(23.9, "b", blocked=3),
              _count(25, "c", allowed=1000)]
    allowed, blocked = activity_buckets(counts, start=start, span=timedelta(hours=2),
                                        buckets=12)
    assert sum(allowed) == 192 and allowed[11] == 192
    assert sum(blocked) == 3 and blocked[0] == 3


def test_the_store_adds_hourly_counts_and_forgets_them_with_the_device(tmp_path: Path) -> None:
    with Store(tmp_path / "m.db") as store:
        assert store.schema_version() == SCHEMA_VERSION
        store.save_device(Device(mac=MAC, state=LifecycleState.PROFILED))
        store.add_activity(MAC, NOW, {"v2.broker.lifx.co": (5, 0)})
        store.add_activity(MAC, NOW + timedelta(minutes=10), {"v2.broker.lifx.co": (7, 2),
                                                              "quiet.example": (0, 0)})
        store.add_activity(MAC, NOW + timedelta(hours=1), {"v2.broker.lifx.co": (1, 0)})
        store.add_activity("00:11:22:33:44:66", NOW, {"x": (1, 0)})  # unknown: skipped
        rows = store.list_activity(MAC, NOW - timedelta(days=1))
        assert [(r.hour.hour, r.destination, r.allowed, r.blocked) for r in rows] == [
            (14, "v2.broker.lifx.co", 12, 2), (15, "v2.broker.lifx.co", 1, 0)]
        assert rows[0].last_at == NOW + timedelta(minutes=10)
        assert store.prune_activity(NOW + timedelta(minutes=30)) == 1
        assert store.delete_device(MAC)
        assert store.list_activity(MAC, NOW - timedelta(days=1)) == []


def test_history_collapses_repeats_of_the_same_event() -> None:
    from mudguard.devices import DeviceEvent

    def event(i: int, kind: EventKind, minutes: int, **details: Any) -> DeviceEvent:
        return DeviceEvent(id=i, at=NOW - timedelta(minutes=minutes), kind=kind, mac=MAC,
                           details=details)

    newest_first = [event(100 - i, EventKind.VIOLATION, i, count=3) for i in range(20)]
    newest_first += [event(50, EventKind.PROFILE_APPLIED, 60),
                     event(49, EventKind.JOINED, 61)]
    lines = collapse_history(newest_first)
    assert [(line.event.kind, line.count) for line in lines] == [
        (EventKind.VIOLATION, 20), (EventKind.PROFILE_APPLIED, 1), (EventKind.JOINED, 1)]
    assert lines[0].at == NOW and lines[0].first_at == NOW - timedelta(minutes=19)
    assert len(collapse_history(newest_first, limit=1)) == 1


def test_the_device_page_tells_allowed_connections_and_collapses_its_history(
        tmp_path: Path) -> None:
    from tests.unit.test_portal_pages import _serve_bulb

    with portal(tmp_path) as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC, name="Bulb")
        now = st.services.now()
        st.store.add_activity(MAC, now - timedelta(minutes=5), {"v2.broker.lifx.co": (192, 0)})
        for minutes in range(20, 0, -1):
            st.store.add_event(EventKind.VIOLATION, now - timedelta(minutes=minutes), MAC,
                               {"count": 1, "evidence": [
                                   {"direction": "out", "dst": "203.0.113.5", "dst_port": 23,
                                    "protocol": 6}]})
        st.store.add_activity(MAC, now - timedelta(minutes=1), {"203.0.113.5": (0, 20)})
        page = client.get(f"/devices/{MAC}")
        words = text_of(page.text)
        assert "192 allowed, 20 blocked connections in the last 24 h" in words
        assert "v2.broker.lifx.co 192 0" in words and "203.0.113.5 0 20" in words
        assert page.text.count("<td class=\"mono wrap\">203.0.113.5</td>") == 1
        assert "Blocked traffic ×20, last" in words
        assert page.text.count('class="bar-allowed"') == 12
        api = client.get(f"/api/devices/{MAC}").json()
        assert api["activity"]["allowed"] == 192 and api["activity"]["blocked"] == 20
        assert api["activity"]["destinations"][0]["destination"] == "203.0.113.5"


def test_the_portal_reads_allowed_counts_from_the_store(tmp_path: Path) -> None:
    with Store(tmp_path / "m.db") as store:
        store.save_device(Device(mac=MAC, state=LifecycleState.PROFILED))
        services = PortalServices(devices=DeviceService(store=store, clock=lambda: NOW))
        store.add_activity(MAC, NOW - timedelta(minutes=30), {"a.example": (192, 0)})
        buckets = services.flow_history(MAC)
        assert sum(b.allowed for b in buckets) == 192 and sum(b.blocked for b in buckets) == 0


def test_the_gateways_own_address_is_told_as_the_gateway(tmp_path: Path) -> None:
    with Store(tmp_path / "m.db") as store:
        store.save_device(Device(mac=MAC, state=LifecycleState.PROFILED))
        store.save_device(Device(mac="00:11:22:33:44:66", state=LifecycleState.TRUSTED,
                                 name="Laptop", ipv4=("192.0.2.77",)))
        services = PortalServices(devices=DeviceService(store=store, clock=lambda: NOW,
                                                        gateway_ips=("192.0.2.1",)))
        store.add_activity(MAC, NOW - timedelta(minutes=3), {"192.0.2.1": (9, 0),
                                                             "192.0.2.77": (0, 2)})
        lines = {line.destination: line for line in services.recent_activity(MAC)}
        assert lines["192.0.2.1"].gateway and lines["192.0.2.1"].allowed == 9
        assert lines["Laptop"].blocked == 2 and not lines["Laptop"].gateway


def test_a_version_2_database_gains_the_activity_table_and_keeps_its_devices(
        tmp_path: Path) -> None:
    import sqlite3

    from mudguard.store._schema import MIGRATIONS

    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + MIGRATIONS[1] + "; PRAGMA user_version = 2;")
    db.execute("INSERT INTO devices (mac, state) VALUES (?, 'profiled')", (MAC,))
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION and store.get_device(MAC) is not None
        store.add_activity(MAC, NOW, {"a.example": (1, 0)})
        assert [r.allowed for r in store.list_activity(MAC, NOW - timedelta(hours=1))] == [1]
