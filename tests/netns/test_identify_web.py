"""Identification from web flows (#16) with real packets, on policy as data: a device
on the home default (no MUD file) makes real TLS 1.2, TLS 1.3 and HTTP connections
through the gateway's fixed ruleset to servers in the virtual home's Internet (Python's
ssl module; the TLS server's certificate has the subject O="TP-Link Corporation
Limited", and the client asks for a small MSS so the server's first flight spans
several segments); the kernel logs the client's first payload and the server's first
flight on the identification NFLOG group; ``WebWatcher`` reads them and the live
identifier names the maker from the certificate's organisation (on both designs: the
rules are the main table's, ``policy._nft.identify_rules``). A trusted device making
the same connection is never logged, and the rules change no verdict."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mudguard.enforce import Enforcer, Nft
from mudguard.enforce.data_gateway import DataGatewayEnforcer
from mudguard.identify.live import LiveIdentifier
from mudguard.policy import DeviceFacts, LifecycleState
from mudguard.vhome import INTERNET_HOSTS, VirtualHome, enter
from mudguard.watch.identify_listener import WebWatcher
from tests.pki import make_cert

pytestmark = pytest.mark.root

CLOUD4, CLOUD6 = INTERNET_HOSTS["cloud"]
GROUP = 102
ORG = "TP-Link Corporation Limited"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

CLIENT = """
import socket, ssl, sys
CLOUD4, CLOUD6 = {cloud4!r}, {cloud6!r}

def tls(address, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 300)
        raw.settimeout(3)
        raw.connect((address, 443))
        with ctx.wrap_socket(raw, server_hostname="cloud.example.com") as s:
            s.sendall(b"hello")
            s.recv(16)
            return s.version()

def http():
    with socket.create_connection((CLOUD4, 80), timeout=3) as s:
        s.sendall(b"GET /status HTTP/1.1\\r\\nHost: cloud.example.com\\r\\n"
                  b"User-Agent: Kasa_Android/3.1.2\\r\\n\\r\\n")
        return s.recv(64).split(b"\\r\\n")[0].decode()

def download():
    with socket.create_connection((CLOUD4, 8443), timeout=3) as s:
        s.sendall(b"GET /fw.bin HTTP/1.1\\r\\nHost: cloud.example.com\\r\\n"
                  b"User-Agent: Kasa_Android/3.1.2\\r\\n\\r\\n")
        got = b""
        while len(got) < 60000:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return str(len(got) > 60000)

def flood():
    import time
    started, done = time.monotonic(), 0
    for _ in range(150):
        done += http() == "HTTP/1.1 200 OK"
    return f"{{done}} {{time.monotonic() - started:.3f}}"

V = ssl.TLSVersion
which = sys.argv[1]
print({{"tls12": lambda: tls(CLOUD4, V.TLSv1_2), "tls13": lambda: tls(CLOUD4, V.TLSv1_3),
        "tls12v6": lambda: tls(CLOUD6, V.TLSv1_2), "http": http, "flood": flood,
        "download": download}}[which]())
"""


@contextlib.contextmanager
def servers(ns: str, cert_file: Path, address4: str = CLOUD4,
            address6: str = CLOUD6) -> Iterator[None]:
    """TLS 1.2/1.3 on port 443 of ``address4`` and ``address6``, HTTP on port 80."""
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            enter(ns)  # this thread only
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert_file)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            listeners = {socket.create_server((address4, 443)): "tls",
                         socket.create_server((address6, 443), family=socket.AF_INET6): "tls",
                         socket.create_server((address4, 80)): "http",
                         socket.create_server((address4, 8443)): "download"}
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select(list(listeners), [], [], 0.1)
            for listener in readable:
                conn, _ = listener.accept()
                conn.settimeout(2)
                with contextlib.suppress(OSError, ssl.SSLError), conn:
                    if listeners[listener] == "http":
                        conn.recv(4096)
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        continue
                    if listeners[listener] == "download":  # plain HTTP on a TLS port
                        conn.recv(4096)
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n\r\n"
                                     + bytes(60000))
                        continue
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(tls.recv(16))
        for listener in listeners:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    if failure:
        raise failure[0]
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def _device(ns: str, which: str, address4: str = CLOUD4, address6: str = CLOUD6) -> str:
    """Run one of ``CLIENT``'s connections in the device namespace ``ns``."""
    code = textwrap.dedent(CLIENT.format(cloud4=address4, cloud6=address6))
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, which],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def _watch(addresses: dict[str, str], scenario: list[tuple[str, str]],
           watched_mac: str) -> dict[str, Any]:
    """In the gateway namespace: the watcher feeding a live identifier while each
    ``(device namespace, step)`` runs; what each step printed and the facts it gave."""

    async def main() -> dict[str, Any]:
        identifier = LiveIdentifier.load()
        identifier.oui = None  # the virtual devices' MACs are locally administered anyway
        got: list[tuple[str, list[tuple[str, str]]]] = []

        def on_facts(mac: str, facts: Any) -> None:
            got.append((mac, list(facts)))
            identifier.on_web(mac, facts)

        watcher = WebWatcher(on_facts, group=GROUP, device_of=addresses.get)
        steps: list[dict[str, Any]] = []
        await watcher.start()
        try:
            assert watcher.nflog is not None, f"NFLOG group {GROUP} could not be bound"
            loop = asyncio.get_running_loop()
            for ns, which in scenario:
                before, read = len(got), watcher.read
                printed = await loop.run_in_executor(None, _device, ns, which)
                deadline = time.monotonic() + 2
                while len(got) == before and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # the certificate, and anything logged twice
                steps.append({"ns": ns, "which": which, "printed": printed,
                              "facts": got[before:], "logged": watcher.read - read})
        finally:
            await watcher.stop()
        mac = bytes.fromhex(watched_mac.replace(":", ""))
        return {"steps": steps, "identification": identifier.identification(mac).to_json(),
                "read": watcher.read, "flows_left": len(watcher.observer.flows)}

    return asyncio.run(main())


@pytest.mark.parametrize("design", ["data", "chains"])
def test_web_flows_of_a_device_without_mud_file_identify_its_maker(design: str) -> None:
    """On either ruleset design (``[gateway] ruleset``): the same rules in the main
    table, the same logs."""
    prefix = f"mgT5{os.getpid() % 1000}"
    with VirtualHome(prefix=prefix, devices=2) as home, \
            tempfile.TemporaryDirectory(prefix="mgT5-") as tmp:
        nft = Nft.in_namespace(home.gw_ns)
        kind = DataGatewayEnforcer if design == "data" else Enforcer
        enforcer = kind(nft, home.context(identify_log_group=GROUP), clock=lambda: NOW)
        enforcer.install_home()
        d0, d1 = home.nodes
        # one segment per packet from the Internet (no GSO aggregate), so the server's
        # first flight reaches the gateway in several packets to put in order
        home.run(home.inet_ns, ["ip", "link", "set", "dev", f"{prefix}i", "gso_max_segs",
                                "1"])
        for node, state in ((d0, LifecycleState.DEFAULT), (d1, LifecycleState.TRUSTED)):
            enforcer.apply_device(DeviceFacts(mac=node.mac, ipv4=(node.ipv4,),
                                              ipv6=(node.ipv6,), state=state), None, ())
        cert = make_cert("cloud.example.com", dns=("cloud.example.com",), organisation=ORG)
        cert_file = Path(tmp) / "cloud.pem"
        cert_file.write_bytes(cert.cert_pem() + cert.key_pem())
        addresses = {a: n.mac for n in (d0, d1) for a in (n.ipv4, n.ipv6)}
        scenario = [(d1.ns, "tls12"), (d0.ns, "tls12"), (d0.ns, "tls13"), (d0.ns, "http"),
                    (d0.ns, "tls12v6"), (d0.ns, "download"), (d0.ns, "flood")]
        with servers(home.inet_ns, cert_file):
            result = home.call(home.gw_ns, _watch, addresses, scenario, d0.mac, timeout=90)
        listing = home.run(home.gw_ns, ["nft", "list", "set", "inet", "mudguard",
                                        "identify_macs"]).stdout
    steps = result["steps"]
    flood = steps.pop()
    download = steps.pop()
    assert [s["printed"] for s in steps] == ["TLSv1.2", "TLSv1.2", "TLSv1.3",
                                             "HTTP/1.1 200 OK", "TLSv1.2"]
    # plain HTTP on a TLS port: the request is read, the 60 KB answer is not logged
    assert download["printed"] == "True" and download["logged"] == 1
    assert download["facts"][0][1][0] == ("user_agent", "Kasa_Android/3.1.2")
    # 150 new flows in a burst: the kernel's per-device limit (20/s, burst 40) logs few
    done, seconds = flood["printed"].split()
    assert int(done) == 150  # observation never refuses a connection
    assert 20 <= flood["logged"] <= 40 + 20 * float(seconds) + 5, (flood["logged"], seconds)
    assert d0.mac in listing and d1.mac not in listing
    trusted, tls12, tls13, http, tls12v6 = steps
    assert trusted["facts"] == [] and trusted["logged"] == 0  # a trusted device: never
    # the ClientHello, then the server's first flight in several segments (MSS 300) up
    # to the client's second payload: a bounded number of logs per flow
    assert 3 <= tls12["logged"] <= 8, tls12["logged"]
    assert http["logged"] == 1  # the request; an HTTP server's replies are not logged
    assert tls12["facts"][0] == (d0.mac, [("sni", "cloud.example.com")])
    certificate = tls12["facts"][1]
    assert certificate[0] == d0.mac
    assert ("cert_org", ORG) in certificate[1] and ("cert_cn", "cloud.example.com") in \
        certificate[1]
    assert tls13["facts"] == [(d0.mac, [("sni", "cloud.example.com")])]  # encrypted cert
    assert http["facts"] == [(d0.mac, [("user_agent", "Kasa_Android/3.1.2"),
                                       ("http_host", "cloud.example.com")])]
    assert [m for m, _ in tls12v6["facts"]] == [d0.mac, d0.mac]
    assert ("cert_org", ORG) in tls12v6["facts"][1][1]
    assert result["flows_left"] == 0
    identification = result["identification"]
    assert identification["manufacturer"] == "TP-Link"
    assert identification["confidence_detail"]["manufacturer"] >= 0.5
    sources = {e["source"] for e in identification["evidence"]}
    assert {"tls_certificate", "http"} <= sources  # (an SNI naming no maker is no evidence)
