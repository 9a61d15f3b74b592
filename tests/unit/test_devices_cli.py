"""The device commands, run as the owner runs them (the real CLI over a real database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.devices import MudSource
from mudguard.devices.service import DeviceService
from mudguard.devices.wiring import local_zone
from mudguard.store import Store

MAC = "02:00:5e:00:53:01"
runner = CliRunner()


def run(db: Path, *args: str) -> tuple[int, str]:
    """Exit code and output; for --json runs only stdout (notes go to stderr)."""
    result = runner.invoke(app, [*args, "--db", str(db)])
    return result.exit_code, result.stdout if "--json" in args else result.output


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "mudguard.db"
    with Store(path) as store:
        svc = DeviceService(store=store)
        svc.observe(mac=MAC, ip="192.0.2.10", hostname="plug")
        svc.observe(mac="02:00:5e:00:53:02", ip="192.0.2.11", source=MudSource.DHCP4)
    return path


def test_devices_json_on_an_empty_home_via_env(tmp_path: Path) -> None:
    env = {**os.environ, "MUDGUARD_DB": str(tmp_path / "new" / "m.db")}
    out = subprocess.run([sys.executable, "-m", "mudguard", "devices", "--json"], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == []
    # A read leaves nothing behind at a path with no database (a mistyped --db).
    assert not (tmp_path / "new").exists()


def test_reads_of_a_missing_database_create_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "m.db"
    code, out = run(missing, "device", "show", MAC)
    assert code == 1 and "device_not_found" in out
    code, out = run(missing, "events", "--json")
    assert code == 0 and json.loads(out) == []
    assert not missing.parent.exists()
    code, _ = run(missing, "device", "add", MAC, "--name", "plug")
    assert code == 0 and missing.is_file()
    code, out = run(missing, "devices", "--json")
    assert [d["mac"] for d in json.loads(out)] == [MAC]


def test_devices_json_lists_every_device(db: Path) -> None:
    code, out = run(db, "devices", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [d["mac"] for d in listed] == [MAC, "02:00:5e:00:53:02"]
    assert listed[0]["state"] == "default" and listed[0]["grants"] == []
    code, out = run(db, "devices")
    assert code == 0 and MAC in out


def test_grant_show_revoke(db: Path) -> None:
    code, out = run(db, "device", "grant", MAC, "--service", "time.example.com:123", "--udp",
                    "--expires", "2h")
    assert code == 0, out
    assert "time.example.com port 123" in out
    code, out = run(db, "device", "grant", MAC.replace(":", "-"), "--lan")
    assert code == 0, out
    code, out = run(db, "device", "show", MAC, "--json")
    shown = json.loads(out)
    assert [(g["kind"], g["host"], g["port"], g["protocol"]) for g in shown["grants"]] == [
        ("service", "time.example.com", 123, 17), ("lan", None, None, None)]
    assert "granted" in [e["kind"] for e in shown["events"]]
    first = shown["grants"][0]["id"]
    code, out = run(db, "device", "revoke", MAC, str(first))
    assert code == 0
    code, out = run(db, "device", "revoke", MAC, str(first))
    assert code == 1 and "no grant" in out
    code, out = run(db, "device", "show", MAC)
    assert code == 0 and "may talk to the home LAN" in out


@pytest.mark.parametrize("args, why", [
    (["--lan", "--internet"], "exactly one"),
    ([], "exactly one"),
    (["--service", "bad host!"], "not a host"),
    (["--internet", "--expires", "tomorrow"], "30m"),
    (["--internet", "--expires", "2001-01-01"], "past"),
])
def test_bad_grants_are_refused(db: Path, args: list[str], why: str) -> None:
    code, out = run(db, "device", "grant", MAC, *args)
    assert code != 0 and why in out
    code, out = run(db, "device", "show", MAC, "--json")
    assert json.loads(out)["grants"] == []


def test_unknown_and_bad_macs(db: Path) -> None:
    assert run(db, "device", "show", "02:00:5e:00:53:99")[0] == 1
    code, out = run(db, "device", "show", "'; DROP TABLE devices")
    assert code == 1 and "bad_mac" in out
    assert len(json.loads(run(db, "devices", "--json")[1])) == 2


def test_forget_shows_reset_steps_and_deletes(db: Path, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("MUDGUARD_KEYS_DB", str(tmp_path / "no-keys.db"))
    code, out = run(db, "device", "forget", MAC)
    assert code == 0 and "reset" in out.lower() and "recorded as an event" in out
    macs = [d["mac"] for d in json.loads(run(db, "devices", "--json")[1])]
    assert macs == ["02:00:5e:00:53:02"]
    code, out = run(db, "events", "--json")
    assert code == 0
    assert MAC not in out
    assert json.loads(out)[-1]["kind"] == "forgotten"


def test_approve_url_without_pending(db: Path) -> None:
    code, out = run(db, "device", "approve-url", MAC)
    assert code == 1 and "no pending" in out


def test_events_and_settings(db: Path) -> None:
    code, out = run(db, "events", "--device", MAC, "--json")
    assert code == 0 and {e["mac"] for e in json.loads(out)} == {MAC}
    assert any("reason_key" in e["details"] for e in json.loads(out))  # data for the portal
    code, out = run(db, "events", "--device", MAC)
    assert code == 0 and "reason=" in out and "reason_key" not in out  # the sentence only
    code, out = run(db, "settings", "--home-default", "lan", "--require-signed", "--json")
    assert json.loads(out) == {"home_default": "lan", "allow_unsigned": False,
                               "learning_days": 3.0, "lock_automatically": False,
                               "time_zone": None, "zone": local_zone()}
    code, out = run(db, "settings")
    assert "lan" in out and "no" in out


# -- adding devices: QR label images (segno → zxing-cpp), certificates, by hand ------------

def test_add_from_a_label_photo(tmp_path: Path) -> None:
    from mudguard.discovery.qr import QrRecord
    from mudguard.labels import label_png

    db = tmp_path / "m.db"
    record = QrRecord(mud_url="https://mud.example.com/bulb.json", company="Example",
                      model="Bulb 2", mac="02:00:5e:00:53:77")
    image = tmp_path / "label.png"
    image.write_bytes(label_png(record))
    code, out = run(db, "device", "add", "--label", str(image), "--name", "hall bulb")
    assert code == 0, out
    shown = json.loads(run(db, "device", "show", "02:00:5e:00:53:77", "--json")[1])
    assert (shown["mud_url"], shown["mud_source"], shown["manufacturer"], shown["model"],
            shown["name"]) == ("https://mud.example.com/bulb.json", "qr", "Example", "Bulb 2",
                               "hall bulb")
    # Without a fetcher the profile cannot be read: the home default applies, and it is told.
    assert shown["state"] == "default" and "could not be fetched" in shown["reasons"][0]


def test_add_from_a_certificate(tmp_path: Path) -> None:
    from asn1crypto import core as asn1_core

    from mudguard.discovery.cert import OID_MUD_URL
    from tests.unit.test_discovery_parsers import make_cert

    db = tmp_path / "m.db"
    pem = tmp_path / "idevid.pem"
    pem.write_bytes(make_cert((OID_MUD_URL,
                               asn1_core.IA5String("https://mud.example.com/cam.json").dump())))
    code, out = run(db, "device", "add", MAC, "--cert", str(pem))
    assert code == 0, out
    shown = json.loads(run(db, "device", "show", MAC, "--json")[1])
    assert (shown["mud_url"], shown["mud_source"]) == ("https://mud.example.com/cam.json", "cert")


@pytest.mark.parametrize("args, why", [
    (["--qr-text", "not a label"], "qr_no_header"),
    ([MAC, "--mud-url", "http://mud.example.com/x.json"], "https"),
    (["--mud-url", "https://mud.example.com/x.json"], "MAC"),
    (["--mud-url", "https://a.example/x", "--qr-text", "x"], "at most one"),
    (["--qr-text", "[)>\x1e06\x1dM180https://mud.example.com/x.json\x1e\x04"], "MAC"),
])
def test_add_refuses_bad_input(tmp_path: Path, args: list[str], why: str) -> None:
    db = tmp_path / "m.db"
    code, out = run(db, "device", "add", *args)
    assert code != 0 and why in out
    assert json.loads(run(db, "devices", "--json")[1]) == []


def test_add_by_hand_then_rename(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    assert run(db, "device", "add", MAC)[0] == 0
    code, out = run(db, "device", "rename", MAC, "desk lamp\x07")
    assert code == 0 and "desk lamp" in out
    shown = json.loads(run(db, "device", "show", MAC, "--json")[1])
    assert shown["name"] == "desk lamp" and shown["events"][-1]["kind"] == "renamed"


def test_trust_untrust(db: Path) -> None:
    code, out = run(db, "device", "trust", MAC)
    assert code == 0 and "trusted" in out
    code, out = run(db, "device", "untrust", MAC)
    assert code == 0 and "default" in out
    code, out = run(db, "device", "untrust", MAC)
    assert code == 1 and "not trusted" in out


def test_the_kind_identify_inferred_is_shown(db: Path) -> None:
    from dataclasses import replace

    with Store(db) as store:
        device = store.get_device(MAC)
        assert device is not None
        store.save_device(replace(device, kind="thermostat"))
    code, out = run(db, "device", "show", MAC)
    assert code == 0 and "kind:" in out and "thermostat" in out
    code, out = run(db, "devices", "--json")
    assert {d["mac"]: d["kind"] for d in json.loads(out)} == {
        MAC: "thermostat", "02:00:5e:00:53:02": None}
