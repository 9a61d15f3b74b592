"""RFC 9761 observation, the pure parts: the compiled rules, the tracker's TLS count, and
turning a logged packet into an observation. The kernel and real TLS are in
``tests/netns/test_tls_observe.py``."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mudguard.mud import Direction, parse_mud
from mudguard.policy import (
    TABLE,
    DeviceFacts,
    HomeContext,
    LifecycleState,
    compile_base,
    compile_device,
    decide,
    device_chain,
    device_id,
)
from mudguard.policy._nft import (
    TLS_LOG_PREFIX,
    TLS_SNAPLEN,
    TLS_WATCH_MARK,
    tls_hello_rule,
    tls_watched_origins,
)
from mudguard.watch.clienthello import SNAPLEN
from mudguard.watch.nflog import FlowEvent, NflogPacket
from mudguard.watch.tls_listener import TlsWatcher, observation_of
from mudguard.watch.tracker import DeviationTracker, Thresholds

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "mud-extensions" / \
    "rfc9761-tls-profile.json"
CTX = HomeContext(lan_prefixes=("192.0.2.0/24", "2001:db8:1::/64"),
                  gateway_addresses=("192.0.2.1", "2001:db8:1::1"), tls_log_group=7)
MAC = "02:00:00:00:00:09"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def example(*, profiles: bool = True) -> Any:
    doc = json.loads(EXAMPLE.read_text())
    if not profiles:
        for ace in doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"]:
            del ace["matches"]["ietf-acl-tls:client-profiles"]
    mud = parse_mud(doc).mud
    assert mud is not None
    return mud


def out_rules(mud: Any) -> list[dict[str, Any]]:
    dev = DeviceFacts(mac=MAC, ipv4=("192.0.2.10",), ipv6=("2001:db8:1::10",),
                      state=LifecycleState.PROFILED, mud_url=mud.mud_url)
    policy = decide(dev, mud, (), CTX, now=NOW)
    chain = device_chain(MAC, "out")
    return [c["add"]["rule"] for c in compile_device(policy, CTX)
            if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain]


def test_snap_lengths_agree() -> None:
    assert TLS_SNAPLEN == SNAPLEN


def test_a_profiled_tcp_ace_marks_its_new_flows_before_its_accept() -> None:
    rules = out_rules(example())
    comments = [r.get("comment", "") for r in rules]
    watch = [i for i, c in enumerate(comments) if c.startswith("RFC 9761")]
    assert len(watch) == 2  # one TCP (cl0-frdev), one UDP (cl1-frdev)
    tcp, udp = (rules[i]["expr"] for i in watch)
    assert comments[watch[0] + 1] == "mud-7500-profile/cl0-frdev"  # right before its accept
    assert comments[watch[1] + 1] == "mud-7500-profile/cl1-frdev"
    assert {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                      "right": 443}} in tcp
    assert tcp[-1] == {"mangle": {"key": {"ct": {"key": "mark"}},
                                  "value": {"|": [{"ct": {"key": "mark"}}, TLS_WATCH_MARK]}}}
    assert {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}} in tcp
    assert udp[-1] == {"log": {"prefix": TLS_LOG_PREFIX, "group": 7, "snaplen": SNAPLEN}}
    assert {"match": {"op": "==", "left": {"payload": {"base": "ih", "offset": 0, "len": 8}},
                      "right": 0x16}} in udp
    for expr in (tcp, udp):  # observation only: never a verdict
        assert not any(k in e for e in expr for k in ("accept", "drop", "return", "jump"))


def test_a_device_without_profiles_gets_no_observation() -> None:
    mud = example(profiles=False)
    assert tls_watched_origins(decide(DeviceFacts(
        mac=MAC, ipv4=("192.0.2.10",), state=LifecycleState.PROFILED, mud_url=mud.mud_url),
        mud, (), CTX, now=NOW)) == frozenset()
    assert not any(r.get("comment", "").startswith("RFC 9761") for r in out_rules(mud))
    with_profiles = out_rules(example())
    assert len(with_profiles) == len(out_rules(mud)) + 2  # the rest is unchanged


def test_the_main_table_logs_the_first_payload_of_marked_flows_first() -> None:
    forward = [c["add"]["rule"] for c in compile_base(CTX) if "rule" in c.get("add", {})
               and (c["add"]["rule"]["table"], c["add"]["rule"]["chain"]) == (TABLE, "forward")]
    # after the unknown-MAC drop and the source binding only (a forged hello is never
    # logged)
    assert [rule["expr"][-1] for rule in forward[:3]] == [{"drop": None}] * 3
    first = forward[3]["expr"]
    assert first == tls_hello_rule(CTX)
    assert first[0] == {"match": {"op": "==", "left": {"&": [{"ct": {"key": "mark"}},
                                                            TLS_WATCH_MARK]},
                                  "right": TLS_WATCH_MARK}}
    assert {"limit": {"rate": 50, "per": "second", "burst": 50}} in first
    per_device = next(e["set"] for e in first if "set" in e)  # one MAC cannot use it all
    assert per_device["op"] == "update" and per_device["set"] == "@tls_rate"
    assert per_device["elem"] == {"payload": {"protocol": "ether", "field": "saddr"}}
    assert per_device["stmt"] == [{"limit": {"rate": 10, "per": "second", "burst": 20}}]
    assert forward[0]["comment"].startswith("mudguard base ")  # still carries the base mark


# -- the tracker ------------------------------------------------------------------------------


def flow(dev: str = "0123456789ab") -> FlowEvent:
    return FlowEvent(device_id=dev, direction=Direction.FROM_DEVICE, family=4,
                     src="192.0.2.10", dst="198.51.100.7", protocol=6, src_port=40000,
                     dst_port=443)


def test_three_tls_deviations_quarantine_once() -> None:
    tracker = DeviationTracker(Thresholds(tls_deviations=3, deviation_window=60))
    assert tracker.observe_tls(flow(), "offered TLS 1.0", 0.0) == []
    assert tracker.observe_tls(flow(), "offered TLS 1.0", 1.0) == []
    alerts = tracker.observe_tls(flow(), "ALPN h2 instead of mqtt", 2.0)
    assert len(alerts) == 1 and alerts[0].kind == "tls"
    assert "3 TLS ClientHellos" in alerts[0].reason
    assert "offered TLS 1.0; ALPN h2 instead of mqtt" in alerts[0].reason
    assert len(alerts[0].evidence) == 3
    assert tracker.observe_tls(flow(), "offered TLS 1.0", 3.0) == []  # alerted: quiet
    tracker.release(flow().device_id)
    assert tracker.observe_tls(flow(), "offered TLS 1.0", 4.0) == []


def test_tls_deviations_outside_the_window_do_not_add_up() -> None:
    tracker = DeviationTracker(Thresholds(tls_deviations=2, deviation_window=10))
    assert tracker.observe_tls(flow(), "x", 0.0) == []
    assert tracker.observe_tls(flow(), "x", 20.0) == []
    assert tracker.observe_tls(flow(), "x", 21.0) != []


# -- a logged packet -> an observation ----------------------------------------------------


def ipv4_tcp(payload: bytes, src: str = "192.0.2.10") -> bytes:
    header = bytes([0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]) + \
        bytes(map(int, src.split("."))) + bytes([198, 51, 100, 7])
    return header + struct.pack("!HHIIBBHHH", 40000, 443, 0, 0, 0x50, 0x18, 0, 0, 0) + payload


def test_a_logged_packet_becomes_an_observation_of_the_device_holding_its_source() -> None:
    dev = device_id(MAC)

    def device_of(address: str) -> str | None:
        return dev if address == "192.0.2.10" else None

    hello = bytes.fromhex("16030100") + b"\x05" + b"\x01\x00\x00\x01\x03"
    seen = observation_of(NflogPacket(group=7, family=2, prefix="mgt",
                                      payload=ipv4_tcp(hello)), device_of)
    assert seen is not None and seen.device_id == dev and seen.dst_port == 443
    assert seen.hello is None and seen.problem == "handshake shorter than its header"
    plain = observation_of(NflogPacket(group=7, family=2, prefix="mgt",
                                       payload=ipv4_tcp(b"GET / HTTP/1.1\r\n")), device_of)
    assert plain is not None and plain.problem == "not a TLS handshake record"
    assert observation_of(NflogPacket(group=7, family=2, prefix="mg 0123456789ab out",
                                      payload=ipv4_tcp(b"x")), device_of) is None
    assert observation_of(NflogPacket(group=7, family=2, prefix="mgt",
                                      payload=ipv4_tcp(b"x", "192.0.2.99")), device_of) is None


def test_a_hello_sent_from_another_devices_mac_is_not_that_devices() -> None:
    # red team: a device that knows another's flow (ports and sequence numbers) injects a
    # ClientHello with that device's source address; conntrack takes it as that flow and
    # the kernel logs it before the binding check. Its Ethernet source (NFULA_HWADDR) is
    # the forger's: the watcher must not judge the victim on it.
    dev = device_id(MAC)
    book = {"192.0.2.10": (dev, MAC)}
    watcher = TlsWatcher(lambda _o: None, group=7,
                         device_of=lambda a: book[a][0] if a in book else None,
                         mac_of=lambda a: book[a][1] if a in book else None)
    hello = bytes.fromhex("16030100") + b"\x05" + b"\x01\x00\x00\x01\x03"
    own = bytes.fromhex(MAC.replace(":", ""))
    forger = bytes.fromhex("02aabbccddee")
    assert watcher.handle(NflogPacket(group=7, family=2, prefix="mgt",
                                      payload=ipv4_tcp(hello), hwaddr=forger)) is None
    assert watcher.forged == 1
    seen = watcher.handle(NflogPacket(group=7, family=2, prefix="mgt",
                                      payload=ipv4_tcp(hello), hwaddr=own))
    assert seen is not None and seen.device_id == dev and watcher.seen == 1
