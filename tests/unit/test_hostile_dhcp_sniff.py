"""DHCP frames read off the LAN are hostile input: the parser refuses every malformed
frame with ``DhcpFrameError`` (never another exception), and the matcher makes a lease
only from an ACK the gateway itself sent, with options from the REQUEST its client sent."""

from __future__ import annotations

import contextlib
import json
import struct

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mudguard.devices import MudSource
from mudguard.discovery.dhcp import parse_hook_message
from mudguard.discovery.dhcp_hook import hook_message
from mudguard.discovery.dhcp_sniff import (
    DhcpFrameError,
    LeaseMatcher,
    parse_dhcp_frame,
)
from mudguard.discovery.sighting import normalise

GATEWAY = "02:00:00:00:00:01"
DEVICE = "02:00:00:00:00:42"
OTHER = "02:00:00:00:00:43"
URL = "https://mud.example.com/plug.json"
SERVERS = ("192.0.2.1",)  # the gateway's own address, where dnsmasq answers from


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def dhcp(op: int, kind: int, *, chaddr: str = DEVICE, xid: int = 0x1234, yiaddr: int = 0,
         extra: list[tuple[int, bytes]] | None = None) -> bytes:
    """One DHCP message in wire format (dpkt writes it as clients and servers do)."""
    opts = [(53, bytes([kind])), *(extra or [])]
    return bytes(dpkt.dhcp.DHCP(op=op, chaddr=_mac(chaddr), xid=xid, yiaddr=yiaddr,
                                opts=opts))


def frame(payload: bytes, *, src: str, reply: bool = False, src_ip: str | None = None,
          sport: int | None = None) -> bytes:
    """``payload`` in Ethernet/IPv4/UDP as it crosses the LAN (client 68 → server 67)."""
    udp = dpkt.udp.UDP(sport=sport or (67 if reply else 68), dport=68 if reply else 67,
                       data=payload)
    udp.ulen = len(udp)
    source = src_ip or ("192.0.2.1" if reply else "0.0.0.0")
    ip = dpkt.ip.IP(src=bytes(int(p) for p in source.split(".")), dst=b"\xff" * 4,
                    p=17, data=udp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=_mac(src), dst=b"\xff" * 6, data=ip))


REQUEST_OPTIONS = [(12, b"plug"), (60, b"udhcp 1.36.1"), (55, bytes([1, 3, 6, 51])),
                   (161, URL.encode())]


def request(*, src: str = DEVICE, chaddr: str = DEVICE, xid: int = 0x1234,
            options: list[tuple[int, bytes]] | None = None) -> bytes:
    payload = dhcp(1, 3, chaddr=chaddr, xid=xid,
                   extra=REQUEST_OPTIONS if options is None else options)
    return frame(payload, src=src)


def ack(*, src: str = GATEWAY, chaddr: str = DEVICE, xid: int = 0x1234,
        address: str = "192.0.2.120", src_ip: str | None = None,
        sport: int | None = None) -> bytes:
    yiaddr, = struct.unpack("!I", bytes(int(p) for p in address.split(".")))
    payload = dhcp(2, 5, chaddr=chaddr, xid=xid, yiaddr=yiaddr,
                   extra=[(51, struct.pack("!I", 3600)), (54, bytes([192, 0, 2, 1]))])
    return frame(payload, src=src, reply=True, src_ip=src_ip, sport=sport)


def feed(matcher: LeaseMatcher, raw: bytes, *, outgoing: bool, now: float = 0.0) -> object:
    return matcher.feed(parse_dhcp_frame(raw), outgoing=outgoing, gateway_mac=GATEWAY,
                        now=now)


def test_a_request_carries_the_devices_options() -> None:
    message = parse_dhcp_frame(request())
    assert (message.op, message.message_type, message.xid, message.chaddr) == (
        1, 3, 0x1234, DEVICE)
    assert (message.mud_url, message.hostname, message.vendor_class, message.prl) == (
        URL, "plug", "udhcp 1.36.1", "1,3,6,51")
    assert message.yiaddr is None


def test_the_gateways_ack_to_a_seen_request_is_a_lease() -> None:
    matcher = LeaseMatcher(SERVERS)
    assert feed(matcher, request(), outgoing=False) is None
    sighting = feed(matcher, ack(), outgoing=True, now=0.01)
    assert sighting is not None
    assert (sighting.mac, sighting.ip, sighting.source, sighting.mud_url, sighting.hostname,
            sighting.vendor_class, sighting.prl) == (
        DEVICE, "192.0.2.120", MudSource.DHCP4, URL, "plug", "udhcp 1.36.1", "1,3,6,51")


def test_the_sniffed_lease_equals_the_hooks_copy_so_the_intake_drops_the_second() -> None:
    """dnsmasq's hook describes the same lease the same way (``Intake`` compares them)."""
    matcher = LeaseMatcher(SERVERS)
    feed(matcher, request(), outgoing=False)
    sniffed = feed(matcher, ack(), outgoing=True)
    env = {"DNSMASQ_MUD_URL": URL, "DNSMASQ_VENDOR_CLASS": "udhcp 1.36.1",
           "DNSMASQ_REQUESTED_OPTIONS": "1,3,6,51"}
    hooked = parse_hook_message(json.dumps(
        hook_message(["add", DEVICE, "192.0.2.120", "plug"], env)).encode())
    assert sniffed is not None and normalise(sniffed) == hooked  # type: ignore[arg-type]


def test_an_ack_a_device_sends_is_never_a_lease() -> None:
    matcher = LeaseMatcher(SERVERS)
    feed(matcher, request(), outgoing=False)
    # received on the gateway's interface: whoever sent it, not the gateway
    assert feed(matcher, ack(), outgoing=False) is None
    # outgoing but not from the interface's own MAC (a frame the gateway forwarded)
    assert feed(matcher, ack(src=OTHER), outgoing=True) is None
    # outgoing from the gateway's MAC, but routed: a device's ACK to another device
    assert feed(matcher, ack(src_ip="192.0.2.130"), outgoing=True) is None
    assert feed(matcher, ack(sport=6767), outgoing=True) is None  # not a server's port
    assert matcher.refused == 4
    # the request is still waiting for the gateway's real answer
    assert feed(matcher, ack(), outgoing=True) is not None


def test_options_only_from_a_request_sent_by_its_own_hardware_address() -> None:
    matcher = LeaseMatcher(SERVERS)
    # OTHER sends a REQUEST naming DEVICE's hardware address, with a MUD URL of its choice
    feed(matcher, request(src=OTHER, chaddr=DEVICE), outgoing=False)
    assert feed(matcher, ack(), outgoing=True) is None  # left to the hook
    assert (matcher.refused, matcher.unmatched) == (1, 1)


def test_an_ack_matches_only_its_own_transaction() -> None:
    matcher = LeaseMatcher(SERVERS)
    feed(matcher, request(xid=1), outgoing=False)
    assert feed(matcher, ack(xid=2), outgoing=True) is None
    assert feed(matcher, ack(chaddr=OTHER, xid=1), outgoing=True) is None
    assert feed(matcher, ack(xid=1), outgoing=True) is not None
    assert feed(matcher, ack(xid=1), outgoing=True) is None  # one ACK per REQUEST


def test_an_old_request_is_not_matched() -> None:
    matcher = LeaseMatcher(SERVERS, window=30.0)
    feed(matcher, request(), outgoing=False, now=0.0)
    assert feed(matcher, ack(), outgoing=True, now=31.0) is None


def test_requests_kept_are_bounded() -> None:
    matcher = LeaseMatcher(SERVERS, remember=8)
    for xid in range(100):
        feed(matcher, request(xid=xid), outgoing=False)
    assert feed(matcher, ack(xid=0), outgoing=True) is None  # pushed out
    assert feed(matcher, ack(xid=99), outgoing=True) is not None


def test_an_inform_answer_is_no_lease() -> None:
    matcher = LeaseMatcher(SERVERS)
    feed(matcher, request(), outgoing=False)
    assert feed(matcher, ack(address="0.0.0.0"), outgoing=True) is None


@pytest.mark.parametrize(("raw", "why"), [
    (b"", "shorter"),
    (request()[:40], "shorter"),
    (request()[:12] + b"\x86\xdd" + request()[14:], "not an IPv4"),
    (request()[:60], "truncated|does not fit"),
    (frame(b"\x01\x01\x06\x00" + bytes(232) + b"\x00\x00\x00\x00", src=DEVICE), "cookie"),
    (frame(dhcp(1, 3)[:-1] + b"\x0c\x09ab", src=DEVICE), "runs past"),
    (frame(dhcp(1, 3)[:-1], src=DEVICE), "no end"),
    (frame(dhcp(1, 3, extra=[(53, b"\x05")]), src=DEVICE), "single-byte"),
    (frame(dhcp(1, 3).replace(b"\x35\x01\x03", b"\x00\x00\x00"), src=DEVICE), "single-byte"),
    (frame(dhcp(1, 3, chaddr="01:00:5e:00:00:01"), src=DEVICE), "chaddr"),
    (frame(dhcp(1, 3), src="ff:ff:ff:ff:ff:ff"), "Ethernet source"),
    (frame(dhcp(1, 3, extra=[(250, b"x" * 255)] * 20), src=DEVICE), "options longer|limit"),
    (request() + bytes(2048), "limit"),
])
def test_malformed_frames_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(DhcpFrameError, match=why):
        parse_dhcp_frame(raw)


def test_a_fragment_is_refused() -> None:
    raw = bytearray(request())
    raw[20] |= 0x20  # more fragments
    with pytest.raises(DhcpFrameError, match="unfragmented"):
        parse_dhcp_frame(bytes(raw))


def test_every_truncation_of_a_request_is_refused() -> None:
    raw = request()
    for cut in range(len(raw)):
        with pytest.raises(DhcpFrameError):
            parse_dhcp_frame(raw[:cut])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=700))
def test_random_bytes_raise_only_a_frame_error(raw: bytes) -> None:
    with contextlib.suppress(DhcpFrameError):
        parse_dhcp_frame(raw)


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=len(request()) - 1), st.integers(0, 255),
       st.booleans())
def test_a_mutated_request_raises_only_a_frame_error(at: int, value: int,
                                                     outgoing: bool) -> None:
    raw = bytearray(request())
    raw[at] = value
    try:
        message = parse_dhcp_frame(bytes(raw))
    except DhcpFrameError:
        return
    matcher = LeaseMatcher(SERVERS)
    matcher.feed(message, outgoing=outgoing, gateway_mac=GATEWAY, now=0.0)
