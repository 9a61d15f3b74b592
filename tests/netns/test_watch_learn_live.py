"""Learning from real traffic in namespaces: a device resolves its cloud through the
gateway and uses it; ``profile learn-live`` watches the gateway's LAN interface and
proposes a MUD file; tcpdump records the same traffic, which passes that profile; then
the device does something else, and ``profile check`` on the new recording lists it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.message
import dns.rrset
import pytest

from mudguard.watch.listener import in_netns
from tests.netns.test_watch_nflog import DEV_MAC, Lab, in_device, lab  # noqa: F401

pytestmark = pytest.mark.root

MUDGUARD = str(Path(sys.executable).with_name("mudguard"))
CLOUD, CLOUD_IP = "cloud.example.com", "198.51.100.7"

NORMAL = f"""
import socket, struct, time
import dns.message, dns.query
answer = dns.query.udp(dns.message.make_query("{CLOUD}", "A"), "192.0.2.1", timeout=2)
address = answer.answer[0][0].address
for _ in range(3):
    s = socket.socket(); s.setblocking(False); s.connect_ex((address, 443)); time.sleep(0.05)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"\\x1b" + b"\\0" * 47, ("198.51.100.9", 123))
time.sleep(0.3)
"""

OTHER = """
import socket, time
socks = []
for host in (30, 31, 32):
    s = socket.socket(); s.setblocking(False); s.connect_ex((f"203.0.113.{host}", 23))
    socks.append(s)
time.sleep(0.3)
"""


class DnsResponder(threading.Thread):
    """A one-name DNS server on the gateway's LAN address (inside its namespace)."""

    def __init__(self, netns: str) -> None:
        super().__init__(daemon=True)
        with in_netns(netns):
            import socket

            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("192.0.2.1", 53))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            reply.answer.append(dns.rrset.from_text(CLOUD + ".", 60, "IN", "A", CLOUD_IP))
            self.sock.sendto(reply.to_wire(), client)

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=2)
        self.sock.close()


def record(home: Lab, path: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["ip", "netns", "exec", home.gw, "tcpdump", "-i", home.lan_if, "-U",
                             "--immediate-mode",
                             "-w", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.7)  # tcpdump is listening
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    time.sleep(0.3)  # the last packets reach the file
    proc.terminate()
    proc.wait(timeout=10)


def test_learn_live_then_check_recordings(lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    proposal = tmp_path / "proposal.json"
    # IPv4 only: the device kernel's own IPv6 chatter (MLD reports from ::) would show up
    # in both recordings and is not what this test is about.
    subprocess.run(["ip", "netns", "exec", lab.dev, "sysctl", "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1"], check=True, timeout=10)
    responder = DnsResponder(lab.gw)
    responder.start()
    try:
        normal_pcap = tmp_path / "normal.pcap"
        tcpdump = record(lab, normal_pcap)
        learner = subprocess.Popen(
            [MUDGUARD, "profile", "learn-live", lab.lan_if, "--netns", lab.gw, "--device",
             DEV_MAC, "--seconds", "3", "--gateway", "192.0.2.1", "-o", str(proposal)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert learner.stderr is not None
        assert "watching" in learner.stderr.readline()  # the socket is open: go
        in_device(lab, NORMAL)
        _out, err = learner.communicate(timeout=20)
        stop(tcpdump)
        assert learner.returncode == 0, err
        other_pcap = tmp_path / "other.pcap"
        tcpdump = record(lab, other_pcap)
        in_device(lab, NORMAL)
        in_device(lab, OTHER)
        stop(tcpdump)
    finally:
        responder.close()

    check = subprocess.run([MUDGUARD, "mud", "check", str(proposal)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout
    document = json.loads(proposal.read_text())
    aces = [ace["matches"] for acl in document["ietf-access-control-list:acls"]["acl"]
            for ace in acl["aces"]["ace"]]
    assert {"ipv4": {"protocol": 6, "ietf-acldns:dst-dnsname": CLOUD},
            "tcp": {"destination-port": {"operator": "eq", "port": 443},
                    "ietf-mud:direction-initiated": "from-device"}} in aces
    assert {"ipv4": {"protocol": 17, "destination-ipv4-network": "198.51.100.9/32"},
            "udp": {"destination-port": {"operator": "eq", "port": 123}}} in aces
    assert any(m.get("ietf-mud:mud") == {"my-controller": [None]}
               and m.get("udp", {}).get("destination-port", {}).get("port") == 53 for m in aces)

    def deviations(pcap: Path) -> list[dict[str, object]]:
        result = subprocess.run([MUDGUARD, "profile", "check", str(pcap), "--device", DEV_MAC,
                                 "--mud", str(proposal), "--gateway", "192.0.2.1", "--json",
                                 "-q"], capture_output=True, text=True, timeout=60)
        assert result.returncode in (0, 1), result.stderr
        found: list[dict[str, object]] = json.loads(result.stdout)
        return found

    assert deviations(normal_pcap) == []
    other = deviations(other_pcap)
    assert sorted(d["dst"] for d in other) == ["203.0.113.30", "203.0.113.31", "203.0.113.32"]
    assert all(d["dst_port"] == 23 and d["direction"] == "from-device" for d in other)
