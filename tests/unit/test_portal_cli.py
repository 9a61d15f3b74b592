"""``mudguard portal --listen HOST:PORT``: a real server process answering /openapi.json."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer

from mudguard.cli.portal_cmd import parse_listen
from tests.unit.test_portal_support import make_pki


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_portal_command_serves_the_schema(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mudguard", "portal", "--listen", f"127.0.0.1:{port}",
         "--db", str(tmp_path / "mudguard.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        response = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    pytest.fail(process.stderr.read().decode()[-2000:] if process.stderr
                                else "portal exited")
                time.sleep(0.2)
        assert response is not None and response.status_code == 200
        assert "/api/devices" in response.json()["paths"]
        assert response.headers["x-frame-options"] == "DENY"
        setup = httpx.get(f"http://127.0.0.1:{port}/", timeout=5, follow_redirects=True)
        assert setup.url.path == "/setup" and "owner account" in setup.text
        assert (tmp_path / "mudguard.db").exists()
        rebound = httpx.get(f"http://127.0.0.1:{port}/setup", timeout=5,
                            headers={"Host": "attacker.example"})
        assert rebound.status_code == 400  # only the listen address is a valid Host
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1:8080", ("192.0.2.1", 8080)),
    ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ("127.0.0.1:1", ("127.0.0.1", 1)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "portal.local:80", "192.0.2.1:0", "192.0.2.1:x",
                                  "192.0.2.1:70000", ":80"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_listen(text)


def test_portal_command_over_tls(tmp_path: Path) -> None:
    """With --tls-cert/--tls-key the portal speaks HTTPS (certificate checked against the
    test CA): HSTS, Secure cookies, and no plain HTTP on that port."""
    pki = make_pki(ips=("127.0.0.1",))
    (tmp_path / "ca.pem").write_bytes(pki.ca_pem)
    (tmp_path / "cert.pem").write_bytes(pki.cert_pem + pki.ca_pem)
    (tmp_path / "key.pem").write_bytes(pki.key_pem)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mudguard", "portal", "--listen", f"127.0.0.1:{port}",
         "--db", str(tmp_path / "mudguard.db"), "--tls-cert", str(tmp_path / "cert.pem"),
         "--tls-key", str(tmp_path / "key.pem")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    trust = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    try:
        deadline = time.monotonic() + 30
        response = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"https://127.0.0.1:{port}/setup", timeout=2,
                                     verify=trust)
                break
            except httpx.ConnectError:
                assert process.poll() is None, "portal exited"
                time.sleep(0.2)
        assert response is not None and response.status_code == 200
        assert "max-age" in response.headers["strict-transport-security"]
        assert "Secure" in response.headers["set-cookie"]
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/setup", timeout=2)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_tls_options_go_together(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mudguard", "portal", "--listen",
                           "127.0.0.1:9", "--db", str(tmp_path / "db"), "--tls-cert",
                           str(tmp_path / "cert.pem")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "go together" in done.stderr
