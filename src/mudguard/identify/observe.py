"""Read a device's web flows for identification: SNI, HTTP User-Agent/Host, and the
organisation of the TLS 1.2 server certificate it receives in clear. Pure, bounded.

Theory of operation: for devices without a MUD file the kernel logs, per new TCP flow
to a web port, the device's first payload packet (``policy._data._identify_rules``,
prefix ``mgic``) and, for TLS ports, the server's payload packets until the device
sends its second payload (prefix ``mgis``: the server's first flight, where TLS 1.2
carries the Certificate message in clear). ``WebObserver`` reads them:

- ``client(device, segment)``: a ClientHello gives ``sni``, an HTTP request
  ``user_agent`` and ``http_host`` (the very parsers of ``mudguard identify``,
  ``identify.parse``); a ClientHello also opens the flow's server stream;
- ``server(segment)``: the server's segments are put in order by TCP sequence number
  from the first one that starts a TLS handshake record, and the stream is read with
  ``identify.parse.parse_server_certificates`` (``cert_org``, ``cert_cn``) as bytes
  arrive; the flow closes with the first certificate, or when the stream shows none
  will come in clear (TLS 1.3, a resumed session, not TLS), or at ``max_bytes``.

Everything here is data a possibly hostile device or server sent. Bounds: at most
``max_flows`` open server streams (``max_flows_per_device`` per device; the oldest is
forgotten first), each open ``flow_seconds`` at most and holding at most ``max_bytes``
in order plus ``max_pending`` segments out of order (within ``max_bytes``);
``packets_per_second`` packets read overall (a token bucket), on top of the kernel's
per-device and home-wide limits. The facts only ever become clues for the owner's
view of a device (``identify.live``): nothing here grants or refuses anything.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mudguard.identify.parse import (
    HTTP_METHODS,
    Fact,
    parse_client_hello,
    parse_http_request,
    parse_server_certificates,
    tls_handshakes,
)

MAX_FLOWS = 64
MAX_FLOWS_PER_DEVICE = 8
MAX_BYTES = 16384  # the server's first bytes kept per flow: a certificate chain
MAX_PENDING = 8  # out-of-order segments kept per flow
FLOW_SECONDS = 10.0
PACKETS_PER_SECOND = 200.0
PACKET_BURST = 400.0
CERTIFICATE, SERVER_HELLO_DONE = 11, 14


@dataclass(frozen=True, slots=True)
class Segment:
    """One logged TCP segment: addresses, ports, sequence number and payload."""

    family: int
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    payload: bytes


def tcp_segment(packet: bytes) -> Segment | None:
    """The TCP segment of an IPv4/IPv6 packet as NFLOG hands it (from the IP header);
    None for anything else, a fragment, or headers cut short."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl or struct.unpack_from("!H", packet, 6)[0] & 0x3FFF:
            return None
        family, proto, pos = 4, packet[9], ihl
        src = str(ipaddress.IPv4Address(packet[12:16]))
        dst = str(ipaddress.IPv4Address(packet[16:20]))
    elif version == 6 and len(packet) >= 40:
        family, proto, pos = 6, packet[6], 40
        src = str(ipaddress.IPv6Address(packet[8:24]))
        dst = str(ipaddress.IPv6Address(packet[24:40]))
        for _ in range(8):  # hop-by-hop, routing, destination options (bounded)
            if proto in (0, 43, 60) and len(packet) >= pos + 2:
                proto, pos = packet[pos], pos + (packet[pos + 1] + 1) * 8
            else:
                break
    else:
        return None
    if proto != 6 or len(packet) < pos + 20:
        return None
    offset = (packet[pos + 12] >> 4) * 4
    if offset < 20 or len(packet) < pos + offset:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", packet, pos)
    return Segment(family, src, dst, sport, dport, seq, bytes(packet[pos + offset:]))


def read_client_payload(payload: bytes) -> tuple[list[Fact], bool]:
    """The facts of a client's first payload (a ClientHello's ``sni``, an HTTP
    request's ``user_agent``/``http_host``) and whether it is a TLS handshake (whose
    server stream is worth reading)."""
    if payload[:2] == b"\x16\x03":
        return parse_client_hello(payload), True
    if payload.startswith(HTTP_METHODS):
        return parse_http_request(payload), False
    return [], False


def stream_over(stream: bytes) -> bool:
    """Whether a server stream can show no certificate in clear any more: a complete
    record that is not a handshake (ChangeCipherSpec, application data: TLS 1.3 or a
    resumed session), or ServerHelloDone without a Certificate before it."""
    pos = 0
    for _ in range(64):
        if pos + 5 > len(stream):
            break
        if stream[pos] != 0x16 or stream[pos + 1] != 3:
            return True
        pos += 5 + struct.unpack_from("!H", stream, pos + 3)[0]
    return any(kind == SERVER_HELLO_DONE for kind, _ in tls_handshakes(stream))


@dataclass(slots=True)
class _Flow:
    device: str
    opened: float
    base: int | None = None
    stream: bytearray = field(default_factory=bytearray)
    pending: dict[int, bytes] = field(default_factory=dict)


FlowKey = tuple[str, int, str, int]  # server address, server port, device address, port


class WebObserver:
    """The logged web packets of devices → facts about them (see the module)."""

    def __init__(self, *, max_flows: int = MAX_FLOWS,
                 max_flows_per_device: int = MAX_FLOWS_PER_DEVICE,
                 max_bytes: int = MAX_BYTES, max_pending: int = MAX_PENDING,
                 flow_seconds: float = FLOW_SECONDS,
                 packets_per_second: float = PACKETS_PER_SECOND,
                 burst: float = PACKET_BURST,
                 clock: Callable[[], float] = time.monotonic,
                 read_certificates: Callable[[bytes], list[Fact]] = parse_server_certificates
                 ) -> None:
        """Bounds as in the module; ``read_certificates`` reads a server stream."""
        self.max_flows = max_flows
        self.max_flows_per_device = max_flows_per_device
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.flow_seconds = flow_seconds
        self.rate = packets_per_second
        self.burst = burst
        self.clock = clock
        self.read_certificates = read_certificates
        self.flows: dict[FlowKey, _Flow] = {}
        self._tokens = burst
        self._last = clock()
        self.packets = 0
        self.over_budget = 0
        self.certificates = 0

    def allowed(self) -> bool:
        """Whether one more packet may be read now (the global budget)."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            self.over_budget += 1
            return False
        self._tokens -= 1.0
        self.packets += 1
        return True

    def client(self, device: str, segment: Segment) -> list[Fact]:
        """Read the first payload ``device`` sent on a flow; open its server stream if
        it is a ClientHello."""
        if not self.allowed():
            return []
        facts, tls = read_client_payload(segment.payload)
        if tls:
            self._open((segment.dst, segment.dport, segment.src, segment.sport), device)
        return facts

    def _open(self, key: FlowKey, device: str) -> None:
        now = self.clock()
        self.expire(now)
        if key in self.flows:
            return
        mine = [k for k, f in self.flows.items() if f.device == device]
        if len(mine) >= self.max_flows_per_device:
            del self.flows[mine[0]]
        while len(self.flows) >= self.max_flows:
            del self.flows[next(iter(self.flows))]
        self.flows[key] = _Flow(device, now)

    def expire(self, now: float | None = None) -> None:
        """Forget the flows open longer than ``flow_seconds``."""
        now = self.clock() if now is None else now
        while self.flows:
            key = next(iter(self.flows))
            if now - self.flows[key].opened < self.flow_seconds:
                break
            del self.flows[key]

    def server(self, segment: Segment) -> tuple[str, list[Fact]] | None:
        """Read a server's reply segment; ``(device, facts)`` when its flow's stream is
        done (facts empty when it showed no certificate), else None."""
        key = (segment.src, segment.sport, segment.dst, segment.dport)
        flow = self.flows.get(key)
        if flow is None or not segment.payload or not self.allowed():
            return None
        if flow.base is None:
            if segment.payload[:2] != b"\x16\x03":
                del self.flows[key]  # not the start of a handshake: cannot be ordered
                return flow.device, []
            flow.base = segment.seq
        self._place(flow, (segment.seq - flow.base) & 0xFFFFFFFF, segment.payload)
        stream = bytes(flow.stream)
        facts = self.read_certificates(stream)
        if facts:
            self.certificates += 1
        if facts or len(stream) >= self.max_bytes or stream_over(stream):
            del self.flows[key]
            return flow.device, facts
        return None

    def _place(self, flow: _Flow, offset: int, payload: bytes) -> None:
        room = self.max_bytes - offset
        if room <= 0:
            return  # beyond the window (or before the stream's start, wrapped)
        payload = payload[:room]
        if offset > len(flow.stream):
            pending = sum(map(len, flow.pending.values()))
            if len(flow.pending) < self.max_pending and pending + len(payload) <= self.max_bytes:
                flow.pending[offset] = payload
            return
        flow.stream += payload[len(flow.stream) - offset:]
        for _ in range(self.max_pending):
            ready = [o for o in flow.pending if o <= len(flow.stream)]
            if not ready:
                break
            for start in ready:
                data = flow.pending.pop(start)
                flow.stream += data[len(flow.stream) - start:][:self.max_bytes
                                                               - len(flow.stream)]
