"""Learn a device's profile from traffic, and list the flows a profile does not allow.

Theory of operation (pure: packets in, data out; no I/O, no clock):

1. An ``Observer`` takes decoded packets one at a time (``RawPacket``, from the
   capture reader or a live source) and folds them into bounded tables:
   *services* (TCP/UDP: client, server, protocol, server port; the client's
   ephemeral port is collapsed), *datagrams* (ICMP by type/code and other IP
   protocols), DNS answers per device (address → the name the device asked
   for), the gateway's addresses (who answers DNS and DHCP) and each MAC's
   addresses. Who is the client is decided once per connection, as conntrack
   does: a SYN says it; otherwise the first packet's sender, unless the ports
   say it is a reply (a well-known port, or one below the ephemeral range,
   answering an ephemeral one: captures often start mid-connection).
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

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from mudguard.mud import Direction
from mudguard.policy._evaluate import Flow, NameMap, evaluate
from mudguard.policy._model import DeviceFacts, DevicePolicy, HomeContext, LifecycleState

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Caps on the observer's tables (entries), so memory stays bounded."""

    services: int = 500_000
    connections: int = 262_144
    dns_pairs: int = 200_000
    addresses_per_mac: int = 16


class _Stats:
    """Counters for one service or datagram kind (mutable, only inside ``Observer``)."""

    __slots__ = ("bytes", "first", "last", "opened", "packets", "port")

    def __init__(self, ts: float, port: int) -> None:
        self.packets = 0
        self.bytes = 0
        self.first = ts
        self.last = ts
        self.port = port  # a sample client port (for TCP/UDP)
        self.opened = False  # a SYN was seen


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

    def device_macs(self) -> list[tuple[str, int]]:
        """Unicast source MACs other than the gateway's, most packets first."""
        found = [(mac_text(m), n) for m, n in self.mac_packets.items()
                 if m not in self.gateway_macs]
        return sorted(found, key=lambda item: (-item[1], item[0]))

    def names_for(self, mac: bytes) -> NameMap:
        """The DNS answers the device with ``mac`` received, as a ``NameMap``."""
        pairs = ((name, ip_text(addr)) for addr, name in self.dns.get(mac, {}).items())
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
        self._conns: dict[tuple[bytes, int, bytes, int, int], bool] = {}
        self._dns: dict[bytes, dict[bytes, str]] = {}
        self._dns_count = 0
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
                    or (frame[23] == 17 and frame[34] == 0 and frame[35] in (53, 67))):
                packet = decode_ethernet(ts, frame, length, dns)
                if packet is None:
                    non_ip += 1
                else:
                    self.add(packet)
                continue
            # IPv4, 20-byte header, not a fragment, TCP or UDP, not from port 53/67/547.
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
            first_is_client = conns.get(key)
            if first_is_client is None or opening:
                first_is_client = _sender_is_client(proto, sport, dport, flags) == forward
                if len(conns) >= limits.connections:
                    del conns[next(iter(conns))]
                conns[key] = first_is_client
            if first_is_client == forward:
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
        return non_ip

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
        first_is_client = self._conns.get(key)
        if first_is_client is None or opening:
            sender_is_client = _sender_is_client(proto, sport, dport, p.tcp_flags)
            first_is_client = sender_is_client == forward
            if len(self._conns) >= self.limits.connections:
                del self._conns[next(iter(self._conns))]  # forget the oldest connection
            self._conns[key] = first_is_client
        if first_is_client == forward:
            skey = (p.src_mac, p.dst_mac, src, dst, proto, dport)
            client_port = sport
        else:
            skey = (p.dst_mac, p.src_mac, dst, src, proto, sport)
            client_port = dport
        stats = self._stats(self._services, skey, p.ts, client_port, p.length)
        if stats is not None:
            stats.opened = stats.opened or opening
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

    def finish(self) -> Observations:
        """Freeze what was seen."""
        def counts(s: _Stats) -> Counts:
            return Counts(packets=s.packets, bytes=s.bytes, first=s.first, last=s.last,
                          client_port=s.port, opened=s.opened)
        return Observations(
            packets=self.packets,
            services={k: counts(v) for k, v in self._services.items()},
            datagrams={k: counts(v) for k, v in self._datagrams.items()},
            dns={mac: dict(table) for mac, table in self._dns.items()},
            gateway_ips=frozenset(self._gateway_ips),
            gateway_macs=frozenset(self._gateway_macs),
            mac_addresses={m: frozenset(a) for m, a in self._mac_addresses.items()},
            mac_packets=dict(self._mac_packets),
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            overflow=self.overflow,
        )


def _sender_is_client(proto: int, sport: int, dport: int, flags: int) -> bool:
    """Who opened a connection whose first seen packet this is."""
    if proto == TCP and flags & SYN:
        return not flags & ACK  # SYN: the sender opens; SYN-ACK: the receiver did
    if sport in SERVER_PORTS and dport not in SERVER_PORTS:
        return False
    if dport in SERVER_PORTS and sport not in SERVER_PORTS:
        return True
    if (sport < EPHEMERAL) != (dport < EPHEMERAL):
        return dport < EPHEMERAL  # the port outside the ephemeral range is the server's
    # Mid-stream TCP: the low port is the server's. Otherwise conntrack's rule:
    # the first packet's sender opened the flow.
    return not (proto == TCP and sport < 1024 <= dport)


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
    if proto == 6 or proto == 17:
        if len(frame) >= l4 + 4:
            a = (frame[l4] << 8) | frame[l4 + 1]
            b = (frame[l4 + 2] << 8) | frame[l4 + 3]
        if proto == 6 and len(frame) >= l4 + 14:
            flags = frame[l4 + 13]
        elif proto == 17 and a == 53 and decoder is not None:
            dns = decoder(frame[l4 + 8:])
    elif (proto == 1 or proto == 58) and len(frame) >= l4 + 2:
        a, b = frame[l4], frame[l4 + 1]
    return RawPacket(ts, frame[6:12], frame[0:6], src, dst, proto, a, b, flags, length, dns)



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

    @property
    def remote(self) -> str:
        """The far side's address."""
        return self.dst if self.direction is Direction.FROM_DEVICE else self.src

    def to_flow(self) -> Flow:
        """The ``Flow`` the policy evaluator decides."""
        return Flow(direction=self.direction, family=self.family, src=self.src, dst=self.dst,
                    protocol=self.protocol, src_port=self.src_port, dst_port=self.dst_port,
                    icmp_type=self.icmp_type, icmp_code=self.icmp_code, opens=True)

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
        }


def device_flows(obs: Observations, device: bytes) -> list[ObservedFlow]:
    """Every flow the device opened or was sent, in first-seen order.

    ICMP answers (echo replies, errors) are left out: the kernel accepts them as
    part of the flow they answer (conntrack ``established``/``related``).
    """
    names = obs.names_for(device)
    mac = mac_text(device)
    out: list[ObservedFlow] = []
    for (cmac, smac, cip, sip, proto, port), c in obs.services.items():
        if device not in (cmac, smac) or len(cip) != len(sip):
            continue
        direction = Direction.FROM_DEVICE if cmac == device else Direction.TO_DEVICE
        remote = ip_text(sip if cmac == device else cip)
        out.append(ObservedFlow(
            device=mac, direction=direction, family=4 if len(cip) == 4 else 6,
            src=ip_text(cip), dst=ip_text(sip), protocol=proto, src_port=c.client_port,
            dst_port=port, icmp_type=None, icmp_code=None, packets=c.packets, bytes=c.bytes,
            first_seen=c.first, last_seen=c.last, remote_name=_first(names.names_of(remote))))
    for (smac, dmac, src, dst, proto, itype, icode), c in obs.datagrams.items():
        if device not in (smac, dmac) or len(src) != len(dst):
            continue
        family = 4 if len(src) == 4 else 6
        if proto in (ICMP, ICMPV6) and itype in ICMP_ANSWERS[family]:
            continue
        direction = Direction.FROM_DEVICE if smac == device else Direction.TO_DEVICE
        remote = ip_text(dst if smac == device else src)
        icmp = proto in (ICMP, ICMPV6)
        out.append(ObservedFlow(
            device=mac, direction=direction, family=family, src=ip_text(src), dst=ip_text(dst),
            protocol=proto, src_port=None, dst_port=None,
            icmp_type=itype if icmp else None, icmp_code=icode if icmp else None,
            packets=c.packets, bytes=c.bytes, first_seen=c.first, last_seen=c.last,
            remote_name=_first(names.names_of(remote))))
    out.sort(key=lambda f: (f.first_seen, f.direction.value, f.src, f.dst))
    return out


def _first(names: tuple[str, ...]) -> str | None:
    return names[0] if names else None


# -- learning a MUD file ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LearnOptions:
    """What the learned MUD file says about itself."""

    mud_url: str
    systeminfo: str = "Profile learned from observed traffic"
    mfg_name: str | None = None
    model_name: str | None = None
    cache_validity_hours: int = 48


class NoTrafficError(ValueError):
    """The capture holds no IP flow of the device: nothing to learn from."""


def learn_mud(obs: Observations, home: CaptureHome, options: LearnOptions) -> dict[str, Any]:
    """Write an RFC 8520 MUD file (a JSON object) allowing exactly what was observed.

    Raises:
        NoTrafficError: the device has no IP flow in the observations.
    """
    flows = device_flows(obs, home.device)
    if not flows:
        raise NoTrafficError(f"no IP traffic of {mac_text(home.device)} in the capture")
    return learn_mud_from_flows(flows, home, options, obs.last_ts or 0.0)


def learn_mud_from_flows(flows: Sequence[ObservedFlow], home: CaptureHome,
                         options: LearnOptions, last_update: float) -> dict[str, Any]:
    """``learn_mud`` from flows already gathered (a capture's, or the gateway's
    conntrack records of a learning device); ``last_update`` is a Unix time.

    Raises:
        NoTrafficError: ``flows`` is empty.
    """
    if not flows:
        raise NoTrafficError(f"no IP traffic of {mac_text(home.device)} to learn from")
    aces: dict[tuple[int, Direction], dict[str, dict[str, Any]]] = {}
    for flow in flows:
        for family, direction, matches in _aces_for(flow, home):
            key = _canonical(matches)
            aces.setdefault((family, direction), {}).setdefault(key, matches)
    tag = mac_text(home.device).replace(":", "")
    acls: list[dict[str, Any]] = []
    policies: dict[Direction, list[dict[str, str]]] = {Direction.FROM_DEVICE: [],
                                                      Direction.TO_DEVICE: []}
    for (family, direction), entries in sorted(aces.items(), key=lambda i: (i[0][0], i[0][1])):
        short = "fr" if direction is Direction.FROM_DEVICE else "to"
        name = f"mud-{tag}-v{family}{short}"
        acls.append({"name": name, "type": f"ipv{family}-acl-type", "aces": {"ace": [
            {"name": f"{short}{family}-{i}", "matches": m, "actions": {"forwarding": "accept"}}
            for i, m in enumerate(entries.values())]}})
        policies[direction].append({"name": name})
    mud: dict[str, Any] = {
        "mud-version": 1,
        "mud-url": options.mud_url,
        "last-update": datetime.fromtimestamp(last_update, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "cache-validity": options.cache_validity_hours,
        "is-supported": True,
        "systeminfo": options.systeminfo,
        "from-device-policy": {"access-lists": {"access-list": policies[Direction.FROM_DEVICE]}},
        "to-device-policy": {"access-lists": {"access-list": policies[Direction.TO_DEVICE]}},
    }
    if options.mfg_name:
        mud["mfg-name"] = options.mfg_name
    if options.model_name:
        mud["model-name"] = options.model_name
    return {"ietf-mud:mud": mud, "ietf-access-control-list:acls": {"acl": acls}}


def _canonical(matches: Mapping[str, Any]) -> str:
    import json

    return json.dumps(matches, sort_keys=True)


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


def _aces_for(flow: ObservedFlow, home: CaptureHome
              ) -> list[tuple[int, Direction, dict[str, Any]]]:
    """The ACE(s) that allow one flow: its opening direction and, for replies, the other."""
    out_dir, in_dir = Direction.FROM_DEVICE, Direction.TO_DEVICE
    opener = flow.direction
    answer = in_dir if opener is out_dir else out_dir
    peer = classify_peer(flow.remote, home, flow.remote_name)
    one_way = _is_group(flow.remote, home)  # multicast/broadcast: nobody answers from there
    fam = flow.family
    result: list[tuple[int, Direction, dict[str, Any]]] = []
    if flow.protocol in (TCP, UDP):
        server_port = flow.dst_port
        assert server_port is not None
        server_is_device = opener is in_dir
        result.append((fam, opener, _l4(flow, peer, opener, server_port, server_is_device,
                                        towards_server=True)))
        if not one_way:
            result.append((fam, answer, _l4(flow, peer, answer, server_port, server_is_device,
                                            towards_server=False)))
        return result
    if flow.protocol in (ICMP, ICMPV6) and flow.icmp_type is not None:
        result.append((fam, opener, _icmp(flow, peer, opener, flow.icmp_type)))
        reply = ICMP_ECHO_REPLY.get((fam, flow.icmp_type))
        if reply is not None and not one_way:
            result.append((fam, answer, _icmp(flow, peer, answer, reply)))
        return result
    result.append((fam, opener, _ip_part(fam, flow.protocol, peer, opener)))
    return result


def _is_group(address: str, home: CaptureHome) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_multicast or address == "255.255.255.255" or _is_subnet_broadcast(ip, home)


def _ip_part(family: int, protocol: int, peer: Peer, direction: Direction) -> dict[str, Any]:
    """The ``ipv4``/``ipv6`` (and ``ietf-mud:mud``) part of an ACE's matches."""
    ip: dict[str, Any] = {"protocol": protocol}
    matches: dict[str, Any] = {}
    kind, value = peer
    outgoing = direction is Direction.FROM_DEVICE
    if kind == "dnsname":
        ip["ietf-acldns:dst-dnsname" if outgoing else "ietf-acldns:src-dnsname"] = value
    elif kind == "network":
        side = "destination" if outgoing else "source"
        ip[f"{side}-ipv{family}-network"] = value
    else:
        matches["ietf-mud:mud"] = {kind: [None]}
    matches[f"ipv{family}"] = ip
    return matches


def _l4(flow: ObservedFlow, peer: Peer, direction: Direction, server_port: int,
        server_is_device: bool, *, towards_server: bool) -> dict[str, Any]:
    matches = _ip_part(flow.family, flow.protocol, peer, direction)
    port = {"operator": "eq", "port": server_port}
    transport: dict[str, Any] = {"destination-port" if towards_server else "source-port": port}
    if flow.protocol == TCP:
        initiated = Direction.TO_DEVICE if server_is_device else Direction.FROM_DEVICE
        transport["ietf-mud:direction-initiated"] = initiated.value
    matches["tcp" if flow.protocol == TCP else "udp"] = transport
    return matches


def _icmp(flow: ObservedFlow, peer: Peer, direction: Direction, icmp_type: int
          ) -> dict[str, Any]:
    matches = _ip_part(flow.family, flow.protocol, peer, direction)
    matches["icmp"] = {"type": icmp_type}
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
    """Every flow the policy does not accept, decided by ``evaluate()`` (the compiler's rules)."""
    out: list[Deviation] = []
    for flow in flows:
        verdict = evaluate(policy, flow.to_flow(), context, names)
        if not verdict.allowed:
            out.append(Deviation(flow=flow, action=verdict.action.value, origin=verdict.origin))
    return out
