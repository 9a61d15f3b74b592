"""DHCPv4 leases read off the LAN interface: onboarding without a process per lease.

Why: dnsmasq runs its ``--dhcp-script`` once per lease change, serially, and a Python
hook costs ~33 ms to start; with a few devices asking together the hook queue was most
of the lease → rules time. The daemon already owns an AF_PACKET socket (LLDP); this
one watches DHCP on the LAN interface, so a lease reaches the intake the moment
dnsmasq's ACK leaves the gateway, with no process started. The hook stays as the
second path: lease ends (``del``), DHCPv6, and whatever this one misses; the intake
drops the hook's copy of a lease it already took (an unchanged sighting).

What is trusted (every frame on the LAN is hostile input):
- an ACK only if the gateway itself sent it: outgoing on the LAN interface
  (``PACKET_OUTGOING``), source MAC = the interface's own, and from UDP port 67 of
  one of the gateway's own addresses. The last matters: devices on isolated ports
  reach each other through the gateway, so a forged ACK one sends another also
  leaves the LAN interface, outgoing, with the gateway's MAC; but the kernel never
  forwards a packet whose source is one of its own addresses (a martian, unless
  ``accept_local`` is set), so such an ACK cannot carry the gateway's address;
- the device's options (MUD URL 161, hostname 12, vendor class 60, PRL 55) only from
  the client's REQUEST with the same transaction ID and hardware address as the ACK,
  sent from that hardware address (Ethernet source = chaddr); an ACK with no such
  REQUEST seen is left to the hook.
The address comes from the ACK (what dnsmasq granted), never from the client.

The parser (``parse_dhcp_frame``) and the matcher (``LeaseMatcher``) are pure; the
intake applies the same checks and budgets as to the hook's events. ``DhcpSniffer``
is the adapter: one AF_PACKET socket with a classic BPF filter (IPv4 UDP port 67/68,
unfragmented), so the kernel wakes the daemon only for DHCP.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import re
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from mudguard.devices._model import MacError, MudSource, device_mac
from mudguard.discovery.sighting import Sighting
from mudguard.errors import RemoteInputError

log = logging.getLogger(__name__)

MAX_FRAME = 2048  # a DHCP message on an Ethernet LAN (RFC 2131: 576 octets at least)
BOOTREQUEST, BOOTREPLY = 1, 2
DHCPREQUEST, DHCPACK = 3, 5
MAGIC_COOKIE = b"\x63\x82\x53\x63"
_OPT_PAD, _OPT_END = 0, 255
_OPT_HOSTNAME, _OPT_LEASE, _OPT_TYPE, _OPT_PRL, _OPT_VENDOR, _OPT_MUD = 12, 51, 53, 55, 60, 161
_BOOTP_FIXED = 236  # op … file, before the magic cookie
_MAX_OPTIONS = 4096  # concatenated option bytes kept per message (RFC 3396 splits)
_PACKET_OUTGOING = 4
_ETH_P_ALL = 0x0003
_SO_ATTACH_FILTER = 26
_LEGAL_LABEL = re.compile(r"[A-Za-z0-9_-]+")

# Classic BPF, as ``tcpdump -dd 'ip and udp and (port 67 or port 68)'`` compiles it:
# IPv4, UDP, not a later fragment, either port 67 or 68. Anything else never wakes us.
_BPF_DHCP4 = (
    (0x28, 0, 0, 12), (0x15, 0, 12, 0x0800),      # ethertype == IPv4
    (0x30, 0, 0, 23), (0x15, 0, 10, 17),          # protocol == UDP
    (0x28, 0, 0, 20), (0x45, 8, 0, 0x1FFF),       # fragment offset == 0
    (0xB1, 0, 0, 14),                             # x = IP header length
    (0x48, 0, 0, 14), (0x15, 4, 0, 67), (0x15, 3, 0, 68),   # source port
    (0x48, 0, 0, 16), (0x15, 1, 0, 67), (0x15, 0, 1, 68),   # destination port
    (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0),       # accept / drop
)


class DhcpFrameError(RemoteInputError):
    """A frame that is not a well-formed DHCPv4 message over Ethernet/IPv4/UDP."""

    key = "bad_dhcp_frame"


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    """The parts of one DHCPv4 message the gateway uses. Text fields are as sent."""

    src_mac: str  # the Ethernet source, normalised
    src_ip: str  # the IPv4 source
    src_port: int  # the UDP source port
    op: int
    message_type: int
    xid: int
    chaddr: str  # the client hardware address, normalised
    yiaddr: str | None  # None when 0.0.0.0 (a request, a DHCPINFORM's answer)
    lease_seconds: int | None = None
    hostname: str | None = None
    mud_url: str | None = None
    vendor_class: str | None = None
    prl: str | None = None


def _mac(raw: bytes, what: str) -> str:
    try:
        return device_mac(raw.hex())
    except MacError as exc:
        raise DhcpFrameError(f"{what}: {exc}") from None


def _udp_payload(frame: bytes) -> tuple[str, int, bytes]:
    """The IPv4 source, UDP source port and UDP payload of an Ethernet/IPv4/UDP frame
    to or from port 67/68."""
    if len(frame) > MAX_FRAME:
        raise DhcpFrameError(f"frame of {len(frame)} bytes; limit {MAX_FRAME}")
    if len(frame) < 14 + 20 + 8:
        raise DhcpFrameError("frame shorter than Ethernet + IPv4 + UDP headers")
    if frame[12:14] != b"\x08\x00":
        raise DhcpFrameError("not an IPv4 frame")
    version_ihl = frame[14]
    ihl = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or ihl < 20:
        raise DhcpFrameError("bad IPv4 header")
    total, = struct.unpack_from("!H", frame, 16)
    flags_fragment, = struct.unpack_from("!H", frame, 20)
    if frame[23] != 17 or flags_fragment & 0x3FFF:
        raise DhcpFrameError("not an unfragmented UDP datagram")
    if not ihl + 8 <= total <= len(frame) - 14:
        raise DhcpFrameError(f"IPv4 length {total} does not fit the frame")
    udp = 14 + ihl
    sport, dport, length = struct.unpack_from("!HHH", frame, udp)
    if {sport, dport} & {67, 68} == set() or not 8 <= length <= total - ihl:
        raise DhcpFrameError("not a DHCP datagram")
    return str(ipaddress.IPv4Address(frame[26:30])), sport, frame[udp + 8:udp + length]


def _options(raw: bytes) -> dict[int, bytes]:
    """The options after the magic cookie; a repeated option's parts are joined (RFC
    3396). Raises ``DhcpFrameError`` for an option running past the message."""
    options: dict[int, bytes] = {}
    kept = 0
    offset = 0
    while offset < len(raw):
        code = raw[offset]
        if code == _OPT_END:
            return options
        if code == _OPT_PAD:
            offset += 1
            continue
        if offset + 2 > len(raw) or offset + 2 + raw[offset + 1] > len(raw):
            raise DhcpFrameError(f"option {code} at byte {offset} runs past the message")
        value = raw[offset + 2:offset + 2 + raw[offset + 1]]
        kept += len(value)
        if kept > _MAX_OPTIONS:
            raise DhcpFrameError("options longer than any DHCP client sends")
        options[code] = options.get(code, b"") + value
        offset += 2 + len(value)
    raise DhcpFrameError("options have no end option")


def _address(raw: bytes) -> str | None:
    address = ipaddress.IPv4Address(raw)
    return None if address.is_unspecified else str(address)


def _text(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace").rstrip("\x00") if raw else None


def _hostname(raw: bytes | None) -> str | None:
    """Option 12 as dnsmasq hands it to the hook: a legal name loses its domain part
    (``argv[3]``), any other text stays as sent (``DNSMASQ_SUPPLIED_HOSTNAME``)."""
    text = _text(raw)
    if text is None:
        return None
    label = text.split(".", 1)[0]
    return label if _LEGAL_LABEL.fullmatch(label) else text


def parse_dhcp_frame(frame: bytes) -> DhcpMessage:
    """Parse an Ethernet frame carrying a DHCPv4 message; raise ``DhcpFrameError``.

    Checks the headers' lengths (not the checksums: the kernel fills an outgoing
    frame's checksum late), the BOOTP fixed part, the magic cookie and every option's
    length; a message without option 53 is plain BOOTP and refused.
    """
    src_ip, src_port, payload = _udp_payload(frame)
    if len(payload) < _BOOTP_FIXED + 4:
        raise DhcpFrameError(f"DHCP message of {len(payload)} bytes is truncated")
    op, htype, hlen = payload[0], payload[1], payload[2]
    if op not in (BOOTREQUEST, BOOTREPLY) or htype != 1 or hlen != 6:
        raise DhcpFrameError("not an Ethernet DHCP request or reply")
    if payload[_BOOTP_FIXED:_BOOTP_FIXED + 4] != MAGIC_COOKIE:
        raise DhcpFrameError("no DHCP magic cookie")
    options = _options(payload[_BOOTP_FIXED + 4:])
    kind = options.get(_OPT_TYPE, b"")
    if len(kind) != 1:
        raise DhcpFrameError("no single-byte DHCP message type (option 53)")
    lease = options.get(_OPT_LEASE)
    prl = options.get(_OPT_PRL)
    return DhcpMessage(
        src_mac=_mac(frame[6:12], "Ethernet source"), src_ip=src_ip, src_port=src_port,
        op=op, message_type=kind[0],
        xid=struct.unpack_from("!I", payload, 4)[0], chaddr=_mac(payload[28:34], "chaddr"),
        yiaddr=_address(payload[16:20]),
        lease_seconds=struct.unpack("!I", lease)[0] if lease and len(lease) == 4 else None,
        hostname=_hostname(options.get(_OPT_HOSTNAME)), mud_url=_text(options.get(_OPT_MUD)),
        vendor_class=_text(options.get(_OPT_VENDOR)),
        prl=",".join(str(code) for code in prl) if prl else None)


class LeaseMatcher:
    """Pairs the gateway's ACKs with their clients' REQUESTs. Pure; not thread-safe.

    ``feed`` takes every parsed message with whether it left the LAN interface and the
    interface's MAC; it returns a ``Sighting`` for an ACK the gateway sent (outgoing,
    from its MAC, from port 67 of one of ``server_addresses``) whose REQUEST it saw,
    else None. At most ``remember`` REQUESTs are kept, each ``window`` seconds.
    """

    def __init__(self, server_addresses: Collection[str], *, remember: int = 256,
                 window: float = 30.0) -> None:
        """``server_addresses``: the gateway's own IPv4 addresses (dnsmasq answers from
        them); ``remember``: REQUESTs kept (oldest dropped first); ``window``: their
        life (s)."""
        self._servers = frozenset(server_addresses)
        self._requests: OrderedDict[tuple[int, str], tuple[float, DhcpMessage]] = OrderedDict()
        self._remember = remember
        self._window = window
        self.refused = 0
        """ACKs not sent by the gateway, and REQUESTs not sent by their client."""
        self.unmatched = 0
        """The gateway's ACKs with no REQUEST seen (left to the hook)."""

    def feed(self, message: DhcpMessage, *, outgoing: bool, gateway_mac: str,
             now: float) -> Sighting | None:
        """One message seen on the LAN interface at ``now`` (monotonic seconds)."""
        if message.op == BOOTREQUEST and message.message_type == DHCPREQUEST:
            self._remember_request(message, outgoing=outgoing, now=now)
        elif message.op == BOOTREPLY and message.message_type == DHCPACK:
            return self._lease(message, outgoing=outgoing, gateway_mac=gateway_mac, now=now)
        return None

    def _remember_request(self, message: DhcpMessage, *, outgoing: bool, now: float) -> None:
        if outgoing or message.src_mac != message.chaddr:
            self.refused += 1  # sent for another hardware address: its options are no one's
            return
        key = (message.xid, message.chaddr)
        self._requests[key] = (now, message)
        self._requests.move_to_end(key)
        while len(self._requests) > self._remember:
            self._requests.popitem(last=False)

    def _lease(self, ack: DhcpMessage, *, outgoing: bool, gateway_mac: str,
               now: float) -> Sighting | None:
        if (not outgoing or ack.src_mac != gateway_mac or ack.src_port != 67
                or ack.src_ip not in self._servers):
            self.refused += 1  # an ACK a device sent, even routed by us: never a lease
            return None
        seen = self._requests.pop((ack.xid, ack.chaddr), None)
        if ack.yiaddr is None:
            return None  # the answer to a DHCPINFORM: no lease
        if seen is None or now - seen[0] > self._window:
            self.unmatched += 1
            return None
        request = seen[1]
        return Sighting(mac=ack.chaddr, ip=ack.yiaddr, source=MudSource.DHCP4,
                        mud_url=request.mud_url, hostname=request.hostname,
                        vendor_class=request.vendor_class, prl=request.prl)


def _attach_filter(sock: socket.socket, program: tuple[tuple[int, int, int, int], ...]) -> None:
    """Attach a classic BPF program (``SO_ATTACH_FILTER``: struct sock_fprog)."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


class DhcpSniffer:
    """DHCPv4 on one interface (AF_PACKET + BPF; needs CAP_NET_RAW) → lease sightings."""

    def __init__(self, interface: str, server_addresses: Collection[str], *,
                 clock: Callable[[], float] | None = None) -> None:
        """Open the socket; raises ``PermissionError`` without CAP_NET_RAW (see ``open``).
        ``server_addresses``: the gateway's own addresses (where dnsmasq answers from).

        The filter is attached before the socket is bound, so no frame of another kind
        is ever queued."""
        import time

        self.interface = interface
        self.matcher = LeaseMatcher(server_addresses)
        self._clock = clock or time.monotonic
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            _attach_filter(self._sock, _BPF_DHCP4)
            self._sock.bind((interface, _ETH_P_ALL))  # ETH_P_ALL: outgoing frames too
        except OSError:
            self._sock.close()
            raise

    @classmethod
    def open(cls, interface: str, server_addresses: Collection[str]) -> DhcpSniffer | None:
        """The sniffer, or None (with one log line) when the capability or interface is
        missing: leases then come by dnsmasq's hook only."""
        try:
            return cls(interface, server_addresses)
        except PermissionError:
            log.error("DHCP sniffing off on %s: needs CAP_NET_RAW (the hook still works)",
                      interface)
        except OSError as exc:
            log.error("DHCP sniffing off on %s: %s (the hook still works)", interface,
                      exc.strerror or exc)
        return None

    def fileno(self) -> int:
        """The socket's descriptor (for selectors and ``loop.add_reader``)."""
        return self._sock.fileno()

    def _gateway_mac(self) -> str:
        """The interface's own MAC now (a bridge's changes as ports come and go)."""
        return device_mac(bytes(self._sock.getsockname()[4]).hex())

    def _take(self, frame: bytes, pkttype: int) -> Sighting | None:
        try:
            message = parse_dhcp_frame(frame)
        except DhcpFrameError as exc:
            log.debug("ignored a DHCP frame on %s: %s", self.interface, exc)
            return None
        return self.matcher.feed(message, outgoing=pkttype == _PACKET_OUTGOING,
                                 gateway_mac=self._gateway_mac(), now=self._clock())

    def receive(self, timeout: float | None = None) -> Sighting | None:
        """Wait up to ``timeout`` s for one frame; its lease sighting or None."""
        self._sock.settimeout(timeout)
        try:
            frame, address = self._sock.recvfrom(MAX_FRAME + 1)
        except TimeoutError:
            return None
        return self._take(frame, address[2])

    def drain(self, on_sighting: Callable[[Sighting], object], max_frames: int = 64) -> int:
        """Read the frames already queued, without waiting (for ``loop.add_reader``),
        passing each lease to ``on_sighting``; returns how many were passed."""
        passed = 0
        for _ in range(max_frames):
            try:
                frame, address = self._sock.recvfrom(MAX_FRAME + 1, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            sighting = self._take(frame, address[2])
            if sighting is not None:
                on_sighting(sighting)
                passed += 1
        return passed

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> DhcpSniffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
