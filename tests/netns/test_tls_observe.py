"""RFC 9761 (D)TLS profiles observed with real packets: a profiled device makes real TLS
connections (Python's ssl module) through the compiled rules to a fake cloud server in
the virtual home's Internet; the kernel logs the first payload packet of each new flow
to the profiled port on the ClientHello NFLOG group; the watcher parses it and the
matcher judges it against the device's MUD profile. TLS 1.3 with the expected ALPN fits;
TLS 1.0, another ALPN, TLS 1.2 with another cipher suite and plain text on the TLS port
deviate, each with its reason, and the third deviation is a quarantine alert. A flow to
a port without a profile is never logged."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mudguard.mud import Direction, parse_mud
from mudguard.policy import device_id
from mudguard.vhome import INTERNET_HOSTS, enter
from mudguard.watch.nflog import FlowEvent
from mudguard.watch.tls import TlsObservation, judge
from mudguard.watch.tls_listener import TlsWatcher
from mudguard.watch.tracker import DeviationTracker, Thresholds
from tests.netns.rulesets import make_enforcer
from tests.netns.test_enforce import NOW, Gateway, _gateway
from tests.pki import make_cert

pytestmark = pytest.mark.root

CLOUD4, CLOUD6 = INTERNET_HOSTS["cloud"]
TLS_PORT, PLAIN_PORT, DTLS_PORT = 8883, 8080, 5684
TLS_GROUP = 101

MUD = {
    "ietf-mud:mud": {
        "mud-version": 1, "mud-url": "https://sensor.example.com/tls-sensor.json",
        "last-update": "2026-01-01T00:00:00Z", "cache-validity": 48, "is-supported": True,
        "systeminfo": "A sensor speaking MQTT over TLS 1.3", "extensions": ["ietf-mud-tls"],
        "ietf-mud-tls:is-tls-dtls-profile-supported": True,
        "from-device-policy": {"access-lists": {"access-list": [{"name": "from-sensor"},
                                                                {"name": "from-sensor6"}]}},
    },
    "ietf-access-control-list:acls": {"acl": [{
        "name": "from-sensor", "type": "ipv4-acl-type", "aces": {"ace": [
            {"name": "mqtts", "matches": {
                "ipv4": {"protocol": 6, "destination-ipv4-network": f"{CLOUD4}/32"},
                "tcp": {"ietf-mud:direction-initiated": "from-device",
                        "destination-port": {"operator": "eq", "port": TLS_PORT}},
                "ietf-acl-tls:client-profiles": {"tls-dtls-profile": [{
                    "name": "sensor-stack", "supported-tls-version": ["tls13"],
                    "cipher-suite": [4865, 4866, 4867],
                    "application-protocol": ["mqtt"]}]}},
             "actions": {"forwarding": "accept"}},
            {"name": "plain", "matches": {
                "ipv4": {"protocol": 6, "destination-ipv4-network": f"{CLOUD4}/32"},
                "tcp": {"destination-port": {"operator": "eq", "port": PLAIN_PORT}}},
             "actions": {"forwarding": "accept"}},
            {"name": "coaps", "matches": {
                "ipv4": {"protocol": 17, "destination-ipv4-network": f"{CLOUD4}/32"},
                "udp": {"destination-port": {"operator": "eq", "port": DTLS_PORT}},
                "ietf-acl-tls:client-profiles": {"tls-dtls-profile": [{
                    "name": "coap-stack", "supported-dtls-version": ["dtls13"],
                    "application-protocol": ["coap"]}]}},
             "actions": {"forwarding": "accept"}},
        ]}},
        {"name": "from-sensor6", "type": "ipv6-acl-type", "aces": {"ace": [
            {"name": "mqtts6", "matches": {
                "ipv6": {"protocol": 6, "destination-ipv6-network": f"{CLOUD6}/128"},
                "tcp": {"ietf-mud:direction-initiated": "from-device",
                        "destination-port": {"operator": "eq", "port": TLS_PORT}},
                "ietf-acl-tls:client-profiles": {"tls-dtls-profile": [{
                    "name": "sensor-stack", "supported-tls-version": ["tls13"],
                    "cipher-suite": [4865, 4866, 4867],
                    "application-protocol": ["mqtt"]}]}},
             "actions": {"forwarding": "accept"}},
        ]}}]},
}

# The device's connections, in order: (label, code run in the device namespace).
CLIENT = """
import socket, ssl, struct, sys, warnings
warnings.simplefilter("ignore")
CLOUD, CLOUD6, PORT, PLAIN, DTLS = {cloud!r}, {cloud6!r}, {port}, {plain}, {dtls}

def dtls_hello(version, alpn):
    ext = bytes([len(alpn)]) + alpn
    ext = struct.pack("!HHH", 16, len(ext) + 2, len(ext)) + ext
    ext += struct.pack("!HHB", 43, 3, 2) + struct.pack("!H", version)
    body = struct.pack("!H", 0xFEFD) + bytes(32) + b"\\x00\\x00" + struct.pack("!HH", 2, 0x1301)
    body += b"\\x01\\x00" + struct.pack("!H", len(ext)) + ext
    size = len(body).to_bytes(3, "big")
    hs = b"\\x01" + size + b"\\x00\\x00" + bytes(3) + size + body
    return struct.pack("!BHHHIH", 22, 0xFEFF, 0, 0, 0, len(hs)) + hs

def udp(payload):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(payload, (CLOUD, DTLS))
    return "sent"

def tls(versions, alpn, ciphers=None, cloud=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version, ctx.maximum_version = versions
    if ciphers:
        ctx.set_ciphers(ciphers)
    ctx.set_alpn_protocols(alpn)
    with socket.create_connection((cloud or CLOUD, PORT), timeout=3) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="cloud.example.com") as s:
                return f"{{s.version()}} {{s.selected_alpn_protocol()}}"
        except (ssl.SSLError, OSError) as exc:
            return f"failed {{type(exc).__name__}}"

V = ssl.TLSVersion
which = sys.argv[1]
if which == "good":
    print(tls((V.TLSv1_3, V.TLSv1_3), ["mqtt"]))
elif which == "plain-port":
    with socket.create_connection((CLOUD, PLAIN), timeout=3) as s:
        s.sendall(b"hello")
    print("sent")
elif which == "tls10":
    print(tls((V.TLSv1, V.TLSv1), ["mqtt"], "DEFAULT:@SECLEVEL=0"))
elif which == "alpn-h2":
    print(tls((V.TLSv1_3, V.TLSv1_3), ["h2"]))
elif which == "tls12-cbc":
    print(tls((V.TLSv1_2, V.TLSv1_2), ["mqtt"], "ECDHE-ECDSA-AES128-SHA"))
elif which == "good6":
    print(tls((V.TLSv1_3, V.TLSv1_3), ["mqtt"], cloud=CLOUD6))
elif which == "dtls13":
    print(udp(dtls_hello(0xFEFC, b"coap")))
elif which == "dtls12":
    print(udp(dtls_hello(0xFEFD, b"coap")))
elif which == "not-tls":
    with socket.create_connection((CLOUD, PORT), timeout=3) as s:
        s.sendall(b"CONNECT mqtt in plain text")
    print("sent")
"""


@contextlib.contextmanager
def tls_server(ns: str, cert_file: Path) -> Iterator[None]:
    """A TLS server on CLOUD4:TLS_PORT in ``ns`` (TLS 1.0-1.3, ALPN mqtt or h2)."""
    stop = threading.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            enter(ns)  # this thread only
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert_file)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.set_alpn_protocols(["mqtt", "h2"])
            listeners = [socket.create_server((CLOUD4, TLS_PORT)),
                         socket.create_server((CLOUD6, TLS_PORT), family=socket.AF_INET6)]
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        with listeners[0], listeners[1]:
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                readable, _, _ = select.select(listeners, [], [], 0.1)
                if not readable:
                    continue
                conn, _ = readable[0].accept()
                conn.settimeout(2)
                with contextlib.suppress(OSError, ssl.SSLError), \
                        ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
                conn.close()

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


@pytest.fixture
def gw() -> Iterator[Gateway]:
    yield from _gateway(f"h18t{os.getpid() % 1000}", 1, tls_log_group=TLS_GROUP)


def _device(ns: str, which: str) -> str:
    code = textwrap.dedent(CLIENT.format(cloud=CLOUD4, cloud6=CLOUD6, port=TLS_PORT,
                                         plain=PLAIN_PORT, dtls=DTLS_PORT))
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, which],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def _watch(device_ns: str, device_ips: tuple[str, str], dev_id: str, mud_text: str,
           scenario: list[str]) -> dict[str, Any]:
    """In the gateway namespace: the ClientHello watcher, judge and tracker, while the
    device runs ``scenario``; what each step printed, each judged observation, alerts."""
    mud = parse_mud(mud_text).mud
    assert mud is not None

    async def main() -> dict[str, Any]:
        seen: list[TlsObservation] = []
        watcher = TlsWatcher(seen.append, group=TLS_GROUP,
                             device_of=lambda a: dev_id if a in device_ips else None)
        tracker = DeviationTracker(Thresholds(tls_deviations=3))
        steps: list[dict[str, Any]] = []
        await watcher.start()
        try:
            assert watcher.nflog is not None, f"NFLOG group {TLS_GROUP} could not be bound"
            loop = asyncio.get_running_loop()
            for which in scenario:
                before = len(seen)
                printed = await loop.run_in_executor(None, _device, device_ns, which)
                deadline = time.monotonic() + 2
                while len(seen) == before and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)  # anything more would be a second log of the flow
                outcomes = [judge(o, mud) for o in seen[before:]]
                alerts = []
                for outcome in outcomes:
                    if outcome.deviates:
                        o = outcome.observation
                        event = FlowEvent(device_id=o.device_id,
                                          direction=Direction.FROM_DEVICE, family=o.family,
                                          src=o.src, dst=o.dst, protocol=o.protocol,
                                          src_port=o.src_port, dst_port=o.dst_port)
                        alerts += tracker.observe_tls(event, outcome.reason, time.monotonic())
                steps.append({"which": which, "printed": printed,
                              "outcomes": [o.as_dict() for o in outcomes],
                              "alerts": [a.as_dict() for a in alerts]})
        finally:
            await watcher.stop()
        return {"steps": steps}

    return asyncio.run(main())


SCENARIO = ["good", "plain-port", "tls10", "alpn-h2", "tls12-cbc", "not-tls", "good6",
            "dtls13", "dtls12", "good"]


def test_client_hellos_are_judged_against_the_mud_profile(gw: Gateway) -> None:
    h, d0 = gw.home, gw.d[0]
    mud = parse_mud(json.dumps(MUD)).mud
    assert mud is not None
    assert [a.name for a in mud.tls_profiled_aces()] == ["mqtts", "coaps", "mqtts6"]
    gw.apply(d0, mud)
    with tempfile.TemporaryDirectory(prefix="h18-tls-") as tmp:
        cert = make_cert("cloud.example.com", dns=("cloud.example.com",))
        cert_file = Path(tmp) / "cloud.pem"
        cert_file.write_bytes(cert.cert_pem() + cert.key_pem())
        with tls_server(h.inet_ns, cert_file):
            started = time.monotonic()
            result = h.call(h.gw_ns, _watch, d0.ns, (d0.ipv4, d0.ipv6), device_id(d0.mac),
                            json.dumps(MUD), SCENARIO, timeout=90)
            elapsed = time.monotonic() - started
    steps = {s["which"]: s for s in result["steps"][:-1]}
    good = steps["good"]
    assert good["printed"] == "TLSv1.3 mqtt"  # a real handshake through the rules
    assert len(good["outcomes"]) == 1 and good["outcomes"][0]["fits"] is True
    assert good["outcomes"][0]["ace"] == "from-sensor/mqtts"
    hello = good["outcomes"][0]["observation"]["hello"]
    assert hello["versions"] == [0x0304] and hello["alpn"] == ["mqtt"]
    assert hello["server_name"] == "cloud.example.com"
    assert steps["plain-port"]["printed"] == "sent"
    assert steps["plain-port"]["outcomes"] == []  # no profile on that port: never logged

    def reason(which: str) -> str:
        outcomes = steps[which]["outcomes"]
        assert len(outcomes) == 1, (which, outcomes)  # one log per new flow
        assert outcomes[0]["fits"] is False, (which, outcomes)
        return str(outcomes[0]["reason"])

    assert "offered TLS 1.0" in reason("tls10")
    assert reason("alpn-h2") == "ALPN h2 instead of mqtt"
    assert steps["alpn-h2"]["printed"] == "TLSv1.3 h2"  # the handshake itself went through
    tls12 = reason("tls12-cbc")
    assert "offered TLS 1.2" in tls12 and "cipher suite 0xc009 not in its profile" in tls12
    assert reason("not-tls") == "not a TLS ClientHello (not a TLS handshake record)"
    # The third deviation (TLS 1.0, ALPN, TLS 1.2) is the quarantine alert; then quiet.
    assert [len(steps[w]["alerts"]) for w in ("tls10", "alpn-h2", "tls12-cbc", "not-tls")] \
        == [0, 0, 1, 0]
    alert = steps["tls12-cbc"]["alerts"][0]
    assert alert["kind"] == "tls" and "3 TLS ClientHellos" in alert["reason"]
    assert len(alert["evidence"]) == 3
    good6 = steps["good6"]  # IPv6: the same rules in the inet family
    assert good6["printed"] == "TLSv1.3 mqtt" and len(good6["outcomes"]) == 1
    assert good6["outcomes"][0]["fits"] is True
    assert good6["outcomes"][0]["ace"] == "from-sensor6/mqtts6"
    assert good6["outcomes"][0]["observation"]["dst"] == CLOUD6
    dtls13 = steps["dtls13"]["outcomes"]  # DTLS: the first datagram, from the device chain
    assert len(dtls13) == 1 and dtls13[0]["fits"] is True
    assert dtls13[0]["ace"] == "from-sensor/coaps"
    assert dtls13[0]["observation"]["hello"]["dtls"] is True
    assert reason("dtls12") == "offered DTLS 1.2"
    last = result["steps"][-1]
    assert last["printed"] == "TLSv1.3 mqtt" and last["outcomes"][0]["fits"] is True
    print(f"\n{len(SCENARIO)} connections judged in {elapsed:.1f} s")


def test_a_restart_finds_a_profiled_device_intact(gw: Gateway) -> None:
    """Reconcile reads the observation rules back like any other: nothing to repair."""
    mud = parse_mud(json.dumps(MUD)).mud
    assert mud is not None
    policy = gw.apply(gw.d[0], mud)
    # A second enforcer of the design under test (a restarted daemon's).
    second = make_enforcer(gw.nft, gw.enforcer.context, clock=lambda: NOW)
    report = second.reconcile([policy])
    assert not report.reinstalled_table and report.repaired == []
    assert report.ok == [gw.d[0].mac]
