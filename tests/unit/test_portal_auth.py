"""Owner account, sessions, CSRF, login rate limiting and security headers."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mudguard.portal import CSP, create_app
from mudguard.portal._auth import LoginLimiter, OwnerAccount, SessionStore
from tests.unit.test_portal_support import (
    OWNER,
    PASSWORD,
    csrf_of,
    page_csrf,
    portal,
    stack,
)


def test_first_start_creates_an_argon2id_owner(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        owner_file = st.settings.state_dir / "owner.json"
        record = json.loads(owner_file.read_text())
        assert record["username"] == OWNER
        assert record["password_hash"].startswith("$argon2id$")
        assert PASSWORD not in owner_file.read_text()
        assert stat.S_IMODE(owner_file.stat().st_mode) == 0o600
        # Setup is gone once the account exists, for pages and the API.
        assert client.get("/setup", follow_redirects=False).headers["location"] == "/login"
        again = client.post("/api/setup", json={"username": "x", "password": "y" * 12})
        assert (again.status_code, again.json()["error"]) == (409, "owner_exists")


def test_everything_redirects_to_setup_then_login(tmp_path: Path) -> None:
    with portal(tmp_path, logged_in=False) as (client, _, _):
        for path in ("/", "/devices", "/alerts", "/onboard", "/report", "/devices/x"):
            response = client.get(path, follow_redirects=False)
            assert (response.status_code, response.headers["location"]) == (303, "/setup")
        assert client.get("/api/devices").json()["error"] == "not_logged_in"


def test_setup_refuses_short_or_mismatched_passwords(tmp_path: Path) -> None:
    with portal(tmp_path, logged_in=False) as (client, st, _):
        token = csrf_of(client.get("/setup").text)
        short = client.post("/setup", data={"csrf": token, "username": OWNER,
                                             "password": "short", "password_again": "short"})
        assert short.status_code == 400 and "10 to 256" in short.text
        differ = client.post("/setup", data={"csrf": token, "username": OWNER,
                                              "password": PASSWORD, "password_again": "x" * 12})
        assert differ.status_code == 400 and "differ" in differ.text
        assert not st.settings.state_dir.joinpath("owner.json").exists()


def test_session_cookie_flags(tmp_path: Path) -> None:
    with portal(tmp_path, logged_in=False) as (client, _, _):
        token = csrf_of(client.get("/setup").text)
        done = client.post("/setup", data={"csrf": token, "username": OWNER,
                                            "password": PASSWORD, "password_again": PASSWORD},
                           follow_redirects=False)
        cookie = done.headers["set-cookie"]
        assert "mg_session=" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie  # plain http on the LAN: Secure would drop it


def test_secure_cookie_over_tls(tmp_path: Path) -> None:
    with portal(tmp_path, base_url="https://portal.test", logged_in=False) as (client, _, _):
        token = csrf_of(client.get("/setup").text)
        done = client.post("/setup", data={"csrf": token, "username": OWNER,
                                            "password": PASSWORD, "password_again": PASSWORD},
                           follow_redirects=False)
        assert "Secure" in done.headers["set-cookie"]
        assert "max-age" in done.headers["strict-transport-security"]


def test_forms_without_the_csrf_token_are_refused(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        st.services.devices.observe(mac="00:11:22:33:44:55")
        for data in ({}, {"csrf": "wrong"}, {"csrf": ""}):
            response = client.post("/devices/00:11:22:33:44:55/forget", data=data)
            assert response.status_code == 403
            assert "expired" in response.text
        assert st.store.get_device("00:11:22:33:44:55") is not None
        # The login form needs its double-submit token too.
        fresh = TestClient(client.app, base_url="http://portal.test")
        assert fresh.post("/login", data={"username": OWNER, "password": PASSWORD}
                          ).status_code == 403


def test_api_changes_need_the_csrf_header(tmp_path: Path) -> None:
    with portal(tmp_path, logged_in=False) as (client, st, _):
        assert client.post("/api/setup", json={"username": OWNER, "password": PASSWORD}
                           ).status_code == 201
        login = client.post("/api/session", json={"username": OWNER, "password": PASSWORD})
        token = login.json()["csrf_token"]
        st.services.devices.observe(mac="00:11:22:33:44:55")
        refused = client.put("/api/devices/00:11:22:33:44:55/name", json={"name": "Lamp"})
        assert (refused.status_code, refused.json()["error"]) == (403, "bad_csrf")
        done = client.put("/api/devices/00:11:22:33:44:55/name", json={"name": "Lamp"},
                          headers={"X-CSRF-Token": token})
        assert done.status_code == 200 and done.json()["name"] == "Lamp"
        # Reading needs the session, not the token.
        assert client.get("/api/devices").status_code == 200


def test_login_logout_and_rate_limit(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, _, clock):
        logout = client.post("/logout", data={"csrf": page_csrf(client)},
                             follow_redirects=False)
        assert logout.headers["location"] == "/login"
        assert client.get("/devices", follow_redirects=False).headers["location"] == "/login"
        form = client.get("/login")
        token = csrf_of(form.text)
        for _ in range(5):
            bad = client.post("/login", data={"csrf": token, "username": OWNER,
                                               "password": "wrong password"})
            assert bad.status_code == 401 and "Wrong user name" in bad.text
        limited = client.post("/login", data={"csrf": token, "username": OWNER,
                                               "password": PASSWORD})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        api_limited = client.post("/api/session", json={"username": OWNER,
                                                        "password": PASSWORD})
        assert (api_limited.status_code, api_limited.json()["error"]) == (429, "rate_limited")
        clock.now += 301
        good = client.post("/login", data={"csrf": token, "username": OWNER,
                                            "password": PASSWORD})
        assert good.status_code == 200 and good.url.path == "/devices"


def test_sessions_expire_when_idle(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, _, clock):
        assert client.get("/devices").status_code == 200
        clock.now += 9 * 3600
        assert client.get("/devices", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("path", ["/login", "/devices", "/api/devices", "/openapi.json",
                                  "/static/style.css", "/nope"])
def test_security_headers_everywhere(tmp_path: Path, path: str) -> None:
    with stack(tmp_path) as st:
        client = TestClient(create_app(st.services, st.settings), base_url="http://portal.test")
        response = client.get(path)
        assert response.headers["content-security-policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


def test_no_inline_script_or_style_in_any_template() -> None:
    templates = Path(__file__).resolve().parents[2] / "src/mudguard/portal/templates"
    for template in templates.glob("*.html"):
        text = template.read_text()
        assert "<script>" not in text and "<style" not in text, template.name
        assert " style=" not in text and " onclick=" not in text, template.name
        assert "|safe" not in text and "autoescape false" not in text, template.name


def test_limiter_counts_per_client_and_overall() -> None:
    limiter = LoginLimiter(per_client=2, overall=3, window=10)
    limiter.failed("a", 0)
    assert limiter.retry_after("a", 1) == 0
    limiter.failed("a", 1)
    assert limiter.retry_after("a", 2) == pytest.approx(8)
    assert limiter.retry_after("b", 2) == 0
    limiter.failed("b", 3)
    assert limiter.retry_after("c", 3) == pytest.approx(7)  # home-wide limit reached
    assert limiter.retry_after("a", 11) == 0
    limiter.succeeded("b")
    assert "b" not in limiter.failures


def test_sessions_are_bounded_and_closed() -> None:
    sessions = SessionStore()
    tokens = [sessions.open("owner", float(i))[0] for i in range(40)]
    assert len(sessions.sessions) == 32
    assert sessions.get(tokens[0], 40.0) is None
    assert sessions.get(tokens[-1], 40.0) is not None
    sessions.close(tokens[-1])
    assert sessions.get(tokens[-1], 40.0) is None
    assert sessions.get("x" * 500, 40.0) is None


def test_owner_account_verify(tmp_path: Path) -> None:
    account = OwnerAccount(tmp_path / "owner.json")
    assert not account.verify(OWNER, PASSWORD)
    account.create(f"  {OWNER} ", PASSWORD)
    assert account.username() == OWNER
    assert account.verify(OWNER, PASSWORD)
    assert not account.verify(OWNER, PASSWORD + "x")
    assert not account.verify("other", PASSWORD)
    assert not account.verify(OWNER, "p" * 10_000)


def test_dns_rebinding_is_refused_when_hosts_are_set(tmp_path: Path) -> None:
    """A hostile page re-binding its own name to the portal's address: wrong Host, 400,
    so it cannot create the owner account before the owner does."""
    with stack(tmp_path) as st:
        settings = dataclasses.replace(st.settings, allowed_hosts=("192.0.2.1", "gateway.home"))
        app = create_app(st.services, settings)
        good = TestClient(app, base_url="http://gateway.home:8080")
        assert good.get("/setup").status_code == 200
        assert TestClient(app, base_url="http://192.0.2.1").get("/setup").status_code == 200
        evil = TestClient(app, base_url="http://attacker.example")
        assert evil.get("/setup").status_code == 400
        assert evil.post("/api/setup", json={"username": "x", "password": "y" * 12}
                         ).status_code == 400
        assert not (st.settings.state_dir / "owner.json").exists()
