"""Issue #14: ``profile learn``/``check`` on what real captures hold: pinned client ports,
Ethernet matches, connections seen only closing, devices too varied for one file,
MLD/IGMP from unspecified sources, TLS server names, and short ``systeminfo``."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import dpkt
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.mud import parse_mud
from tests.unit.test_profile_learn import (
    DEV4,
    DEV6,
    DEV_MAC,
    GW4,
    GW_MAC,
    NET4,
    aces,
    ether,
    ip4,
    ip6,
    mac,
    tcp,
    write_capture,
)

runner = CliRunner()
SYN, ACK, FIN, RST, PSH = (dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST,
                           dpkt.tcp.TH_PUSH)


def learn(tmp_path: Path, capture: Path, name: str = "learned.json") -> tuple[dict[str, Any], str]:
    out = tmp_path / name
    result = runner.invoke(app, ["profile", "learn", str(capture), "--device", DEV_MAC, "-o",
                                 str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["mud", "check", str(out)]).exit_code == 0
    document: dict[str, Any] = json.loads(out.read_text())
    return document, result.output


def check(capture: Path, mud: Path) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["profile", "check", str(capture), "--device", DEV_MAC,
                                 "--mud", str(mud), "--json", "-q"])
    assert result.exit_code in (0, 1), result.output
    found: list[dict[str, Any]] = json.loads(result.stdout)
    assert result.exit_code == (1 if found else 0)
    return found


def self_check(tmp_path: Path, frames: list[bytes]) -> tuple[dict[str, Any], str,
                                                            list[dict[str, Any]]]:
    """Learn from a capture, then check the same capture against what was learned."""
    capture = write_capture(tmp_path / "c.pcap", frames)
    document, output = learn(tmp_path, capture)
    return document, output, check(capture, tmp_path / "learned.json")


def dhcp_answer() -> bytes:
    """The gateway answering DHCP: shows who the gateway is."""
    return ether(GW_MAC, DEV_MAC, ip4(GW4, DEV4, dpkt.udp.UDP(sport=67, dport=68, ulen=8), 17))


def mud_file(path: Path, out_aces: list[dict[str, Any]], in_aces: list[dict[str, Any]]) -> Path:
    def acl(name: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": name, "type": "ipv4-acl-type", "aces": {"ace": [
            {"name": f"{name}-{i}", "matches": m, "actions": {"forwarding": "accept"}}
            for i, m in enumerate(entries)]}}
    document = {
        "ietf-mud:mud": {
            "mud-version": 1, "mud-url": "https://example.com/dev.json",
            "last-update": "2024-01-01T00:00:00Z", "cache-validity": 48, "is-supported": True,
            "systeminfo": "test device",
            "from-device-policy": {"access-lists": {"access-list": [{"name": "out"}]}},
            "to-device-policy": {"access-lists": {"access-list": [{"name": "in"}]}}},
        "ietf-access-control-list:acls": {"acl": [acl("out", out_aces), acl("in", in_aces)]},
    }
    path.write_text(json.dumps(document))
    assert parse_mud(path.read_bytes()).ok
    return path


# -- every flow with its real ports ------------------------------------------------------------


def test_check_decides_every_client_port(tmp_path: Path) -> None:
    """A file that pins the client port: the connection from another port is a drop,
    even though the service's first connection used the pinned one."""
    frames = [dhcp_answer()]
    for port in (50000, 50001, 40000):
        frames.append(ether(DEV_MAC, GW_MAC, ip4(DEV4, NET4, tcp(port, 443, SYN), 6)))
        frames.append(ether(GW_MAC, DEV_MAC, ip4(NET4, DEV4, tcp(443, port, SYN | ACK), 6)))
    capture = write_capture(tmp_path / "ports.pcap", frames)
    net = {"protocol": 6, "destination-ipv4-network": f"{NET4}/32"}
    mud = mud_file(tmp_path / "pinned.json", [
        {"ipv4": net, "tcp": {"source-port": {"operator": "eq", "port": 50000},
                              "destination-port": {"operator": "eq", "port": 443}}},
        {"ipv4": net, "tcp": {"source-port": {"operator": "eq", "port": 50001},
                              "destination-port": {"operator": "eq", "port": 443}}},
    ], [])
    found = check(capture, mud)
    assert [(f["src_port"], f["dst_port"], f["packets"]) for f in found] == [(40000, 443, 2)]


# -- Ethernet matches ---------------------------------------------------------------------------


def test_check_applies_broadcast_mac_rules(tmp_path: Path) -> None:
    """UNSW-style broadcast ACEs (``destination-mac-address`` ff:ff:ff:ff:ff:ff) accept
    the broadcast they describe, as the compiled ``ether daddr`` rule does; a rule for
    another MAC does not."""
    broadcast = ip4(DEV4, "255.255.255.255", dpkt.udp.UDP(sport=9999, dport=9999, ulen=8), 17)
    frames = [dhcp_answer(), ether(DEV_MAC, "ff:ff:ff:ff:ff:ff", broadcast)]
    capture = write_capture(tmp_path / "bcast.pcap", frames)

    def rule(mac: str) -> dict[str, Any]:
        return {"ipv4": {"protocol": 17, "destination-ipv4-network": "255.255.255.255/32"},
                "udp": {"destination-port": {"operator": "eq", "port": 9999}},
                "eth": {"destination-mac-address": mac, "ethertype": "0x0800"}}
    dhcp = {"ipv4": {"protocol": 17}, "udp": {"destination-port": {"operator": "eq",
                                                                   "port": 68}}}
    assert check(capture, mud_file(tmp_path / "ok.json", [rule("ff:ff:ff:ff:ff:ff")],
                                   [dhcp])) == []
    found = check(capture, mud_file(tmp_path / "other.json", [rule("01:00:5e:00:00:fb")],
                                    [dhcp]))
    assert [f["dst"] for f in found] == ["255.255.255.255"]


# -- direction of connections seen only while closing -------------------------------------------


def test_closing_only_connection_is_never_opened_by_the_peer(tmp_path: Path) -> None:
    """The capture starts as the peer closes (FIN, then RST on another connection): no
    SYN, ports that say nothing. The peer's FIN must not make it the opener."""
    peer = "198.51.100.5"
    frames = [
        dhcp_answer(),
        ether(GW_MAC, DEV_MAC, ip4(peer, DEV4, tcp(9999, 12345, FIN | ACK), 6)),
        ether(DEV_MAC, GW_MAC, ip4(DEV4, peer, tcp(12345, 9999, ACK), 6)),
        ether(GW_MAC, DEV_MAC, ip4(peer, DEV4, tcp(9999, 12346, RST), 6)),
    ]
    document, _, deviations = self_check(tmp_path, frames)
    tcp_aces = [(name, m["tcp"]) for name, m in aces(document) if "tcp" in m]
    assert tcp_aces  # learned, both ways
    assert all("ietf-mud:direction-initiated" not in t for _, t in tcp_aces), tcp_aces
    # The device's port is never offered to the peer as a server port.
    assert not any(name.endswith("v4to") and "destination-port" in t for name, t in tcp_aces)
    assert deviations == []
    # Against a profile without them, the flows are listed, saying the opener is a guess.
    other = check(tmp_path / "c.pcap", mud_file(tmp_path / "udp.json",
                                                 [{"ipv4": {"protocol": 17}}], []))
    assert {(f["protocol"], f["opener_known"]) for f in other} == {(6, False)}


def test_syn_decides_even_after_a_closing_packet(tmp_path: Path) -> None:
    """A SYN seen later settles who opened, whatever was seen first."""
    peer = "198.51.100.5"
    frames = [
        dhcp_answer(),
        ether(GW_MAC, DEV_MAC, ip4(peer, DEV4, tcp(9999, 12345, FIN | ACK), 6)),
        ether(GW_MAC, DEV_MAC, ip4(peer, DEV4, tcp(9999, 12345, SYN), 6)),
    ]
    document, _, deviations = self_check(tmp_path, frames)
    served = [m["tcp"] for name, m in aces(document) if name.endswith("v4to") and "tcp" in m]
    assert served == [{"destination-port": {"operator": "eq", "port": 12345},
                       "ietf-mud:direction-initiated": "to-device"}]
    assert deviations == []


# -- a device too varied for one file ----------------------------------------------------------


def test_too_many_peers_is_compacted_into_a_valid_file(tmp_path: Path) -> None:
    """2,500 unnamed Internet peers on two ports: learn writes one valid file (peers
    replaced by any address, with a warning) that the capture passes."""
    frames = [dhcp_answer()]
    for i in range(2500):
        peer = f"2001:db8:f::{i + 1:x}"
        port = 443 if i % 2 else 8883
        frames.append(ether(DEV_MAC, GW_MAC, ip6(DEV6, peer, tcp(50000 + i % 5000, port, SYN),
                                                 6), v6=True))
    document, output, deviations = self_check(tmp_path, frames)
    assert "ANY address" in output
    assert sum(1 for _ in aces(document)) < 100
    assert deviations == []


def test_too_many_ports_become_ranges(tmp_path: Path) -> None:
    """One LAN host on 3,000 UDP ports: ranges, a warning, a valid file, no deviation."""
    frames = [dhcp_answer()]
    for port in range(20000, 26000, 2):
        frames.append(ether(DEV_MAC, "02:00:00:00:00:0b", ip4(
            DEV4, "192.0.2.20", dpkt.udp.UDP(sport=40000, dport=port, ulen=8), 17)))
    document, output, deviations = self_check(tmp_path, frames)
    assert "ranges" in output
    ports = [m["udp"]["destination-port"] for _, m in aces(document)
             if "udp" in m and "destination-port" in m["udp"]]
    assert ports and any("lower-port" in p for p in ports) and len(ports) <= 16
    assert deviations == []


# -- MLD and IGMP while joining -----------------------------------------------------------------


def test_reports_from_unspecified_sources_pass_their_own_profile(tmp_path: Path) -> None:
    """MLDv2 report from :: to ff02::16 and IGMPv3 report from 0.0.0.0 to 224.0.0.22
    (sent before the device has an address): learn and check agree (the baseline)."""
    mld = dpkt.icmp6.ICMP6(type=143, code=0, data=b"\x00" * 24)
    igmp = b"\x22\x00\xea\x03\x00\x00\x00\x01\x04\x00\x00\x00\xe0\x00\x00\xfb"
    frames = [
        dhcp_answer(),
        ether(DEV_MAC, "33:33:00:00:00:16", ip6("::", "ff02::16", mld, 58), v6=True),
        ether(DEV_MAC, "01:00:5e:00:00:16", ip4("0.0.0.0", "224.0.0.22", igmp, 2)),
        ether(DEV_MAC, GW_MAC, ip4(DEV4, NET4, tcp(50000, 443, SYN), 6)),
        ether(DEV_MAC, "33:33:00:00:00:16", ip6("fe80::a", "ff02::16", mld, 58), v6=True),
    ]
    _, _, deviations = self_check(tmp_path, frames)
    assert deviations == []


def mldv1(icmp_type: int, src: str, group: str) -> bytes:
    """An MLDv1 message as RFC 2710 §3 has stacks send it: hop limit 1, a hop-by-hop
    Router Alert, a report to the group it names, a done to all routers (ff02::2)."""
    dst = group if icmp_type == 131 else "ff02::2"
    body = bytearray(bytes((icmp_type, 0)) + b"\0" * 6 + socket.inet_pton(socket.AF_INET6, group))
    src_b, dst_b = (socket.inet_pton(socket.AF_INET6, a) for a in (src, dst))
    pseudo = src_b + dst_b + len(body).to_bytes(4, "big") + b"\0\0\0\x3a"
    total = sum(int.from_bytes(w, "big") for w in
                (bytes(pseudo + body)[i:i + 2] for i in range(0, len(pseudo + body), 2)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    body[2:4] = (~total & 0xFFFF).to_bytes(2, "big")
    router_alert = bytes((58, 0, 5, 2, 0, 0, 1, 0))  # next: ICMPv6; Router Alert MLD; PadN
    header = (bytes.fromhex("60000000") + (len(router_alert) + len(body)).to_bytes(2, "big")
              + bytes((0, 1)) + src_b + dst_b)  # next header: hop-by-hop; hop limit 1
    group_mac = "33:33:" + ":".join(f"{b:02x}" for b in dst_b[-4:])
    return bytes(dpkt.ethernet.Ethernet(src=mac(DEV_MAC), dst=mac(group_mac),
                                        type=dpkt.ethernet.ETH_TYPE_IP6,
                                        data=header + router_alert + bytes(body)))


def test_mldv1_after_learning_is_no_deviation(tmp_path: Path) -> None:
    """Issue #16 false alarm: a device learned before it joined a group later sends MLDv1
    reports (to ff02::fb, to its solicited-node group) and a done; ``profile check``
    finds no deviation (baseline, as MLDv2), while a ping to the same group is one."""
    learned = write_capture(tmp_path / "learn.pcap", [
        dhcp_answer(), ether(DEV_MAC, GW_MAC, ip4(DEV4, NET4, tcp(50000, 443, SYN), 6))])
    learn(tmp_path, learned)
    ping = dpkt.icmp6.ICMP6(type=128, code=0, data=b"\0" * 8)
    later = write_capture(tmp_path / "later.pcap", [
        dhcp_answer(),
        mldv1(131, "fe80::a", "ff02::fb"),
        mldv1(131, "fe80::a", "ff02::1:ff00:a"),
        mldv1(131, "::", "ff02::1:ff00:a"),
        mldv1(132, "fe80::a", "ff02::fb"),
        ether(DEV_MAC, "33:33:00:00:00:fb", ip6("fe80::a", "ff02::fb", ping, 58), v6=True),
    ])
    found = check(later, tmp_path / "learned.json")
    assert [(d["protocol"], d["dst"]) for d in found] == [(58, "ff02::fb")], \
        found


# -- names from TLS, short systeminfo -------------------------------------------------------------


def client_hello(name: str) -> bytes:
    """A minimal TLS 1.2 ClientHello naming ``name`` in its server_name extension."""
    sni = name.encode()
    entry = b"\x00" + len(sni).to_bytes(2, "big") + sni
    body = len(entry).to_bytes(2, "big") + entry
    alpn = b"\x00\x10\x00\x05\x00\x03\x02h2"
    extensions = alpn + b"\x00\x00" + len(body).to_bytes(2, "big") + body
    hello = (b"\x03\x03" + b"\x11" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
             + len(extensions).to_bytes(2, "big") + extensions)
    handshake = b"\x01" + len(hello).to_bytes(3, "big") + hello
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def test_tls_server_name_names_an_unresolved_peer(tmp_path: Path) -> None:
    hello = dpkt.tcp.TCP(sport=50000, dport=443, flags=PSH | ACK, off=5,
                         data=client_hello("Cloud.Example.COM"))
    frames = [dhcp_answer(),
              ether(DEV_MAC, GW_MAC, ip4(DEV4, NET4, tcp(50000, 443, SYN), 6)),
              ether(GW_MAC, DEV_MAC, ip4(NET4, DEV4, tcp(443, 50000, SYN | ACK), 6)),
              ether(DEV_MAC, GW_MAC, ip4(DEV4, NET4, hello, 6))]
    document, _, deviations = self_check(tmp_path, frames)
    names = {m["ipv4"].get("ietf-acldns:dst-dnsname") for name, m in aces(document)
             if name.endswith("v4fr") and "tcp" in m}
    assert names == {"cloud.example.com"}
    assert deviations == []


def test_tls_server_name_refuses_what_is_not_a_host_name() -> None:
    from mudguard.profile.core import tls_server_name

    assert tls_server_name(client_hello("a.example")) == "a.example"
    assert tls_server_name(client_hello("192.0.2.7")) is None
    assert tls_server_name(client_hello("bad name.example")) is None
    assert tls_server_name(client_hello("a.example")[:60]) is None  # cut before the SNI
    assert tls_server_name(b"\x16\x03\x01\x00\x05\x01") is None


def test_systeminfo_fits_sixty_characters(tmp_path: Path) -> None:
    frames = [dhcp_answer(), ether(DEV_MAC, GW_MAC, ip4(DEV4, NET4, tcp(50000, 443, SYN), 6))]
    capture = write_capture(tmp_path / ("a-very-long-capture-name-" * 4 + ".pcap"), frames)
    document, _ = learn(tmp_path, capture)
    info = document["ietf-mud:mud"]["systeminfo"]
    assert 0 < len(info) <= 60 and DEV_MAC in info
