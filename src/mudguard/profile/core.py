"""Learn a device's profile from traffic, and list the flows a profile does not allow.

Theory of operation (pure: packets in, data out; no I/O, no clock):

1. An ``Observer`` takes decoded packets one at a time (``RawPacket``, from the
   capture reader or a live source) and folds them into bounded tables:
   *services* (TCP/UDP: client, server, protocol, server port; the client's
   ephemeral port is collapsed), *datagrams* (ICMP by type/code and other IP
   protocols), DNS answers per device (address → the name the device asked
   for), the gateway's addresses (who answers DNS and DHCP) and each MAC's
   addresses. Who is the client is decided once per connection: a SYN (or
   SYN-ACK) says it; otherwise the ports (a well-known port, or one below the
   ephemeral range, answering an ephemeral one: captures often start
   mid-connection). A TCP connection seen without its SYN whose ports say
   nothing is never attributed from its packets (the first one seen may be the
   peer's FIN or RST): the higher port is taken as the client's and the
   direction stays undecided (the learned ACE names no ``direction-initiated``).
   UDP follows conntrack: the first datagram's sender opened the flow. Each
   service keeps its clients' real ports (bounded), so ``profile check`` decides
   every flow with its own ports. TLS ClientHellos give the server name (SNI)
   that names a peer no DNS answer in the capture named.
2. ``Observer.finish()`` freezes the tables into ``Observations``.
3. ``learn_mud(observations, device, ...)`` writes an RFC 8520 MUD file (as a
   JSON object), the way MUDgee and mudmaker do: the gateway's services become
   ``my-controller``, home addresses ``local-networks``, Internet addresses their
   DNS name when the capture shows one (``dst-dnsname``), else the address.
   IPv4 and IPv6 get separate ACLs. ``device_flows(...)`` lists the same
   observations as flows for ``mudguard profile check``, which runs them through
   the policy evaluator (the compiler's rules).

Memory is bounded by ``Limits``: when a table is full, new entries are counted
(``Observations.overflow``) instead of stored, so a multi-GB capture cannot
exhaust memory; the reader streams.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from mudguard.mud import Direction
from mudguard.mud._parse import MAX_MUD_BYTES
from mudguard.policy._evaluate import Flow, NameMap, Verdict, evaluate
from mudguard.policy._model import DeviceFacts, DevicePolicy, HomeContext, LifecycleState

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
NTP_PORT = 123
SYN, ACK = 0x02, 0x10
# Ports that are a server's when the other side's is not (decides reply vs request).
SERVER_PORTS = frozenset({20, 21, 22, 23, 25, 53, 67, 69, 80, 110, 123, 137, 138, 143, 161, 443,
                          445, 547, 554, 853, 993, 1883, 1900, 3478, 5353, 5683, 8080, 8443, 8883})
# ICMP types that answer or report on another packet: conntrack's "related" or
# "established" (echo reply, unreachable, time exceeded, ...): never a flow of their own.
ICMP_ANSWERS = {4: frozenset({0, 3, 4, 5, 11, 12, 14, 16, 18}),
                6: frozenset({1, 2, 3, 4, 129})}
ICMP_ECHO_REPLY = {(4, 8): 0, (6, 128): 129}
EPHEMERAL = 32768  # clients' source ports start here (Linux 32768-60999, IANA 49152-65535)
BROADCAST_MAC = b"\xff" * 6
DnsDecoder = Callable[[bytes], "tuple[tuple[str, bytes], ...] | None"]
_UNSPECIFIED = frozenset({bytes(4), bytes(16)})


class RawPacket(NamedTuple):
    """One decoded packet. Addresses are packed bytes (4 or 16), MACs 6 bytes.

    For TCP/UDP ``a``/``b`` are the source/destination ports, for ICMP the type
    and code, otherwise 0. ``dns`` holds ``(question name, answer address)``
    pairs when the packet is a DNS response.
    """

    ts: float
    src_mac: bytes
    dst_mac: bytes
    src: bytes
    dst: bytes
    proto: int
    a: int
    b: int
    tcp_flags: int
    length: int
    dns: tuple[tuple[str, bytes], ...] | None = None
    sni: str | None = None  # the server name of a TLS ClientHello the packet carries


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Caps on the observer's tables (entries), so memory stays bounded."""

    services: int = 500_000
    connections: int = 262_144
    dns_pairs: int = 200_000
    addresses_per_mac: int = 16
    client_ports: int = 1_000_000  # (service, client port) pairs kept for ``profile check``


def _add_port(ports: dict[int, int], port: int, length: int) -> None:
    """Count one packet of ``length`` bytes for a client port already in ``ports``.

    A port's entry packs its packets (low 32 bits) and bytes (above): one int per port.
    """
    ports[port] += 1 + (length << 32)


def _unpack_port(entry: int) -> tuple[int, int]:
    """``(packets, bytes)`` of a packed port entry (see ``_add_port``)."""
    return entry & 0xFFFFFFFF, entry >> 32


class _Stats:
    """Counters for one service or datagram kind (mutable, only inside ``Observer``)."""

    __slots__ = ("bytes", "decided", "first", "last", "opened", "packets", "port", "ports")

    def __init__(self, ts: float, port: int) -> None:
        self.packets = 0
        self.bytes = 0
        self.first = ts
        self.last = ts
        self.port = port  # a sample client port (for TCP/UDP)
        self.opened = False  # a SYN was seen
        self.decided = False  # a SYN or the ports told who opened a connection of it
        self.ports: dict[int, int] = {}  # client port -> packed (packets, bytes)


# (client mac, server mac, client ip, server ip, protocol, server port)
ServiceKey = tuple[bytes, bytes, bytes, bytes, int, int]
# (src mac, dst mac, src ip, dst ip, protocol, icmp type or -1, icmp code or -1)
DatagramKey = tuple[bytes, bytes, bytes, bytes, int, int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Counts:
    """What one service or datagram kind added up to."""

    packets: int
    bytes: int
    first: float
    last: float
    client_port: int
    opened: bool
    decided: bool = True  # who opened it is known (a SYN, or the ports), not guessed
    # client port -> (packets, bytes)
    client_ports: Mapping[int, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observations:
    """Everything an ``Observer`` saw, frozen."""

    packets: int
    services: Mapping[ServiceKey, Counts]
    datagrams: Mapping[DatagramKey, Counts]
    dns: Mapping[bytes, Mapping[bytes, str]]  # device mac -> address -> name
    gateway_ips: frozenset[bytes]
    gateway_macs: frozenset[bytes]
    mac_addresses: Mapping[bytes, frozenset[bytes]]
    mac_packets: Mapping[bytes, int]  # packets sent per unicast source MAC
    first_ts: float | None
    last_ts: float | None
    overflow: int = 0  # entries not stored because a table was full
    # client mac -> address -> server name of its TLS ClientHello
    sni: Mapping[bytes, Mapping[bytes, str]] = field(default_factory=dict)

    def device_macs(self) -> list[tuple[str, int]]:
        """Unicast source MACs other than the gateway's, most packets first."""
        found = [(mac_text(m), n) for m, n in self.mac_packets.items()
                 if m not in self.gateway_macs]
        return sorted(found, key=lambda item: (-item[1], item[0]))

    def central_device(self) -> bytes | None:
        """The one device MAC that takes part in every flow, if exactly one does (a
        capture of one device whose gateway did not show itself, or one without MACs)."""
        candidates = {mac_bytes(text) for text, _ in self.device_macs()}
        for key in (*self.services, *self.datagrams):
            candidates &= {key[0], key[1]}
            if not candidates:
                return None
        return next(iter(candidates)) if len(candidates) == 1 else None

    def names_for(self, mac: bytes) -> NameMap:
        """The DNS answers the device with ``mac`` received, as a ``NameMap``, plus the
        server names (SNI) of its TLS connections to addresses no answer named.

        A capture often starts after the device resolved its cloud (the answer is
        cached): the ClientHello still says which name it meant, the name it will
        resolve through the gateway's DNS when enforced.
        """
        answers = self.dns.get(mac, {})
        pairs = [(name, ip_text(addr)) for addr, name in answers.items()]
        pairs += [(name, ip_text(addr)) for addr, name in self.sni.get(mac, {}).items()
                  if addr not in answers]
        return NameMap.build(pairs)


class Observer:
    """Folds packets into bounded tables (see the module docstring)."""

    def __init__(self, *, device: bytes | None = None, limits: Limits | None = None) -> None:
        self.device = device
        self.limits = limits or Limits()
        self.packets = 0
        self.overflow = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._services: dict[ServiceKey, _Stats] = {}
        self._datagrams: dict[DatagramKey, _Stats] = {}
        self._conns: dict[tuple[bytes, int, bytes, int, int], int] = {}  # state bits
        self._dns: dict[bytes, dict[bytes, str]] = {}
        self._dns_count = 0
        self._sni: dict[bytes, dict[bytes, str]] = {}
        self._port_entries = 0
        self._gateway_ips: set[bytes] = set()
        self._gateway_macs: set[bytes] = set()
        self._mac_addresses: dict[bytes, set[bytes]] = {}
        self._mac_packets: dict[bytes, int] = {}

    def add_all(self, packets: Iterable[RawPacket]) -> None:
        """Add every packet of an iterable (streams: nothing is kept but the tables)."""
        for packet in packets:
            self.add(packet)

    def add_frames(self, frames: Iterable[tuple[float, bytes, int]],
                   dns: DnsDecoder | None = None) -> int:
        """Add Ethernet frames ``(timestamp, frame, original length)``; return how many
        were not IP.

        Same result as ``add(decode_ethernet(...))`` for every frame (a test holds
        them equal), but the bulk of a capture (unfragmented IPv4 TCP/UDP, no DNS or
        DHCP answer) is folded in one loop without building a ``RawPacket``: about
        twice as fast on a large capture. Everything else takes the general path.
        """
        device, limits = self.device, self.limits
        services, conns, senders = self._services, self._conns, self._mac_packets
        addresses, datagrams = self._mac_addresses, self._datagrams
        non_ip = 0
        for ts, frame, length in frames:
            if device is not None and frame[6:12] != device and frame[0:6] != device:
                continue
            if (len(frame) < 54 or frame[12] != 0x08 or frame[13] != 0x00 or frame[14] != 0x45
                    or frame[23] not in (6, 17) or frame[20] & 0x3F or frame[21]
                    or (frame[23] == 17 and frame[34] == 0 and frame[35] in (53, 67))
                    or (frame[23] == 6 and _may_be_client_hello(frame, 34))):
                packet = decode_ethernet(ts, frame, length, dns)
                if packet is None:
                    non_ip += 1
                else:
                    self.add(packet)
                continue
            # IPv4, 20-byte header, not a fragment, TCP or UDP, not from port 53/67,
            # not a TLS ClientHello.
            self.packets += 1
            if self.first_ts is None:
                self.first_ts = ts
            self.last_ts = ts
            src_mac, dst_mac = frame[6:12], frame[0:6]
            src, dst = frame[26:30], frame[30:34]
            if not src_mac[0] & 1:
                senders[src_mac] = senders.get(src_mac, 0) + 1
                own = addresses.get(src_mac)
                if own is None:
                    own = addresses[src_mac] = set()
                if (src not in own and len(own) < limits.addresses_per_mac
                        and src not in _UNSPECIFIED):
                    own.add(src)
            proto = frame[23]
            sport = (frame[34] << 8) | frame[35]
            dport = (frame[36] << 8) | frame[37]
            flags = frame[47] if proto == TCP else 0
            forward = (src, sport) <= (dst, dport)
            key = (src, sport, dst, dport, proto) if forward else (dst, dport, src, sport, proto)
            opening = proto == TCP and flags & (SYN | ACK) == SYN
            state = conns.get(key)
            if state is None or (proto == TCP and flags & SYN):
                state = _connection_state(proto, sport, dport, flags, forward)
                if key not in conns and len(conns) >= limits.connections:
                    del conns[next(iter(conns))]
                conns[key] = state
            if (state & _FIRST_IS_CLIENT) == forward:
                skey = (src_mac, dst_mac, src, dst, proto, dport)
                client_port = sport
            else:
                skey = (dst_mac, src_mac, dst, src, proto, sport)
                client_port = dport
            stats = services.get(skey)
            if stats is None:
                if len(services) + len(datagrams) >= limits.services:
                    self.overflow += 1
                    continue
                stats = services[skey] = _Stats(ts, client_port)
            stats.packets += 1
            stats.bytes += length
            stats.last = ts
            if opening:
                stats.opened = True
            if state & _DECIDED:
                stats.decided = True
            if client_port in stats.ports:
                _add_port(stats.ports, client_port, length)
            else:
                self._new_port(stats, client_port, length)
        return non_ip

    def _new_port(self, stats: _Stats, port: int, length: int) -> None:
        if self._port_entries >= self.limits.client_ports:
            self.overflow += 1
            return
        self._port_entries += 1
        stats.ports[port] = 1 + (length << 32)

    def add(self, p: RawPacket) -> None:
        """Add one packet."""
        device = self.device
        if device is not None and p.src_mac != device and p.dst_mac != device:
            return
        self.packets += 1
        if self.first_ts is None:
            self.first_ts = p.ts
        self.last_ts = p.ts
        self._note_sender(p)
        if p.proto == TCP or p.proto == UDP:
            self._add_service(p)
        else:
            self._add_datagram(p)
        if p.dns:
            self._add_dns(p)
        if p.sni:
            self._add_sni(p)

    def _note_sender(self, p: RawPacket) -> None:
        mac = p.src_mac
        if mac[0] & 1:  # group (multicast/broadcast) bit: not a device
            return
        counts = self._mac_packets
        counts[mac] = counts.get(mac, 0) + 1
        src = p.src
        addrs = self._mac_addresses.get(mac)
        if addrs is None:
            addrs = self._mac_addresses[mac] = set()
        if (src not in addrs and len(addrs) < self.limits.addresses_per_mac
                and src not in _UNSPECIFIED
                and not (len(src) == 16 and src[0] == 0xFE)):  # not ::/0.0.0.0, link-local
            addrs.add(src)

    def _add_service(self, p: RawPacket) -> None:
        src, dst, sport, dport, proto = p.src, p.dst, p.a, p.b, p.proto
        forward = (src, sport) <= (dst, dport)
        key = (src, sport, dst, dport, proto) if forward else (dst, dport, src, sport, proto)
        opening = proto == TCP and p.tcp_flags & (SYN | ACK) == SYN
        state = self._conns.get(key)
        if state is None or (proto == TCP and p.tcp_flags & SYN):
            state = _connection_state(proto, sport, dport, p.tcp_flags, forward)
            if key not in self._conns and len(self._conns) >= self.limits.connections:
                del self._conns[next(iter(self._conns))]  # forget the oldest connection
            self._conns[key] = state
        if (state & _FIRST_IS_CLIENT) == forward:
            skey = (p.src_mac, p.dst_mac, src, dst, proto, dport)
            client_port = sport
        else:
            skey = (p.dst_mac, p.src_mac, dst, src, proto, sport)
            client_port = dport
        stats = self._stats(self._services, skey, p.ts, client_port, p.length)
        if stats is not None:
            stats.opened = stats.opened or opening
            stats.decided = stats.decided or bool(state & _DECIDED)
            if client_port in stats.ports:
                _add_port(stats.ports, client_port, p.length)
            else:
                self._new_port(stats, client_port, p.length)
            if p.proto == UDP and p.a in (67, 547):
                self._gateway(p)

    def _add_datagram(self, p: RawPacket) -> None:
        if p.proto in (ICMP, ICMPV6):
            key = (p.src_mac, p.dst_mac, p.src, p.dst, p.proto, p.a, p.b)
        else:
            key = (p.src_mac, p.dst_mac, p.src, p.dst, p.proto, -1, -1)
        self._stats(self._datagrams, key, p.ts, 0, p.length)

    def _stats(self, table: dict[Any, _Stats], key: Any, ts: float, port: int,
               length: int) -> _Stats | None:
        stats = table.get(key)
        if stats is None:
            if len(self._services) + len(self._datagrams) >= self.limits.services:
                self.overflow += 1
                return None
            stats = table[key] = _Stats(ts, port)
        stats.packets += 1
        stats.bytes += length
        stats.last = ts
        return stats

    def _gateway(self, p: RawPacket) -> None:
        if any(p.src):
            self._gateway_ips.add(p.src)
            self._gateway_macs.add(p.src_mac)

    def _add_dns(self, p: RawPacket) -> None:
        assert p.dns is not None
        if p.a == 53:
            self._gateway(p)
        answers = self._dns.setdefault(p.dst_mac, {})
        for name, address in p.dns:
            if self._dns_count >= self.limits.dns_pairs:
                self.overflow += 1
                return
            if address not in answers:
                self._dns_count += 1
            answers[address] = name

    def _add_sni(self, p: RawPacket) -> None:
        assert p.sni is not None
        names = self._sni.setdefault(p.src_mac, {})
        if p.dst not in names:
            if self._dns_count >= self.limits.dns_pairs:
                self.overflow += 1
                return
            self._dns_count += 1
        names[p.dst] = p.sni

    def finish(self) -> Observations:
        """Freeze what was seen."""
        def counts(s: _Stats) -> Counts:
            ports = {port: _unpack_port(entry) for port, entry in s.ports.items()}
            return Counts(packets=s.packets, bytes=s.bytes, first=s.first, last=s.last,
                          client_port=s.port, opened=s.opened, decided=s.decided,
                          client_ports=ports)
        return Observations(
            packets=self.packets,
            services={k: counts(v) for k, v in self._services.items()
                      if not _settled_otherwise(k, v, self._services)},
            datagrams={k: counts(v) for k, v in self._datagrams.items()},
            dns={mac: dict(table) for mac, table in self._dns.items()},
            gateway_ips=frozenset(self._gateway_ips),
            gateway_macs=frozenset(self._gateway_macs),
            mac_addresses={m: frozenset(a) for m, a in self._mac_addresses.items()},
            mac_packets=dict(self._mac_packets),
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            overflow=self.overflow,
            sni={mac: dict(table) for mac, table in self._sni.items()},
        )


_FIRST_IS_CLIENT, _DECIDED = 1, 2  # bits of a connection's state


def _settled_otherwise(key: ServiceKey, stats: _Stats, services: Mapping[ServiceKey, _Stats]
                       ) -> bool:
    """True for a guessed TCP service whose every connection a SYN later showed the
    other way round (the same port pairs, counted under the mirrored service)."""
    if stats.decided or key[4] != TCP or not stats.ports:
        return False
    client_mac, server_mac, client_ip, server_ip, proto, port = key
    for client_port in stats.ports:
        mirrored = services.get((server_mac, client_mac, server_ip, client_ip, proto,
                                 client_port))
        if mirrored is None or not mirrored.decided or port not in mirrored.ports:
            return False
    return True


def _connection_state(proto: int, sport: int, dport: int, flags: int, forward: bool) -> int:
    """A connection's state from one of its packets: whether the endpoint that sorts
    first (``forward``: the sender) is the client, and whether that is known."""
    sender_is_client = _sender_is_client(proto, sport, dport, flags)
    decided = sender_is_client is not None
    if sender_is_client is None:  # a guess that never looks at who sent what
        sender_is_client = sport > dport if sport != dport else forward
    return (sender_is_client == forward) | (_DECIDED if decided else 0)


def _sender_is_client(proto: int, sport: int, dport: int, flags: int) -> bool | None:
    """Who opened a connection this packet belongs to: True if its sender did,
    False if its receiver did, None if the packet cannot tell (TCP without SYN
    whose ports say nothing: a FIN or RST is as likely the peer's as the opener's)."""
    if proto == TCP and flags & SYN:
        return not flags & ACK  # SYN: the sender opens; SYN-ACK: the receiver did
    if sport in SERVER_PORTS and dport not in SERVER_PORTS:
        return False
    if dport in SERVER_PORTS and sport not in SERVER_PORTS:
        return True
    if proto == TCP and (sport < 1024) != (dport < 1024):
        return dport < 1024  # a well-known port is the server's
    if (sport < EPHEMERAL) != (dport < EPHEMERAL):
        return dport < EPHEMERAL  # the port outside the ephemeral range is the server's
    if proto == TCP:
        return None
    return True  # conntrack's rule: the first datagram's sender opened the flow


# -- decoding Ethernet frames (pure: bytes in) ------------------------------------------------

_EXT_HEADERS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_FRAGMENT = 44


def decode_ethernet(ts: float, frame: bytes, length: int, dns: DnsDecoder | None = None
                    ) -> RawPacket | None:
    """Decode one Ethernet frame's headers; None if it is not an IP packet we can read.

    ``dns`` decodes the payload of UDP packets from port 53 (see ``RawPacket.dns``).
    """
    if len(frame) < 34:
        return None
    ethertype = (frame[12] << 8) | frame[13]
    l3 = 14
    if ethertype == 0x8100 or ethertype == 0x88A8:  # one VLAN tag (or a QinQ outer tag)
        ethertype = (frame[16] << 8) | frame[17]
        l3 = 18
    if ethertype == 0x0800:
        ihl = (frame[l3] & 0x0F) * 4
        if ihl < 20 or len(frame) < l3 + ihl:
            return None
        proto = frame[l3 + 9]
        src, dst = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
        if frame[l3 + 6] & 0x1F or frame[l3 + 7]:  # a later fragment: no L4 header
            return RawPacket(ts, frame[6:12], frame[0:6], src, dst, proto, 0, 0, 0, length)
        l4 = l3 + ihl
    elif ethertype == 0x86DD:
        if len(frame) < l3 + 40:
            return None
        src, dst = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]
        proto, l4 = _ipv6_upper(frame, frame[l3 + 6], l3 + 40)
    else:
        return None
    return _transport(ts, frame, length, src, dst, proto, l4, dns)


def _ipv6_upper(frame: bytes, proto: int, pos: int) -> tuple[int, int]:
    for _ in range(8):  # bounded walk over extension headers
        if proto in _EXT_HEADERS and len(frame) >= pos + 2:
            proto, pos = frame[pos], pos + (frame[pos + 1] + 1) * 8
        elif proto == _FRAGMENT and len(frame) >= pos + 8:
            if (frame[pos + 2] << 8 | frame[pos + 3]) & 0xFFF8:
                return frame[pos], len(frame)  # a later fragment: no L4 header
            proto, pos = frame[pos], pos + 8
        else:
            break
    return proto, pos


def _transport(ts: float, frame: bytes, length: int, src: bytes, dst: bytes, proto: int,
               l4: int, decoder: DnsDecoder | None) -> RawPacket:
    a = b = flags = 0
    dns = None
    sni = None
    if proto == 6 or proto == 17:
        if len(frame) >= l4 + 4:
            a = (frame[l4] << 8) | frame[l4 + 1]
            b = (frame[l4 + 2] << 8) | frame[l4 + 3]
        if proto == 6 and len(frame) >= l4 + 14:
            flags = frame[l4 + 13]
            if _may_be_client_hello(frame, l4):
                sni = tls_server_name(frame[l4 + ((frame[l4 + 12] >> 4) << 2):])
        elif proto == 17 and a == 53 and decoder is not None:
            dns = decoder(frame[l4 + 8:])
    elif (proto == 1 or proto == 58) and len(frame) >= l4 + 2:
        a, b = frame[l4], frame[l4 + 1]
    return RawPacket(ts, frame[6:12], frame[0:6], src, dst, proto, a, b, flags, length, dns,
                     sni)


def _may_be_client_hello(frame: bytes, l4: int) -> bool:
    """True if the TCP segment at ``l4`` starts with a TLS handshake record holding a
    ClientHello (content type 22, handshake type 1)."""
    if len(frame) < l4 + 13:
        return False
    data = l4 + ((frame[l4 + 12] >> 4) << 2)
    return len(frame) > data + 5 and frame[data] == 0x16 and frame[data + 5] == 1


_HOST_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-.")


def tls_server_name(record: bytes) -> str | None:
    """The host name of a TLS ClientHello's ``server_name`` extension (RFC 6066 §3),
    lower-cased; None if ``record`` is not a whole enough ClientHello or names none.

    Only the first TCP segment is read: a ClientHello cut before its SNI names nothing.
    """
    try:
        if record[0] != 0x16 or record[5] != 1:
            return None
        pos = 9 + 2 + 32  # record header, handshake header, version, random
        pos += 1 + record[pos]  # session id
        pos += 2 + int.from_bytes(record[pos:pos + 2], "big")  # cipher suites
        pos += 1 + record[pos]  # compression methods
        end = min(len(record), pos + 2 + int.from_bytes(record[pos:pos + 2], "big"))
        pos += 2
        for _ in range(64):  # extensions: bounded walk
            if pos + 4 > end:
                return None
            kind = int.from_bytes(record[pos:pos + 2], "big")
            size = int.from_bytes(record[pos + 2:pos + 4], "big")
            if kind == 0:
                return _host_name(record[pos + 4:pos + 4 + size])
            pos += 4 + size
    except IndexError:
        return None
    return None


def _host_name(extension: bytes) -> str | None:
    """The first ``host_name`` entry of a server_name extension body, checked."""
    if len(extension) < 5 or extension[2] != 0:
        return None
    size = int.from_bytes(extension[3:5], "big")
    if len(extension) < 5 + size:
        return None  # cut short: never a guessed name
    raw = extension[5:5 + size].lower().rstrip(b".")
    if not 0 < len(raw) <= 253:
        return None
    if not set(raw) <= _HOST_CHARS or b".." in raw or raw.startswith((b".", b"-")):
        return None
    name = raw.decode("ascii")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name if "." in name else None
    return None  # an address literal is not a name (RFC 6066 forbids it)



# -- helpers on addresses ----------------------------------------------------------------


def mac_text(mac: bytes) -> str:
    """``aa:bb:cc:dd:ee:ff`` for 6 bytes."""
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    """6 bytes for ``aa:bb:cc:dd:ee:ff`` (also ``-`` separated); ``ValueError`` otherwise."""
    parts = text.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {text!r}") from None


def ip_text(packed: bytes) -> str:
    """The usual text form of a 4- or 16-byte address."""
    return str(ipaddress.ip_address(packed))


def _ip(packed: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(packed)


# -- the home, as the capture shows it ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureHome:
    """The home around one device, inferred from a capture (or given by the owner)."""

    device: bytes
    device_ips: tuple[str, ...]
    lan_prefixes: tuple[str, ...]
    gateway_ips: tuple[str, ...]


def infer_home(obs: Observations, device: bytes, *, lan: Iterable[str] = (),
               gateway: Iterable[str] = ()) -> CaptureHome:
    """The device's addresses, the LAN prefixes and the gateway, from what was seen.

    Without ``lan``, the LAN is the /24 (IPv4) and /64 (IPv6) around the device's
    own addresses, plus the link-local prefixes. Without ``gateway``, the
    gateway is whoever answered DNS or DHCP.
    """
    own = sorted(obs.mac_addresses.get(device, frozenset()))
    device_ips = tuple(ip_text(a) for a in own)
    prefixes = [str(ipaddress.ip_network(p, strict=False)) for p in lan]
    if not prefixes:
        for address in own:
            length = 24 if len(address) == 4 else 64
            prefixes.append(str(ipaddress.ip_network(f"{ip_text(address)}/{length}",
                                                     strict=False)))
        prefixes += ["169.254.0.0/16", "fe80::/10"]
    gateways = [str(ipaddress.ip_address(g)) for g in gateway]
    if not gateways:
        gateways = sorted((ip_text(g) for g in obs.gateway_ips if g not in own), key=_sort_ip)
    return CaptureHome(device=device, device_ips=device_ips,
                       lan_prefixes=tuple(dict.fromkeys(prefixes)),
                       gateway_ips=tuple(gateways))


def _sort_ip(text: str) -> tuple[int, int]:
    address = ipaddress.ip_address(text)
    return address.version, int(address)


# -- flows of one device ----------------------------------------------------------------

# Link-layer addresses a capture without them gets (``profile.capture``): never real.
UNKNOWN_MAC = bytes(6)
SYNTHETIC_OUI = b"\x02\x6d\x67"  # locally administered "mg": one per IP address


def is_real_mac(mac: bytes) -> bool:
    """False for the stand-ins of captures without link-layer addresses."""
    return mac != UNKNOWN_MAC and mac[:3] != SYNTHETIC_OUI


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedFlow:
    """One flow of the device, as its opening packet would look, with its counts."""

    device: str
    direction: Direction  # of the opening packet, relative to the device
    family: int
    src: str
    dst: str
    protocol: int
    src_port: int | None
    dst_port: int | None
    icmp_type: int | None
    icmp_code: int | None
    packets: int
    bytes: int
    first_seen: float
    last_seen: float
    remote_name: str | None = None
    # The Ethernet destination the gateway received the opening packet with (the
    # device's frames only: a frame to the device is not what the gateway received).
    eth_dst: str | None = None
    decided: bool = True  # who opened it is known (SYN, ports), not guessed

    @property
    def remote(self) -> str:
        """The far side's address."""
        return self.dst if self.direction is Direction.FROM_DEVICE else self.src

    def to_flow(self) -> Flow:
        """The ``Flow`` the policy evaluator decides."""
        return Flow(direction=self.direction, family=self.family, src=self.src, dst=self.dst,
                    protocol=self.protocol, src_port=self.src_port, dst_port=self.dst_port,
                    icmp_type=self.icmp_type, icmp_code=self.icmp_code, opens=True,
                    eth_dst=self.eth_dst)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (``profile check --json``)."""
        return {
            "device": self.device,
            "direction": self.direction.value,
            "src": self.src,
            "dst": self.dst,
            "dst_name": self.remote_name if self.direction is Direction.FROM_DEVICE else None,
            "remote_name": self.remote_name,
            "protocol": self.protocol,
            "src_port": self.src_port,
            "dst_port": self.dst_port,
            "icmp_type": self.icmp_type,
            "icmp_code": self.icmp_code,
            "packets": self.packets,
            "bytes": self.bytes,
            "first_seen": datetime.fromtimestamp(self.first_seen, UTC).isoformat(),
            "opener_known": self.decided,
        }


def device_flows(obs: Observations, device: bytes, *, every_port: bool = False
                 ) -> list[ObservedFlow]:
    """Every flow the device opened or was sent, in first-seen order.

    One flow per service (client port: the first one seen), or with ``every_port``
    one per client port the service was used from, with that port's counts (what
    ``profile check`` decides: a rule may pin client ports). ICMP answers (echo
    replies, errors) are left out: the kernel accepts them as part of the flow they
    answer (conntrack ``established``/``related``).
    """
    names = obs.names_for(device)
    mac = mac_text(device)
    out: list[ObservedFlow] = []
    for (cmac, smac, cip, sip, proto, port), c in obs.services.items():
        if device not in (cmac, smac) or len(cip) != len(sip):
            continue
        direction = Direction.FROM_DEVICE if cmac == device else Direction.TO_DEVICE
        remote = ip_text(sip if cmac == device else cip)
        eth_dst = (mac_text(smac) if direction is Direction.FROM_DEVICE and is_real_mac(smac)
                   else None)
        name = _first(names.names_of(remote))
        uses: Iterable[tuple[int, tuple[int, int]]] = (
            sorted(c.client_ports.items()) if every_port and c.client_ports
            else ((c.client_port, (c.packets, c.bytes)),))
        for client_port, (packets, size) in uses:
            out.append(ObservedFlow(
                device=mac, direction=direction, family=4 if len(cip) == 4 else 6,
                src=ip_text(cip), dst=ip_text(sip), protocol=proto, src_port=client_port,
                dst_port=port, icmp_type=None, icmp_code=None, packets=packets, bytes=size,
                first_seen=c.first, last_seen=c.last, remote_name=name, eth_dst=eth_dst,
                decided=c.decided))
    for (smac, dmac, src, dst, proto, itype, icode), c in obs.datagrams.items():
        if device not in (smac, dmac) or len(src) != len(dst):
            continue
        family = 4 if len(src) == 4 else 6
        if proto in (ICMP, ICMPV6) and itype in ICMP_ANSWERS[family]:
            continue
        direction = Direction.FROM_DEVICE if smac == device else Direction.TO_DEVICE
        remote = ip_text(dst if smac == device else src)
        icmp = proto in (ICMP, ICMPV6)
        eth_dst = (mac_text(dmac) if direction is Direction.FROM_DEVICE and is_real_mac(dmac)
                   else None)
        out.append(ObservedFlow(
            device=mac, direction=direction, family=family, src=ip_text(src), dst=ip_text(dst),
            protocol=proto, src_port=None, dst_port=None,
            icmp_type=itype if icmp else None, icmp_code=icode if icmp else None,
            packets=c.packets, bytes=c.bytes, first_seen=c.first, last_seen=c.last,
            remote_name=_first(names.names_of(remote)), eth_dst=eth_dst))
    out.sort(key=lambda f: (f.first_seen, f.direction.value, f.src, f.dst, f.src_port or 0))
    return out


def _first(names: tuple[str, ...]) -> str | None:
    return names[0] if names else None


# -- learning a MUD file ------------------------------------------------------------------

SYSTEMINFO_CHARS = 60  # RFC 8520: systeminfo "SHOULD NOT exceed 60 characters"
MAX_LEARNED_ACES = 1500  # well inside one file's limits (4,096 ACEs, 1 MiB)
PORT_RANGES = 8  # ranges one learned rule keeps when ports must be merged


@dataclass(frozen=True, slots=True, kw_only=True)
class LearnOptions:
    """What the learned MUD file says about itself, and how big it may grow."""

    mud_url: str
    systeminfo: str = "Profile learned from observed traffic"
    mfg_name: str | None = None
    model_name: str | None = None
    cache_validity_hours: int = 48
    max_aces: int = MAX_LEARNED_ACES
    ntp_pool_siblings: bool = True
    """A device that used ``N.<vendor>.pool.ntp.org`` is allowed the pool's four names
    (0-3, the NTP Pool's convention for one vendor zone): the pool hands out another
    of them later (``bench/bench_false_alarms.py``: the most frequent false alarm)."""


class NoTrafficError(ValueError):
    """The capture holds no IP flow of the device: nothing to learn from."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Learned:
    """A learned MUD file, and what had to be widened to make it fit one file."""

    document: dict[str, Any]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Spec:
    """One learned ACE, before it is written as JSON (so it can be compacted)."""

    family: int
    direction: Direction
    peer_kind: str  # my-controller, local-networks, dnsname, network, group, any
    peer_value: str | None
    protocol: int
    port_side: str | None = None  # "destination-port" or "source-port"
    low: int = 0
    high: int = 0
    initiated: Direction | None = None
    icmp_type: int | None = None


def learn_mud(obs: Observations, home: CaptureHome, options: LearnOptions) -> dict[str, Any]:
    """Write an RFC 8520 MUD file (a JSON object) allowing exactly what was observed
    (``learn`` also returns the warnings of a file that had to be compacted).

    Raises:
        NoTrafficError: the device has no IP flow in the observations.
    """
    return learn(obs, home, options).document


def learn(obs: Observations, home: CaptureHome, options: LearnOptions) -> Learned:
    """Learn the device's MUD file; always one valid file.

    A device that spoke to more peers and ports than one file may hold (over
    ``options.max_aces`` rules) gets a compacted file, widened step by step until
    it fits: ports merged into ranges, then Internet peers replaced by any address,
    then one port range per rule; each step is named in ``Learned.warnings``.

    Raises:
        NoTrafficError: the device has no IP flow in the observations.
    """
    flows = device_flows(obs, home.device)
    if not flows:
        raise NoTrafficError(f"no IP traffic of {mac_text(home.device)} in the capture")
    return learn_from_flows(flows, home, options, obs.last_ts or 0.0)


def learn_from_flows(flows: Sequence[ObservedFlow], home: CaptureHome,
                     options: LearnOptions, last_update: float) -> Learned:
    """``learn`` from flows already gathered (a capture's, or the gateway's conntrack
    records of a learning device); ``last_update`` is a Unix time.

    Raises:
        NoTrafficError: ``flows`` is empty.
    """
    if not flows:
        raise NoTrafficError(f"no IP traffic of {mac_text(home.device)} to learn from")
    specs = list(dict.fromkeys(spec for flow in flows for spec in _specs_for(flow, home)))
    if options.ntp_pool_siblings:
        specs = with_pool_siblings(specs)
    budget = max(1, options.max_aces)
    for _ in range(16):  # halve the budget until the JSON fits the file size limit
        compacted, warnings = compact(specs, budget)
        document = _document(compacted, last_update, home, options)
        if len(json.dumps(document, indent=2)) < MAX_MUD_BYTES - 1024 or budget == 1:
            return Learned(document=document, warnings=tuple(warnings))
        budget //= 2
    return Learned(document=document, warnings=tuple(warnings))


def learn_mud_from_flows(flows: Sequence[ObservedFlow], home: CaptureHome,
                         options: LearnOptions, last_update: float) -> dict[str, Any]:
    """The MUD document ``learn_from_flows`` writes (its warnings dropped).

    Raises:
        NoTrafficError: ``flows`` is empty.
    """
    return learn_from_flows(flows, home, options, last_update).document


def _document(specs: list[_Spec], last_update: float, home: CaptureHome,
              options: LearnOptions) -> dict[str, Any]:
    groups: dict[tuple[int, Direction], list[_Spec]] = {}
    for spec in specs:
        groups.setdefault((spec.family, spec.direction), []).append(spec)
    tag = mac_text(home.device).replace(":", "")
    acls: list[dict[str, Any]] = []
    policies: dict[Direction, list[dict[str, str]]] = {Direction.FROM_DEVICE: [],
                                                      Direction.TO_DEVICE: []}
    for (family, direction), entries in sorted(groups.items(), key=lambda i: (i[0][0], i[0][1])):
        short = "fr" if direction is Direction.FROM_DEVICE else "to"
        name = f"mud-{tag}-v{family}{short}"
        acls.append({"name": name, "type": f"ipv{family}-acl-type", "aces": {"ace": [
            {"name": f"{short}{family}-{i}", "matches": _matches(spec),
             "actions": {"forwarding": "accept"}}
            for i, spec in enumerate(entries)]}})
        policies[direction].append({"name": name})
    mud: dict[str, Any] = {
        "mud-version": 1,
        "mud-url": options.mud_url,
        "last-update": datetime.fromtimestamp(last_update, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "cache-validity": options.cache_validity_hours,
        "is-supported": True,
        "systeminfo": short_systeminfo(options.systeminfo),
        "from-device-policy": {"access-lists": {"access-list": policies[Direction.FROM_DEVICE]}},
        "to-device-policy": {"access-lists": {"access-list": policies[Direction.TO_DEVICE]}},
    }
    if options.mfg_name:
        mud["mfg-name"] = options.mfg_name
    if options.model_name:
        mud["model-name"] = options.model_name
    return {"ietf-mud:mud": mud, "ietf-access-control-list:acls": {"acl": acls}}


def short_systeminfo(text: str) -> str:
    """``text`` on one line, cut to RFC 8520's 60 characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split()) or "Learned profile"
    return flat if len(flat) <= SYSTEMINFO_CHARS else flat[:SYSTEMINFO_CHARS - 1] + "…"


# -- compacting a learned file that would not fit -------------------------------------------


def compact(specs: list[_Spec], budget: int) -> tuple[list[_Spec], list[str]]:
    """At most ``budget`` ACEs allowing at least what ``specs`` allow, and what was widened.

    Steps, each only while still over the budget: ports of otherwise equal rules
    merged into at most ``PORT_RANGES`` ranges (closing the smallest gaps first);
    Internet peers (DNS names, unicast addresses outside the home) replaced by any
    address; one port range per rule; every peer replaced by any address.
    """
    warnings: list[str] = []
    if len(specs) <= budget:
        return specs, warnings
    count = len(specs)
    specs = _port_ranges(specs, PORT_RANGES)
    warnings.append(f"{count} rules learned, more than one profile should hold ({budget}): "
                    f"ports merged into ranges")
    if len(specs) > budget:
        specs, peers = _any_peer(specs, internet_only=True)
        warnings.append(f"{peers} Internet peers replaced by ANY address (rules keep their "
                        "protocol and ports): review before applying")
    if len(specs) > budget:
        specs = _port_ranges(specs, 1)
        warnings.append("ports merged into one range per rule")
    if len(specs) > budget:
        specs, peers = _any_peer(specs, internet_only=False)
        specs = _port_ranges(specs, 1)
        warnings.append(f"{peers} home peers replaced by ANY address as well")
    return specs, warnings


def _port_ranges(specs: list[_Spec], limit: int) -> list[_Spec]:
    """Rules that differ only in their port merged into at most ``limit`` ranges each."""
    groups: dict[_Spec, list[tuple[int, int]]] = {}
    for spec in specs:
        key = replace(spec, low=0, high=0)
        groups.setdefault(key, []).append((spec.low, spec.high))
    out: list[_Spec] = []
    for key, ports in groups.items():
        if key.port_side is None or len(ports) <= limit:
            out += [replace(key, low=low, high=high) for low, high in ports]
        else:
            out += [replace(key, low=low, high=high) for low, high in _merge(ports, limit)]
    return list(dict.fromkeys(out))


def _merge(ranges: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """At most ``limit`` ranges covering ``ranges``, closing the smallest gaps."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    if len(merged) <= limit:
        return merged
    gaps = sorted(range(len(merged) - 1), key=lambda i: (merged[i + 1][0] - merged[i][1], i))
    close = set(gaps[:len(merged) - limit])
    out = [merged[0]]
    for i in range(1, len(merged)):
        if i - 1 in close:
            out[-1] = (out[-1][0], merged[i][1])
        else:
            out.append(merged[i])
    return out


def _any_peer(specs: list[_Spec], *, internet_only: bool) -> tuple[list[_Spec], int]:
    """Peers replaced by any address (only Internet ones with ``internet_only``)."""
    wild = ("dnsname", "network") if internet_only else ("dnsname", "network", "group",
                                                          "local-networks", "my-controller")
    replaced = {(s.peer_kind, s.peer_value) for s in specs if s.peer_kind in wild}
    out = [replace(s, peer_kind="any", peer_value=None) if s.peer_kind in wild else s
           for s in specs]
    return list(dict.fromkeys(out)), len(replaced)


# -- one flow's ACEs --------------------------------------------------------------------------


Peer = tuple[str, str | None]  # ("my-controller"|"local-networks"|"dnsname"|"network", value)


def classify_peer(address: str, home: CaptureHome, name: str | None) -> Peer:
    """How a learned ACE names a remote address (RFC 8520 §8 abstractions first)."""
    ip = ipaddress.ip_address(address)
    if address in home.gateway_ips:
        return ("my-controller", None)
    if ip.is_multicast or address == "255.255.255.255" or _is_subnet_broadcast(ip, home):
        return ("network", f"{ip}/{ip.max_prefixlen}")
    if any(ip.version == n.version and ip in n
           for n in (ipaddress.ip_network(p) for p in home.lan_prefixes)):
        return ("local-networks", None)
    if name:
        return ("dnsname", name)
    return ("network", f"{ip}/{ip.max_prefixlen}")


def _is_subnet_broadcast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                         home: CaptureHome) -> bool:
    for prefix in home.lan_prefixes:
        net = ipaddress.ip_network(prefix)
        if net.version == 4 == ip.version and net.prefixlen < 31 and ip == net.broadcast_address:
            return True
    return False


def _specs_for(flow: ObservedFlow, home: CaptureHome) -> list[_Spec]:
    """The ACE(s) that allow one flow: its opening direction and, for replies, the other."""
    out_dir, in_dir = Direction.FROM_DEVICE, Direction.TO_DEVICE
    opener = flow.direction
    answer = in_dir if opener is out_dir else out_dir
    one_way = _is_group(flow.remote, home)  # multicast/broadcast: nobody answers from there
    kind, value = classify_peer(flow.remote, home, flow.remote_name)
    if one_way:
        kind = "group"
    base = _Spec(family=flow.family, direction=opener, peer_kind=kind, peer_value=value,
                 protocol=flow.protocol)
    if flow.protocol in (TCP, UDP):
        server_port = flow.dst_port
        assert server_port is not None
        # TCP: the side that opened, when the capture tells it (else no such test).
        initiated = opener if flow.protocol == TCP and flow.decided else None
        opening = replace(base, port_side="destination-port", low=server_port,
                          high=server_port, initiated=initiated)
        if one_way:
            return [opening]
        return [opening, replace(opening, direction=answer, port_side="source-port")]
    if flow.protocol in (ICMP, ICMPV6) and flow.icmp_type is not None:
        result = [replace(base, icmp_type=flow.icmp_type)]
        reply = ICMP_ECHO_REPLY.get((flow.family, flow.icmp_type))
        if reply is not None and not one_way:
            result.append(replace(base, direction=answer, icmp_type=reply))
        return result
    return [base]


NTP_POOL_NAME = re.compile(r"^[0-3]\.((?:[a-z0-9-]+\.)*pool\.ntp\.org)\.?$", re.IGNORECASE)


def with_pool_siblings(specs: list[_Spec]) -> list[_Spec]:
    """``specs`` plus, for each NTP rule naming ``N.zone.pool.ntp.org``, the same rule for
    the zone's other numbered names (0 to 3): nothing else is widened."""
    out = list(specs)
    for spec in specs:
        match = NTP_POOL_NAME.match(spec.peer_value or "")
        if spec.peer_kind != "dnsname" or match is None or spec.protocol != UDP or \
                NTP_PORT not in (spec.low, spec.high):
            continue
        out += [replace(spec, peer_value=f"{n}.{match.group(1).lower()}") for n in range(4)]
    return list(dict.fromkeys(out))


def _is_group(address: str, home: CaptureHome) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_multicast or address == "255.255.255.255" or _is_subnet_broadcast(ip, home)


def _matches(spec: _Spec) -> dict[str, Any]:
    """The ACE ``matches`` object of one learned rule."""
    ip: dict[str, Any] = {"protocol": spec.protocol}
    matches: dict[str, Any] = {}
    outgoing = spec.direction is Direction.FROM_DEVICE
    family = spec.family
    if spec.peer_kind == "dnsname":
        ip["ietf-acldns:dst-dnsname" if outgoing else "ietf-acldns:src-dnsname"] = \
            spec.peer_value
    elif spec.peer_kind in ("network", "group"):
        ip[f"{'destination' if outgoing else 'source'}-ipv{family}-network"] = spec.peer_value
    elif spec.peer_kind != "any":
        matches["ietf-mud:mud"] = {spec.peer_kind: [None]}
    matches[f"ipv{family}"] = ip
    if spec.port_side is not None:
        port: dict[str, Any] = (
            {"operator": "eq", "port": spec.low} if spec.low == spec.high
            else {"lower-port": spec.low, "upper-port": spec.high})
        transport: dict[str, Any] = {spec.port_side: port}
        if spec.protocol == TCP and spec.initiated is not None:
            transport["ietf-mud:direction-initiated"] = spec.initiated.value
        matches["tcp" if spec.protocol == TCP else "udp"] = transport
    if spec.icmp_type is not None:
        matches["icmp"] = {"type": spec.icmp_type}
    return matches


@dataclass(frozen=True, slots=True, kw_only=True)
class Deviation:
    """A flow the profile does not allow, with the verdict's origin."""

    flow: ObservedFlow
    action: str
    origin: str

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {**self.flow.as_dict(), "action": self.action, "rule": self.origin}


def home_context(home: CaptureHome, mud_url: str | None) -> HomeContext:
    """The ``HomeContext`` a capture implies: its LAN, and its gateway as the controller.

    A capture has no owner configuration, so the gateway's addresses stand for
    ``my-controller`` (and for the gateway's own services).
    """
    gateways = home.gateway_ips
    return HomeContext(lan_prefixes=home.lan_prefixes, gateway_addresses=gateways,
                       my_controllers={mud_url: gateways} if mud_url else {},
                       devices=(device_facts(home, mud_url),))


def device_facts(home: CaptureHome, mud_url: str | None) -> DeviceFacts:
    """The device as the policy layer knows it."""
    v4 = tuple(a for a in home.device_ips if ":" not in a)
    v6 = tuple(a for a in home.device_ips if ":" in a)
    return DeviceFacts(mac=mac_text(home.device), ipv4=v4, ipv6=v6, mud_url=mud_url,
                       state=LifecycleState.PROFILED)


def check_flows(policy: DevicePolicy, flows: Iterable[ObservedFlow], context: HomeContext,
                names: NameMap) -> list[Deviation]:
    """Every flow the policy does not accept, decided by ``evaluate()`` (the compiler's rules).

    Each flow is decided with its own ports; flows whose ports no port test of the
    policy tells apart (same side of every bound) share one evaluation.
    """
    bounds = _port_bounds(policy, context)
    verdicts: dict[tuple[Flow, int, int], Verdict] = {}
    out: list[Deviation] = []
    for flow in flows:
        probe = flow.to_flow()
        key = (replace(probe, src_port=None, dst_port=None),
               _port_class(bounds, probe.src_port), _port_class(bounds, probe.dst_port))
        verdict = verdicts.get(key)
        if verdict is None:
            verdict = verdicts[key] = evaluate(policy, probe, context, names)
        if not verdict.allowed:
            out.append(Deviation(flow=flow, action=verdict.action.value, origin=verdict.origin))
    return out


def _port_bounds(policy: DevicePolicy, context: HomeContext) -> list[int]:
    """Every port at which some port test of the policy may change its answer."""
    bounds: set[int] = set()
    for rule in policy.rules:
        for match in (rule.src_port, rule.dst_port):
            if match is None:
                continue
            for value in (match.port, match.lower, match.upper):
                if value is not None:
                    bounds.update((value, value + 1))
    for port in context.portal_ports:
        bounds.update((port, port + 1))
    return sorted(bounds)


def _port_class(bounds: list[int], port: int | None) -> int:
    return -1 if port is None else bisect.bisect_right(bounds, port)
