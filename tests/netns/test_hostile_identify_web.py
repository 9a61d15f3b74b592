"""Identification from web flows (#16) under forged packets, with real packets.

Device d0 (the attacker) forges packets so that device d1 (the victim, also without a
MUD file) would get d0's clues: its ClientHello read as d1's, or a server's
certificate read as the one d1 received. Real fixed ruleset (policy as data) in a
virtual home, packets built with scapy and sent from d0's namespace through its veth,
the real ``WebWatcher`` on the identification NFLOG group. Cases:

- a new flow (SYN, then the ClientHello) with d1's IPv4 or IPv6 source: the binding
  check drops it and nothing is logged;
- a ClientHello with d1's source injected into d1's own open flow (d1 connected to a
  silent server on port 443 and has not sent its first payload yet; the attacker
  knows the ports and sequence numbers, e.g. from sniffing an open network: read here
  with TCP_REPAIR): conntrack takes it as d1's flow, so it must not be logged;
- a server "certificate" forged from the LAN on a flow where d1 sent its ClientHello
  and waits for the answer: must not be logged either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from mudguard.enforce import Enforcer, Nft
from mudguard.enforce.data_gateway import DataGatewayEnforcer
from mudguard.policy import DeviceFacts, LifecycleState
from mudguard.vhome import INTERNET_HOSTS, VirtualHome, enter
from mudguard.watch.identify_listener import WebWatcher
from tests.pki import make_cert

pytestmark = pytest.mark.root

MFG4, MFG6 = INTERNET_HOSTS["mfg"]
GROUP = 103
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def client_hello(sni: str) -> bytes:
    """A real TLS ClientHello naming ``sni`` (Python's ssl, in memory)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def certificate_record(organisation: str) -> bytes:
    """A TLS 1.2 handshake record carrying a Certificate message (one certificate)."""
    der = make_cert("forged.example.com", organisation=organisation).cert.public_bytes(
        Encoding.DER)
    entry = len(der).to_bytes(3, "big") + der
    body = len(entry).to_bytes(3, "big") + entry
    handshake = b"\x0b" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + len(handshake).to_bytes(2, "big") + handshake


# runs in the attacker's namespace: raw packets through the kernel (IP_HDRINCL)
FORGE = """
import sys, binascii
from scapy.all import IP, IPv6, TCP, Raw, conf, send
from scapy.supersocket import L3RawSocket
from scapy.layers.inet6 import L3RawSocket6
conf.verb = 0
src, dst, sport, dport, flags, payload, seq, ack = sys.argv[1:9]
v6 = ":" in src
conf.L3socket = L3RawSocket6 if v6 else L3RawSocket
ip = IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)
data = binascii.unhexlify(payload)
pkt = ip / TCP(sport=int(sport), dport=int(dport), flags=flags, seq=int(seq), ack=int(ack))
send(pkt / Raw(data) if data else pkt)
"""

# runs in the victim's namespace: connect, optionally send, print the port, hold
HOLD = """
import socket, sys, time, binascii
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.settimeout(5)
s.connect((sys.argv[1], 443))
if sys.argv[2]:
    s.sendall(binascii.unhexlify(sys.argv[2]))
    time.sleep(0.2)
# what an attacker sniffing the flow knows: the next sequence and acknowledgement
# numbers (read with TCP_REPAIR, root in the test's namespace)
s.setsockopt(socket.IPPROTO_TCP, 19, 1)  # TCP_REPAIR on
s.setsockopt(socket.IPPROTO_TCP, 20, 2)  # TCP_REPAIR_QUEUE: the send queue
seq = int.from_bytes(s.getsockopt(socket.IPPROTO_TCP, 21, 4), "little")  # TCP_QUEUE_SEQ
s.setsockopt(socket.IPPROTO_TCP, 20, 1)  # the receive queue
ack = int.from_bytes(s.getsockopt(socket.IPPROTO_TCP, 21, 4), "little")
s.setsockopt(socket.IPPROTO_TCP, 19, -1)  # TCP_REPAIR off, no window probe
print(s.getsockname()[1], seq, ack, flush=True)
time.sleep(float(sys.argv[3]))
s.close()
"""


@contextlib.contextmanager
def silent_server(ns: str) -> Iterator[None]:
    """Port 443 of ``MFG4``/``MFG6``: accepts, reads, never answers (bounded)."""
    stop, ready = threading.Event(), threading.Event()

    def serve() -> None:
        enter(ns)
        listeners = [socket.create_server((MFG4, 443)),
                     socket.create_server((MFG6, 443), family=socket.AF_INET6)]
        ready.set()
        held: list[socket.socket] = []
        deadline = time.monotonic() + 90
        while not stop.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([*listeners, *held], [], [], 0.1)
            for sock in readable:
                if sock in listeners:
                    held.append(sock.accept()[0])
                else:
                    with contextlib.suppress(OSError):
                        if not sock.recv(4096):
                            held.remove(sock)
                            sock.close()
        for sock in [*listeners, *held]:
            sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def _forge(ns: str, src: str, dst: str, sport: int, dport: int, flags: str,
           payload: bytes, seq: int = 1000, ack: int = 0) -> None:
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", FORGE, src, dst,
                    str(sport), str(dport), flags, payload.hex(), str(seq), str(ack)],
                   check=True, capture_output=True, timeout=30)


def _watch(addresses: dict[str, str],
           attacker: dict[str, str], victim: dict[str, str],
           lan_interface: str | None = None) -> dict[str, Any]:
    """In the gateway namespace: the watcher while the attacks run; facts by step."""

    async def main() -> dict[str, Any]:
        got: list[tuple[str, list[tuple[str, str]]]] = []
        watcher = WebWatcher(lambda mac, facts: got.append((mac, list(facts))),
                             group=GROUP, device_of=addresses.get,
                             lan_interface=lan_interface)
        loop = asyncio.get_running_loop()
        steps: dict[str, Any] = {}

        async def step(name: str, action: Any) -> None:
            before, read, forged = len(got), watcher.read, watcher.forged
            await loop.run_in_executor(None, action)
            await asyncio.sleep(0.5)
            steps[name] = {"facts": got[before:], "logged": watcher.read - read,
                           "forged": watcher.forged - forged}

        def new_flow(family: str) -> Any:
            src, dst = (victim["ipv4"], MFG4) if family == "4" else (victim["ipv6"], MFG6)

            def run() -> None:
                _forge(attacker["ns"], src, dst, 40000, 443, "S", b"")
                _forge(attacker["ns"], src, dst, 40000, 443, "PA",
                       client_hello(f"spoof-new{family}.example"))
            return run

        def hold(first: bytes) -> tuple[subprocess.Popen[str], int, int, int]:
            proc = subprocess.Popen(["ip", "netns", "exec", victim["ns"], sys.executable,
                                     "-c", HOLD, MFG4, first.hex(), "4"],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            port, seq, ack = map(int, proc.stdout.readline().split())
            return proc, port, seq, ack

        def established_client() -> None:
            proc, port, seq, ack = hold(b"")
            try:
                _forge(attacker["ns"], victim["ipv4"], MFG4, port, 443, "PA",
                       client_hello("spoof-established.example"), seq, ack)
            finally:
                proc.wait(10)

        def forged_server() -> None:
            proc, port, seq, ack = hold(client_hello("victim.example"))
            try:
                _forge(attacker["ns"], MFG4, victim["ipv4"], 443, port, "PA",
                       certificate_record("Forged Maker Inc."), ack, seq)
            finally:
                proc.wait(10)

        def genuine() -> None:
            proc, *_ = hold(client_hello("victim.example"))
            proc.wait(10)

        await watcher.start()
        try:
            assert watcher.nflog is not None, f"NFLOG group {GROUP} could not be bound"
            await step("new4", new_flow("4"))
            await step("new6", new_flow("6"))
            await step("established_client", established_client)
            await step("forged_server", forged_server)
            await step("genuine", genuine)
        finally:
            await watcher.stop()
        return steps

    return asyncio.run(main())


@pytest.mark.parametrize("design", ["data", "chains"])
def test_forged_web_packets_never_become_another_devices_clues(design: str) -> None:
    """On either design the forward path drops a packet whose source is not its
    sender's before anything reads it (data: the fixed ruleset's first rules; chains:
    the sender's shard, or the main table's first rule for an unknown MAC)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces and nftables")
    prefix = f"mgX5{os.getpid() % 1000}"
    with VirtualHome(prefix=prefix, devices=2) as home:
        nft = Nft.in_namespace(home.gw_ns)
        kind = DataGatewayEnforcer if design == "data" else Enforcer
        enforcer = kind(nft, home.context(identify_log_group=GROUP), clock=lambda: NOW)
        enforcer.install_home()
        attacker, victim = home.nodes
        for node in (attacker, victim):
            enforcer.apply_device(DeviceFacts(mac=node.mac, ipv4=(node.ipv4,),
                                              ipv6=(node.ipv6,),
                                              state=LifecycleState.DEFAULT), None, ())
        addresses = {a: n.mac for n in (attacker, victim) for a in (n.ipv4, n.ipv6)}
        with silent_server(home.inet_ns):
            steps = home.call(home.gw_ns, _watch, addresses,
                              {"ns": attacker.ns}, {"ns": victim.ns, "ipv4": victim.ipv4,
                                                    "ipv6": victim.ipv6}, home.lan_if,
                              timeout=120)
    # the victim's own ClientHello is read (the observation works in this home)
    assert steps["genuine"]["facts"] == [(victim.mac, [("sni", "victim.example")])]
    for name in ("new4", "new6", "established_client"):
        assert steps[name]["facts"] == [], (name, steps[name])
        # either design drops a packet whose (MAC, source) is not a device's before the
        # established fast path (session 6): the kernel logs nothing (the reader's own
        # check, which refuses a frame whose MAC is not the address's device, stays)
        assert steps[name]["logged"] == 0, (name, steps[name])
    # the victim's genuine ClientHello is read; the forged certificate is not
    forged = steps["forged_server"]
    assert forged["facts"] == [(victim.mac, [("sni", "victim.example")])], forged
    assert forged["logged"] - forged["forged"] == 1, forged
