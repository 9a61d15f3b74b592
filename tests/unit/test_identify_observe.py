"""Identification from web flows (#16): the pure reader of logged packets
(``identify.observe``), the adapter's attribution (``watch.identify_listener``), the
live identifier's new clues, and the data design's observation rules and elements.

The TLS bytes are real: Python's ssl module runs a handshake in memory (TLS 1.2 with a
certificate whose subject organisation is "TP-Link Corporation Limited", and TLS 1.3)."""

from __future__ import annotations

import ipaddress
import json
import random
import ssl
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest

from mudguard.identify.live import LiveIdentifier
from mudguard.identify.observe import (
    Segment,
    WebObserver,
    read_client_payload,
    stream_over,
    tcp_segment,
)
from mudguard.policy import DeviceFacts, DevicePolicy, HomeContext, LifecycleState
from mudguard.policy._data import (
    IDENTIFY_MACS,
    compile_fixed_ruleset,
    device_elements,
    identify_observed,
)
from mudguard.policy._nft import IDENTIFY_CLIENT_PREFIX, IDENTIFY_SERVER_PREFIX
from mudguard.watch.identify_listener import WebWatcher
from mudguard.watch.nflog import NflogPacket
from tests.pki import make_cert

DEVICE4, SERVER4 = "192.0.2.10", "198.51.100.7"
DEVICE6, SERVER6 = "2001:db8:1::10", "2001:db8:ff::7"
MAC = "50:c7:bf:00:00:01"  # a TP-Link OUI
ORG = "TP-Link Corporation Limited"


def _handshake(version: ssl.TLSVersion, organisation: str = ORG) -> tuple[bytes, bytes]:
    """(the client's ClientHello, the server's first flight) of a real handshake."""
    cert = make_cert("use1-api.tplinkra.com", dns=("use1-api.tplinkra.com",),
                     organisation=organisation)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cert.pem"
        path.write_bytes(cert.cert_pem() + cert.key_pem())
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(path)
    server_ctx.minimum_version = server_ctx.maximum_version = version
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="use1-api.tplinkra.com")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = c_out.read()
    s_in.write(hello)
    with pytest.raises(ssl.SSLWantReadError):
        server.do_handshake()
    return hello, s_out.read()


def _packet(src: str, dst: str, sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 65535, 0, 0)
    if ":" in src:
        header = struct.pack("!IHBB", 6 << 28, len(tcp) + len(payload), 6, 64)
        return (header + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
                + tcp + payload)
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64, 6, 0)
    return (header + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + tcp + payload)


def _segments(flight: bytes, base: int, size: int = 200) -> list[Segment]:
    return [Segment(4, SERVER4, DEVICE4, 443, 50000, (base + i) & 0xFFFFFFFF,
                    flight[i:i + size]) for i in range(0, len(flight), size)]


@pytest.fixture(scope="module")
def tls12() -> tuple[bytes, bytes]:
    return _handshake(ssl.TLSVersion.TLSv1_2)


@pytest.fixture(scope="module")
def tls13() -> tuple[bytes, bytes]:
    return _handshake(ssl.TLSVersion.TLSv1_3)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- parsing ----------------------------------------------------------------------------


def test_tcp_segment_reads_ipv4_and_ipv6() -> None:
    four = tcp_segment(_packet(DEVICE4, SERVER4, 50000, 443, 7, b"abc"))
    assert four == Segment(4, DEVICE4, SERVER4, 50000, 443, 7, b"abc")
    six = tcp_segment(_packet(DEVICE6, SERVER6, 50000, 443, 0xFFFFFFFF, b""))
    assert six == Segment(6, DEVICE6, SERVER6, 50000, 443, 0xFFFFFFFF, b"")
    udp = bytearray(_packet(DEVICE4, SERVER4, 1, 2, 0, b"x"))
    udp[9] = 17
    assert tcp_segment(bytes(udp)) is None
    assert tcp_segment(_packet(DEVICE4, SERVER4, 1, 2, 0, b"")[:30]) is None  # cut header


def test_client_payloads_give_sni_and_user_agent(tls12: tuple[bytes, bytes]) -> None:
    facts, tls = read_client_payload(tls12[0])
    assert facts == [("sni", "use1-api.tplinkra.com")] and tls
    request = b"GET /fw HTTP/1.1\r\nHost: fw.Example.com:8080\r\nUser-Agent: Kasa/2.1\r\n\r\n"
    assert read_client_payload(request) == ([("user_agent", "Kasa/2.1"),
                                             ("http_host", "fw.example.com")], False)
    assert read_client_payload(b"\x00binary") == ([], False)


def test_tls12_certificate_is_read_in_order_and_out_of_order(
        tls12: tuple[bytes, bytes]) -> None:
    hello, flight = tls12
    assert len(flight) > 3 * 200  # several segments: reassembly is needed
    for order in ("in", "shuffled"):
        observer = WebObserver()
        observer.client(MAC, Segment(4, DEVICE4, SERVER4, 50000, 443, 1, hello))
        base = 0xFFFFFF00  # the sequence number wraps inside the flight
        segments = _segments(flight, base)
        first, rest = segments[0], segments[1:]
        if order == "shuffled":
            rest = list(reversed(rest)) + [rest[0]]  # out of order, then a retransmission
        results = [observer.server(s) for s in [first, *rest]]
        done = [r for r in results if r is not None]
        assert len(done) == 1, order
        device, facts = done[0]
        assert device == MAC
        assert ("cert_org", ORG) in facts and ("cert_cn", "use1-api.tplinkra.com") in facts
        assert observer.flows == {} and observer.certificates == 1


def test_tls13_closes_without_certificate(tls13: tuple[bytes, bytes]) -> None:
    hello, flight = tls13
    observer = WebObserver()
    observer.client(MAC, Segment(4, DEVICE4, SERVER4, 50000, 443, 1, hello))
    results = [observer.server(s) for s in _segments(flight, 5)]
    assert (MAC, []) in results  # encrypted after the ServerHello: nothing in clear
    assert observer.flows == {}
    assert stream_over(flight)


def test_a_server_stream_not_starting_a_handshake_is_dropped(
        tls12: tuple[bytes, bytes]) -> None:
    observer = WebObserver()
    observer.client(MAC, Segment(4, DEVICE4, SERVER4, 50000, 443, 1, tls12[0]))
    segments = _segments(tls12[1], 100)
    assert observer.server(segments[1]) == (MAC, [])  # its first segment was not logged
    assert observer.server(segments[0]) is None  # the flow is gone
    # replies on a flow no attributed ClientHello opened are not read
    assert observer.server(Segment(4, SERVER4, DEVICE4, 443, 50001, 0, tls12[1])) is None


# -- bounds -----------------------------------------------------------------------------


def test_flows_are_bounded_per_device_overall_and_in_time(tls12: tuple[bytes, bytes]) -> None:
    clock = Clock()
    observer = WebObserver(max_flows=10, max_flows_per_device=3, flow_seconds=5,
                           clock=clock, burst=10_000)
    hello = tls12[0]
    for port in range(100):
        observer.client("a", Segment(4, DEVICE4, SERVER4, 40000 + port, 443, 0, hello))
    assert len(observer.flows) == 3  # one device cannot take the table
    for device in range(20):
        observer.client(f"d{device}", Segment(4, DEVICE4, SERVER4, device, 443, 0, hello))
    assert len(observer.flows) == 10
    clock.now += 6
    observer.expire()
    assert observer.flows == {}


def test_budget_limits_packets_read() -> None:
    clock = Clock()
    observer = WebObserver(packets_per_second=10, burst=20, clock=clock)
    request = b"GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n"
    read = sum(bool(observer.client("a", Segment(4, DEVICE4, SERVER4, 1, 80, 0, request)))
               for _ in range(100))
    assert read == 20 and observer.over_budget == 80
    clock.now += 1
    assert observer.client("a", Segment(4, DEVICE4, SERVER4, 1, 80, 0, request))


def test_stream_and_pending_segments_are_bounded(tls12: tuple[bytes, bytes]) -> None:
    observer = WebObserver(max_bytes=4096, max_pending=4)
    observer.client(MAC, Segment(4, DEVICE4, SERVER4, 50000, 443, 1, tls12[0]))
    start = b"\x16\x03\x03\xff\xff" + bytes(100)  # a record announcing 64 KB
    assert observer.server(Segment(4, SERVER4, DEVICE4, 443, 50000, 0, start)) is None
    for offset in range(1000, 100_000, 500):  # gaps: pending, bounded in count and bytes
        observer.server(Segment(4, SERVER4, DEVICE4, 443, 50000, offset, bytes(400)))
    flow = next(iter(observer.flows.values()))
    assert len(flow.pending) <= 4 and sum(map(len, flow.pending.values())) <= 4096
    assert len(flow.stream) <= 4096
    done = observer.server(Segment(4, SERVER4, DEVICE4, 443, 50000, 105, bytes(8000)))
    assert done == (MAC, [])  # the window is full: given up
    assert observer.flows == {}


def test_fuzzed_packets_never_crash_or_grow(tls12: tuple[bytes, bytes]) -> None:
    rng = random.Random(1616)
    hello, flight = tls12
    observer = WebObserver(max_flows=16, burst=1e9, packets_per_second=1e9)
    watcher = WebWatcher(lambda mac, facts: None, group=0, device_of=lambda a: MAC,
                         observer=observer)
    seeds = [_packet(DEVICE4, SERVER4, 50000, 443, 1, hello),
             _packet(SERVER4, DEVICE4, 443, 50000, 0, flight[:1448]),
             _packet(DEVICE6, SERVER6, 50000, 80, 1, b"GET / HTTP/1.1\r\nUser-Agent: a\r\n\r\n")]
    for i in range(4000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 12)):
            position = rng.randrange(len(data))
            data[position] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[:rng.randrange(len(data))]
        prefix = IDENTIFY_CLIENT_PREFIX if i % 2 else IDENTIFY_SERVER_PREFIX
        watcher.handle(NflogPacket(group=0, family=2, prefix=prefix, payload=bytes(data)))
        segment = tcp_segment(bytes(data))
        if segment is not None:  # and the pure reader directly, without the catch-all
            observer.client(MAC, segment)
            observer.server(segment)
    assert len(observer.flows) <= 16
    assert all(len(f.stream) <= observer.max_bytes for f in observer.flows.values())


# -- the adapter and the live identifier -------------------------------------------------


def test_watcher_attributes_client_packets_and_hands_facts_on(
        tls12: tuple[bytes, bytes]) -> None:
    got: list[tuple[str, list[tuple[str, str]]]] = []
    watcher = WebWatcher(lambda mac, facts: got.append((mac, list(facts))), group=0,
                         device_of=lambda a: MAC if a == DEVICE4 else None)
    hello, flight = tls12

    def log(prefix: str, packet: bytes) -> None:
        watcher.handle(NflogPacket(group=0, family=2, prefix=prefix, payload=packet))

    log("mgt", _packet(DEVICE4, SERVER4, 50000, 443, 1, hello))  # not ours
    log(IDENTIFY_CLIENT_PREFIX, _packet("192.0.2.99", SERVER4, 50000, 443, 1, hello))
    assert got == [] and watcher.unattributed == 1
    log(IDENTIFY_CLIENT_PREFIX, _packet(DEVICE4, SERVER4, 50000, 443, 1, hello))
    for segment in _segments(flight, 9):
        log(IDENTIFY_SERVER_PREFIX, _packet(segment.src, segment.dst, 443, 50000, segment.seq,
                                            segment.payload))
    assert got[0] == (MAC, [("sni", "use1-api.tplinkra.com")])
    assert got[1][0] == MAC and ("cert_org", ORG) in got[1][1]


def test_watcher_refuses_another_devices_frames_and_a_server_on_the_lan(
        tls12: tuple[bytes, bytes]) -> None:
    got: list[tuple[str, list[tuple[str, str]]]] = []
    watcher = WebWatcher(lambda mac, facts: got.append((mac, list(facts))), group=0,
                         device_of=lambda a: MAC if a == DEVICE4 else None)
    watcher.lan_index = 7  # what start() reads of the LAN interface
    hello, flight = tls12
    own, other = bytes.fromhex(MAC.replace(":", "")), bytes.fromhex("020000000bad")

    def log(prefix: str, packet: bytes, hwaddr: bytes, indev: int) -> None:
        watcher.handle(NflogPacket(group=0, family=2, prefix=prefix, payload=packet,
                                   hwaddr=hwaddr, indev=indev))

    # another MAC with this device's address: never this device's clue
    log(IDENTIFY_CLIENT_PREFIX, _packet(DEVICE4, SERVER4, 50000, 443, 1, hello), other, 7)
    assert got == [] and watcher.forged == 1
    log(IDENTIFY_CLIENT_PREFIX, _packet(DEVICE4, SERVER4, 50000, 443, 1, hello), own, 7)
    assert got == [(MAC, [("sni", "use1-api.tplinkra.com")])]
    # the server's flight forged from the LAN is refused; from the WAN it is read
    segments = _segments(flight, 9)
    for segment in segments:
        log(IDENTIFY_SERVER_PREFIX, _packet(segment.src, segment.dst, 443, 50000,
                                            segment.seq, segment.payload), other, 7)
    assert len(got) == 1 and watcher.forged == 1 + len(segments)
    for segment in segments:
        log(IDENTIFY_SERVER_PREFIX, _packet(segment.src, segment.dst, 443, 50000,
                                            segment.seq, segment.payload), other, 3)
    assert got[1][0] == MAC and ("cert_org", ORG) in got[1][1]


def test_live_identifier_names_the_maker_from_web_clues() -> None:
    identifier = LiveIdentifier.load()
    identifier.oui = None  # what the web flows alone tell
    mac = "00:00:5e:00:53:42"  # RFC 9542 documentation MAC
    before = identifier.identification(bytes.fromhex(mac.replace(":", "")))
    assert before.manufacturer is None
    identifier.on_web(mac, [("sni", "use1-api.tplinkra.com"), ("cert_org", ORG),
                            ("mdns_txt", "ignored: not a web field")])
    after = identifier.identification(bytes.fromhex(mac.replace(":", "")))
    assert after.manufacturer == "TP-Link" and after.manufacturer_confidence >= 0.5
    sources = {e.source for e in after.evidence}
    assert {"tls_sni", "tls_certificate"} <= sources
    assert [u.maker for u in identifier.updates()] == ["TP-Link"]


# -- the data design's rules and elements ------------------------------------------------

CONTEXT = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",),
                      lan_interface="lan0")


@pytest.mark.parametrize(("state", "has_mud", "observed"), [
    (LifecycleState.NEW, False, True), (LifecycleState.DEFAULT, False, True),
    (LifecycleState.LEARNING, False, True), (LifecycleState.PROPOSED, False, True),
    (LifecycleState.TRUSTED, False, False), (LifecycleState.QUARANTINED, False, False),
    (LifecycleState.PROFILED, True, False)])
def test_devices_observed_are_those_without_a_mud_file_on_the_home_default(
        state: LifecycleState, has_mud: bool, observed: bool) -> None:
    from mudguard.mud import parse_mud
    mud = None
    if has_mud:
        mud = parse_mud(json.dumps({"ietf-mud:mud": {
            "mud-version": 1, "mud-url": "https://example.com/x.json",
            "last-update": "2026-01-01T00:00:00Z", "cache-validity": 48,
            "is-supported": True, "systeminfo": "x",
            "from-device-policy": {"access-lists": {"access-list": []}},
            "to-device-policy": {"access-lists": {"access-list": []}}}})).mud
    facts = DeviceFacts(mac=MAC, ipv4=(DEVICE4,), state=state)
    policy = DevicePolicy(device=facts, state=state, rules=(), mud=mud)
    assert identify_observed(policy) is observed
    elements = device_elements(policy, CONTEXT)
    assert (MAC in elements.elements.get(IDENTIFY_MACS, ())) is observed
    # the flag is part of the fingerprint: moving in or out is an element update
    other = DevicePolicy(device=facts, state=LifecycleState.TRUSTED, rules=(), mud=None)
    if observed:
        assert device_elements(other, CONTEXT).fingerprint != elements.fingerprint
    # the chains design: the same set, its element added, deleted on a move, removed
    from mudguard.policy._nft import compile_device_record, remove_device_commands

    def touches(cmds: list[dict[str, Any]], verb: str) -> bool:
        return any(verb in c and c[verb].get("element", {}).get("name") == IDENTIFY_MACS
                   and MAC in c[verb]["element"]["elem"] for c in cmds)
    cmds, record = compile_device_record(policy, CONTEXT)
    assert record.observed is observed and touches(cmds, "add") is observed
    assert touches(remove_device_commands(record), "delete") is observed
    moved, _ = compile_device_record(other, CONTEXT, previous=record)
    assert touches(moved, "delete") is observed and not touches(moved, "add")
    again, _ = compile_device_record(policy, CONTEXT, previous=record)
    assert not touches(again, "add") and not touches(again, "delete")


def test_observation_rules_never_accept_or_drop() -> None:
    rules = [c["add"]["rule"] for c in compile_fixed_ruleset(CONTEXT)
             if "rule" in c.get("add", {})]
    observing = [r for r in rules if r["chain"] in ("identify_new", "identify_log")]
    assert len(observing) == 9  # 2 source-binding gates, 7 observation rules
    text = json.dumps(observing)
    assert '"accept"' not in text and '"drop"' not in text and '"goto"' not in text
    logs = [e["log"] for r in observing for e in r["expr"] if "log" in e]
    assert {entry["group"] for entry in logs} == {CONTEXT.identify_log_group}
    forward = [r for r in rules if r["chain"] == "forward"]
    # after the source binding (2 rules) and the RFC 9761 ClientHello log
    assert ["@bind4" in json.dumps(r) for r in forward[:2]] == [True, False]
    assert "@bind6" in json.dumps(forward[1])
    assert "jump" in json.dumps(forward[3]) and "identify_log" in json.dumps(forward[3])


def test_the_identification_group_follows_the_tls_group() -> None:
    from mudguard.daemon.config import ConfigError, parse_config
    from tests.e2e.test_daemon_config import GOOD

    config = parse_config(GOOD + "[watch]\nnflog_group = 65533\n")
    context = config.home_context()
    assert (context.log_group, context.tls_log_group, context.identify_log_group) == \
        (65533, 65534, 65535)
    with pytest.raises(ConfigError, match="0-65533"):
        parse_config(GOOD + "[watch]\nnflog_group = 65534\n")
