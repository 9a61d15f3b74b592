"""The REST API: same services as the pages, stable error keys, an OpenAPI schema, and
schemathesis fuzzing against that schema (no 500s, logged in and not)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from mudguard.devices import EventKind
from mudguard.discovery.qr import QrRecord
from mudguard.labels import label_png
from mudguard.portal import create_app
from tests.unit.test_portal_support import OWNER, PASSWORD, mud_document, portal, stack

MAC = "00:11:22:33:44:55"


def _api_login(client: TestClient) -> dict[str, str]:
    login = client.post("/api/session", json={"username": OWNER, "password": PASSWORD})
    assert login.status_code == 200
    return {"X-CSRF-Token": login.json()["csrf_token"]}


def test_openapi_schema_lists_the_api(tmp_path: Path) -> None:
    with portal(tmp_path, logged_in=False) as (client, _, _):
        schema = client.get("/openapi.json").json()
        paths = set(schema["paths"])
        for path in ("/api/devices", "/api/devices/{mac}", "/api/alerts", "/api/onboard",
                     "/api/onboard/preview", "/api/labels/read", "/api/report",
                     "/api/guidance", "/api/session", "/api/devices/{mac}/forget",
                     "/api/devices/{mac}/grants", "/api/devices/{mac}/release"):
            assert path in paths, path
        assert not any(p.startswith(("/devices", "/login")) for p in paths)  # pages hidden


def test_api_onboarding_flow_and_errors(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        headers = _api_login(client)
        url = st.server.url("/bulb.json")
        st.server.put_json("/bulb.json", mud_document(url))
        label = client.post("/api/labels/read", headers=headers, files={
            "image": ("l.png", label_png(QrRecord(mud_url=url, mac=MAC)), "image/png")})
        assert label.json() == {"mud_url": url, "company": None, "product": None,
                                "model": None, "mac": MAC, "other": {}}
        preview = client.post("/api/onboard/preview", json={"mud_url": url}, headers=headers)
        body = preview.json()
        assert body["usable"] and body["signature"] == "unsigned"
        assert "may send to api.example.com (HTTPS), connections opened by the device" in \
            body["allowed"]["from-device"]
        assert body["report"]["destinations"] == [
            {"name": "api.example.com", "company": "maker", "country": "unknown"}]
        assert client.get("/api/devices").json() == []
        done = client.post("/api/onboard", json={"mud_url": url, "mac": MAC, "name": "Bulb"},
                           headers=headers)
        assert done.status_code == 201
        wifi = done.json()["wifi"]
        assert wifi["ssid"] == "mudguard-home" and wifi["qr_payload"].startswith("WIFI:T:WPA;")
        assert wifi["passphrase"] in st.psk_file.read_text()
        devices = client.get("/api/devices").json()
        assert [(d["mac"], d["state"], d["name"]) for d in devices] == [(MAC, "profiled", "Bulb")]
        detail = client.get(f"/api/devices/{MAC}").json()
        assert detail["allowed"]["to-device"] and detail["grants"] == []
        errors = [
            (client.post("/api/onboard", json={"mud_url": "http://x.example/m", "mac": MAC},
                         headers=headers), 400, "bad_mud_url"),
            (client.post("/api/onboard", json={"mud_url": url, "mac": "nope"},
                         headers=headers), 400, "bad_mac"),
            (client.get("/api/devices/00:00:00:00:00:99"), 404, "device_not_found"),
            (client.post(f"/api/devices/{MAC}/keep-quarantined", headers=headers), 409,
             "not_quarantined"),
            (client.post("/api/labels/read", headers=headers,
                         files={"image": ("x", b"junk", "image/png")}), 400, "image_unreadable"),
            (client.post(f"/api/devices/{MAC}/grants", json={"kind": "service"},
                         headers=headers), 400, "bad_grant"),
            (client.post(f"/api/devices/{MAC}/grants", json={"kind": "everything"},
                         headers=headers), 422, "bad_input"),
        ]
        for response, status, key in errors:
            assert (response.status_code, response.json()["error"]) == (status, key), \
                response.json()
            assert response.json()["message"]


def test_api_grants_alerts_and_forget(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        headers = _api_login(client)
        url = st.server.url("/bulb.json")
        st.server.put_json("/bulb.json", mud_document(url))
        st.services.onboard(url=url, mac=MAC)
        grant = client.post(f"/api/devices/{MAC}/grants", headers=headers, json={
            "kind": "service", "host": "updates.example.com", "port": 443, "protocol": "tcp",
            "expires_in_seconds": 3600})
        assert grant.status_code == 201 and grant.json()["expires"] is not None
        gid = grant.json()["id"]
        assert client.delete(f"/api/devices/{MAC}/grants/{gid}", headers=headers
                             ).status_code == 204
        st.store.add_event(EventKind.VIOLATION, st.services.now(), MAC, {"peer": "198.51.100.1"})
        st.services.devices.quarantine(MAC, "scan")
        alerts = client.get("/api/alerts").json()
        assert alerts[0]["open"] and alerts[0]["device"]["state"] == "quarantined"
        released = client.post(f"/api/devices/{MAC}/release", headers=headers)
        assert released.json()["state"] == "profiled"
        assert not any(a["open"] for a in client.get("/api/alerts").json())
        flows = client.get(f"/api/devices/{MAC}/flows").json()
        assert sum(b["blocked"] for b in flows) == 1
        gone = client.post(f"/api/devices/{MAC}/forget", json={"transfer": False},
                           headers=headers)
        assert gone.json()["key_revoked"] is True and gone.json()["steps"]
        assert client.get("/api/devices").json() == []
        assert MAC not in st.psk_file.read_text()
        assert client.delete("/api/session", headers=headers).status_code == 204
        assert client.get("/api/devices").status_code == 401


def test_guidance_api_in_both_languages(tmp_path: Path) -> None:
    with portal(tmp_path, logged_in=False) as (client, _, _):
        for lang, privacy in (("en", "Office of the Privacy Commissioner of Canada"),
                              ("fr", "Commissariat à la protection de la vie privée du Canada")):
            body = client.get("/api/guidance", params={"lang": lang}).json()
            assert body["contacts"][0]["name"] == privacy
            assert set(body["advice"]) == {"privacy", "security", "functionality"}
            for row in body["advice"].values():
                assert set(row) == {"before_purchase", "after_purchase", "at_problem",
                                    "end_of_use"}


# -- schemathesis --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    with stack(tmp) as st:
        app = create_app(st.services, st.settings)
        client = TestClient(app, base_url="http://portal.test")
        client.post("/api/setup", json={"username": OWNER, "password": PASSWORD})
        login = client.post("/api/session", json={"username": OWNER, "password": PASSWORD})
        url = st.server.url("/bulb.json")
        st.server.put_json("/bulb.json", mud_document(url))
        st.services.onboard(url=url, mac=MAC)
        yield {"app": app, "cookies": {"mg_session": client.cookies["mg_session"]},
               "headers": {"X-CSRF-Token": login.json()["csrf_token"]}}


def _operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation: Any, examples: int, **call: Any) -> None:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(**call)
        assert response.status_code < 500, (case.method, case.path, case.query,
                                             case.body, response.text[:300])
        if response.status_code >= 400 and response.headers.get("content-type", [""])[0] \
                .startswith("application/json"):
            assert "error" in response.json(), response.text[:300]

    run()


def test_api_fuzz_logged_in_no_server_errors(api_env: dict[str, Any]) -> None:
    operations = _operations(api_env["app"])
    assert len(operations) >= 20
    for operation in operations:
        if (operation.method.upper(), operation.path) == ("DELETE", "/api/session"):
            continue  # logging out would turn the rest into 401s; fuzzed anonymously below
        _fuzz(operation, 25, headers=api_env["headers"], cookies=api_env["cookies"])
    # The session survived the fuzzing: the calls above really were the owner's.
    client = TestClient(api_env["app"], base_url="http://portal.test",
                        cookies=api_env["cookies"])
    assert client.get("/api/devices").status_code == 200


def test_api_fuzz_anonymous_no_server_errors(api_env: dict[str, Any]) -> None:
    for operation in _operations(api_env["app"]):
        _fuzz(operation, 8)


def test_changes_run_in_the_daemons_worker(tmp_path: Path) -> None:
    """With ``run`` (the daemon's single service worker), every owner change executes
    there, serialised with discovery and the watcher; reads stay in the portal."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="svc")
    threads: list[str] = []

    def run(change: Any) -> Any:
        def traced() -> Any:
            threads.append(threading.current_thread().name)
            return change()

        return worker.submit(traced).result()

    try:
        with portal(tmp_path) as (client, st, _):
            st.services.run = run
            headers = _api_login(client)
            url = st.server.url("/bulb.json")
            st.server.put_json("/bulb.json", mud_document(url))
            assert client.post("/api/onboard", json={"mud_url": url, "mac": MAC},
                               headers=headers).status_code == 201
            assert client.put(f"/api/devices/{MAC}/name", json={"name": "Lamp"},
                              headers=headers).status_code == 200
            assert client.post(f"/api/devices/{MAC}/grants", json={"kind": "lan"},
                               headers=headers).status_code == 201
            assert client.post(f"/api/devices/{MAC}/forget", json={},
                               headers=headers).status_code == 200
            # onboard (add + key id), rename, grant, forget
            assert len(threads) == 5 and all(name.startswith("svc") for name in threads)
    finally:
        worker.shutdown(wait=True)


def test_label_maker_api(tmp_path: Path) -> None:
    from mudguard.labels import read_label

    with portal(tmp_path) as (client, _, _):
        params = {"mud_url": "https://mud.example.com/lb-2000.json", "mac": "00-11-22-33-44-55",
                  "company": "Example <Lighting>", "model": "LB-2000", "format": "png"}
        png = client.get("/api/labels/make", params=params)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert "attachment" in png.headers["content-disposition"]
        record = read_label(png.content)
        assert (record.mac, record.company) == (MAC, "Example <Lighting>")
        svg = client.get("/api/labels/make", params={**params, "format": "svg"})
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert "Example &lt;Lighting&gt;" in svg.text
        bad = client.get("/api/labels/make", params={**params, "mud_url": "http://x.example/m"})
        assert (bad.status_code, bad.json()["error"]) == (400, "qr_bad_mud_url")
