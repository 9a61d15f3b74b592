"""A hostile MUD server: redirects the fetcher must refuse with a FetchError, never crash.

A real HTTPS server on loopback (certificate from the tests' own CA) answers with the
kind of Location headers a hostile server sends; the fetcher must turn every one into a
``FetchError`` with a stable key (the device service catches only that), and must
never reach the gateway or the home through a redirect.
"""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from mudguard.mud.fetch import FetchConfig, FetchError, fetch_mud_bytes
from tests.unit.test_mud_fetch import QuietServer, make_cert

NAME = "mud.example.com"
LOCATIONS = {
    "/broken-bracket": "https://[::1",
    "/nul": "https://mud.example.com/\x00",
    "/bad-port": "https://mud.example.com:99999/x",
    "/mapped-lan": "https://[::ffff:10.0.0.1]/mud.json",
    "/nat64-lan": "https://[64:ff9b::c0a8:0101]/mud.json",
    "/credentials": "https://user:secret@mud.example.com/mud.json",
    "/file": "file:///etc/passwd",
    "/to-gateway": "https://192.168.1.1:443/mud.json",
}
hits: list[str] = []


class Redirector(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        hits.append(self.path)
        location = LOCATIONS.get(self.path)
        self.send_response(302 if location else 404)
        if location:
            self.send_header("Location", location)  # written as is, as a hostile server would
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def redirector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    tmp = tmp_path_factory.mktemp("hostile-fetch")
    ca = make_cert("hostile test CA", ca=True)
    cert = make_cert(NAME, issuer=ca, dns=(NAME,), ips=("127.0.0.1",))
    (tmp / "ca.pem").write_bytes(ca.cert_pem())
    (tmp / "server.pem").write_bytes(cert.cert_pem() + cert.key_pem())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / "server.pem")
    server = QuietServer(("127.0.0.1", 0), Redirector)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1], tmp / "ca.pem"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def cfg(ca: Path) -> FetchConfig:
    return FetchConfig(ca_bundle=ca, resolver=lambda host, port: ["127.0.0.1"],
                       unsafe_allow=(ipaddress.ip_network("127.0.0.1/32"),),
                       read_timeout=1.0, connect_timeout=1.0, total_timeout=3.0)


@pytest.mark.parametrize(("path", "keys"), [
    ("/broken-bracket", {"redirect", "bad_url", "protocol"}),
    ("/nul", {"redirect", "bad_url", "protocol"}),
    ("/bad-port", {"redirect", "bad_url"}),
    ("/mapped-lan", {"blocked_address"}),
    ("/nat64-lan", {"blocked_address"}),
    ("/credentials", {"bad_url"}),
    ("/file", {"redirect"}),
    ("/to-gateway", {"blocked_address"}),
])
def test_hostile_redirect_is_a_fetch_error(redirector: tuple[int, Path], path: str,
                                          keys: set[str]) -> None:
    port, ca = redirector
    hits.clear()
    with pytest.raises(FetchError) as caught:
        fetch_mud_bytes(f"https://{NAME}:{port}{path}", config=cfg(ca))
    assert caught.value.key in keys, caught.value
    assert hits == [path]  # the redirect was never followed anywhere
    assert "secret" not in str(caught.value) or path == "/credentials"
