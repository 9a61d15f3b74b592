"""Owner requests: validation, dispatch, and the CLI talking to a live control socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.devices.requests import RequestError, handle_request
from mudguard.devices.service import DeviceNotFound, DeviceService, GrantError
from mudguard.devices.wiring import local_zone
from mudguard.errors import MudguardError
from mudguard.store import Store

MAC = "02:00:5e:00:53:01"


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[DeviceService]:
    with Store(tmp_path / "m.db") as store:
        service = DeviceService(store=store)
        service.observe(mac=MAC, ip="192.0.2.10")
        yield service


def test_round_trip_of_every_operation(svc: DeviceService) -> None:
    assert [d["mac"] for d in handle_request(svc, {"op": "devices"})["devices"]] == [MAC]
    g = handle_request(svc, {"op": "grant", "mac": MAC, "kind": "service",
                             "host": "time.example.com", "port": 123, "protocol": 17,
                             "expires": "2999-01-01T00:00:00"})["grant"]
    assert g["expires"].startswith("2999-01-01T00:00:00")
    shown = handle_request(svc, {"op": "device", "mac": MAC})["device"]
    assert shown["grants"][0]["id"] == g["id"] and shown["events"]
    assert handle_request(svc, {"op": "revoke", "mac": MAC, "grant_id": g["id"]}) == {
        "revoked": g["id"]}
    q = handle_request(svc, {"op": "quarantine", "mac": MAC, "reason": "scan"})["device"]
    assert q["state"] == "quarantined"
    assert handle_request(svc, {"op": "release", "mac": MAC})["device"]["state"] == "default"
    s = handle_request(svc, {"op": "settings", "home_default": "lan", "allow_unsigned": False})
    assert s == {"settings": {"home_default": "lan", "allow_unsigned": False,
                              "learning_days": 3.0, "lock_automatically": False,
                              "time_zone": None, "zone": local_zone()}}
    zoned = handle_request(svc, {"op": "settings", "time_zone": "Europe/Paris"})["settings"]
    assert (zoned["time_zone"], zoned["zone"]) == ("Europe/Paris", "Europe/Paris")
    with pytest.raises(RequestError, match="time_zone"):
        handle_request(svc, {"op": "settings", "time_zone": "Europe/Nowhere"})
    assert svc.store.get_settings().time_zone == "Europe/Paris"  # a refusal changes nothing
    paused = handle_request(svc, {"op": "grant", "mac": MAC, "kind": "pause",
                                  "schedule": "21:30-07:00"})["grant"]
    assert paused["schedule"] == "21:30-07:00 Europe/Paris"  # the owner's evening
    handle_request(svc, {"op": "revoke", "mac": MAC, "grant_id": paused["id"]})
    kinds = [e["kind"] for e in handle_request(svc, {"op": "events"})["events"]]
    assert "quarantined" in kinds and "released" in kinds
    done = handle_request(svc, {"op": "forget", "mac": MAC, "transfer": True})["forgotten"]
    assert done["mac"] == MAC and done["steps"]
    assert handle_request(svc, {"op": "devices"}) == {"devices": []}


@pytest.mark.parametrize("request_, error", [
    ({"op": "launch"}, RequestError),
    ({}, RequestError),
    ({"op": "grant", "mac": MAC, "kind": "root"}, RequestError),
    ({"op": "grant", "mac": MAC, "kind": "service", "host": 5}, RequestError),
    ({"op": "grant", "mac": MAC, "kind": "service", "host": "a.example", "port": "80"},
     RequestError),
    ({"op": "grant", "mac": MAC, "kind": "internet", "expires": "soon"}, RequestError),
    ({"op": "grant", "mac": MAC, "kind": "service", "host": "x" * 600}, RequestError),
    ({"op": "grant", "mac": MAC, "kind": "lan", "port": True}, RequestError),
    ({"op": "revoke", "mac": MAC}, RequestError),
    ({"op": "revoke", "mac": MAC, "grant_id": 999}, GrantError),
    ({"op": "device", "mac": "02:00:5e:00:53:99"}, DeviceNotFound),
    ({"op": "device", "mac": "'; DROP TABLE devices; --"}, MudguardError),
    ({"op": "settings", "home_default": "everything"}, RequestError),
    ({"op": "settings", "allow_unsigned": "yes"}, RequestError),
    ({"op": "forget", "mac": MAC, "transfer": "no"}, RequestError),
    ({"op": "add", "mac": MAC, "source": "dhcp4"}, RequestError),
    ({"op": "add", "mac": MAC, "source": "carrier-pigeon"}, RequestError),
    ({"op": "add", "mac": MAC, "mud_url": "http://mud.example.com/x"}, MudguardError),
    ({"op": "rename", "mac": MAC, "name": 5}, RequestError),
])
def test_bad_requests_change_nothing(svc: DeviceService, request_: dict[str, Any],
                                     error: type[Exception]) -> None:
    before = (svc.store.list_devices(), svc.store.list_grants(), svc.store.get_settings())
    with pytest.raises(error):
        handle_request(svc, request_)
    assert (svc.store.list_devices(), svc.store.list_grants(), svc.store.get_settings()) == before


def serve_control(path: Path, service: DeviceService, stop: threading.Event) -> None:
    """A control socket answering with ``handle_request``, as the daemon does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        server.settimeout(0.1)
        for _ in range(600):  # at most 60 s
            if stop.is_set():
                return
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                request = json.loads(conn.makefile("rb").readline())
                try:
                    reply = {"ok": True, **handle_request(service, request)}
                except MudguardError as exc:
                    reply = {"ok": False, "error": exc.key, "message": str(exc)}
                conn.sendall(json.dumps(reply).encode() + b"\n")


def test_cli_goes_through_the_running_daemon(tmp_path: Path) -> None:
    db = tmp_path / "state" / "mudguard.db"
    with Store(db) as store:
        service = DeviceService(store=store)
        service.observe(mac=MAC, ip="192.0.2.10")
        stop = threading.Event()
        thread = threading.Thread(target=serve_control,
                                  args=(db.parent / "control.sock", service, stop))
        thread.start()
        try:
            for _ in range(100):
                if (db.parent / "control.sock").exists():
                    break
                threading.Event().wait(0.01)
            runner = CliRunner()
            result = runner.invoke(app, ["device", "grant", MAC, "--internet", "--db", str(db)])
            assert result.exit_code == 0, result.output
            assert "not running" not in result.output  # it went to the daemon
            assert [g.grant.kind.value for g in store.list_grants(MAC)] == ["internet"]
            bad = runner.invoke(app, ["device", "revoke", MAC, "77", "--db", str(db)])
            assert bad.exit_code == 1 and "bad_grant" in bad.output
        finally:
            stop.set()
            thread.join(timeout=10)


def test_cli_with_a_stale_socket_file_works_on_the_database(tmp_path: Path) -> None:
    db = tmp_path / "mudguard.db"
    with Store(db) as store:
        DeviceService(store=store).observe(mac=MAC)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()  # the file stays, nothing listens
    result = CliRunner().invoke(app, ["device", "grant", MAC, "--lan", "--db", str(db)])
    assert result.exit_code == 0 and "not running" in result.output
