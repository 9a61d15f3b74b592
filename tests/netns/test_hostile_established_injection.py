"""Injection into another device's established flow, with real packets (#9).

Device d1 (the victim) holds a TCP connection to an echo server in the fake Internet.
An attacker on the LAN that knows the flow's ports and sequence numbers (e.g. sniffed
on an open network; read here with TCP_REPAIR) sends a segment with d1's source
address, d1's ports and the next sequence number into that flow. conntrack takes it
as d1's (conntrack does not look at MACs), so a forward chain that accepts
``ct state established`` before its source binding forwards it and the server reads
the attacker's bytes as d1's. The attacker is either a managed device (d0, its own
MAC) or a MAC the gateway does not know (d2, never installed).

The gateway must drop the forged segment, and d1's own flow must keep working:
the server receives exactly d1's bytes, and its echo reaches d1. IPv4 and IPv6,
on both enforcement designs (``_nft.py`` chains and policy as data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from mudguard.enforce import Enforcer, Nft
from mudguard.enforce.data_gateway import DataGatewayEnforcer
from mudguard.policy import DeviceFacts, LifecycleState
from mudguard.vhome import INTERNET_HOSTS, VirtualHome
from tests.netns.test_hostile_identify_web import FORGE

pytestmark = pytest.mark.root

CLOUD4, CLOUD6 = INTERNET_HOSTS["cloud"]
PORT = 5001
NOW = datetime(2026, 1, 1, tzinfo=UTC)
FIRST, SECOND, FORGED = b"a1-hello", b"a2-after", b"INJECTED"  # same length on purpose

# the fake Internet's server: echoes every byte and, told "dump" on stdin, prints
# what each connection received (bounded: 60 s, 16 connections)
SERVER = """
import json, select, socket, sys, time
port = int(sys.argv[1])
listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
listener.bind(("::", port))
listener.listen(16)
print("ready", flush=True)
received, conns = {}, {}
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    readable, _, _ = select.select([listener, sys.stdin, *conns], [], [], 0.1)
    for sock in readable:
        if sock is sys.stdin:
            sys.stdin.readline()
            print(json.dumps(received), flush=True)
            continue
        if sock is listener:
            conn, peer = listener.accept()
            if len(conns) < 16:
                conns[conn] = f"{peer[0].removeprefix('::ffff:')} {peer[1]}"
                received[conns[conn]] = ""
            else:
                conn.close()
            continue
        data = sock.recv(4096)
        if not data:
            del conns[sock]
            sock.close()
            continue
        received[conns[sock]] += data.hex()
        sock.sendall(data)
"""

# the victim: connect, exchange FIRST, tell the next sequence/acknowledgement numbers
# (TCP_REPAIR, root in its namespace), wait for the attack, exchange SECOND, print the echo
VICTIM = """
import binascii, socket, sys
server, port, first, second = sys.argv[1], int(sys.argv[2]), *map(binascii.unhexlify, sys.argv[3:5])
family = socket.AF_INET6 if ":" in server else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.settimeout(5)
s.connect((server, port))
s.sendall(first)
echo = b""
while len(echo) < len(first):
    echo += s.recv(4096)
s.setsockopt(socket.IPPROTO_TCP, 19, 1)  # TCP_REPAIR on
s.setsockopt(socket.IPPROTO_TCP, 20, 2)  # TCP_REPAIR_QUEUE: the send queue
seq = int.from_bytes(s.getsockopt(socket.IPPROTO_TCP, 21, 4), "little")  # TCP_QUEUE_SEQ
s.setsockopt(socket.IPPROTO_TCP, 20, 1)  # the receive queue
ack = int.from_bytes(s.getsockopt(socket.IPPROTO_TCP, 21, 4), "little")
s.setsockopt(socket.IPPROTO_TCP, 19, -1)  # TCP_REPAIR off, no window probe
print(s.getsockname()[1], seq, ack, echo.hex(), flush=True)
sys.stdin.readline()  # the attacker has sent
s.sendall(second)
s.settimeout(3)
got = b""
try:
    while len(got) < len(second):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
except OSError:
    pass
print(got.hex(), flush=True)
s.close()
"""


def _python(ns: str, script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", script, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def _tell(proc: subprocess.Popen[str], text: str = "go") -> None:
    assert proc.stdin is not None
    proc.stdin.write(text + "\n")
    proc.stdin.flush()


def _forge(ns: str, src: str, dst: str, sport: int, seq: int, ack: int,
           dport: int = PORT) -> None:
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", FORGE, src, dst,
                    str(sport), str(dport), "PA", FORGED.hex(), str(seq), str(ack)],
                   check=True, capture_output=True, timeout=30)


def _attack(victim_ns: str, victim_ip: str, attacker_ns: str,
            server: subprocess.Popen[str], servers: tuple[str, str] = (CLOUD4, CLOUD6),
            server_port: int = PORT) -> dict[str, Any]:
    """One round: the victim's flow, the attacker's segment into it, what each side got."""
    cloud = servers[1] if ":" in victim_ip else servers[0]
    victim = _python(victim_ns, VICTIM, cloud, str(server_port), FIRST.hex(), SECOND.hex())
    try:
        port, seq, ack, echo = _line(victim).split()
        _forge(attacker_ns, victim_ip, cloud, int(port), int(seq), int(ack), server_port)
        _tell(victim)
        after = _line(victim)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    _tell(server, "dump")
    received = json.loads(_line(server)).get(f"{victim_ip} {port}")
    return {"first_echo": bytes.fromhex(echo), "second_echo": bytes.fromhex(after),
            "server_got": None if received is None else bytes.fromhex(received)}


WANTED = {"first_echo": FIRST, "second_echo": SECOND, "server_got": FIRST + SECOND}
"""The victim's flow works both ways, and only its own bytes reach the server."""


def _rounds(design: str, prefix: str, to_gateway: bool) -> dict[tuple[str, str], Any]:
    """A home on ``design`` with d0 and d1 managed (d2 stays unknown to the gateway), the
    echo server in the fake Internet (or on the gateway's port 53), and one attack round
    per attacker and victim address."""
    from mudguard.vhome._home import GW4, GW6

    with VirtualHome(prefix=prefix, devices=3) as home:
        nft = Nft.in_namespace(home.gw_ns)
        kind = DataGatewayEnforcer if design == "data" else Enforcer
        enforcer = kind(nft, home.context(), clock=lambda: NOW)
        enforcer.install_home()
        attacker, victim, stranger = home.nodes
        for node in (attacker, victim):
            enforcer.apply_device(DeviceFacts(mac=node.mac, ipv4=(node.ipv4,),
                                              ipv6=(node.ipv6,),
                                              state=LifecycleState.DEFAULT), None, ())
        where, servers, port = ((home.gw_ns, (GW4, GW6), 53) if to_gateway
                                else (home.inet_ns, (CLOUD4, CLOUD6), PORT))
        server = _python(where, SERVER, str(port))
        try:
            assert _line(server) == "ready"
            return {(who.ns[-2:], address): _attack(victim.ns, address, who.ns, server,
                                                    servers, port)
                    for who in (attacker, stranger)
                    for address in (victim.ipv4, victim.ipv6)}
        finally:
            server.kill()
            server.wait(10)


@pytest.mark.parametrize("design", ["chains", "data"])
def test_another_device_cannot_inject_into_an_established_flow(design: str) -> None:
    """A segment with the victim's source, ports and sequence numbers, sent from another
    MAC (a managed device's or an unknown one), never reaches the server; the victim's
    own flow carries on both ways (IPv4 and IPv6)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces and nftables")
    rounds = _rounds(design, f"mgJ{os.getpid() % 10000}", to_gateway=False)
    wrong = {key: got for key, got in rounds.items() if got != WANTED}
    assert not wrong, wrong


@pytest.mark.parametrize("design", ["chains", "data"])
def test_another_device_cannot_inject_into_a_connection_to_the_gateway(design: str) -> None:
    """The same attack on a device's TCP connection to the gateway itself (its DNS over
    TCP, port 53, which the baseline allows): the input hook's established fast path
    takes a LAN packet only from a bound (MAC, source) pair (both designs)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces and nftables")
    rounds = _rounds(design, f"mgG{os.getpid() % 10000}", to_gateway=True)
    wrong = {key: got for key, got in rounds.items() if got != WANTED}
    assert not wrong, wrong
