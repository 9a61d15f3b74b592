"""NFLOG over netlink, the pure part: build the config messages, parse what the kernel sends.

Theory of operation: each device chain ends with a rate-limited
``log group 100 prefix "mg <device_id> <out|in>"`` before its drop
(``mudguard.policy._nft``). The kernel sends every logged packet to userspace
over a ``NETLINK_NETFILTER`` socket (subsystem ``NFNL_SUBSYS_ULOG``) as an
``NFULNL_MSG_PACKET`` message: a netlink header, an ``nfgenmsg`` and attributes
(``NFULA_PREFIX``, ``NFULA_HWADDR``, ``NFULA_PAYLOAD`` …; see
``include/uapi/linux/netfilter/nfnetlink_log.h``). This module turns those bytes
into ``NflogPacket``s and then into ``FlowEvent``s (device id, direction,
addresses, protocol, ports) without any I/O; ``listener.py`` owns the socket.

Everything here comes from the kernel but describes packets a device sent, so
parsing is defensive: lengths are checked, loops are bounded, and a malformed
message is skipped (``NflogError``), never trusted.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mudguard.errors import RemoteInputError
from mudguard.mud import Direction
from mudguard.policy._names import device_id

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2

NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_HWADDR = 8
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10

_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_NLA_TYPE_MASK = 0x3FFF
MAX_MESSAGES = 1024  # per datagram: a bound, far above what one recv() can hold
MAX_ATTRS = 64
PREFIX_RE = re.compile(r"^mg ([0-9a-f]{12}|\*) (out|in)$")
"""``mg <device_id> <out|in>`` (a device chain's log) or ``mg * <out|in>`` (the shared log
of policy as data: the device is the packet's source MAC, or its mark)."""

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58


class NflogError(RemoteInputError):
    """A netlink message that is not a well-formed NFLOG message."""

    key = "nflog_malformed"


# -- messages we send ---------------------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _NLA.pack(4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def config_message(group: int, attrs: bytes, *, seq: int, family: int = 0) -> bytes:
    """An ``NFULNL_MSG_CONFIG`` request for ``group`` carrying ``attrs`` (asks for an ACK)."""
    if not 0 <= group <= 0xFFFF:
        raise ValueError(f"NFLOG group must be 0..65535, got {group}")
    body = struct.pack("=BB", family, 0) + struct.pack("!H", group) + attrs
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return _NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def bind_messages(group: int, *, copy_range: int = 256) -> list[bytes]:
    """The requests that bind a socket to ``group``: bind, copy ``copy_range`` bytes of
    each packet, and deliver each packet at once (queue threshold 1)."""
    return [
        config_message(group, _attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), seq=1),
        config_message(group, _attr(NFULA_CFG_MODE, struct.pack("!IBB", copy_range,
                                                                NFULNL_COPY_PACKET, 0)), seq=2),
        config_message(group, _attr(NFULA_CFG_QTHRESH, struct.pack("!I", 1)), seq=3),
        config_message(group, _attr(NFULA_CFG_TIMEOUT, struct.pack("!I", 1)), seq=4),
    ]


def unbind_message(group: int) -> bytes:
    """The request that releases ``group``."""
    return config_message(group, _attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND])), seq=9)


# -- messages we receive --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NflogPacket:
    """One logged packet as the kernel reported it."""

    group: int
    family: int  # AF_INET (2) or AF_INET6 (10) for the inet table
    prefix: str
    payload: bytes  # the network-layer packet (possibly cut at the copy range)
    hwaddr: bytes | None = None  # the source MAC (packets received on an Ethernet port)
    indev: int | None = None
    outdev: int | None = None
    timestamp: float | None = None
    mark: int | None = None  # the packet mark (policy as data: the device's log mark)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The kernel's answer to one of our requests (``error`` 0 is success)."""

    seq: int
    error: int


def netlink_messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """Walk one netlink datagram: ``(type, flags, seq, body)`` per message.

    A malformed message ends the walk (its length cannot be trusted); at most
    ``MAX_MESSAGES`` are read.
    """
    offset = 0
    for _ in range(MAX_MESSAGES):
        if offset + _NLMSG.size > len(data):
            return
        length, kind, flags, seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size or offset + length > len(data):
            return
        yield kind, flags, seq, data[offset + _NLMSG.size:offset + length]
        offset += (length + 3) & ~3


def parse_datagram(data: bytes) -> tuple[list[NflogPacket], list[Ack]]:
    """Split one netlink datagram into NFLOG packets and ACKs.

    A malformed message ends the walk (its length cannot be trusted); the
    messages before it are returned.
    """
    packets: list[NflogPacket] = []
    acks: list[Ack] = []
    for kind, _flags, seq, body in netlink_messages(data):
        if kind == NLMSG_ERROR and len(body) >= 4:
            acks.append(Ack(seq=seq, error=struct.unpack_from("=i", body)[0]))
        elif kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            try:
                packets.append(parse_packet(body))
            except NflogError:
                continue
        elif kind == NLMSG_DONE:
            break
    return packets, acks


def parse_packet(body: bytes) -> NflogPacket:
    """Parse the body (after the netlink header) of an ``NFULNL_MSG_PACKET`` message."""
    if len(body) < 4:
        raise NflogError("NFLOG message shorter than its nfgenmsg header")
    family = body[0]
    group = struct.unpack_from("!H", body, 2)[0]
    attrs = _attributes(body, 4)
    raw_prefix = attrs.get(NFULA_PREFIX, b"")
    prefix = raw_prefix.split(b"\0", 1)[0].decode("ascii", "replace")
    hwaddr = None
    if (raw := attrs.get(NFULA_HWADDR)) is not None and len(raw) >= 4:
        size = struct.unpack_from("!H", raw)[0]
        if 0 < size <= 8 and len(raw) >= 4 + size:
            hwaddr = raw[4:4 + size]
    timestamp = None
    if (raw := attrs.get(NFULA_TIMESTAMP)) is not None and len(raw) >= 16:
        sec, usec = struct.unpack_from("!QQ", raw)
        timestamp = sec + usec / 1e6
    return NflogPacket(group=group, family=family, prefix=prefix,
                       payload=attrs.get(NFULA_PAYLOAD, b""), hwaddr=hwaddr,
                       indev=_u32(attrs.get(NFULA_IFINDEX_INDEV)),
                       outdev=_u32(attrs.get(NFULA_IFINDEX_OUTDEV)), timestamp=timestamp,
                       mark=_u32(attrs.get(NFULA_MARK)))


def _u32(raw: bytes | None) -> int | None:
    return struct.unpack_from("!I", raw)[0] if raw is not None and len(raw) >= 4 else None


def _attributes(body: bytes, offset: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    for _ in range(MAX_ATTRS):
        if offset + _NLA.size > len(body):
            break
        length, kind = _NLA.unpack_from(body, offset)
        if length < _NLA.size or offset + length > len(body):
            raise NflogError(f"netlink attribute overruns its message at byte {offset}")
        attrs.setdefault(kind & _NLA_TYPE_MASK, body[offset + _NLA.size:offset + length])
        offset += (length + 3) & ~3
    return attrs


# -- flow events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowEvent:
    """A packet a device's policy dropped: who, which way, to whom, what."""

    device_id: str
    direction: Direction
    family: int
    src: str
    dst: str
    protocol: int
    src_port: int | None = None
    dst_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    tcp_flags: int | None = None
    mac: str | None = None  # the sending MAC, if the kernel reported one
    remote_name: str | None = None  # the DNS name the remote address came from, if known

    @property
    def remote(self) -> str:
        """The far side's address."""
        return self.dst if self.direction is Direction.FROM_DEVICE else self.src

    def describe(self) -> str:
        """Short text, e.g. ``tcp 198.51.100.7:23`` or ``icmp 203.0.113.5 type 8``."""
        name = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPV6: "icmpv6"}.get(
            self.protocol, f"proto {self.protocol}")
        where = self.remote_name or self.remote
        if self.dst_port is not None and self.direction is Direction.FROM_DEVICE:
            return f"{name} {where} port {self.dst_port}"
        if self.icmp_type is not None:
            return f"{name} {where} type {self.icmp_type}"
        return f"{name} {where}"

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (evidence shown to the owner)."""
        return {"device_id": self.device_id, "direction": self.direction.value,
                "src": self.src, "dst": self.dst, "protocol": self.protocol,
                "src_port": self.src_port, "dst_port": self.dst_port,
                "icmp_type": self.icmp_type, "icmp_code": self.icmp_code,
                "mac": self.mac, "remote_name": self.remote_name}


def parse_prefix(prefix: str) -> tuple[str, Direction] | None:
    """``("<device_id>", direction)`` for a ``mg <device_id> <out|in>`` prefix, else None."""
    match = PREFIX_RE.match(prefix.strip())
    if match is None:
        return None
    direction = Direction.FROM_DEVICE if match.group(2) == "out" else Direction.TO_DEVICE
    return match.group(1), direction


def flow_event(packet: NflogPacket, marks: Mapping[int, str] | None = None
               ) -> FlowEvent | None:
    """The ``FlowEvent`` of a logged packet; None if it is not one of mudguard's or unreadable.

    A shared ``mg * out`` log names its device by the source MAC (``NFULA_HWADDR``);
    ``mg * in`` by the packet mark, looked up in ``marks`` (log mark -> device id, see
    ``policy._data.device_mark``); unknown: None."""
    who = parse_prefix(packet.prefix)
    if who is None:
        return None
    if who[0] == "*":
        found: str | None = None
        if who[1] is Direction.FROM_DEVICE and packet.hwaddr is not None \
                and len(packet.hwaddr) == 6:
            found = device_id(packet.hwaddr.hex(":"))
        elif marks is not None and packet.mark is not None:
            found = marks.get(packet.mark)
        if found is None:
            return None
        who = (found, who[1])
    header = decode_ip(packet.payload)
    if header is None:
        return None
    family, src, dst, proto, a, b, flags = header
    ports = proto in (TCP, UDP) and a is not None
    icmp = proto in (ICMP, ICMPV6) and a is not None
    mac = packet.hwaddr.hex(":") if packet.hwaddr is not None and len(packet.hwaddr) == 6 else None
    return FlowEvent(device_id=who[0], direction=who[1], family=family, src=src, dst=dst,
                     protocol=proto, src_port=a if ports else None, dst_port=b if ports else None,
                     icmp_type=a if icmp else None, icmp_code=b if icmp else None,
                     tcp_flags=flags, mac=mac)


IpHeader = tuple[int, str, str, int, int | None, int | None, int | None]


def decode_ip(payload: bytes) -> IpHeader | None:
    """(family, src, dst, protocol, sport|icmp type, dport|icmp code, tcp flags) of a packet."""
    if len(payload) < 20:
        return None
    version = payload[0] >> 4
    if version == 4:
        ihl = (payload[0] & 0x0F) * 4
        if ihl < 20 or len(payload) < ihl:
            return None
        proto = payload[9]
        src = str(ipaddress.IPv4Address(payload[12:16]))
        dst = str(ipaddress.IPv4Address(payload[16:20]))
        fragment = (struct.unpack_from("!H", payload, 6)[0] & 0x1FFF) != 0
        return (4, src, dst, proto, *_l4(payload, proto, ihl, fragment))
    if version == 6 and len(payload) >= 40:
        src = str(ipaddress.IPv6Address(payload[8:24]))
        dst = str(ipaddress.IPv6Address(payload[24:40]))
        proto, pos, fragment = payload[6], 40, False
        for _ in range(8):  # extension headers, bounded
            if proto in (0, 43, 60) and len(payload) >= pos + 2:
                proto, pos = payload[pos], pos + (payload[pos + 1] + 1) * 8
            elif proto == 44 and len(payload) >= pos + 8:
                fragment = (struct.unpack_from("!H", payload, pos + 2)[0] & 0xFFF8) != 0
                proto, pos = payload[pos], pos + 8
            else:
                break
        return (6, src, dst, proto, *_l4(payload, proto, pos, fragment))
    return None


def _l4(payload: bytes, proto: int, pos: int, fragment: bool
        ) -> tuple[int | None, int | None, int | None]:
    if fragment:
        return None, None, None
    if proto in (TCP, UDP) and len(payload) >= pos + 4:
        sport, dport = struct.unpack_from("!HH", payload, pos)
        flags = payload[pos + 13] if proto == TCP and len(payload) >= pos + 14 else None
        return sport, dport, flags
    if proto in (ICMP, ICMPV6) and len(payload) >= pos + 2:
        return payload[pos], payload[pos + 1], None
    return None, None, None
