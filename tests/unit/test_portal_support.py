"""Shared set-up for the portal tests (no tests here): a real HTTPS MUD server on
loopback with a CA made by the tests, and the real service stack over a temporary
SQLite store and key ring.

The stack is the one the daemon builds, minus the kernel: ``DeviceService`` with the
real fetcher (``mud.fetch``) trusting the test CA, the real ``KeyManager`` writing a
real hostapd PSK file (no hostapd running), and no enforcer (the portal's own tests
do not touch nftables; the e2e test runs the whole daemon's enforcer elsewhere).
"""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from mudguard.devices.service import DeviceService
from mudguard.devices.wiring import KeyManagerRevoker
from mudguard.keys.ring import KeyRing
from mudguard.keys.service import KeyFiles, KeyManager
from mudguard.mud.fetch import FetchConfig, fetch_mud_bytes, fetch_signature_bytes
from mudguard.portal import PortalServices, PortalSettings, create_app
from mudguard.portal.wiring import KeyManagerIssuer
from mudguard.store import Store
from tests.pki import make_cert

MUD_HOST = "mud.example.com"
DATA = Path(__file__).resolve().parent.parent / "data" / "portal"
SSID = "mudguard-home"


def mud_document(url: str, **changes: Any) -> dict[str, Any]:
    """A small RFC 8520 MUD file for a smart bulb that talks to its maker's cloud."""
    doc: dict[str, Any] = {
        "ietf-mud:mud": {
            "mud-version": 1, "mud-url": url,
            "last-update": "2026-01-15T10:00:00+00:00", "cache-validity": 48,
            "is-supported": True, "systeminfo": "Example smart bulb",
            "mfg-name": "Example Lighting", "model-name": "LB-2000",
            "documentation": "https://www.example.com/lb-2000",
            "from-device-policy": {"access-lists": {"access-list": [{"name": "from-bulb"}]}},
            "to-device-policy": {"access-lists": {"access-list": [{"name": "to-bulb"}]}},
        },
        "ietf-access-control-list:acls": {"acl": [
            {"name": "from-bulb", "type": "ipv4-acl-type", "aces": {"ace": [
                {"name": "cloud", "matches": {
                    "ipv4": {"protocol": 6, "ietf-acldns:dst-dnsname": "api.example.com"},
                    "tcp": {"destination-port": {"operator": "eq", "port": 443},
                            "ietf-mud:direction-initiated": "from-device"}},
                 "actions": {"forwarding": "accept"}}]}},
            {"name": "to-bulb", "type": "ipv4-acl-type", "aces": {"ace": [
                {"name": "cloud", "matches": {
                    "ipv4": {"protocol": 6, "ietf-acldns:src-dnsname": "api.example.com"},
                    "tcp": {"source-port": {"operator": "eq", "port": 443}}},
                 "actions": {"forwarding": "accept"}}]}},
        ]},
    }
    doc["ietf-mud:mud"].update(changes)
    return doc


@dataclass
class Pki:
    """A CA and a server certificate for ``mud.example.com``."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def make_pki(ips: tuple[str, ...] = ()) -> Pki:
    """A throw-away CA and a leaf for the MUD server (plus IP addresses, if given)."""
    now = datetime.now(UTC) - timedelta(days=1)
    until = now + timedelta(days=10)
    ca = make_cert("portal test CA", ca=True, not_before=now, not_after=until)
    leaf = make_cert(MUD_HOST, issuer=ca, dns=(MUD_HOST,), ips=ips, not_before=now,
                     not_after=until)
    return Pki(ca_pem=ca.cert_pem(), cert_pem=leaf.cert_pem(), key_pem=leaf.key_pem())


@dataclass
class MudServer:
    """A real HTTPS server on 127.0.0.1 answering ``files[path]``."""

    port: int
    files: dict[str, tuple[bytes, str]]
    ca_file: Path

    def url(self, path: str) -> str:
        """The https URL of ``path`` on this server, by its DNS name."""
        return f"https://{MUD_HOST}:{self.port}{path}"

    def put_json(self, path: str, doc: Any) -> str:
        """Serve ``doc`` as a MUD file at ``path``; returns its URL."""
        self.files[path] = (json.dumps(doc).encode(), "application/mud+json")
        return self.url(path)

    def fetch_config(self) -> FetchConfig:
        """A fetch configuration that trusts the test CA and may reach loopback."""
        port = self.port
        del port
        return FetchConfig(ca_bundle=self.ca_file,
                           resolver=lambda host, port: ["127.0.0.1"],
                           unsafe_allow=(ipaddress.ip_network("127.0.0.1/32"),),
                           total_timeout=10.0)


@contextmanager
def mud_server(tmp: Path) -> Iterator[MudServer]:
    """Run a real HTTPS MUD server for the duration of the block."""
    pki = make_pki()
    (tmp / "ca.pem").write_bytes(pki.ca_pem)
    (tmp / "cert.pem").write_bytes(pki.cert_pem + pki.ca_pem)
    (tmp / "key.pem").write_bytes(pki.key_pem)
    files: dict[str, tuple[bytes, str]] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            body, ctype = files.get(self.path.split("?")[0], (b"not found", "text/plain"))
            self.send_response(200 if self.path.split("?")[0] in files else 404)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield MudServer(port=httpd.server_address[1], files=files, ca_file=tmp / "ca.pem")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@dataclass
class Stack:
    """The real services the portal runs on, in a temporary directory."""

    services: PortalServices
    settings: PortalSettings
    store: Store
    server: MudServer
    psk_file: Path
    clock_now: list[datetime] = field(default_factory=list)


@contextmanager
def stack(tmp: Path, *, monotonic: Any = None, verify: Any = None,
          clock: Any = None) -> Iterator[Stack]:
    """Store, device service, key manager and MUD server, all real, all temporary."""
    with mud_server(tmp) as server:
        store = Store(tmp / "mudguard.db")
        config = server.fetch_config()

        def fetch(url: str) -> bytes:
            if url.endswith((".p7s", ".sig")):
                return fetch_signature_bytes(url, config=config)
            return fetch_mud_bytes(url, config=config)

        ring = KeyRing(tmp / "keys.db")
        manager = KeyManager(ring, KeyFiles(psk_file=tmp / "hostapd.wpa_psk"))
        extra_service = {"clock": clock} if clock is not None else {}
        devices = DeviceService(store=store, fetch=fetch, keys=KeyManagerRevoker(manager),
                                verify=verify, **extra_service)
        services = PortalServices(devices=devices, keys=KeyManagerIssuer(manager, SSID))
        extra = {"monotonic": monotonic} if monotonic is not None else {}
        settings = PortalSettings(state_dir=tmp / "portal", **extra)
        try:
            yield Stack(services=services, settings=settings, store=store, server=server,
                        psk_file=tmp / "hostapd.wpa_psk")
        finally:
            ring.close()
            store.close()


class ManualClock:
    """A monotonic clock the test moves by hand (sessions and the login limiter)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


OWNER = "owner"
PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def first_start(client: TestClient) -> None:
    """Create the owner account through the setup page (logs in)."""
    page = client.get("/setup")
    done = client.post("/setup", data={"csrf": csrf_of(page.text), "username": OWNER,
                                       "password": PASSWORD, "password_again": PASSWORD})
    assert done.status_code == 200 and done.url.path == "/devices", done.text[:500]


def page_csrf(client: TestClient, path: str = "/devices") -> str:
    """The session's CSRF token, read from a page."""
    return csrf_of(client.get(path).text)


@contextmanager
def portal(tmp: Path, *, base_url: str = "http://portal.test",
           logged_in: bool = True) -> Iterator[tuple[TestClient, Stack, ManualClock]]:
    """A portal app over the real stack, with a test client (already set up and logged in)."""
    clock = ManualClock()
    with stack(tmp, monotonic=clock) as st:
        client = TestClient(create_app(st.services, st.settings), base_url=base_url)
        if logged_in:
            first_start(client)
        yield client, st, clock


def text_of(html: str) -> str:
    """The visible text of a page, whitespace collapsed (for assertions on words)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()
