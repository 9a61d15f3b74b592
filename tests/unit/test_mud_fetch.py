"""Fetching MUD files from a real HTTPS server on loopback, with a CA the tests make.

The loopback refusal is relaxed with ``unsafe_allow`` only where a test needs the
server; other tests prove the default refuses loopback and the home's ranges
before any packet is sent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mudguard.mud.fetch import (
    FetchConfig,
    FetchError,
    MudCache,
    check_address,
    fetch_mud,
    fetch_mud_bytes,
    fetch_signature_bytes,
)
from tests.pki import Issued, make_cert
from tests.unit.test_mud_parse import base

NAME = "mud.example.com"
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
NOW = datetime(2026, 1, 1, tzinfo=UTC)




# -- a real HTTPS server on 127.0.0.1 ---------------------------------------------------

MUD_BODY = json.dumps(base()).encode()


class Handler(BaseHTTPRequestHandler):
    """Answers by path; each path is one server behaviour under test."""

    seen: list[dict[str, str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None,
              length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        Handler.seen.append({"path": self.path, "host": self.headers.get("Host", ""),
                             "accept": self.headers.get("Accept", "")})
        port = self.server.server_address[1]
        routes = {
            "/mud.json": lambda: self._send(200, MUD_BODY, "application/mud+json"),
            "/plain.json": lambda: self._send(200, MUD_BODY, "application/json; charset=utf-8"),
            "/page.html": lambda: self._send(200, b"<html></html>", "text/html"),
            "/mud.p7s": lambda: self._send(200, b"\x30\x03\x02\x01\x01",
                                           "application/pkcs7-signature"),
            "/missing": lambda: self._send(404, b"no", "text/plain"),
            "/to-http": lambda: self._send(302, b"", "text/plain",
                                           {"Location": f"http://{NAME}:{port}/mud.json"}),
            "/to-mud": lambda: self._send(301, b"", "text/plain", {"Location": "/mud.json"}),
            "/to-lan": lambda: self._send(302, b"", "text/plain",
                                          {"Location": "https://192.168.1.1/mud.json"}),
            "/loop": lambda: self._send(302, b"", "text/plain", {"Location": "/loop"}),
            "/huge-announced": lambda: self._send(200, b"{}", "application/mud+json",
                                                  {"Content-Length": "50000000"}, length=False),
            "/huge": self._huge,
            "/slow": self._slow,
            "/drip": self._drip,
        }
        routes.get(self.path, lambda: self._send(404, b"", "text/plain"))()

    def _huge(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/mud+json")
        self.end_headers()
        try:
            for _ in range(64):  # 4 MiB at most, no Content-Length: only the cap stops it
                self.wfile.write(b" " * 65536)
        except OSError:
            pass

    def _slow(self) -> None:
        time.sleep(3.0)
        with contextlib.suppress(OSError):
            self._send(200, MUD_BODY, "application/mud+json")

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/mud+json")
        self.end_headers()
        try:
            for _ in range(40):  # 4 s in all, each byte well inside the read timeout
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


@dataclass
class Server:
    port: int
    ca_file: Path

    def url(self, path: str, host: str = NAME) -> str:
        return f"https://{host}:{self.port}{path}"


def serve(cert: Issued, tmp: Path) -> Iterator[QuietServer]:
    (tmp / "server.pem").write_bytes(cert.cert_pem() + cert.key_pem())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / "server.pem")
    server = QuietServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Issued, Path]:
    ca = make_cert("mudguard test CA", ca=True)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    return ca, ca_file


@pytest.fixture(scope="module")
def server(pki: tuple[Issued, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    ca, ca_file = pki
    cert = make_cert(NAME, issuer=ca, dns=(NAME,), ips=("127.0.0.1",))
    for running in serve(cert, tmp_path_factory.mktemp("srv")):
        yield Server(port=running.server_address[1], ca_file=ca_file)


def to_loopback(host: str, port: int) -> list[str]:
    """The test's DNS: every name is 127.0.0.1 (nothing leaves the machine)."""
    return ["127.0.0.1"]


def config(server: Server, **kwargs: Any) -> FetchConfig:
    settings: dict[str, Any] = {"ca_bundle": server.ca_file, "resolver": to_loopback,
                                "unsafe_allow": LOOPBACK, "read_timeout": 0.5,
                                "connect_timeout": 1.0, "total_timeout": 2.0}
    settings.update(kwargs)
    return FetchConfig(**settings)


def failure(url: str, cfg: FetchConfig) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch_mud_bytes(url, config=cfg)
    assert caught.value.url and caught.value.reason
    return caught.value


# -- tests --------------------------------------------------------------------------------

def test_fetches_the_exact_bytes_with_the_rfc_accept_header(server: Server) -> None:
    Handler.seen.clear()
    assert fetch_mud_bytes(server.url("/mud.json"), config=config(server)) == MUD_BODY
    (request,) = Handler.seen
    assert request["accept"] == "application/mud+json"
    assert request["host"] == f"{NAME}:{server.port}"


def test_plain_json_content_type_is_accepted(server: Server) -> None:
    assert fetch_mud_bytes(server.url("/plain.json"), config=config(server)) == MUD_BODY


def test_ip_literal_url_is_verified_against_the_certificate(server: Server) -> None:
    url = f"https://127.0.0.1:{server.port}/mud.json"
    assert fetch_mud_bytes(url, config=config(server)) == MUD_BODY


def test_default_refuses_loopback(server: Server) -> None:
    """Without the test-only allowance the same server is never contacted."""
    Handler.seen.clear()
    error = failure(server.url("/mud.json"), config(server, unsafe_allow=()))
    assert error.key == "blocked_address"
    assert "127.0.0.1 is in 127.0.0.0/8" in error.reason
    assert Handler.seen == []


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "100.64.0.1",
    "0.0.0.0", "224.0.0.251", "255.255.255.255", "::1", "::", "fe80::1", "fd00::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:192.168.0.1", "64:ff9b::a00:1", "2002:c0a8:101::1",
])
def test_gateway_and_home_addresses_are_refused(address: str) -> None:
    assert check_address(ipaddress.ip_address(address), FetchConfig()) is not None
    host = f"[{address}]" if ":" in address else address
    error = failure(f"https://{host}/mud.json", FetchConfig())
    assert error.key == "blocked_address"


def test_configured_home_prefix_is_refused() -> None:
    home = FetchConfig(blocked_prefixes=(ipaddress.ip_network("198.51.100.0/24"),),
                       resolver=lambda host, port: ["198.51.100.7"])
    error = failure("https://mud.example.com/x", home)
    assert (error.key, error.reason) == (
        "blocked_address", "198.51.100.7 is in 198.51.100.0/24, which a MUD URL must never reach")
    assert check_address(ipaddress.ip_address("203.0.113.9"), home) is None
    assert check_address(ipaddress.ip_address("64:ff9b::cb00:7109"), home) is None
    assert check_address(ipaddress.ip_address("2001:db8::1"), home) is None


def test_every_checked_address_is_put_to_the_gateway_check() -> None:
    """After the fixed lists, each address (and one carried inside IPv6) is put to the
    live check of the gateway's own addresses (the netns tier tests the kernel's)."""
    asked: list[str] = []

    def ours(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        asked.append(str(address))
        return f"{address} is an address of the gateway itself" \
            if str(address) == "203.0.113.1" else None

    config = FetchConfig(gateway_check=ours, resolver=lambda host, port: ["203.0.113.1"])
    error = failure("https://mud.example.com/x", config)
    assert (error.key, error.reason) == ("blocked_address",
                                         "203.0.113.1 is an address of the gateway itself")
    assert check_address(ipaddress.ip_address("::ffff:203.0.113.1"), config) is not None
    assert check_address(ipaddress.ip_address("203.0.113.2"), config) is None
    assert "203.0.113.2" in asked


def test_the_kernel_names_the_interface_of_an_own_address() -> None:
    from mudguard.mud.own_address import gateway_reason

    why = gateway_reason(ipaddress.ip_address("127.0.0.1"))
    assert why is not None and "gateway itself (interface lo)" in why
    assert gateway_reason(ipaddress.ip_address("127.0.0.77")) is not None  # local route


def test_any_forbidden_answer_condemns_the_name() -> None:
    mixed = FetchConfig(resolver=lambda host, port: ["203.0.113.5", "10.0.0.1"])
    assert failure("https://mud.example.com/x", mixed).key == "blocked_address"


def test_name_is_resolved_once_and_the_checked_address_is_used(server: Server) -> None:
    """No DNS-rebinding window: a second lookup would be refused by this resolver."""
    calls: list[str] = []

    def once(host: str, port: int) -> list[str]:
        calls.append(host)
        if len(calls) > 1:
            return ["10.0.0.1"]
        return ["127.0.0.1"]

    assert fetch_mud_bytes(server.url("/mud.json"), config=config(server, resolver=once)) \
        == MUD_BODY
    assert calls == [NAME]


@pytest.mark.parametrize(("url", "key"), [
    ("http://mud.example.com/x", "not_https"),
    ("ftp://mud.example.com/x", "not_https"),
    ("https:///x", "bad_url"),
    ("https://user:pw@mud.example.com/x", "bad_url"),
    ("https://mud.example.com:99999/x", "bad_url"),
    ("https://" + "a" * 3000, "bad_url"),
])
def test_bad_urls_are_refused(url: str, key: str) -> None:
    assert failure(url, FetchConfig(resolver=lambda h, p: ["203.0.113.5"])).key == key


@pytest.mark.parametrize("host", ["exa mple.com", "%00", "a..b", "-a.example", "a-.example",
                                  "x" * 64 + ".example", "é" * 70 + ".example"])
def test_a_malformed_host_name_is_refused_before_any_lookup(host: str) -> None:
    asked: list[str] = []

    def resolver(name: str, port: int) -> list[str]:
        asked.append(name)
        return ["203.0.113.5"]

    found = failure(f"https://{host}/mud.json", FetchConfig(resolver=resolver))
    assert found.key == "bad_url" and "not a valid" in str(found) and asked == []


@pytest.mark.parametrize("host", ["mud.example.com", "mud.example.com.", "_srv.example.com",
                                  "bücher.example", "x" * 63 + ".example"])
def test_a_well_formed_host_name_is_looked_up(host: str) -> None:
    asked: list[str] = []

    def resolver(name: str, port: int) -> list[str]:
        asked.append(name)
        return ["127.0.0.1"]  # refused after the lookup: nothing is fetched

    assert failure(f"https://{host}/mud.json", FetchConfig(resolver=resolver)).key \
        == "blocked_address"
    assert len(asked) == 1


def test_redirect_to_http_is_refused(server: Server) -> None:
    error = failure(server.url("/to-http"), config(server))
    assert error.key == "redirect" and "another scheme (http)" in error.reason


def test_same_scheme_redirect_is_followed(server: Server) -> None:
    assert fetch_mud_bytes(server.url("/to-mud"), config=config(server)) == MUD_BODY


def test_redirect_target_is_checked_again(server: Server) -> None:
    assert failure(server.url("/to-lan"), config(server)).key == "blocked_address"


def test_redirects_are_bounded(server: Server) -> None:
    Handler.seen.clear()
    error = failure(server.url("/loop"), config(server, max_redirects=3))
    assert error.key == "redirect" and "more than 3 redirects" in error.reason
    assert len(Handler.seen) == 4


def test_oversize_body_is_cut_off(server: Server) -> None:
    error = failure(server.url("/huge"), config(server))
    assert error.key == "too_large" and error.reason == "more than 1048576 bytes"


def test_oversize_announcement_is_refused_before_reading(server: Server) -> None:
    assert failure(server.url("/huge-announced"), config(server)).key == "too_large"


def test_slow_server_times_out(server: Server) -> None:
    started = time.monotonic()
    assert failure(server.url("/slow"), config(server)).key == "timeout"
    assert time.monotonic() - started < 2.5  # read timeout 0.5 s; the answer comes at 3 s


def test_dripping_server_hits_the_total_deadline(server: Server) -> None:
    started = time.monotonic()
    error = failure(server.url("/drip"), config(server, total_timeout=0.6))
    assert error.key == "timeout"
    assert time.monotonic() - started < 3.0


def test_wrong_content_type(server: Server) -> None:
    error = failure(server.url("/page.html"), config(server))
    assert error.key == "content_type" and "'text/html'" in error.reason


def test_http_error_status(server: Server) -> None:
    error = failure(server.url("/missing"), config(server))
    assert (error.key, error.reason) == ("http_status", "the server answered 404")


def test_server_certificate_from_another_ca_is_refused(
        server: Server, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(make_cert("another CA", ca=True).cert_pem())
    assert failure(server.url("/mud.json"), config(server, ca_bundle=other)).key == "tls"


def test_system_cas_do_not_trust_the_test_ca(server: Server) -> None:
    assert failure(server.url("/mud.json"), config(server, ca_bundle=None)).key == "tls"


def test_certificate_for_another_name_is_refused(server: Server) -> None:
    error = failure(server.url("/mud.json", host="other.example.com"), config(server))
    assert error.key == "tls"


def test_expired_server_certificate_is_refused(pki: tuple[Issued, Path],
                                               tmp_path: Path) -> None:
    ca, ca_file = pki
    old = datetime.now(UTC) - timedelta(days=400)
    expired = make_cert(NAME, issuer=ca, dns=(NAME,), not_before=old,
                        not_after=old + timedelta(days=30))
    for running in serve(expired, tmp_path):
        srv = Server(port=running.server_address[1], ca_file=ca_file)
        assert failure(srv.url("/mud.json"), config(srv)).key == "tls"


def test_unreadable_ca_bundle(server: Server, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    assert failure(server.url("/mud.json"), config(server, ca_bundle=junk)).key == "ca_bundle"


def test_signature_fetch(server: Server) -> None:
    Handler.seen.clear()
    data = fetch_signature_bytes(server.url("/mud.p7s"), config=config(server))
    assert data == b"\x30\x03\x02\x01\x01"
    assert Handler.seen[0]["accept"] == "application/pkcs7-signature"
    with pytest.raises(FetchError) as caught:
        fetch_signature_bytes(server.url("/mud.json"), config=config(server))
    assert caught.value.key == "content_type"


def test_cache_honours_cache_validity(server: Server) -> None:
    """base() says cache-validity 24: fresh for 24 hours, refetched after."""
    cache = MudCache()
    Handler.seen.clear()
    cfg = config(server)
    url = server.url("/mud.json")
    first = fetch_mud(url, now=NOW, cache=cache, config=cfg)
    assert not first.from_cache and first.data == MUD_BODY
    later = fetch_mud(url, now=NOW + timedelta(hours=23, minutes=59), cache=cache, config=cfg)
    assert later.from_cache and len(Handler.seen) == 1
    expired = fetch_mud(url, now=NOW + timedelta(hours=24), cache=cache, config=cfg)
    assert not expired.from_cache and len(Handler.seen) == 2


def test_stale_copy_only_when_allowed(server: Server) -> None:
    cache = MudCache()
    cache.put(server.url("/missing"), MUD_BODY, now=NOW - timedelta(days=10))
    with pytest.raises(FetchError):
        fetch_mud(server.url("/missing"), now=NOW, cache=cache, config=config(server))
    result = fetch_mud(server.url("/missing"), now=NOW, cache=cache, config=config(server),
                       allow_stale=True)
    assert result.stale and result.data == MUD_BODY


def test_cache_is_bounded() -> None:
    cache = MudCache(max_entries=2)
    for i in range(3):
        cache.put(f"https://m.example.com/{i}", MUD_BODY, now=NOW)
    assert len(cache) == 2 and cache.stale("https://m.example.com/0") is None


def test_error_is_a_remote_input_error() -> None:
    from mudguard.errors import RemoteInputError

    error = failure("http://mud.example.com/x", FetchConfig())
    assert isinstance(error, RemoteInputError)
    assert str(error) == "http://mud.example.com/x: only https URLs are fetched"


def test_a_resolver_failure_says_cannot_resolve_once() -> None:
    """The daemon's resolver already says "cannot resolve HOST": not doubled."""
    def refuse(host: str, port: int) -> list[str]:
        raise OSError(f"cannot resolve {host}")

    error = failure("https://mud.example.com/x", FetchConfig(resolver=refuse))
    assert (error.key, error.reason) == ("dns", "cannot resolve mud.example.com")
    plain = failure("https://mud.example.com/x", FetchConfig(
        resolver=lambda host, port: (_ for _ in ()).throw(OSError("Name or service unknown"))))
    assert plain.reason == "cannot resolve mud.example.com: Name or service unknown"
