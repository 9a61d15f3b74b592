"""MUD rules for traffic the gateway receives itself, proved with real packets: mDNS and
SSDP multicast (Amazon Echo's corpus file: local-networks + the group), a ``my-controller``
that is the gateway, and a device whose file allows neither. Real nftables in the gateway
namespace of a virtual home, a real multicast listener there (it joins the groups, as an
mDNS/SSDP responder would), datagrams sent from the device namespaces.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from mudguard.enforce import Enforcer, Nft
from mudguard.mud import MudFile
from mudguard.policy import DeviceFacts, LifecycleState
from mudguard.vhome import GW4, GW6, VDevice, VirtualHome

pytestmark = pytest.mark.root

PORTAL = 8443
MY_CONTROLLER_URL = "https://iot-device.example.com/my-controller"
GROUPS = (("224.0.0.251", 5353), ("239.255.255.250", 1900), ("ff02::fb", 5353))

# Runs in the gateway namespace: joins the groups on the LAN bridge, listens on the
# gateway's own addresses too, prints "ready", then every payload it receives until
# stdin closes or 30 s pass, as one JSON list.
LISTENER = r"""
import json, select, socket, struct, sys, time
bridge, gw4 = sys.argv[1], sys.argv[2]
index = socket.if_nametoindex(bridge)
socks = []
def udp(family, port):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    socks.append(s)
    return s
for group, port in (("224.0.0.251", 5353), ("239.255.255.250", 1900)):
    s = udp(socket.AF_INET, port)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton(group) + socket.inet_aton(gw4))
s = udp(socket.AF_INET6, 5353)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
             socket.inet_pton(socket.AF_INET6, "ff02::fb") + struct.pack("@I", index))
udp(socket.AF_INET, 123)
udp(socket.AF_INET6, 123)
print("ready", flush=True)
got = []
deadline = time.monotonic() + 30
while time.monotonic() < deadline and len(got) < 1000:
    ready, _, _ = select.select([*socks, sys.stdin], [], [], 0.5)
    if sys.stdin in ready:
        break
    for s in ready:
        got.append(s.recv(512).decode(errors="replace"))
print(json.dumps(got), flush=True)
"""


def send(address: str, port: int, payload: str, iface: str, source: str) -> None:
    """Send ``payload`` three times from ``source`` (runs inside a device namespace)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if family == socket.AF_INET:
            sock.bind((source, 0))
            target: tuple[object, ...] = (address, port)
        else:  # ff02::fb is link-scoped: say which link (the source is then link-local)
            target = (address, port, 0, socket.if_nametoindex(iface))
        for _ in range(3):
            sock.sendto(payload.encode(), target)
            time.sleep(0.02)


class Listener:
    """The listener process in the gateway namespace."""

    def __init__(self, home: VirtualHome) -> None:
        argv = ["ip", "netns", "exec", home.gw_ns, sys.executable, "-c", LISTENER,
                home.lan_if, GW4]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"listener did not start: {self.proc.communicate()[1]}")

    def received(self) -> set[str]:
        """Stop listening; every payload that arrived."""
        out, _ = self.proc.communicate(input="", timeout=10)
        return set(json.loads(out.strip().splitlines()[-1]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def home() -> Iterator[VirtualHome]:
    with VirtualHome(prefix=f"mgj{os.getpid() % 10000}", devices=3) as h:
        h.serve(h.gw_ns, tcp=[53, PORTAL, 9999], udp=[53])
        yield h


def _enforce(home: VirtualHome, muds: dict[int, MudFile]) -> Enforcer:
    context = home.context(portal_ports=(PORTAL,),
                           my_controllers={MY_CONTROLLER_URL: (GW4, GW6)})
    enforcer = Enforcer(Nft.in_namespace(home.gw_ns), context)
    enforcer.install_home()
    for index, mud in muds.items():
        node = home.nodes[index]
        facts = DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                            mud_url=mud.mud_url, state=LifecycleState.PROFILED)
        enforcer.apply_device(facts, mud, ())
    return enforcer


def _probe_groups(home: VirtualHome, nodes: list[VDevice]) -> set[str]:
    listener = Listener(home)
    try:
        for node in nodes:
            for group, port in GROUPS:
                home.call(node.ns, send, group, port, f"{node.index} {group}", node.iface,
                          node.ipv4)
            for address in (GW4, GW6):
                home.call(node.ns, send, address, 123, f"{node.index} ntp {address}",
                          node.iface, node.ipv4)
        time.sleep(0.2)
        return listener.received()
    finally:
        listener.kill()


def test_groups_and_a_gateway_controller_reach_the_gateway_only_when_the_mud_says_so(
        home: VirtualHome, corpus_mud: Callable[[str], MudFile]) -> None:
    echo = corpus_mud("unsw/amazonEchoMud.json")  # mDNS + SSDP (IPv4), local-networks
    mine = corpus_mud("rfc/mudmaker-my-controller.json")  # anything to/from my-controller
    cloud = corpus_mud("rfc/mudmaker-cloud-service.json")  # one cloud name, nothing local
    d0, d1, d2 = home.nodes
    # Without any table every datagram arrives: the listener and the senders work.
    before = _probe_groups(home, [d2])
    assert {"2 224.0.0.251", "2 239.255.255.250", "2 ff02::fb",
            f"2 ntp {GW4}", f"2 ntp {GW6}"} <= before, before

    _enforce(home, {0: echo, 1: mine, 2: cloud})
    got = _probe_groups(home, [d0, d1, d2])
    # Echo: its mDNS and SSDP groups, IPv4 only, as its file says; nothing else of the
    # gateway's (its local-networks rules match only EAPOL/ethertypes).
    assert {"0 224.0.0.251", "0 239.255.255.250"} <= got, got
    assert not {"0 ff02::fb", f"0 ntp {GW4}", f"0 ntp {GW6}"} & got, got
    # my-controller is the gateway: its addresses, never the groups.
    assert {f"1 ntp {GW4}", f"1 ntp {GW6}"} <= got, got
    assert not {"1 224.0.0.251", "1 239.255.255.250", "1 ff02::fb"} & got, got
    # A file that names nothing local reaches nothing of the gateway's.
    assert not {p for p in got if p.startswith("2 ")}, got

    # TCP to the gateway: the rules open its services, never the portal; baseline DNS stays.
    assert home.tcp(d1.ns, GW4, 9999) and home.tcp(d1.ns, GW6, 9999)
    assert not home.tcp(d0.ns, GW4, 9999, 0.5) and not home.tcp(d2.ns, GW4, 9999, 0.5)
    for node in (d0, d1, d2):
        assert not home.tcp(node.ns, GW4, PORTAL, 0.5)
        assert home.tcp(node.ns, GW4, 53)
