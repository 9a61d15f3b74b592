"""Hostile owner requests (the control socket's and the portal's): wrong types, huge
numbers, lone surrogates and control characters get a clear error or are cleaned, and
never reach SQLite as something it cannot store (a crash that loses the request)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mudguard.devices.requests import RequestError, handle_request
from mudguard.devices.service import DeviceService
from mudguard.errors import MudguardError
from mudguard.store import Store
from tests.unit.test_portal_support import mud_document, portal

MAC = "02:00:00:00:00:01"
OTHER = "02:00:00:00:00:02"


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[DeviceService]:
    store = Store(tmp_path / "mudguard.db")
    try:
        service = DeviceService(store=store)
        service.observe(mac=MAC, ip="192.0.2.10")
        yield service
    finally:
        store.close()


@pytest.mark.parametrize("request_", [
    {"op": "events", "limit": 2 ** 70},
    {"op": "events", "limit": -(2 ** 70)},
    {"op": "add", "mac": OTHER, "model": "\ud800"},
    {"op": "add", "mac": OTHER, "manufacturer": "Acme\udcff"},
    {"op": "add", "mac": OTHER, "name": "\ud800"},
    {"op": "quarantine", "mac": MAC, "reason": "\udcff"},
    {"op": "quarantine", "mac": MAC, "reason": "x\x1b[2J\nforged log line"},
    {"op": "grant", "mac": MAC, "kind": "service", "host": "\ud800.example.com",
     "port": 443, "protocol": 6},
    {"op": "grant", "mac": MAC, "kind": "service", "host": "a.example.com", "port": 2 ** 70,
     "protocol": 6},
    {"op": "revoke", "mac": MAC, "grant_id": 2 ** 70},
    {"op": "device", "mac": "\ud800"},
])
def test_hostile_request_is_a_clear_error_or_cleaned(svc: DeviceService,
                                                    request_: dict[str, Any]) -> None:
    try:
        result = handle_request(svc, request_)
    except MudguardError as exc:
        assert exc.key and str(exc)
        return
    device = result.get("device")
    if device is not None:  # accepted: only printable text was stored
        for key in ("model", "manufacturer", "name"):
            assert device.get(key) is None or device[key].isprintable(), (key, device)
        assert all(r.isprintable() for r in device.get("reasons", ())), device
    assert isinstance(result, dict)


def test_refused_add_leaves_no_device(svc: DeviceService) -> None:
    with pytest.raises(RequestError):
        handle_request(svc, {"op": "add", "mac": OTHER, "model": "\ud800"})
    assert svc.store.get_device(OTHER) is None


def test_portal_api_onboard_with_surrogates_is_not_a_500(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = st.server.url("/bulb.json")
        st.server.put_json("/bulb.json", mud_document(url))
        login = client.post("/api/session", json={"username": "owner",
                                                   "password": "correct horse battery staple"})
        headers = {"X-CSRF-Token": login.json()["csrf_token"],
                   "Content-Type": "application/json"}
        body = ('{"mud_url": "' + url + '", "mac": "' + OTHER + '", "model": "\\ud800", '
                '"manufacturer": "Acme\\udcff", "name": "Hall\\ud83d"}')
        answer = client.post("/api/onboard", headers=headers, content=body.encode())
        assert answer.status_code == 422, answer.text
        assert set(answer.json()["fields"]) == {"body.name", "body.manufacturer", "body.model"}
        assert st.store.get_device(OTHER) is None
