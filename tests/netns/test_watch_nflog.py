"""The watcher on real NFLOG: dropped packets from a device namespace reach the listener,
and a Mirai-like scan is quarantined within seconds (compiled rules, real kernel)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from mudguard.mud import Direction
from mudguard.policy import (
    DeviceFacts,
    HomeContext,
    LifecycleState,
    compile_base,
    compile_device,
    decide,
    device_id,
)
from mudguard.watch import Alert, DeviationTracker, FlowEvent, Thresholds
from mudguard.watch.listener import NflogSocket, Watcher

pytestmark = pytest.mark.root

DEV_MAC = "02:00:00:00:00:0a"
DEV_ID = device_id(DEV_MAC)


@dataclass(frozen=True)
class Lab:
    """A gateway namespace routing for one device namespace (veth), with a second
    home segment 198.51.100.0/24 on another interface."""

    gw: str
    dev: str
    lan_if: str
    other_if: str


def sh(*args: str, input_text: str | None = None) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, input=input_text,
                   timeout=30)


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and nftables (CI runs these as root)")
    tag = f"mgw{secrets.token_hex(3)}"
    lab = Lab(gw=f"{tag}g", dev=f"{tag}d", lan_if=f"{tag}a", other_if=f"{tag}x")
    try:
        sh("ip", "netns", "add", lab.gw)
        sh("ip", "netns", "add", lab.dev)
        sh("ip", "link", "add", lab.lan_if, "netns", lab.gw, "type", "veth", "peer", "name",
           f"{tag}b", "netns", lab.dev)
        for ns in (lab.gw, lab.dev):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", lab.gw, "addr", "add", "192.0.2.1/24", "dev", lab.lan_if)
        sh("ip", "-n", lab.gw, "link", "set", lab.lan_if, "up")
        # No dummy driver here: the second segment is a veth pair inside the gateway.
        sh("ip", "-n", lab.gw, "link", "add", lab.other_if, "type", "veth", "peer", "name",
           f"{tag}y")
        sh("ip", "-n", lab.gw, "addr", "add", "198.51.100.1/24", "dev", lab.other_if)
        sh("ip", "-n", lab.gw, "link", "set", lab.other_if, "up")
        sh("ip", "-n", lab.gw, "link", "set", f"{tag}y", "up")
        sh("ip", "netns", "exec", lab.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "-n", lab.dev, "link", "set", f"{tag}b", "address", DEV_MAC)
        sh("ip", "-n", lab.dev, "addr", "add", "192.0.2.10/24", "dev", f"{tag}b")
        sh("ip", "-n", lab.dev, "link", "set", f"{tag}b", "up")
        sh("ip", "-n", lab.dev, "route", "add", "default", "via", "192.0.2.1")
        yield lab
    finally:
        for ns in (lab.dev, lab.gw):  # deleting a namespace deletes its interfaces
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def in_device(lab: Lab, code: str) -> None:
    """Run Python in the device namespace (bounded: it must finish in 20 s)."""
    subprocess.run(["ip", "netns", "exec", lab.dev, sys.executable, "-c", textwrap.dedent(code)],
                   check=True, timeout=20, capture_output=True)


SEND_THREE = """
import socket, struct
s = socket.socket(); s.setblocking(False)
s.connect_ex(("198.51.100.7", 8080))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"x", ("198.51.100.8", 5000))
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
body = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"mudguard"
total = sum(struct.unpack("!%dH" % (len(body) // 2), body))
total = (total >> 16) + (total & 0xFFFF); total += total >> 16
icmp.sendto(body[:2] + struct.pack("!H", ~total & 0xFFFF) + body[4:], ("198.51.100.9", 0))
"""


def test_listener_reports_device_destination_port_protocol(lab: Lab) -> None:
    rules = textwrap.dedent(f"""
        table inet mgwtest {{
            chain watchtest {{
                type filter hook forward priority 0; policy drop;
                iifname "{lab.lan_if}" log prefix "mg {DEV_ID} out" group 100
                drop
            }}
        }}""")
    sh("ip", "netns", "exec", lab.gw, "nft", "-f", "-", input_text=rules)
    nflog = NflogSocket(100, netns=lab.gw, timeout=0.5)
    try:
        in_device(lab, SEND_THREE)
        events: list[FlowEvent] = []
        deadline = time.monotonic() + 5
        while len({e.dst for e in events}) < 3 and time.monotonic() < deadline:
            events += nflog.events()
    finally:
        nflog.close()
    by_dst = {e.dst: e for e in events}
    assert set(by_dst) >= {"198.51.100.7", "198.51.100.8", "198.51.100.9"}
    tcp, udp, icmp = by_dst["198.51.100.7"], by_dst["198.51.100.8"], by_dst["198.51.100.9"]
    assert all(e.device_id == DEV_ID and e.direction is Direction.FROM_DEVICE
               and e.src == "192.0.2.10" and e.mac == DEV_MAC for e in (tcp, udp, icmp))
    assert (tcp.protocol, tcp.dst_port, tcp.tcp_flags) == (6, 8080, 0x02)
    assert (udp.protocol, udp.dst_port) == (17, 5000)
    assert (icmp.protocol, icmp.icmp_type, icmp.icmp_code) == (1, 8, 0)


MIRAI = """
import socket, time
socks = []
for port in (23, 2323):
    for host in range(2, 42):
        s = socket.socket(); s.setblocking(False)
        s.connect_ex((f"198.51.100.{host}", port)); socks.append(s)
time.sleep(0.5)
"""


def compiled_home(lab: Lab) -> tuple[HomeContext, list[dict[str, object]]]:
    context = HomeContext(lan_prefixes=("192.0.2.0/24", "198.51.100.0/24"),
                          gateway_addresses=("192.0.2.1",), lan_interface=lab.lan_if,
                          wan_interface=lab.other_if, log_group=100)
    device = DeviceFacts(mac=DEV_MAC, ipv4=("192.0.2.10",), state=LifecycleState.NEW)
    policy = decide(device, None, (), context, now=datetime.now(UTC))
    return context, [*compile_base(context), *compile_device(policy, context)]


def test_mirai_like_scan_is_quarantined_within_seconds(lab: Lab) -> None:
    context, commands = compiled_home(lab)
    batch = {"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]}
    sh("ip", "netns", "exec", lab.gw, "nft", "-j", "-f", "-", input_text=json.dumps(batch))
    alerts: list[Alert] = []

    async def scenario() -> float:
        got = asyncio.Event()

        def on_alert(alert: Alert) -> None:
            alerts.append(alert)
            got.set()

        tracker = DeviationTracker(Thresholds(), lan_prefixes=context.lan_prefixes)
        watcher = Watcher(on_alert, group=100, tracker=tracker, netns=lab.gw)
        await watcher.start()
        assert watcher.nflog is not None, "the watcher could not bind NFLOG group 100"
        try:
            started = time.monotonic()
            scan = asyncio.get_running_loop().run_in_executor(None, in_device, lab, MIRAI)
            await asyncio.wait_for(got.wait(), timeout=10)
            elapsed = time.monotonic() - started
            await scan
            return elapsed
        finally:
            await watcher.stop()

    elapsed = asyncio.run(scenario())
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.kind == "scan" and alert.device_id == DEV_ID and alert.mac == DEV_MAC
    assert "home network" in alert.reason
    assert all(e.protocol == 6 and e.dst_port in (23, 2323) and e.dst.startswith("198.51.100.")
               for e in alert.evidence)
    assert elapsed < 5, f"scan alert after {elapsed:.2f} s"
    print(f"\nscan → quarantine alert in {elapsed * 1000:.0f} ms: {alert.reason}")


def test_second_listener_on_the_same_group_is_refused_clearly(lab: Lab) -> None:
    first = NflogSocket(100, netns=lab.gw)
    try:
        from mudguard.watch.listener import WatchError

        with pytest.raises(WatchError, match="NFLOG group 100"):
            NflogSocket(100, netns=lab.gw)
    finally:
        first.close()


FLOOD = """
import socket, time
start = time.monotonic()
for i in range(200_000):  # a sustained flood of new connections, bounded to 8 s
    s = socket.socket(); s.setblocking(False)
    s.connect_ex((f"198.51.100.{2 + i % 50}", 1024 + i % 50000)); s.close()
    if time.monotonic() - start > 8:
        break
    if i % 100 == 99:
        time.sleep(0.01)
"""


@pytest.mark.parametrize("compiled", [False, True], ids=["open-forwarding", "compiled-rules"])
def test_flood_of_allowed_connections_is_caught_by_conntrack_events(lab: Lab,
                                                                    compiled: bool) -> None:
    # What the device does is allowed (no drop, no log): only conntrack NEW events tell.
    if compiled:  # the home default "Internet only": allowed, but capped at 50/s per device
        context = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",),
                              lan_interface=lab.lan_if, wan_interface=lab.other_if)
        device = DeviceFacts(mac=DEV_MAC, ipv4=("192.0.2.10",), state=LifecycleState.DEFAULT)
        policy = decide(device, None, (), context, now=datetime.now(UTC))
        batch = {"nftables": [{"metainfo": {"json_schema_version": 1}},
                              *compile_base(context), *compile_device(policy, context)]}
        sh("ip", "netns", "exec", lab.gw, "nft", "-j", "-f", "-", input_text=json.dumps(batch))
    else:
        rules = textwrap.dedent("""
            table inet mgwtest {
                chain watchtest {
                    type filter hook forward priority 0; policy accept;
                    ct state new counter
                }
            }""")
        sh("ip", "netns", "exec", lab.gw, "nft", "-f", "-", input_text=rules)
    alerts: list[Alert] = []

    async def scenario() -> float:
        got = asyncio.Event()

        def on_alert(alert: Alert) -> None:
            alerts.append(alert)
            got.set()

        watcher = Watcher(on_alert, netns=lab.gw, device_of={"192.0.2.10": DEV_ID}.get)
        await watcher.start()
        assert watcher.conntrack is not None, "no conntrack events"
        try:
            started = time.monotonic()
            flood = asyncio.get_running_loop().run_in_executor(None, in_device, lab, FLOOD)
            await asyncio.wait_for(got.wait(), timeout=15)
            elapsed = time.monotonic() - started
            await flood
            return elapsed
        finally:
            await watcher.stop()

    elapsed = asyncio.run(scenario())
    assert [a.kind for a in alerts] == ["flood"]
    assert alerts[0].device_id == DEV_ID and "connections" in alerts[0].reason
    assert elapsed < 10, f"flood alert after {elapsed:.2f} s"
    print(f"\nconnection flood → alert in {elapsed * 1000:.0f} ms: {alerts[0].reason}")
