"""Owner controls (issue #15): the settings page, the password change, and pausing a
device's Internet now or at bedtime, over the real stack (SQLite store, device service,
portal pages)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mudguard.devices import HomeDefault
from mudguard.mud import Forwarding
from mudguard.policy import (
    DailyWindow,
    DeviceFacts,
    Grant,
    GrantKind,
    HomeContext,
    LifecycleState,
    PeerKind,
    decide,
)
from mudguard.portal._auth import OwnerAccount
from tests.unit.test_portal_support import PASSWORD, page_csrf, portal, text_of

MAC = "02:00:00:00:00:15"
NEW_PASSWORD = "a much longer passphrase"


def test_settings_change_each_setting_and_need_the_csrf_token(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        page = client.get("/settings")
        assert page.status_code == 200
        words = text_of(page.text)
        assert "test-home" in words or st.services.wifi_name() in words
        token = page_csrf(client, "/settings")
        refused = client.post("/settings", data={"csrf": "forged", "home_default": "lan"})
        assert refused.status_code == 403
        assert st.store.get_settings().home_default is HomeDefault.INTERNET
        saved = client.post("/settings", data={"csrf": token, "home_default": "lan",
                                               "signed_only": "1", "lang": "fr",
                                               "learning_days": "7", "lock_automatically": "1"})
        assert saved.status_code == 200 and "Réglages enregistrés." in saved.text
        settings = st.store.get_settings()
        assert settings.home_default is HomeDefault.LAN and not settings.allow_unsigned
        assert settings.learning_days == 7.0 and settings.lock_automatically
        assert 'value="7"' in saved.text
        assert client.cookies.get("mg_lang") == "fr"
        back = client.post("/settings", data={"csrf": token, "home_default": "internet",
                                              "lang": "en"})
        assert back.status_code == 200 and "Settings saved." in back.text
        settings = st.store.get_settings()
        assert settings.home_default is HomeDefault.INTERNET and settings.allow_unsigned
        assert not settings.lock_automatically and settings.learning_days == 7.0
        bad = client.post("/settings", data={"csrf": token, "home_default": "everything"})
        assert bad.status_code == 400
        for days in ("-1", "366", "two"):
            refused = client.post("/settings", data={"csrf": token, "home_default": "lan",
                                                     "learning_days": days})
            assert refused.status_code == 400
        assert st.store.get_settings().home_default is HomeDefault.INTERNET


def test_password_change_needs_the_current_password(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        token = page_csrf(client, "/settings")
        owner = OwnerAccount(st.settings.state_dir / "owner.json")
        wrong = client.post("/settings/password", data={
            "csrf": token, "current_password": "not the password at all",
            "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD})
        assert wrong.status_code == 400 and "The current password is wrong." in wrong.text
        forged = client.post("/settings/password", data={
            "csrf": "forged", "current_password": PASSWORD,
            "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD})
        assert forged.status_code == 403
        username = owner.username() or ""
        assert owner.verify(username, PASSWORD)
        done = client.post("/settings/password", data={
            "csrf": token, "current_password": PASSWORD,
            "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD})
        assert done.status_code == 200 and "Password changed." in done.text
        assert owner.verify(username, NEW_PASSWORD) and not owner.verify(username, PASSWORD)
        assert (owner.path.stat().st_mode & 0o777) == 0o600
        for _ in range(5):  # wrong current passwords count against the login limit
            client.post("/settings/password", data={
                "csrf": token, "current_password": "guess guess guess",
                "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD})
        limited = client.post("/settings/password", data={
            "csrf": token, "current_password": NEW_PASSWORD,
            "new_password": PASSWORD, "new_password_again": PASSWORD})
        assert limited.status_code == 429


def _facts(state: LifecycleState = LifecycleState.DEFAULT) -> DeviceFacts:
    return DeviceFacts(mac=MAC, ipv4=("192.0.2.15",), state=state)


def test_a_pause_narrows_the_policy_internet_dropped_lan_kept() -> None:
    now = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
    context = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",))
    for state in (LifecycleState.DEFAULT, LifecycleState.TRUSTED):
        before = decide(_facts(state), None, [], context, now=now)
        paused = decide(_facts(state), None, [Grant(kind=GrantKind.PAUSE)], context,
                        home_default="lan", now=now)
        drops = [r for r in paused.rules if r.origin == "grant/pause"]
        assert drops and all(r.action is Forwarding.DROP and r.peer is PeerKind.INTERNET
                             for r in drops)
        # after the baseline, before anything that accepts
        first_accept = next(i for i, r in enumerate(paused.rules)
                            if r.origin not in ("grant/pause",) and
                            not r.origin.startswith("baseline"))
        assert paused.rules.index(drops[0]) < first_accept
        assert any(r.origin.startswith("baseline") for r in paused.rules)
        assert "paused by the owner: no Internet" in paused.reasons
        assert "paused by the owner: no Internet" not in before.reasons


def test_a_bedtime_window_holds_across_midnight_in_its_zone() -> None:
    window = DailyWindow.parse("21:30-07:00 Europe/Paris")
    assert str(window) == "21:30-07:00 Europe/Paris"
    paris_23h = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)  # 23:00 in Paris (UTC+1)
    paris_noon = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
    paris_6h = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
    assert window.holds(paris_23h) and window.holds(paris_6h)
    assert not window.holds(paris_noon)
    grant = Grant(kind=GrantKind.PAUSE, schedule=str(window))
    assert grant.active(paris_23h) and not grant.active(paris_noon)
    assert not grant.expired(paris_noon)
    for bad in ("25:00-07:00", "21:30", "07:00-07:00", "21:30-07:00 Mars/Olympus"):
        try:
            DailyWindow.parse(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_pause_now_and_at_bedtime_from_the_device_page(tmp_path: Path) -> None:
    from tests.unit.test_portal_pages import _serve_bulb

    clock_now = [datetime(2026, 12, 2, 12, 0, tzinfo=UTC)]
    with portal(tmp_path) as (client, st, _):
        st.services.devices.clock = lambda: clock_now[0]
        st.services.time_zone = "Europe/Paris"
        url = _serve_bulb(st)
        st.services.onboard(url=url, mac=MAC, name="Tablet")
        token = page_csrf(client, f"/devices/{MAC}")
        page = client.get(f"/devices/{MAC}")
        assert "Pause the Internet" in text_of(page.text)
        now = client.post(f"/devices/{MAC}/pause", data={"csrf": token, "for": "1h"})
        assert now.status_code == 200 and "Internet paused" in text_of(now.text)
        (paused,) = st.services.devices.active_grants(MAC)
        assert paused.grant.kind is GrantKind.PAUSE
        assert paused.grant.expires == clock_now[0] + timedelta(hours=1)
        st.services.revoke_grant(MAC, paused.id)
        bedtime = client.post(f"/devices/{MAC}/pause", data={
            "csrf": token, "for": "schedule", "from": "21:30", "to": "07:00"})
        assert bedtime.status_code == 200
        assert "every day 21:30-07:00 Europe/Paris" in text_of(bedtime.text)
        (scheduled,) = st.services.devices.active_grants(MAC)
        assert scheduled.grant.schedule == "21:30-07:00 Europe/Paris"
        # outside its window it is not expired: upkeep keeps it
        assert st.services.devices.expire_grants() == 0
        assert len(st.services.devices.active_grants(MAC)) == 1
        bad = client.post(f"/devices/{MAC}/pause", data={
            "csrf": token, "for": "schedule", "from": "9pm", "to": "07:00"})
        assert bad.status_code == 400
        forged = client.post(f"/devices/{MAC}/pause", data={"csrf": "x", "for": "1h"})
        assert forged.status_code == 403


def test_the_api_takes_a_pause_with_a_schedule(tmp_path: Path) -> None:
    from tests.unit.test_portal_pages import _serve_bulb

    with portal(tmp_path) as (client, st, _):
        st.services.time_zone = "UTC"
        st.services.onboard(url=_serve_bulb(st), mac=MAC, name="Tablet")
        token = page_csrf(client)
        made = client.post(f"/api/devices/{MAC}/grants", json={
            "kind": "pause", "schedule": "21:30-07:00"}, headers={"X-CSRF-Token": token})
        assert made.status_code == 201, made.text
        assert made.json()["schedule"] == "21:30-07:00 UTC"


def test_check_before_buying_reads_the_box_label(tmp_path: Path) -> None:
    """Before buying, the owner photographs the QR label: no URL typed by hand."""
    from mudguard.discovery.qr import QrRecord
    from mudguard.labels import label_png
    from tests.unit.test_portal_pages import _serve_bulb

    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st)
        token = page_csrf(client, "/report")
        label = label_png(QrRecord(mud_url=url, company="Example Lighting", model="LB-2000"))
        read = client.post("/report/label", data={"csrf": token},
                           files={"label": ("box.png", label, "image/png")},
                           follow_redirects=False)
        assert read.status_code == 303 and read.headers["location"].startswith("/report?")
        report = client.get(read.headers["location"])
        assert report.status_code == 200 and "api.example.com" in text_of(report.text)
        assert st.store.list_devices() == []  # looking grants nothing
        not_a_label = client.post("/report/label", data={"csrf": token},
                                  files={"label": ("cat.png", b"\x89PNG not really",
                                                   "image/png")})
        assert not_a_label.status_code == 400 and 'role="alert"' in not_a_label.text
        forged = client.post("/report/label", data={"csrf": "forged"},
                             files={"label": ("box.png", label, "image/png")})
        assert forged.status_code == 403


def test_check_before_buying_by_picking_a_model_from_a_repository(tmp_path: Path) -> None:
    """The gateway's secondary repositories list the devices they know: the owner picks
    one instead of typing its URL."""
    import json

    from mudguard.devices.repository import FolderRepository
    from tests.unit.test_portal_pages import _serve_bulb

    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st)
        folder = tmp_path / "repository"
        folder.mkdir()
        (folder / "index.json").write_text(json.dumps({"entries": [
            {"manufacturer": "Example Lighting", "model": "LB-2000", "mud_url": url},
            {"manufacturer": "Example Lighting", "model": "Old lamp", "oui": "02:00:5e"},
        ]}))
        st.services.devices.repositories = (FolderRepository(folder),)
        page = client.get("/report")
        assert f'<option value="{url}"' in page.text and "Example Lighting LB-2000" in page.text
        assert "Old lamp" not in page.text  # no MUD URL: nothing to check
        report = client.get("/report", params={"mud_url": url})
        assert "api.example.com" in text_of(report.text)
        (folder / "index.json").write_text("not json")  # a broken repository: no list
        assert client.get("/report").status_code == 200


def test_the_device_page_says_the_internet_is_paused() -> None:
    from mudguard.portal._allowance import describe_allowance
    from mudguard.portal._i18n import translate

    now = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
    context = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",))
    policy = decide(_facts(), None, [Grant(kind=GrantKind.PAUSE)], context, now=now)
    for lang, words in (("en", "never: the Internet, while you pause it"),
                        ("fr", "jamais\u202f: Internet, tant que vous le mettez en pause")):
        allowance = describe_allowance(policy, functools.partial(translate, lang))
        blocked = [i for g in allowance.groups if g.key == "blocked" for i in g.items]
        assert any(i.startswith(words) for i in blocked), blocked


def test_the_cli_pauses_at_bedtime(tmp_path: Path) -> None:
    """``mudguard device grant MAC --pause --schedule 21:30-07:00``: same grant, same words."""
    from typer.testing import CliRunner

    from mudguard.cli.main import app
    from mudguard.devices.service import DeviceService
    from mudguard.store import Store

    db = tmp_path / "home.db"
    with Store(db) as store:
        DeviceService(store=store).observe(mac=MAC, ip="192.0.2.15")
    result = CliRunner().invoke(app, ["device", "grant", MAC, "--pause", "--schedule",
                                      "21:30-07:00 Europe/Paris", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "may not talk to the Internet (paused) daily 21:30-07:00 Europe/Paris" in \
        " ".join(result.output.split())
    bad = CliRunner().invoke(app, ["device", "grant", MAC, "--pause", "--schedule", "late",
                                   "--db", str(db)])
    assert bad.exit_code != 0
    with Store(db) as store:
        (record,) = store.list_grants(MAC)
        assert record.grant.kind is GrantKind.PAUSE
        assert record.grant.schedule == "21:30-07:00 Europe/Paris"
