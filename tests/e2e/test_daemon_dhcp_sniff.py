"""``mudguard run`` reads leases off the LAN interface (``discovery.dhcp_sniff``).

- With dnsmasq's hook switched off, a real busybox udhcpc's lease (with option 161)
  still reaches the kernel: the sniffer is the only path, so this fails if it breaks.
- With both paths on, the hook's copy of a lease the sniffer already took changes
  nothing in the kernel (the intake drops the unchanged sighting).
- An ACK forged by a device (even with the gateway's MAC as its source) creates no
  device and moves no address.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import dpkt
import pytest

from mudguard.demo import scenario
from mudguard.vhome import run
from tests.e2e.test_daemon import Daemon, daemon_home
from tests.unit.test_hostile_dhcp_sniff import ack, request

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(any(shutil.which(b) is None for b in ("dnsmasq", "nft", "busybox")),
                       reason="needs dnsmasq, nftables and busybox"),
]


def udhcpc(home: Any, node: Any, *options: str) -> str:
    """A real DHCP client in the device's namespace (quits once bound)."""
    home.run(node.ns, ["ip", "addr", "flush", "dev", node.iface])
    argv = ["busybox", "udhcpc", "-i", node.iface, "-f", "-q", "-n", "-t", "5", "-T", "1",
            "-s", "/bin/true", *options]
    out = run(argv, ns=node.ns, timeout=20).stderr
    assert "lease of 192.0.2." in out, out
    return out.split("lease of ", 1)[1].split()[0]


def in_kernel(home: Any, mac: str) -> bool:
    """Whether any nftables object of the gateway names ``mac``."""
    ruleset = run(["nft", "list", "ruleset"], ns=home.gw_ns, timeout=30).stdout
    return mac.lower() in ruleset


class NftMonitor:
    """``nft monitor`` in the gateway namespace: every ruleset change, as it happens."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "monitor"],
                                     stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def test_a_lease_reaches_the_kernel_through_the_sniffer_with_the_hook_off(
        tmp_path: Path) -> None:
    with daemon_home(tmp_path, "mgsn", devices=1) as (home, config):
        config.write_text(config.read_text().replace("[discovery]\n",
                                                     "[discovery]\ndhcp_hook = false\n", 1))
        (node,) = home.nodes
        daemon = Daemon(home.gw_ns, config, tmp_path / "gateway.log")
        try:
            ready = daemon.wait_for({"event": "ready"})
            # start-up's objects are out of the collector's way (a full pass over them
            # stalled a lease by ~0.2 s: bench/bench_lease_to_rules.py); ~88,000 since
            # the daemon imports only what its start needs (session 5)
            assert ready["frozen_objects"] > 20_000
            listed = run(["pgrep", "-a", "dnsmasq"], check=False).stdout.splitlines()
            (dnsmasq,) = [line for line in listed if str(tmp_path) in line]  # this home's
            assert "--dhcp-script" not in dnsmasq
            url = scenario.device("bulb").mud_url
            address = udhcpc(home, node, "-x", f'0xa1:"{url}"', "-x", "hostname:bulb")
            device = daemon.wait_for({"event": "device", "mac": node.mac,
                                      "state": "profiled"}, timeout=20)
            assert device["ipv4"] == [address] and device["mud_url"] == url
            assert in_kernel(home, node.mac)
        finally:
            daemon.stop()


def test_the_hooks_copy_of_a_sniffed_lease_changes_nothing_in_the_kernel(
        tmp_path: Path) -> None:
    with daemon_home(tmp_path, "mgsd", devices=1) as (home, config):
        (node,) = home.nodes
        daemon = Daemon(home.gw_ns, config, tmp_path / "gateway.log")
        monitor = NftMonitor(home.gw_ns)
        try:
            daemon.wait_for({"event": "ready"})
            udhcpc(home, node, "-x", "hostname:gadget")
            # No MUD file: learned (on by default); the hook's copy must not re-enforce it
            daemon.wait_for({"event": "device", "mac": node.mac, "state": "learning"})
            # both paths told the daemon: the sniffer first, then the hook
            first = daemon.wait_for({"event": "sighting", "mac": node.mac})
            daemon.wait_for({"event": "sighting", "mac": node.mac}, timeout=10,
                            check=lambda event: event is not first)
            changes = len(monitor.lines)
            time.sleep(1.0)  # the worker has taken the hook's copy long before
            assert monitor.lines[changes:] == []
            assert changes > 0  # the monitor did see the first (sniffed) enforcement
        finally:
            monitor.stop()
            daemon.stop()


def _send_frames(interface: str, frames: list[bytes]) -> None:
    """Inside a device namespace: put raw Ethernet frames on the wire."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        for frame in frames:
            sock.send(frame)


def test_a_forged_ack_creates_and_moves_nothing(tmp_path: Path) -> None:
    with daemon_home(tmp_path, "mgsf", devices=3) as (home, config):
        victim, attacker, witness = home.nodes
        daemon = Daemon(home.gw_ns, config, tmp_path / "gateway.log")
        try:
            daemon.wait_for({"event": "ready"})
            held = udhcpc(home, victim)
            daemon.wait_for({"event": "device", "mac": victim.mac, "state": "learning"})
            gateway_mac = home.run(home.gw_ns, ["cat", f"/sys/class/net/{home.lan_if}/address"]
                                   ).stdout.strip()
            invented = "02:66:66:66:66:66"
            frames = [
                # an invented device's REQUEST (to another server: dnsmasq ignores it)…
                request(src=invented, chaddr=invented, xid=7, options=[(54, bytes(
                    [192, 0, 2, 254])), (161, b"https://mud.example.com/evil.json")]),
                # …"answered" with forged ACKs, one with the gateway's own MAC as source
                ack(src=attacker.mac, chaddr=invented, xid=7, address="192.0.2.77"),
                ack(src=gateway_mac, chaddr=invented, xid=7, address="192.0.2.78"),
                # and the victim's address handed to the invented device
                ack(src=gateway_mac, chaddr=invented, xid=7, address=held),
            ]
            home.call(attacker.ns, _send_frames, attacker.iface, frames)
            # a real lease after them: once it is enforced, the forged frames were read
            udhcpc(home, witness)
            daemon.wait_for({"event": "device", "mac": witness.mac, "state": "learning"})
            assert not [e for e in daemon.events if e.get("mac") == invented]
            assert not in_kernel(home, invented)
            moved = [e for e in daemon.events if e.get("event") == "device"
                     and e["mac"] == victim.mac and e["ipv4"] != [held]]
            assert moved == []
        finally:
            daemon.stop()


def _send_udp(source: str, destination: str, payload: bytes) -> None:
    """Inside a device namespace: one datagram from port 67 (a server's port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 67))
        sock.sendto(payload, (destination, 68))


def _routed(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes) -> bytes:
    """A UDP 67 → 68 frame to the gateway's MAC for it to route on (``dst_ip``)."""
    udp = dpkt.udp.UDP(sport=67, dport=68, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton(src_ip), dst=socket.inet_aton(dst_ip), p=17,
                    ttl=64, data=udp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=bytes.fromhex(src_mac.replace(":", "")),
                                        dst=bytes.fromhex(dst_mac.replace(":", "")), data=ip))


def test_an_ack_routed_through_the_gateway_is_never_a_lease(tmp_path: Path) -> None:
    """Devices reach each other through the gateway (isolated ports): a forged ACK one
    sends to another leaves the gateway's LAN interface with the gateway's MAC as its
    source, like dnsmasq's own. Only the gateway's own address as the IP source (which
    the kernel never forwards: a martian) tells them apart."""
    with daemon_home(tmp_path, "mgsr", devices=3) as (home, config):
        victim, attacker, witness = home.nodes
        daemon = Daemon(home.gw_ns, config, tmp_path / "gateway.log")
        try:
            daemon.wait_for({"event": "ready"})
            addresses = {}
            for node in (victim, attacker):
                addresses[node.mac] = udhcpc(home, node)
                daemon.wait_for({"event": "device", "mac": node.mac, "state": "learning"})
                run(["ip", "addr", "add", f"{addresses[node.mac]}/24", "dev", node.iface],
                    ns=node.ns)
                run(["ip", "route", "replace", "default", "via", "192.0.2.1"], ns=node.ns)
            held = addresses[victim.mac]
            invented = "02:66:66:66:66:67"
            home.call(attacker.ns, _send_frames, attacker.iface, [request(
                src=invented, chaddr=invented, xid=9,
                options=[(54, bytes([192, 0, 2, 254]))])])
            forged = ack(chaddr=invented, xid=9, address=held)[14 + 20 + 8:]  # DHCP only
            home.call(attacker.ns, _send_udp, addresses[attacker.mac], held, forged)
            # the same, claiming the gateway's own address as its source: a martian
            gateway_mac = run(["cat", f"/sys/class/net/{home.lan_if}/address"],
                              ns=home.gw_ns).stdout.strip()
            home.call(attacker.ns, _send_frames, attacker.iface,
                      [_routed(attacker.mac, gateway_mac, "192.0.2.1", held, forged)])
            udhcpc(home, witness)
            daemon.wait_for({"event": "device", "mac": witness.mac, "state": "learning"})
            assert not [e for e in daemon.events if e.get("mac") == invented]
            assert not in_kernel(home, invented)
        finally:
            daemon.stop()
