"""``mudguard portal --listen HOST:PORT``: a real server process answering /openapi.json."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer

from mudguard.cli.portal_cmd import parse_listen


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
