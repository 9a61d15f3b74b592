"""The owner's time zone (issue #15): a setting (store, ``mudguard settings``, the settings
page) checked against ``zoneinfo.available_timezones()``, the system's zone by default;
the pages show times in it and a daily schedule given without a zone (a bedtime pause)
is read in it. The schedule's window across daylight-saving changes (pure)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mudguard.devices import EventKind, Settings
from mudguard.devices.wiring import check_time_zone, local_zone, owner_zone
from mudguard.policy import DailyWindow, GrantKind
from mudguard.store import Store
from tests.unit.test_portal_support import page_csrf, portal, text_of

MAC = "02:00:00:00:00:15"


def test_a_time_zone_is_one_the_system_knows() -> None:
    assert check_time_zone(" Europe/Paris ") == "Europe/Paris"
    for bad in ("Mars/Olympus", "", "../../etc/passwd", "europe/paris", "UTC+1", "x" * 300):
        with pytest.raises(ValueError, match="not a time zone"):
            check_time_zone(bad)
    assert owner_zone(Settings()) == local_zone()
    assert owner_zone(Settings(time_zone="Asia/Tokyo")) == "Asia/Tokyo"


def test_the_store_keeps_the_zone_and_forgets_one_it_no_longer_knows(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with Store(path) as store:
        assert store.get_settings().time_zone is None  # the system's by default
        store.save_settings(Settings(time_zone="America/New_York"))
        assert store.get_settings().time_zone == "America/New_York"
    with sqlite3.connect(path) as db:  # a zone the system's tzdata dropped, or spoiled
        db.execute("UPDATE settings SET value = 'Atlantis/Capital' WHERE key = 'time_zone'")
    with Store(path) as store:
        assert store.get_settings().time_zone is None


def test_the_settings_page_sets_the_zone_and_the_pages_show_times_in_it(
        tmp_path: Path) -> None:
    from tests.unit.test_portal_pages import _serve_bulb

    with portal(tmp_path) as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC, name="Tablet")
        st.store.add_event(EventKind.RELEASED, datetime(2026, 7, 1, 12, 5, tzinfo=UTC), MAC,
                           {"to": "profiled"})
        token = page_csrf(client, "/settings")
        form = {"csrf": token, "home_default": "internet", "lang": "en"}
        tokyo = client.post("/settings", data={**form, "time_zone": "Asia/Tokyo"})
        assert tokyo.status_code == 200 and "Settings saved." in tokyo.text
        assert st.store.get_settings().time_zone == "Asia/Tokyo"
        assert 'value="Asia/Tokyo"' in tokyo.text and "Times are shown in Asia/Tokyo" in \
            text_of(tokyo.text)
        device = text_of(client.get(f"/devices/{MAC}").text)
        assert "2026-07-01 21:05" in device and "2026-07-01 12:05" not in device  # UTC+9
        bad = client.post("/settings?lang=fr", data={**form, "time_zone": "Mars/Olympus"})
        assert bad.status_code == 400
        assert "Mars/Olympus\u202f» n’est pas un fuseau horaire" in bad.text
        assert st.store.get_settings().time_zone == "Asia/Tokyo"  # nothing saved
        bedtime = client.post(f"/devices/{MAC}/pause", data={
            "csrf": token, "for": "schedule", "from": "21:30", "to": "07:00"})
        assert bedtime.status_code == 200
        (scheduled,) = st.services.devices.active_grants(MAC)
        assert scheduled.grant.schedule == "21:30-07:00 Asia/Tokyo"  # the owner's evening
        system = client.post("/settings", data={**form, "time_zone": ""})
        assert system.status_code == 200 and st.store.get_settings().time_zone is None
        assert st.services.zone() == local_zone()
        unchanged = client.post("/settings", data=form)  # no field: the zone stays
        assert unchanged.status_code == 200 and st.store.get_settings().time_zone is None


def test_the_cli_sets_the_zone_and_a_schedule_without_one_is_read_in_it(
        tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mudguard.cli.main import app
    from mudguard.devices.service import DeviceService

    db = tmp_path / "home.db"
    with Store(db) as store:
        DeviceService(store=store).observe(mac=MAC, ip="192.0.2.15")
    run = CliRunner()
    shown = run.invoke(app, ["settings", "--db", str(db)])
    assert shown.exit_code == 0 and f"time zone:      {local_zone()} (the gateway's own)" \
        in shown.output
    refused = run.invoke(app, ["settings", "--time-zone", "Mars/Olympus", "--db", str(db)])
    assert refused.exit_code != 0 and "not a time zone" in " ".join(refused.output.split())
    done = run.invoke(app, ["settings", "--time-zone", "Pacific/Auckland", "--db", str(db)])
    assert done.exit_code == 0 and "time zone:      Pacific/Auckland\n" in done.output
    grant = run.invoke(app, ["device", "grant", MAC, "--pause", "--schedule", "21:30-07:00",
                             "--db", str(db)])
    assert grant.exit_code == 0, grant.output
    with Store(db) as store:
        (record,) = store.list_grants(MAC)
        assert record.grant.kind is GrantKind.PAUSE
        assert record.grant.schedule == "21:30-07:00 Pacific/Auckland"
        assert store.get_settings().time_zone == "Pacific/Auckland"
    back = run.invoke(app, ["settings", "--time-zone", "system", "--db", str(db)])
    assert back.exit_code == 0
    with Store(db) as store:
        assert store.get_settings().time_zone is None


def _minutes_held(window: DailyWindow, start: datetime, hours: int = 24) -> int:
    """How many minutes from ``start`` (UTC) on the window holds, minute by minute."""
    return sum(window.holds(start + timedelta(minutes=m)) for m in range(hours * 60))


def test_a_bedtime_follows_the_owners_clock_across_daylight_saving_changes() -> None:
    """21:30-07:00 in Paris lasts 9 h 30 on an ordinary night, 8 h 30 on the night the
    clocks go forward (29 March 2026) and 10 h 30 on the night they go back (25 October
    2026): it starts and ends at the owner's 21:30 and 07:00 each time."""
    bedtime = DailyWindow.parse("21:30-07:00 Europe/Paris")
    assert _minutes_held(bedtime, datetime(2026, 12, 1, 11, 0, tzinfo=UTC)) == 570
    assert _minutes_held(bedtime, datetime(2026, 3, 28, 11, 0, tzinfo=UTC)) == 510
    assert _minutes_held(bedtime, datetime(2026, 10, 24, 11, 0, tzinfo=UTC)) == 630
    # the edges, in UTC: 21:30 CET is 20:30 UTC; 07:00 CEST (after the change) 05:00 UTC
    assert not bedtime.holds(datetime(2026, 3, 28, 20, 29, tzinfo=UTC))
    assert bedtime.holds(datetime(2026, 3, 28, 20, 30, tzinfo=UTC))
    assert bedtime.holds(datetime(2026, 3, 29, 4, 59, tzinfo=UTC))
    assert not bedtime.holds(datetime(2026, 3, 29, 5, 0, tzinfo=UTC))
    # back in October: starts 21:30 CEST (19:30 UTC), ends 07:00 CET (06:00 UTC)
    assert bedtime.holds(datetime(2026, 10, 24, 19, 30, tzinfo=UTC))
    assert bedtime.holds(datetime(2026, 10, 25, 5, 59, tzinfo=UTC))
    assert not bedtime.holds(datetime(2026, 10, 25, 6, 0, tzinfo=UTC))


def test_a_window_in_the_hour_that_is_skipped_or_repeated() -> None:
    """02:15-02:45 does not happen in Paris on 29 March 2026 (02:00 → 03:00) and happens
    twice on 25 October 2026 (03:00 → 02:00): the window follows the wall clock."""
    night = DailyWindow.parse("02:15-02:45 Europe/Paris")
    assert _minutes_held(night, datetime(2026, 3, 28, 12, 0, tzinfo=UTC)) == 0
    assert _minutes_held(night, datetime(2026, 10, 24, 12, 0, tzinfo=UTC)) == 60
    assert _minutes_held(night, datetime(2026, 12, 1, 12, 0, tzinfo=UTC)) == 30
    # a zone with a half-hour daylight saving (Lord Howe Island), for good measure
    howe = DailyWindow.parse("21:30-07:00 Australia/Lord_Howe")
    assert _minutes_held(howe, datetime(2026, 4, 4, 0, 0, tzinfo=UTC)) == 600  # 30 min back


def test_a_new_zone_moves_the_schedules_read_in_the_old_one(tmp_path: Path) -> None:
    """Bedtime stays the owner's evening when they correct their zone: a schedule read in
    the previous zone keeps its times of day in the new one (CLI requests and the settings
    page); a schedule given with a zone of its own stays as it is."""
    from mudguard.devices.requests import handle_request
    from mudguard.devices.service import DeviceService
    from tests.unit.test_portal_pages import _serve_bulb

    with Store(tmp_path / "m.db") as store:
        svc = DeviceService(store=store)
        svc.observe(mac=MAC, ip="192.0.2.15")
        handle_request(svc, {"op": "settings", "time_zone": "Europe/Paris"})
        for schedule in ("21:30-07:00", "06:00-07:00 Asia/Tokyo"):
            handle_request(svc, {"op": "grant", "mac": MAC, "kind": "pause",
                                 "schedule": schedule})
        handle_request(svc, {"op": "settings", "time_zone": "America/New_York"})
        assert [g.grant.schedule for g in store.list_grants(MAC)] == [
            "21:30-07:00 America/New_York", "06:00-07:00 Asia/Tokyo"]
        handle_request(svc, {"op": "settings", "home_default": "lan"})  # zone unchanged
        assert store.list_grants(MAC)[0].grant.schedule == "21:30-07:00 America/New_York"
    (tmp_path / "p").mkdir()
    with portal(tmp_path / "p") as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC, name="Tablet")
        token = page_csrf(client, "/settings")
        form = {"csrf": token, "home_default": "internet", "lang": "en"}
        client.post("/settings", data={**form, "time_zone": "Europe/Lisbon"})
        client.post(f"/devices/{MAC}/pause", data={
            "csrf": token, "for": "schedule", "from": "22:00", "to": "06:30"})
        client.post("/settings", data={**form, "time_zone": "Europe/Berlin"})
        (scheduled,) = st.services.devices.active_grants(MAC)
        assert scheduled.grant.schedule == "22:00-06:30 Europe/Berlin"
