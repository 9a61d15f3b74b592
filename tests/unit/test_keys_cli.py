"""``mudguard keys …`` end to end through the real CLI (files in a temporary directory)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.keys.core import (
    ONBOARDING_MAC,
    PskEntry,
    parse_psk_file,
    parse_wifi_qr,
    render_psk_file,
)

runner = CliRunner()


def _psk_file(tmp_path: Path, real: str | None) -> Path:
    entries = [PskEntry(keyid=f"decoy-{i}", mac=f"02:00:00:00:00:{i:02x}", passphrase=p)
               for i, p in enumerate(["12345679", "dictionarx", "password", "linksys1"])]
    if real is not None:
        entries.append(PskEntry(keyid="laptop", mac=ONBOARDING_MAC, passphrase=real))
    path = tmp_path / "psk"
    path.write_text(render_psk_file(entries))
    return path


@pytest.mark.parametrize(("capture", "ssid", "passphrase"), [
    ("wpa2.eapol.cap", "Harkonen", "12345678"),
    ("wpa2-psk-linksys.cap", "linksys", "dictionary"),
])
def test_identify_names_the_key(corpus: Path, tmp_path: Path, capture: str, ssid: str,
                                passphrase: str) -> None:
    psk = _psk_file(tmp_path, passphrase)
    result = runner.invoke(app, ["keys", "identify", str(corpus / "wifi" / capture),
                                 "--ssid", ssid, "--psk-file", str(psk)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "keyid=laptop"


def test_identify_without_the_key_exits_1(corpus: Path, tmp_path: Path) -> None:
    psk = _psk_file(tmp_path, None)
    result = runner.invoke(app, ["keys", "identify", str(corpus / "wifi" / "wpa2.eapol.cap"),
                                 "--ssid", "Harkonen", "--psk-file", str(psk)])
    assert result.exit_code == 1
    assert "none of the 4 keys matches" in result.output


def test_identify_without_a_handshake_exits_1(corpus: Path, tmp_path: Path) -> None:
    pcap = next((corpus / "pcap" / "smartercoffee").iterdir())
    result = runner.invoke(app, ["keys", "identify", str(pcap), "--ssid", "x",
                                 "--psk-file", str(_psk_file(tmp_path, "12345678"))])
    assert result.exit_code == 1
    assert "no complete handshake" in result.output


@pytest.mark.parametrize("content", ["keyid=a 02:00:00:00:00:01 short\n", "\xff\xfe garbage"])
def test_identify_with_a_bad_psk_file_exits_1(corpus: Path, tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(content.encode("latin-1"))
    result = runner.invoke(app, ["keys", "identify", str(corpus / "wifi" / "wpa2.eapol.cap"),
                                 "--ssid", "Harkonen", "--psk-file", str(bad)])
    assert result.exit_code == 1
    assert "error" in result.output


def test_a_non_ascii_psk_file_names_the_line_never_the_byte(corpus: Path,
                                                            tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"keyid=a 00:00:00:00:00:00 12345678\nkeyid=b 00:00:00:00:00:00 pa\xe9ss99\n")
    result = runner.invoke(app, ["keys", "identify", str(corpus / "wifi" / "wpa2.eapol.cap"),
                                 "--ssid", "Harkonen", "--psk-file", str(bad)])
    assert result.exit_code == 1
    assert "line 2 is not ASCII" in result.output and "e9" not in result.output.lower()


@pytest.mark.parametrize("where", ["dir", "/dev/null"])
def test_a_psk_file_that_is_not_a_regular_file_is_named_so(corpus: Path, tmp_path: Path,
                                                           where: str) -> None:
    path = tmp_path if where == "dir" else Path(where)
    result = runner.invoke(app, ["keys", "identify", str(corpus / "wifi" / "wpa2.eapol.cap"),
                                 "--ssid", "Harkonen", "--psk-file", str(path)])
    assert result.exit_code == 1 and "not a regular file" in result.output


def test_issue_list_qr_revoke(tmp_path: Path) -> None:
    env = {"MUDGUARD_PSK_FILE": str(tmp_path / "psk"), "MUDGUARD_KEYS_DB": str(tmp_path / "db"),
           "MUDGUARD_SSID": "Home; net"}
    issued = runner.invoke(app, ["keys", "issue", "02:00:00:00:00:0A", "--vlan", "12",
                                 "--device", "camera"], env=env)
    assert issued.exit_code == 0, issued.output
    keyid = issued.stdout.splitlines()[0].removeprefix("keyid=")
    passphrase = issued.stdout.splitlines()[1].removeprefix("passphrase: ")
    onboarding = runner.invoke(app, ["keys", "issue", "--onboarding"], env=env)
    assert onboarding.exit_code == 0, onboarding.output
    both = runner.invoke(app, ["keys", "issue", "02:00:00:00:00:0b", "--onboarding"], env=env)
    assert both.exit_code != 0

    entries = parse_psk_file((tmp_path / "psk").read_text())
    assert {(e.mac, e.vlan) for e in entries} == {("02:00:00:00:00:0a", 12), (ONBOARDING_MAC, 0)}

    listed = runner.invoke(app, ["keys", "list"], env=env)
    assert listed.exit_code == 0 and keyid in listed.stdout and "camera" in listed.stdout
    assert passphrase not in listed.stdout

    png = tmp_path / "key.png"
    made = runner.invoke(app, ["keys", "qr", keyid, "-o", str(png)], env=env)
    assert made.exit_code == 0, made.output
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    creds = parse_wifi_qr(zxingcpp.read_barcodes(Image.open(png))[0].text)
    assert (creds.ssid, creds.passphrase) == ("Home; net", passphrase)

    revoked = runner.invoke(app, ["keys", "revoke", keyid], env=env)
    assert revoked.exit_code == 0, revoked.output
    assert [e.mac for e in parse_psk_file((tmp_path / "psk").read_text())] == [ONBOARDING_MAC]
    again = runner.invoke(app, ["keys", "revoke", keyid], env=env)
    assert again.exit_code == 1 and "no key" in again.output


def test_issue_refuses_a_bad_mac(tmp_path: Path) -> None:
    env = {"MUDGUARD_PSK_FILE": str(tmp_path / "psk"), "MUDGUARD_KEYS_DB": str(tmp_path / "db")}
    result = runner.invoke(app, ["keys", "issue", "02:00:00:00:00"], env=env)
    assert result.exit_code == 1 and "not a MAC" in result.output
    assert not (tmp_path / "psk").exists()


def test_radius_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "radius", "--listen", "127.0.0.1:0",
                                 "--db", str(tmp_path / "db")], env={"MUDGUARD_RADIUS_SECRET": ""})
    assert result.exit_code == 1 and "no shared secret" in result.output


def test_radius_command_serves_from_the_key_ring(tmp_path: Path) -> None:
    """The real command in a subprocess, asked by pyrad; the secret comes from a file."""
    from pyrad import packet
    from pyrad.client import Client

    from mudguard.keys.radius import radius_dictionary

    db = tmp_path / "db"
    env = {**os.environ, "MUDGUARD_KEYS_DB": str(db), "MUDGUARD_PSK_FILE": str(tmp_path / "psk")}
    issued = subprocess.run([sys.executable, "-m", "mudguard", "keys", "issue",
                             "02:00:00:00:00:0a", "--vlan", "5"], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    passphrase = issued.stdout.splitlines()[1].removeprefix("passphrase: ")
    secret_file = tmp_path / "secret"
    secret_file.write_text("cli-secret\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mudguard", "keys", "radius", "--listen",
                             f"127.0.0.1:{port}", "--secret-file", str(secret_file)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        assert "RADIUS listening" in proc.stdout.readline()
        client = Client(server="127.0.0.1", authport=port, secret=b"cli-secret",
                        dict=radius_dictionary())
        client.timeout, client.retries = 2, 2
        request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name="02000000000a")
        reply = client.SendPacket(request)
        assert reply.code == packet.AccessAccept
        assert reply["Tunnel-Password"] == [passphrase]
        assert reply["Tunnel-Private-Group-Id"] == ["5"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert "cli-secret" not in (proc.stdout.read() if proc.stdout else "")
