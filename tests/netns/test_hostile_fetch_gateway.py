"""SSRF to the gateway itself: a MUD URL must never make the gateway connect to itself.

In a virtual home, a listener on every address of the gateway (its WAN side too, IPv4
and IPv6, port 443) counts connections. The daemon's own fetch configuration
(``app.fetch_config``, built from a real configuration) fetches, inside the gateway's
namespace, MUD URLs that name the gateway: its WAN IPv4 and IPv6 addresses, its LAN
addresses, the IPv6 subnet-router anycast address a forwarding gateway answers on, a
name the fake Internet's DNS resolves to the WAN address, a redirect from a real HTTPS
server on the fake Internet to each of those, and an address the WAN gains while the
gateway runs (DHCP, SLAAC). Every one is refused with a clear ``blocked_address``
error and the listener sees no connection; a plain connection made afterwards proves
the listener was there to see one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mudguard.vhome import INTERNET_HOSTS, VirtualHome
from tests.netns.https_servers import https_server_in
from tests.pki import make_cert
from tests.unit.test_mud_parse import base

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")]

WAN4, WAN6 = "203.0.113.1", "2001:db8:ff::1"
WAN6_ANYCAST = "2001:db8:ff::"
LAN4, LAN6 = "192.0.2.1", "2001:db8:1::1"
LATE_WAN4 = "203.0.113.9"  # the WAN gains it while the gateway runs (a new DHCP lease)
SERVER = "mud.example.com"  # the fake Internet's HTTPS server (it redirects)
GW_NAME = "gw.example.net"  # resolves to the gateway's WAN addresses
MUD_BODY = json.dumps(base()).encode()

DIRECT = {
    "wan4": f"https://{WAN4}/mud.json",
    "wan6": f"https://[{WAN6}]/mud.json",
    "wan6-anycast": f"https://[{WAN6_ANYCAST}]/mud.json",
    "lan4": f"https://{LAN4}/mud.json",
    "lan6": f"https://[{LAN6}]/mud.json",
    "name": f"https://{GW_NAME}/mud.json",
}
REDIRECTS = {f"/to-{key}": url for key, url in DIRECT.items()}


class Redirector(BaseHTTPRequestHandler):
    """A hostile MUD server: ``/to-*`` redirect to the gateway; ``/ok`` serves a file."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path == "/ok":
            self.send_response(200)
            self.send_header("Content-Type", "application/mud+json")
            self.send_header("Content-Length", str(len(MUD_BODY)))
            self.end_headers()
            self.wfile.write(MUD_BODY)
            return
        location = REDIRECTS.get(self.path)
        self.send_response(302 if location else 404)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


def redirector_in(ns: str, address: str, cert_file: Path) -> Any:
    """The redirector on ``address``:443 in namespace ``ns``."""
    return https_server_in(ns, lambda: ThreadingHTTPServer((address, 443), Redirector),
                           cert_file)


def fetch_everything_in_the_gateway(config_text: str, wan_if: str) -> dict[str, Any]:
    """Inside the gateway's namespace: listen on all its addresses, fetch every hostile
    URL with the daemon's fetch configuration, then prove the listener works."""
    from mudguard.app import fetch_config
    from mudguard.daemon.config import parse_config
    from mudguard.mud.fetch import FetchError, fetch_mud_bytes

    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 443))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[str] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(f"{peer[0]} -> {conn.getsockname()[0]}")
            conn.close()  # no TLS: a fetch that got here fails at once instead of waiting

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    config = fetch_config(parse_config(config_text))
    outcomes: dict[str, Any] = {}

    def attempt(label: str, url: str) -> None:
        try:
            fetch_mud_bytes(url, config=config)
            outcomes[label] = ("fetched", "")
        except FetchError as exc:
            outcomes[label] = (exc.key, exc.reason)

    try:
        attempt("control", f"https://{SERVER}/ok")
        for key, url in DIRECT.items():
            attempt(key, url)
            attempt(f"redirect-{key}", f"https://{SERVER}/to-{key}")
        # The WAN gets a new address after the fetcher was configured (DHCP, SLAAC).
        subprocess.run(["ip", "addr", "add", f"{LATE_WAN4}/24", "dev", wan_if], check=True)
        attempt("late-wan4", f"https://{LATE_WAN4}/mud.json")
        during = list(accepted)
        # The listener is really there: a plain connection to the WAN address reaches it.
        with socket.create_connection((WAN4, 443), timeout=2):
            pass
        for _ in range(50):
            if len(accepted) > len(during):
                break
            done.wait(0.02)
        return {"outcomes": outcomes, "during": during, "after": list(accepted)}
    finally:
        done.set()
        listener.close()
        thread.join(2)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VirtualHome, Path]]:
    from mudguard.demo.runner import gateway_config

    tmp = tmp_path_factory.mktemp("ssrf")
    ca = make_cert("ssrf test CA", ca=True)
    server_cert = make_cert(SERVER, issuer=ca, dns=(SERVER,))
    (tmp / "ca.pem").write_bytes(ca.cert_pem())
    (tmp / "server.pem").write_bytes(server_cert.cert_pem() + server_cert.key_pem())
    with VirtualHome(prefix=f"mgss{os.getpid() % 1000}", devices=0) as vhome:
        # A forwarding gateway answers on the IPv6 subnet-router anycast address.
        vhome.run(vhome.gw_ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
        cloud4, _cloud6 = INTERNET_HOSTS["cloud"]
        vhome.serve_dns({SERVER: [cloud4], GW_NAME: [WAN4, WAN6]})
        text = gateway_config(lan_interface=vhome.lan_if, wan_interface=vhome.wan_if,
                              lan_prefix="192.0.2.0/24", gateway=LAN4, state_dir=tmp / "state",
                              ca_file=tmp / "ca.pem")
        (tmp / "gateway.toml").write_text(text)
        with redirector_in(vhome.inet_ns, cloud4, tmp / "server.pem"):
            yield vhome, tmp


def test_no_mud_url_reaches_the_gateway_itself(home: tuple[VirtualHome, Path]) -> None:
    vhome, tmp = home
    found = vhome.call(vhome.gw_ns, fetch_everything_in_the_gateway,
                       (tmp / "gateway.toml").read_text(), vhome.wan_if, timeout=120)
    outcomes = found["outcomes"]
    # The fetch path itself works in the gateway's namespace (DNS, TLS, the fake Internet).
    assert outcomes.pop("control") == ("fetched", "")
    assert found["during"] == [], "a MUD URL made the gateway connect to itself"
    assert len(found["after"]) == 1, "the listener never saw the plain connection"
    assert set(outcomes) == {*DIRECT, *(f"redirect-{k}" for k in DIRECT), "late-wan4"}
    for label, (key, reason) in outcomes.items():
        assert key == "blocked_address", (label, key, reason)
    # The errors say why, naming the gateway (WAN addresses are not in any fixed list).
    for label in ("wan4", "wan6", "name", "redirect-wan4", "late-wan4"):
        assert "gateway itself" in outcomes[label][1], outcomes[label]
    assert vhome.wan_if in outcomes["wan4"][1]
    assert "anycast" in outcomes["wan6-anycast"][1]
