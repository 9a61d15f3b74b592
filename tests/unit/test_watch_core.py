"""The watcher's pure parts: NFLOG message parsing and the deviation tracker."""

from __future__ import annotations

import socket
import struct

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mudguard.mud import Direction
from mudguard.policy import device_id, log_prefix
from mudguard.watch import Alert, DeviationTracker, FlowEvent, Thresholds, parse_prefix
from mudguard.watch.listener import Watcher
from mudguard.watch.nflog import (
    NFULA_HWADDR,
    NFULA_MARK,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    bind_messages,
    flow_event,
    parse_datagram,
)

MAC = "02:00:00:00:00:0a"
ID = device_id(MAC)
OUT, IN = Direction.FROM_DEVICE, Direction.TO_DEVICE


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def nflog_message(prefix: str, payload: bytes, *, group: int = 100,
                  hwaddr: bytes | None = bytes.fromhex("02000000000a")) -> bytes:
    body = struct.pack("=BB", socket.AF_INET, 0) + struct.pack("!H", group)
    body += attr(NFULA_PREFIX, prefix.encode() + b"\0")
    if hwaddr is not None:
        body += attr(NFULA_HWADDR, struct.pack("!HH", len(hwaddr), 0) + hwaddr + b"\0\0")
    body += attr(NFULA_PAYLOAD, payload)
    return struct.pack("=IHHII", 16 + len(body), 0x400, 0, 0, 0) + body


def tcp_syn(dst: str, port: int) -> bytes:
    seg = dpkt.tcp.TCP(sport=40000, dport=port, flags=dpkt.tcp.TH_SYN, off=5)
    ip = dpkt.ip.IP(src=socket.inet_aton("192.0.2.10"), dst=socket.inet_aton(dst), p=6, data=seg)
    ip.len = len(bytes(ip))
    return bytes(ip)


def test_a_logged_packet_becomes_a_flow_event() -> None:
    data = nflog_message(log_prefix(MAC, "out"), tcp_syn("198.51.100.7", 23))
    data += nflog_message("someone else's log", tcp_syn("198.51.100.8", 23))
    packets, acks = parse_datagram(data)
    assert len(packets) == 2 and acks == []
    event = flow_event(packets[0])
    assert event == FlowEvent(device_id=ID, direction=OUT, family=4, src="192.0.2.10",
                              dst="198.51.100.7", protocol=6, src_port=40000, dst_port=23,
                              tcp_flags=0x02, mac=MAC)
    assert flow_event(packets[1]) is None  # not one of mudguard's prefixes


def _with_mark(message: bytes, mark: int) -> bytes:
    body = message[16:] + attr(NFULA_MARK, struct.pack("!I", mark))
    return struct.pack("=IHHII", 16 + len(body), 0x400, 0, 0, 0) + body


def test_the_shared_log_of_policy_as_data_names_the_device() -> None:
    """``mg * out``: the device is the source MAC; ``mg * in``: its mark, mapped back."""
    from mudguard.policy._data import LOG_PREFIX_IN, LOG_PREFIX_OUT, device_mark

    out = parse_datagram(nflog_message(LOG_PREFIX_OUT, tcp_syn("198.51.100.7", 23)))[0][0]
    assert out.prefix == "mg * out"
    event = flow_event(out)
    assert event is not None and (event.device_id, event.direction) == (ID, OUT)
    raw = _with_mark(nflog_message(LOG_PREFIX_IN, tcp_syn("192.0.2.10", 80), hwaddr=None),
                     device_mark(MAC))
    inbound = parse_datagram(raw)[0][0]
    assert inbound.mark == device_mark(MAC)
    assert flow_event(inbound) is None  # no mark map: not attributed
    event = flow_event(inbound, {device_mark(MAC): ID})
    assert event is not None and (event.device_id, event.direction) == (ID, IN)
    assert flow_event(inbound, {device_mark(MAC) + 1: ID}) is None


def test_ipv6_packet_with_extension_header() -> None:
    udp = dpkt.udp.UDP(sport=5000, dport=5353, ulen=8)
    hop = b"\x11\x00" + b"\x00" * 6  # hop-by-hop options, next header UDP
    body = hop + bytes(udp)
    ip6 = dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, "2001:db8:1::10"),
                       dst=socket.inet_pton(socket.AF_INET6, "2001:db8:f::1"), nxt=0,
                       hlim=64, plen=len(body))
    raw = bytes(ip6)[:40] + body
    packets, _ = parse_datagram(nflog_message(f"mg {ID} in", raw, hwaddr=None))
    event = flow_event(packets[0])
    assert event is not None
    assert (event.family, event.protocol, event.dst_port, event.direction, event.mac) == (
        6, 17, 5353, IN, None)


def test_acks_are_reported() -> None:
    ack = struct.pack("=IHHII", 36, 2, 0, 7, 0) + struct.pack("=i", -16) + b"\0" * 16
    _, acks = parse_datagram(ack)
    assert [(a.seq, a.error) for a in acks] == [(7, -16)]


@pytest.mark.parametrize(("prefix", "expected"), [
    (f"mg {ID} out", (ID, OUT)),
    (f"mg {ID} in", (ID, IN)),
    ("mg 123 out", None),
    ("mg * out", ("*", OUT)),
    ("mg ** out", None),
    (f"mg {ID} sideways", None),
    (f"mg {ID.upper()} out", None),
    ("", None),
])
def test_prefixes(prefix: str, expected: tuple[str, Direction] | None) -> None:
    assert parse_prefix(prefix) == expected


def test_bind_messages_are_well_formed() -> None:
    for message in bind_messages(100):
        length, kind, flags = struct.unpack_from("=IHH", message)
        assert length == len(message) and kind == 0x401 and flags == 0x5
        assert struct.unpack_from("!H", message, 18)[0] == 100
    with pytest.raises(ValueError):
        bind_messages(70000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_hostile_bytes_never_raise(data: bytes) -> None:
    packets, _ = parse_datagram(data)
    for packet in packets:
        flow_event(packet)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=80))
def test_hostile_payloads_never_raise(payload: bytes, prefix: bytes) -> None:
    message = nflog_message(f"mg {ID} out", payload)
    packets, _ = parse_datagram(message)
    assert len(packets) == 1
    flow_event(packets[0])
    broken = nflog_message(prefix.decode("latin-1"), payload)[:-3]
    parse_datagram(broken)


# -- the tracker -------------------------------------------------------------------------------


def out(dst: str, port: int | None = 23, proto: int = 6, device: str = ID) -> FlowEvent:
    return FlowEvent(device_id=device, direction=OUT, family=4, src="192.0.2.10", dst=dst,
                     protocol=proto, src_port=40000 if port else None, dst_port=port, mac=MAC)


LAN = ("192.0.2.0/24",)


def feed(tracker: DeviationTracker, events: list[FlowEvent], start: float = 0.0,
         step: float = 0.1) -> list[tuple[float, Alert]]:
    alerts = []
    for i, event in enumerate(events):
        now = start + i * step
        alerts += [(now, a) for a in tracker.observe(event, now)]
    return alerts


def test_lan_scan_is_caught_at_the_threshold() -> None:
    tracker = DeviationTracker(lan_prefixes=LAN)
    alerts = feed(tracker, [out(f"192.0.2.{h}") for h in range(20, 40)])
    assert len(alerts) == 1
    at, alert = alerts[0]
    assert alert.kind == "scan" and at == pytest.approx(0.7)  # the 8th LAN host
    assert alert.mac == MAC and len(alert.evidence) == 8
    assert "home network: 8 addresses" in alert.reason and "port 23" in alert.reason


def test_internet_scan_needs_more_hosts() -> None:
    tracker = DeviationTracker(Thresholds(deviation_flows=1000), lan_prefixes=LAN)
    alerts = feed(tracker, [out(f"203.0.113.{h}") for h in range(1, 60)], step=0.05)
    assert [a.kind for _, a in alerts] == ["scan"]
    assert "32 addresses" in alerts[0][1].reason


def test_fast_distinct_deviations_are_called_a_scan() -> None:
    tracker = DeviationTracker(lan_prefixes=LAN)
    alerts = feed(tracker, [out(f"203.0.113.{h}") for h in range(1, 60)], step=0.05)
    assert [a.kind for _, a in alerts] == ["scan"]
    assert "tried 8 different blocked connections" in alerts[0][1].reason


def test_port_scan_of_one_host() -> None:
    tracker = DeviationTracker(Thresholds(deviation_flows=1000), lan_prefixes=LAN)
    alerts = feed(tracker, [out("192.0.2.1", port) for port in range(1, 40)])
    assert alerts and alerts[0][1].kind == "scan" and "16 ports" in alerts[0][1].reason


def test_slow_scan_outside_the_window_is_not_a_scan() -> None:
    tracker = DeviationTracker(Thresholds(deviation_flows=1000), lan_prefixes=LAN)
    assert feed(tracker, [out(f"192.0.2.{h}") for h in range(20, 60)], step=2.0) == []


def test_flood_of_one_flow() -> None:
    tracker = DeviationTracker(lan_prefixes=LAN)
    alerts = feed(tracker, [out("203.0.113.5", 80)] * 60, step=0.2)
    assert [a.kind for _, a in alerts] == ["flood"]
    assert alerts[0][0] == pytest.approx(44 * 0.2)


def test_repeated_deviation_within_the_window() -> None:
    tracker = DeviationTracker(lan_prefixes=LAN)
    events = [out(f"203.0.113.{h}", 443) for h in range(1, 12)]
    alerts = feed(tracker, events, step=60.0)  # one new destination a minute
    assert [a.kind for _, a in alerts] == ["deviation"]
    assert alerts[0][0] == pytest.approx(7 * 60.0)  # the 8th distinct flow
    # The same few flows over and over are not "repeated deviation".
    calm = DeviationTracker(lan_prefixes=LAN)
    assert feed(calm, [out("203.0.113.5", 443), out("203.0.113.6", 53, 17)] * 50, step=5) == []


def test_incoming_drops_do_not_count() -> None:
    tracker = DeviationTracker(lan_prefixes=LAN)
    probes = [FlowEvent(device_id=ID, direction=IN, family=4, src=f"203.0.113.{h}",
                        dst="192.0.2.10", protocol=6, dst_port=23) for h in range(1, 100)]
    assert feed(tracker, probes) == []


def test_one_alert_until_released() -> None:
    tracker = DeviationTracker(lan_prefixes=LAN)
    scan = [out(f"192.0.2.{h}") for h in range(20, 60)]
    assert len(feed(tracker, scan)) == 1
    assert tracker.alerted(ID)
    assert feed(tracker, scan, start=10) == []
    tracker.release(ID)
    assert not tracker.alerted(ID)
    assert len(feed(tracker, scan, start=20)) == 1


def test_devices_are_tracked_apart_and_bounded() -> None:
    tracker = DeviationTracker(Thresholds(max_devices=4), lan_prefixes=LAN)
    for n in range(10):
        tracker.observe(out("192.0.2.50", device=f"{n:012x}"), float(n))
    assert len(tracker._devices) == 4
    # Seven hosts from each of two devices: neither reaches eight.
    mixed = [out(f"192.0.2.{h}", device=d) for h in range(20, 27) for d in ("a" * 12, "b" * 12)]
    assert feed(tracker, mixed) == []


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="scan_window"):
        Thresholds(scan_window=0)
    with pytest.raises(ValueError, match="lan_scan_hosts"):
        Thresholds(lan_scan_hosts=0)


def test_watcher_names_remotes_and_survives_callback_bugs() -> None:
    seen: list[FlowEvent] = []
    alerts: list[Alert] = []

    def broken(_event: FlowEvent) -> None:
        raise RuntimeError("a bug in a callback")

    clock = iter(x * 0.1 for x in range(100))
    watcher = Watcher(alerts.append, on_event=broken, clock=lambda: next(clock),
                      tracker=DeviationTracker(lan_prefixes=LAN),
                      names=lambda dev, addr: "cam.example.com" if addr == "192.0.2.20" else None)
    for h in range(20, 28):
        watcher.handle(out(f"192.0.2.{h}"))
    assert watcher.events_seen == 8
    assert len(alerts) == 1
    assert alerts[0].evidence[0].remote_name == "cam.example.com"
    assert "cam.example.com port 23" in alerts[0].reason
    watcher.on_event = seen.append
    watcher.handle(out("192.0.2.99"))
    assert seen and seen[0].remote_name is None


def test_pure_parts_import_no_io_modules() -> None:
    import subprocess
    import sys

    code = ("import sys\nbefore = set(sys.modules)\n"
            "import mudguard.watch, mudguard.watch.nflog, mudguard.watch.tracker\n"
            "import mudguard.profile.core\n"
            "print(' '.join(sorted(set(sys.modules) - before)))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    forbidden = ("asyncio", "socket", "sqlite3", "subprocess", "nftables", "pyroute2", "dpkt")
    assert [m for m in loaded if m.split(".")[0] in forbidden] == []


def test_alert_mac_is_only_the_device_own() -> None:
    tracker = DeviationTracker(lan_prefixes=LAN)
    other_mac = "02:00:00:00:00:99"  # a frame claiming another MAC under this device's id
    events = [FlowEvent(device_id=ID, direction=OUT, family=4, src="192.0.2.10",
                        dst=f"192.0.2.{h}", protocol=6, dst_port=23, mac=other_mac)
              for h in range(20, 28)]
    alerts = feed(tracker, events)
    assert alerts and alerts[0][1].mac is None


# -- conntrack NEW events -------------------------------------------------------------------


def ct_new(src: str, dst: str, proto: int, sport: int, dport: int, *, flags: int = 0x400) -> bytes:
    from mudguard.watch.conntrack import CTA_TUPLE_ORIG

    nested = 0x8000
    ip = attr(1, socket.inet_aton(src)) + attr(2, socket.inet_aton(dst))
    l4 = attr(1, bytes([proto])) + attr(2, struct.pack("!H", sport)) + \
        attr(3, struct.pack("!H", dport))
    orig = attr(1 | nested, ip) + attr(2 | nested, l4)
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + attr(CTA_TUPLE_ORIG | nested, orig)
    return struct.pack("=IHHII", 16 + len(body), 0x100, flags, 0, 0) + body


def test_conntrack_new_events_are_parsed() -> None:
    from mudguard.watch.conntrack import ConnEvent, parse_conntrack

    data = ct_new("192.0.2.10", "203.0.113.5", 6, 40000, 443)
    data += ct_new("192.0.2.10", "203.0.113.6", 17, 40001, 53, flags=0)  # an update, not NEW
    assert parse_conntrack(data) == [ConnEvent(family=4, src="192.0.2.10", dst="203.0.113.5",
                                               protocol=6, src_port=40000, dst_port=443)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_conntrack_hostile_bytes_never_raise(data: bytes) -> None:
    from mudguard.watch.conntrack import parse_conntrack

    parse_conntrack(data)
    parse_conntrack(ct_new("192.0.2.10", "203.0.113.5", 6, 1, 2)[:20] + data)


def test_connection_flood_of_allowed_destinations() -> None:
    from mudguard.watch.conntrack import ConnEvent

    alerts: list[Alert] = []
    clock = iter(x * 0.01 for x in range(10_000))
    watcher = Watcher(alerts.append, clock=lambda: next(clock),
                      device_of={"192.0.2.10": ID}.get)
    stranger = ConnEvent(family=4, src="192.0.2.99", dst="203.0.113.5", protocol=6,
                         src_port=1, dst_port=443)
    for _ in range(400):
        watcher.handle_connection(stranger)  # not a managed device: ignored
    assert alerts == []
    for port in range(20000, 20400):
        watcher.handle_connection(ConnEvent(family=4, src="192.0.2.10", dst="203.0.113.5",
                                            protocol=6, src_port=port, dst_port=443))
    assert len(alerts) == 1 and alerts[0].kind == "flood"
    assert "opened 300 connections in 10 s" in alerts[0].reason
    assert alerts[0].evidence[0].dst == "203.0.113.5"


def test_address_book_indexes_installed_records() -> None:
    from dataclasses import dataclass as dc

    from mudguard.watch.listener import AddressBook

    @dc
    class Record:
        ipv4: tuple[str, ...]
        ipv6: tuple[str, ...]

    installed = {MAC: Record(("192.0.2.10",), ("2001:db8:1::10",))}
    now = [0.0]
    book = AddressBook(lambda: installed, clock=lambda: now[0])
    assert book("192.0.2.10") == ID and book("2001:DB8:1::10") == ID
    assert book("192.0.2.11") is None and book("not an address") is None
    installed["02:00:00:00:00:0b"] = Record(("192.0.2.11",), ())
    assert book("192.0.2.11") is None  # the index is at most max_age old
    now[0] = 1.5
    assert book("192.0.2.11") == device_id("02:00:00:00:00:0b")


def test_address_book_finds_a_device_enforced_a_moment_ago() -> None:
    # Its first connections come within a second of its rules: they count too.
    from dataclasses import dataclass as dc

    from mudguard.watch.listener import AddressBook

    @dc
    class Record:
        ipv4: tuple[str, ...]
        ipv6: tuple[str, ...]

    installed: dict[str, Record] = {}
    now = [0.0]
    book = AddressBook(lambda: installed, clock=lambda: now[0])
    assert book("192.0.2.148") is None
    installed[MAC] = Record(("192.0.2.148",), ())
    now[0] = 0.2  # well within max_age
    assert book("192.0.2.148") == ID
    installed["02:00:00:00:00:0c"] = Record(("192.0.2.149",), ())
    book.invalidate()  # the enforcer just installed its rules: found at once
    assert book("192.0.2.149") == device_id("02:00:00:00:00:0c")
