"""Link layers other than Ethernet, turned into Ethernet frames for the profile reader.

Pure (bytes in, bytes out). ``link_decoder(linktype)`` gives a ``LinkDecoder`` whose
``ethernet(data)`` returns an Ethernet frame (destination MAC, source MAC, ethertype,
then the IP packet) or None for a record that holds no readable IP packet. Link
types (tcpdump.org "LINK-LAYER HEADER TYPES"):

- 1 Ethernet: read as is (no decoder).
- 113 Linux cooked (SLL) and 276 SLL2 (``tcpdump -i any``): the header names only
  the sender's MAC and the packet type (to this host, broadcast, multicast,
  outgoing). The destination MAC is the group MAC for multicast and broadcast, the
  capturing host's own (seen on its outgoing packets) for a packet to it, else the
  MAC last seen sending from the destination IP address, else unknown
  (``core.UNKNOWN_MAC``): a receiver is known once it has sent something.
- 101 raw IP (also 12 and 14, raw IP on some systems), 228 IPv4, 229 IPv6, 0 BSD
  loopback and 108 OpenBSD loopback: no MAC at all; each IP address gets a
  stand-in MAC (``core.SYNTHETIC_OUI`` + 3 bytes of its hash), group addresses their
  group MAC. ``profile learn``/``check`` choose the device by address then.
- 105 802.11 and 127 radiotap + 802.11, 192 PPI + 802.11: data frames with an
  LLC/SNAP header, unencrypted only; protected frames are counted
  (``last_encrypted``) and skipped (decrypt the capture first); management,
  control and null frames hold no IP packet.

Any other link type is refused by name (``UnsupportedLink``).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

from mudguard.profile.core import SYNTHETIC_OUI, UNKNOWN_MAC

LINKTYPE_ETHERNET = 1
LINKTYPE_NAMES = {
    0: "BSD loopback", 1: "Ethernet", 12: "raw IP", 14: "raw IP", 101: "raw IP",
    105: "802.11", 108: "OpenBSD loopback", 113: "Linux cooked (SLL)",
    127: "802.11 with radiotap", 192: "802.11 with PPI", 228: "raw IPv4", 229: "raw IPv6",
    276: "Linux cooked v2 (SLL2)",
}
_OTHER_NAMES = {6: "Token Ring", 9: "PPP", 10: "FDDI", 50: "PPP over serial", 104: "Cisco HDLC",
                119: "802.11 with Prism", 147: "user-defined", 163: "802.11 with AVS",
                187: "Bluetooth HCI", 195: "802.15.4", 201: "Bluetooth HCI H4",
                220: "USB Linux mmapped", 249: "Netlink"}
BROADCAST = b"\xff" * 6
ETHERTYPE_IPV4, ETHERTYPE_IPV6 = b"\x08\x00", b"\x86\xdd"
_IP_TABLE_MAX = 65_536  # IP -> MAC entries kept for cooked captures (cleared when full)
_SNAP = (b"\xaa\xaa\x03\x00\x00\x00", b"\xaa\xaa\x03\x00\x00\xf8")


class UnsupportedLink(ValueError):
    """A capture's link type this reader does not turn into IP packets."""


def supported_text() -> str:
    """The supported link types, for messages."""
    return ("Ethernet (1), Linux cooked SLL (113) and SLL2 (276), raw IP (101, 228, 229), "
            "BSD loopback (0, 108), 802.11 (105), radiotap (127) and PPI (192) "
            "unencrypted data frames")


def link_decoder(linktype: int) -> LinkDecoder | None:
    """The decoder for ``linktype``; None for Ethernet (read as is).

    Raises:
        UnsupportedLink: a link type that is not read, named in the message.
    """
    if linktype == LINKTYPE_ETHERNET:
        return None
    if linktype in (113, 276):
        return CookedDecoder(linktype)
    if linktype in (0, 12, 14, 101, 108, 228, 229):
        return RawIpDecoder(linktype)
    if linktype in (105, 127, 192):
        return WifiDecoder(linktype)
    name = _OTHER_NAMES.get(linktype, "unknown")
    raise UnsupportedLink(f"link type {linktype} ({name}) is not supported; supported: "
                          f"{supported_text()}")


class LinkDecoder(ABC):
    """Turns one link type's records into Ethernet frames (see the module docstring)."""

    def __init__(self, linktype: int) -> None:
        self.linktype = linktype
        self.last_encrypted = False  # the last record was a protected 802.11 data frame

    @abstractmethod
    def ethernet(self, data: bytes) -> bytes | None:
        """The record as an Ethernet frame, or None."""


def _ip_version(packet: bytes) -> bytes | None:
    if not packet:
        return None
    version = packet[0] >> 4
    return ETHERTYPE_IPV4 if version == 4 else ETHERTYPE_IPV6 if version == 6 else None


def _ip_addresses(ethertype: bytes, packet: bytes) -> tuple[bytes, bytes] | None:
    if ethertype == ETHERTYPE_IPV4 and len(packet) >= 20:
        return packet[12:16], packet[16:20]
    if ethertype == ETHERTYPE_IPV6 and len(packet) >= 40:
        return packet[8:24], packet[24:40]
    return None


def group_mac(address: bytes) -> bytes | None:
    """The MAC a packet to a multicast or broadcast IP address is sent to, else None."""
    if len(address) == 4:
        if address == b"\xff\xff\xff\xff":
            return BROADCAST
        if 224 <= address[0] <= 239:
            return bytes((0x01, 0x00, 0x5E, address[1] & 0x7F)) + address[2:4]
        return None
    if len(address) == 16 and address[0] == 0xFF:
        return b"\x33\x33" + address[12:16]
    return None


class CookedDecoder(LinkDecoder):
    """Linux cooked captures (SLL 113, SLL2 276)."""

    def __init__(self, linktype: int) -> None:
        super().__init__(linktype)
        self.macs: dict[bytes, bytes] = {}  # IP address -> MAC last seen sending from it
        self.host: bytes | None = None  # the capturing host's MAC (its outgoing packets)

    def ethernet(self, data: bytes) -> bytes | None:
        """The record as an Ethernet frame, or None (not IP, or cut short)."""
        if self.linktype == 113:
            if len(data) < 16:
                return None
            kind = int.from_bytes(data[0:2], "big")
            halen, addr, proto, packet = (int.from_bytes(data[4:6], "big"), data[6:14],
                                          data[14:16], data[16:])
        else:
            if len(data) < 20:
                return None
            proto, kind, halen, addr, packet = data[0:2], data[10], data[11], data[12:20], \
                data[20:]
        if proto not in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
            return None
        addresses = _ip_addresses(proto, packet)
        if addresses is None:
            return None
        src_ip, dst_ip = addresses
        src = addr[:6] if halen == 6 else UNKNOWN_MAC
        if kind == 4 and halen == 6:
            self.host = src
        if src != UNKNOWN_MAC and any(src_ip):
            if len(self.macs) >= _IP_TABLE_MAX:
                self.macs.clear()
            self.macs[src_ip] = src
        dst = group_mac(dst_ip) or (BROADCAST if kind == 1 else None)
        if dst is None:
            # To this host: its own MAC; else the MAC last seen sending from that address.
            dst = (self.host if kind == 0 else None) or self.macs.get(dst_ip) or UNKNOWN_MAC
        return dst + src + proto + packet


class RawIpDecoder(LinkDecoder):
    """Captures without a link layer (raw IP, loopback): stand-in MACs per address."""

    def __init__(self, linktype: int) -> None:
        super().__init__(linktype)
        self.skip = 4 if linktype in (0, 108) else 0
        self.macs: dict[bytes, bytes] = {}

    def ethernet(self, data: bytes) -> bytes | None:
        """The record as an Ethernet frame, or None (not IP)."""
        packet = data[self.skip:]
        proto = _ip_version(packet)
        if proto is None:
            return None
        addresses = _ip_addresses(proto, packet)
        if addresses is None:
            return None
        src_ip, dst_ip = addresses
        return (group_mac(dst_ip) or self._mac(dst_ip)) + self._mac(src_ip) + proto + packet

    def _mac(self, address: bytes) -> bytes:
        mac = self.macs.get(address)
        if mac is None:
            if len(self.macs) >= _IP_TABLE_MAX:
                self.macs.clear()
            mac = self.macs[address] = SYNTHETIC_OUI + hashlib.blake2b(
                address, digest_size=3).digest()
        return mac


class WifiDecoder(LinkDecoder):
    """802.11 data frames, bare (105) or after a radiotap (127) or PPI (192) header."""

    def ethernet(self, data: bytes) -> bytes | None:
        """The record as an Ethernet frame, or None (not an unencrypted IP data frame)."""
        self.last_encrypted = False
        if self.linktype in (127, 192):
            if len(data) < 8:
                return None
            skip = int.from_bytes(data[2:4], "little")
            if self.linktype == 192 and int.from_bytes(data[4:8], "little") != 105:
                return None  # PPI around something else than 802.11
            end = len(data) - 4 if self.linktype == 127 and _radiotap_fcs(data) else len(data)
            data = data[skip:end]
        if len(data) < 24:
            return None
        control, flags = data[0], data[1]
        if (control >> 2) & 3 != 2:  # not a data frame
            return None
        subtype = control >> 4
        if subtype & 0x4:  # null function / QoS null: no body
            return None
        if flags & 0x40:
            self.last_encrypted = True
            return None
        to_ds, from_ds = flags & 1, flags & 2
        header = 30 if to_ds and from_ds else 24
        if subtype & 0x8:  # QoS data: QoS control, maybe HT control
            if len(data) < header + 2 or data[header] & 0x80:
                return None  # an A-MSDU: several frames in one, not read
            header += 2 + (4 if flags & 0x80 else 0)
        a1, a2, a3 = data[4:10], data[10:16], data[16:22]
        if to_ds and from_ds:
            dst, src = a3, data[24:30]
        elif to_ds:
            dst, src = a3, a2
        elif from_ds:
            dst, src = a1, a3
        else:
            dst, src = a1, a2
        llc = data[header:header + 8]
        if len(llc) < 8 or llc[:6] not in _SNAP or llc[6:8] not in (ETHERTYPE_IPV4,
                                                                      ETHERTYPE_IPV6):
            return None
        return dst + src + llc[6:8] + data[header + 8:]


def _radiotap_fcs(header: bytes) -> bool:
    """True if a radiotap header's flags say the frame ends with its 4-byte FCS."""
    first = present = int.from_bytes(header[4:8], "little")
    pos = 8
    for _ in range(8):  # extended presence words: bounded
        if not present & 0x80000000 or pos + 4 > len(header):
            break
        present = int.from_bytes(header[pos:pos + 4], "little")
        pos += 4
    if first & 1:  # TSFT: 8 bytes, 8-aligned
        pos = ((pos + 7) & ~7) + 8
    return bool(first & 2) and pos < len(header) and bool(header[pos] & 0x10)
