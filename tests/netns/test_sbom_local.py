"""RFC 9472 ``sbom-local-well-known``: the gateway asks the device itself, with real packets.

In a virtual home whose rules are installed (the device profiled from the RFC 9472
example file, a second device on the home default), an HTTPS server in the device's
namespace serves ``/.well-known/sbom``. The gateway's own connection to the device
goes out through the output hook (accepted) and its answers come back as established
traffic: no rule had to be opened. A redirect from the device to another device's
address is refused and that device never sees a connection; the same redirect to
the device's own address is followed.
"""

from __future__ import annotations

import ipaddress
import os
import socketserver
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from mudguard.enforce import Enforcer, Nft
from mudguard.mud import parse_mud
from mudguard.policy import DeviceFacts, LifecycleState
from mudguard.vhome import GW4, VirtualHome
from tests.netns.https_servers import https_server_in
from tests.pki import make_cert

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")]

DATA = Path(__file__).resolve().parents[1] / "data" / "mud-extensions"
SBOM = b'{"spdxVersion": "SPDX-2.3", "name": "modelX"}'
NOW = datetime(2026, 1, 1, tzinfo=UTC)
PLAIN, ELSEWHERE, HOME_AGAIN = 443, 8443, 9443  # the device's three servers


class DeviceServer(BaseHTTPRequestHandler):
    """The device: its SBOM at the well-known path, or a redirect (``server.location``)."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        server: Any = self.server
        server.seen.append((self.client_address[0], self.path))
        location = server.location
        if location is None and self.path == "/.well-known/sbom":
            self.send_response(200)
            self.send_header("Content-Type", "application/spdx+json")
            self.send_header("Content-Length", str(len(SBOM)))
            self.end_headers()
            self.wfile.write(SBOM)
            return
        self.send_response(302 if location else 404)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class QuietServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """HTTPServer without its reverse DNS look-up at bind (a device has no resolver)."""

    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


def https_in(ns: str, address: str, port: int, cert_file: Path,
             location: str | None = None) -> Any:
    """An HTTPS server on ``address``:``port`` in namespace ``ns`` that records what it
    was asked (``seen``) and redirects to ``location`` when set."""
    def make() -> Any:
        server: Any = QuietServer((address, port), DeviceServer)
        server.seen, server.location = [], location
        return server

    return https_server_in(ns, make, cert_file)


def ask_the_device(address: str, ports: list[int]) -> dict[int, tuple[str, str]]:
    """Inside the gateway: fetch the device's SBOM on each port; bytes or the error key."""
    from mudguard.mud.fetch import FetchConfig, FetchError, fetch_local_sbom

    config = FetchConfig(connect_timeout=2.0, read_timeout=2.0, total_timeout=5.0)
    out: dict[int, tuple[str, str]] = {}
    for port in ports:
        try:
            body = fetch_local_sbom(ipaddress.ip_address(address), "https", config=config,
                                    port=port)
            out[port] = ("fetched", body.decode())
        except FetchError as exc:
            out[port] = (exc.key, exc.reason)
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VirtualHome, Path]]:
    tmp = tmp_path_factory.mktemp("sbom")
    # The device's own certificate: self-signed, as a device's is (no CA vouches for it).
    cert = make_cert("modelX device", ca=True)
    (tmp / "device.pem").write_bytes(cert.cert_pem() + cert.key_pem())
    with VirtualHome(prefix=f"mgsb{os.getpid() % 1000}", devices=2) as vhome:
        mud = parse_mud((DATA / "rfc9472-local-well-known.json").read_bytes()).mud
        assert mud is not None and mud.transparency is not None
        enforcer = Enforcer(Nft.in_namespace(vhome.gw_ns), vhome.context(), clock=lambda: NOW)
        enforcer.install_home()
        d0, d1 = vhome.nodes
        enforcer.apply_device(DeviceFacts(mac=d0.mac, ipv4=(d0.ipv4,), ipv6=(d0.ipv6,),
                                          mud_url=mud.mud_url, state=LifecycleState.PROFILED),
                              mud, ())
        enforcer.apply_device(DeviceFacts(mac=d1.mac, ipv4=(d1.ipv4,), ipv6=(d1.ipv6,),
                                          state=LifecycleState.DEFAULT), None, ())
        yield vhome, tmp


def test_the_gateway_asks_the_device_itself_and_no_other_lan_address(
        home: tuple[VirtualHome, Path]) -> None:
    vhome, tmp = home
    d0, d1 = vhome.nodes
    cert = tmp / "device.pem"
    other = f"https://{d1.ipv4}/.well-known/sbom"
    itself = f"https://{d0.ipv4}:{PLAIN}/.well-known/sbom"
    with https_in(d0.ns, d0.ipv4, PLAIN, cert) as plain, \
            https_in(d0.ns, d0.ipv4, ELSEWHERE, cert, location=other) as away, \
            https_in(d0.ns, d0.ipv4, HOME_AGAIN, cert, location=itself) as again, \
            https_in(d1.ns, d1.ipv4, PLAIN, cert) as victim:
        # The device is really profiled: it cannot reach the other device itself.
        assert not vhome.tcp(d0.ns, d1.ipv4, PLAIN, 0.5)
        got = vhome.call(vhome.gw_ns, ask_the_device, d0.ipv4, [PLAIN, ELSEWHERE, HOME_AGAIN],
                         timeout=60)
        assert got[PLAIN] == ("fetched", SBOM.decode())
        assert got[HOME_AGAIN] == ("fetched", SBOM.decode())
        key, reason = got[ELSEWHERE]
        assert key == "redirect" and d1.ipv4 in reason
        # Real packets: the device saw the gateway's requests; the other device saw none.
        assert plain.seen and all(peer == GW4 for peer, _ in plain.seen)
        assert away.seen == [(GW4, "/.well-known/sbom")]
        assert again.seen == [(GW4, "/.well-known/sbom")]
        assert victim.seen == []
