"""RFC 9726 in the virtual home, with real packets: a device that resolves with another
DNS server is told once per server as ``dns-elsewhere``; one that uses the gateway's
resolver is not. And a real DHCP client learns the gateway as its DNS server from the
daemon's own dnsmasq command line.

The gateway side runs in the gateway namespace (one forked child): the compiled rules
(``Enforcer``), the DNS guard (``DnsServer``, resolve-only) forwarding to a real dnsmasq in
the fake Internet, and the ``Watcher`` on NFLOG and conntrack. The device's traffic is
real sockets in its own namespace.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mudguard.child import stop_child
from mudguard.daemon.config import GatewayConfig, parse_config
from mudguard.daemon.dnsmasq import dnsmasq_argv
from mudguard.dns.core import DnsGuard, GuardConfig
from mudguard.dns.server import DnsServer, Upstream
from mudguard.enforce import Nft
from mudguard.policy import DeviceFacts, LifecycleState
from mudguard.vhome import INTERNET_HOSTS, VirtualHome
from mudguard.vhome._home import GW4, GW6, LAN4, LAN6
from mudguard.watch import DeviationTracker, Thresholds
from mudguard.watch.listener import Watcher
from mudguard.watch.resolvers import ResolverUse, ResolverWatch
from tests.netns.rulesets import make_enforcer

pytestmark = pytest.mark.root

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RESOLVER4 = INTERNET_HOSTS["dns"][0]  # a resolver "on the Internet" (real dnsmasq)
OTHER4 = INTERNET_HOSTS["other"][0]  # something answering DoT
DOH4 = INTERNET_HOSTS["mfg"][0]  # what dns.google resolves to in this home
CLOUD4 = INTERNET_HOSTS["cloud"][0]  # an ordinary cloud service


@pytest.fixture(scope="module")
def home() -> Iterator[VirtualHome]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and nftables")
    with VirtualHome(prefix=f"mgE{os.getpid() % 10000}", devices=2) as vh:
        vh.serve(vh.inet_ns, tcp=[443, 853])
        vh.serve_dns({"dns.google": [DOH4], "cloud.example.com": [CLOUD4]})
        enforcer = make_enforcer(Nft.in_namespace(vh.gw_ns), vh.context(), clock=lambda: NOW)
        enforcer.install_home()
        for node in vh.nodes:  # no MUD file, LAN only: the Internet is dropped and logged
            enforcer.apply_device(DeviceFacts(mac=node.mac, ipv4=(node.ipv4,),
                                              ipv6=(node.ipv6,), state=LifecycleState.NEW),
                                  None, ())
        yield vh


ELSEWHERE = f"""
import socket, time
import dns.message, dns.query
query = dns.message.make_query("cloud.example.com", "A")
for _ in range(3):  # plain DNS to an Internet resolver, UDP then TCP: dropped
    try:
        dns.query.udp(query, "{RESOLVER4}", timeout=0.3)
    except Exception:
        pass
try:
    dns.query.tcp(query, "{RESOLVER4}", timeout=0.3)
except Exception:
    pass
for _ in range(2):  # DNS over TLS: dropped
    s = socket.socket(); s.settimeout(0.3)
    try:
        s.connect(("{OTHER4}", 853))
    except OSError:
        pass
    s.close()
# DNS over HTTPS: the name through the gateway's resolver, then port 443 to its address.
answer = dns.query.udp(dns.message.make_query("dns.google", "A"), "{GW4}", timeout=2)
address = answer.answer[0][0].address
assert address == "{DOH4}", address
s = socket.socket(); s.settimeout(0.3)
try:
    s.connect((address, 443))
except OSError:
    pass
print("done")
"""

GATEWAY_ONLY = f"""
import socket
import dns.message, dns.query
for name in ("cloud.example.com", "dns.google"):
    r = dns.query.udp(dns.message.make_query(name, "A"), "{GW4}", timeout=2)
    assert r.answer, name
r = dns.query.tcp(dns.message.make_query("cloud.example.com", "AAAA"), "{GW6}", timeout=2)
s = socket.socket(); s.settimeout(0.3)
try:
    s.connect(("{CLOUD4}", 443))  # an ordinary blocked flow: not about DNS
except OSError:
    pass
print("done")
"""


def _device_run(ns: str, code: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                           textwrap.dedent(code)], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _gateway_scenario(device_ns: str, code: str) -> dict[str, Any]:
    """In the gateway namespace: guard + watcher, run the device's code, collect."""

    async def main() -> dict[str, Any]:
        told: list[ResolverUse] = []
        alerts: list[object] = []
        resolvers = ResolverWatch((GW4, GW6), lan_prefixes=(str(LAN4), str(LAN6)))
        guard = DnsGuard(GuardConfig(lan_prefixes=(str(LAN4), str(LAN6)),
                                     gateway_addresses=(GW4, GW6), insert=False))
        server = DnsServer(guard, listen=[GW4, GW6], upstream=Upstream(RESOLVER4),
                           filler=None, on_answer=resolvers.learn_answer)
        watcher = Watcher(alerts.append, group=100,
                          tracker=DeviationTracker(Thresholds(deviation_flows=2)),
                          resolvers=resolvers, on_dns_elsewhere=told.append,
                          device_of=lambda _address: None)
        await server.start()
        await watcher.start()
        try:
            assert watcher.nflog is not None, "NFLOG group 100 could not be bound"
            loop = asyncio.get_running_loop()
            out = await loop.run_in_executor(None, _device_run, device_ns, code)
            await asyncio.sleep(1.0)  # let the last logged packets arrive
        finally:
            await watcher.stop()
            await server.stop()
        return {"out": out, "alerts": len(alerts),
                "told": [(u.transport.value, u.server, u.server_name, u.allowed, u.explain())
                         for u in told]}

    return asyncio.run(main())


def test_a_device_resolving_elsewhere_is_told_once_per_server(home: VirtualHome) -> None:
    started = time.monotonic()
    result = home.call(home.gw_ns, _gateway_scenario, home.nodes[0].ns, ELSEWHERE, timeout=40)
    elapsed = time.monotonic() - started
    assert result["out"].strip() == "done"
    told = {(t[0], t[1], t[2], t[3]) for t in result["told"]}
    assert told == {("do53", RESOLVER4, None, False), ("dot", OTHER4, None, False),
                    ("doh", DOH4, "dns.google", False)}, result["told"]
    assert len(result["told"]) == 3  # exactly one per server, whatever the retries
    texts = {t[0]: t[4] for t in result["told"]}
    assert f"plain DNS (port 53) to {RESOLVER4}" in texts["do53"]
    assert "DNS over TLS" in texts["dot"]
    assert f"dns.google ({DOH4})" in texts["doh"]
    assert all("RFC 9726" in t and "blocked" in t for t in texts.values())
    # 4 distinct dropped DNS flows (UDP 53, TCP 53, TCP 853, TCP 443) with a deviation
    # threshold of 2: still no quarantine.
    assert result["alerts"] == 0
    print(f"\n3 dns-elsewhere events in {elapsed:.1f} s (home built once per module)")


def test_a_device_using_the_gateways_resolver_is_not_told(home: VirtualHome) -> None:
    result = home.call(home.gw_ns, _gateway_scenario, home.nodes[1].ns, GATEWAY_ONLY,
                       timeout=40)
    assert result["out"].strip() == "done"
    assert result["told"] == []


# -- DHCP: a real client learns the gateway as its DNS server -------------------------


def _udhcpc_script(tmp: Path) -> Path:
    script = tmp / "udhcpc.sh"
    script.write_text('#!/bin/sh\n[ "$1" = bound ] && echo "dns=$dns router=$router" '
                      f'>> {tmp / "bound.txt"}\nexit 0\n')
    script.chmod(0o755)
    return script


def test_udhcpc_gets_the_gateway_as_dns_server_from_the_daemons_dnsmasq(
        home: VirtualHome) -> None:
    if shutil.which("dnsmasq") is None or shutil.which("busybox") is None:
        pytest.skip("dnsmasq and busybox are needed (scripts/setup.sh installs them)")
    config = _gateway_config(home, "mgE-dhcp-")
    tmp = config.state_dir
    argv = dnsmasq_argv(config, hook="/bin/true")
    proc = subprocess.Popen(["ip", "netns", "exec", home.gw_ns, *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    node = home.nodes[1]
    try:
        time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        run = subprocess.run(["ip", "netns", "exec", node.ns, "busybox", "udhcpc", "-i",
                              node.iface, "-f", "-q", "-n", "-t", "5", "-T", "1",
                              "-s", str(_udhcpc_script(tmp))],
                             capture_output=True, text=True, timeout=20)
        assert "lease of 192.0.2.2" in run.stderr, run.stderr
        bound = (tmp / "bound.txt").read_text()
    finally:
        stop_child(proc)
        shutil.rmtree(config.state_dir, ignore_errors=True)
    assert f"dns={GW4} " in bound and f"router={GW4}" in bound


# -- IPv6: the router advertisements name the gateway's resolver (RDNSS) ---------------

ND_ROUTER_SOLICIT, ND_ROUTER_ADVERT, ND_OPT_RDNSS = 133, 134, 25


def _rdnss_from_router_advert(interface: str, timeout: float) -> list[str]:
    """Inside the device: solicit a router advertisement, return its RDNSS addresses
    (RFC 8106 option 25); [] if none came within ``timeout`` seconds."""
    import ipaddress
    import socket
    import struct
    import time

    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        index = socket.if_nametoindex(interface)
        deadline = time.monotonic() + timeout
        next_solicit = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_solicit:  # the kernel fills in the checksum
                sock.sendto(struct.pack("!BBHI", ND_ROUTER_SOLICIT, 0, 0, 0),
                            ("ff02::2", 0, 0, index))
                next_solicit = time.monotonic() + 1.0
            sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            try:
                packet = sock.recv(2048)
            except TimeoutError:
                continue
            if len(packet) < 16 or packet[0] != ND_ROUTER_ADVERT:
                continue
            found: list[str] = []
            offset = 16
            for _ in range(64):  # bounded walk over the options
                if offset + 2 > len(packet) or packet[offset + 1] == 0:
                    break
                kind, length = packet[offset], packet[offset + 1] * 8
                if kind == ND_OPT_RDNSS:
                    for at in range(offset + 8, offset + length, 16):
                        found.append(str(ipaddress.IPv6Address(packet[at:at + 16])))
                offset += length
            return found
        return []
    finally:
        sock.close()


def _gateway_config(home: VirtualHome, prefix: str) -> GatewayConfig:
    """The daemon's configuration for this home (both families), state in a new folder."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    return parse_config(f"""
[gateway]
lan_interface = "{home.lan_if}"
lan_prefixes = ["{LAN4}", "{LAN6}"]
addresses = ["{GW4}", "{GW6}"]
state_dir = "{tmp}"
[dhcp]
range = ["192.0.2.200", "192.0.2.220"]
""")


def test_router_advertisements_name_the_gateways_ipv6_resolver(home: VirtualHome) -> None:
    """dnsmasq serves no DNS (``--port=0``): without ``option6:dns-server`` its RAs would
    carry no RDNSS (or its link-local address, where the guard does not listen)."""
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is needed (scripts/setup.sh installs it)")
    config = _gateway_config(home, "mgE-ra-")
    argv = dnsmasq_argv(config, hook="/bin/true")
    if not any(a.startswith("--enable-ra") for a in argv):  # RA on, SLAAC only, for the test
        argv += ["--enable-ra", f"--dhcp-range=::,constructor:{home.lan_if},ra-only"]
    proc = subprocess.Popen(["ip", "netns", "exec", home.gw_ns, *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    node = home.nodes[0]
    try:
        time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        servers = home.call(node.ns, _rdnss_from_router_advert, node.iface, 8.0, timeout=20)
    finally:
        stop_child(proc)
        shutil.rmtree(config.state_dir, ignore_errors=True)
    assert servers == [GW6]


# -- DHCPv6: a stateless client (Information-request) learns the resolver (option 23) --

DHCP6_INFORMATION_REQUEST, DHCP6_REPLY = 11, 7
OPTION_CLIENTID, OPTION_ORO, OPTION_DNS_SERVERS = 1, 6, 23


def _dhcp6_dns_servers(interface: str, mac: str, timeout: float) -> list[str]:
    """Inside the device: an RFC 8415 Information-request asking for option 23; the
    DNS servers of the Reply ([] if none came within ``timeout`` seconds)."""
    import ipaddress
    import os
    import socket
    import struct
    import time

    xid = os.urandom(3)
    duid = struct.pack("!HH", 3, 1) + bytes.fromhex(mac.replace(":", ""))  # DUID-LL
    options = (struct.pack("!HH", OPTION_CLIENTID, len(duid)) + duid
               + struct.pack("!HHH", OPTION_ORO, 2, OPTION_DNS_SERVERS))
    message = bytes([DHCP6_INFORMATION_REQUEST]) + xid + options
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("::", 546))
        index = socket.if_nametoindex(interface)
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                sock.sendto(message, ("ff02::1:2", 547, 0, index))
                next_send = time.monotonic() + 1.0
            sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            try:
                reply = sock.recv(2048)
            except TimeoutError:
                continue
            if len(reply) < 4 or reply[0] != DHCP6_REPLY or reply[1:4] != xid:
                continue
            servers: list[str] = []
            offset = 4
            for _ in range(64):  # bounded walk over the options
                if offset + 4 > len(reply):
                    break
                code, length = struct.unpack_from("!HH", reply, offset)
                body = reply[offset + 4:offset + 4 + length]
                if code == OPTION_DNS_SERVERS:
                    servers += [str(ipaddress.IPv6Address(body[i:i + 16]))
                                for i in range(0, len(body) - 15, 16)]
                offset += 4 + length
            return servers
        return []
    finally:
        sock.close()


def test_dhcpv6_information_request_gets_the_gateways_ipv6_resolver(home: VirtualHome) -> None:
    """Option 23 (RFC 3646) from the daemon's dnsmasq names the address the DNS guard
    binds, not dnsmasq's own (which serves no DNS)."""
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is needed (scripts/setup.sh installs it)")
    config = _gateway_config(home, "mgE-d6-")
    argv = dnsmasq_argv(config, hook="/bin/true")
    if not any(a.startswith("--dhcp-range=") and ":" in a for a in argv):  # stateless DHCPv6
        argv += ["--enable-ra", f"--dhcp-range=::,constructor:{home.lan_if},ra-stateless"]
    proc = subprocess.Popen(["ip", "netns", "exec", home.gw_ns, *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    node = home.nodes[0]
    try:
        time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        servers = home.call(node.ns, _dhcp6_dns_servers, node.iface, node.mac, 8.0, timeout=20)
    finally:
        stop_child(proc)
        shutil.rmtree(config.state_dir, ignore_errors=True)
    assert servers == [GW6]
