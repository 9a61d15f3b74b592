"""Adapter: read EAPOL frames and AP names out of a pcap/pcapng capture.

pcap goes through dpkt; pcapng is read here block by block, because a pcapng file may
hold several interfaces of different link types (dpkt keeps only the first). Link
types: 802.11 (105), radiotap (127), Prism (119), AVS (163), PPI (192) and Ethernet
(1: a wired 802.1X port, or a Linux AP's own interface, where hostapd's EAPOL frames
show as Ethernet with ethertype 0x888e). Every header is decoded here with bounds
checks, so a hostile frame can only be skipped, never crash the reader.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import dpkt

from mudguard.errors import RemoteInputError
from mudguard.keys.core import EapolObservation
from mudguard.keys.handshake import Handshake, akm_suites, find_handshakes

__all__ = ["ApAnnouncement", "CaptureContents", "CaptureError", "eapol_observations",
           "read_capture", "read_handshakes"]

DLT_EN10MB = 1
DLT_IEEE802_11 = 105
DLT_PRISM_HEADER = 119
DLT_IEEE802_11_RADIO = 127
DLT_IEEE802_11_RADIO_AVS = 163
DLT_PPI = 192
_EAPOL_ETHERTYPE = 0x888E
_VLAN_ETHERTYPES = (0x8100, 0x88A8)
# LLC/SNAP with the RFC 1042 OUI (what 802.11 uses) or the 802.1H bridge-tunnel OUI.
_SNAP_EAPOL = (b"\xaa\xaa\x03\x00\x00\x00\x88\x8e", b"\xaa\xaa\x03\x00\x00\xf8\x88\x8e")
_AVS_MAGIC = (0x80211000, 0x80211001)
_PRISM_MSGCODES = (0x41, 0x44)
_RADIOTAP_FLAGS_FCS = 0x10
_MAX_FRAMES = 5_000_000
_MAX_BLOCK = 16 * 1024 * 1024
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_READ_ERRORS = (ValueError, dpkt.Error, struct.error)


class CaptureError(RemoteInputError):
    """The capture file cannot be read (not pcap/pcapng, unsupported link type)."""

    key = "capture_invalid"


@dataclass(frozen=True, slots=True)
class ApAnnouncement:
    """A beacon or probe response: the network name and AKMs an AP announces."""

    bssid: str
    ssid: bytes
    akms: tuple[int, ...]


@dataclass(slots=True)
class CaptureContents:
    """What a capture tells about WPA keys: handshake candidates and AP names."""

    handshakes: list[Handshake]
    ssids: dict[str, set[bytes]] = field(default_factory=dict)
    """BSSID → every SSID it announced (hidden, empty names left out)."""


Frame = EapolObservation | ApAnnouncement


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


# --- 802.11 ---------------------------------------------------------------------------


def _from_80211(frame: bytes, ts: float) -> Frame | None:
    if len(frame) < 24:
        return None
    fc0, fc1 = frame[0], frame[1]
    frame_type, subtype = (fc0 >> 2) & 0x3, fc0 >> 4
    if frame_type == 0 and subtype in (5, 8):  # probe response, beacon
        return _announcement(frame)
    if frame_type != 2 or subtype & 0x4 or fc1 & 0x40:  # not data, null data, protected
        return None
    to_ds, from_ds = fc1 & 0x1, fc1 & 0x2
    header = 30 if to_ds and from_ds else 24
    if subtype & 0x8:  # QoS data: 2-byte QoS control, +HTC (Order bit) adds 4
        header += 6 if fc1 & 0x80 else 2
    addr1, addr2, addr3 = frame[4:10], frame[10:16], frame[16:22]
    if to_ds and from_ds:  # 4-address (WDS/mesh): DA in addr3, SA in addr4
        src, dst = frame[24:30], addr3
    elif to_ds:
        src, dst = addr2, addr3
    elif from_ds:
        src, dst = addr3, addr1
    else:
        src, dst = addr2, addr1
    body = frame[header:]
    if body[:8] not in _SNAP_EAPOL:
        return None
    # EAPOL runs between the AP and the station themselves: SA/DA are their MACs.
    return EapolObservation(src=_mac(src), dst=_mac(dst), eapol=body[8:], ts=ts)


def _announcement(frame: bytes) -> ApAnnouncement | None:
    """SSID (element 0) and AKMs (RSN or WPA element) of a beacon/probe response."""
    bssid, offset = _mac(frame[16:22]), 24 + 12  # header, timestamp/interval/capability
    ssid: bytes | None = None
    akms: tuple[int, ...] = ()
    while offset + 2 <= len(frame):
        element, length = frame[offset], frame[offset + 1]
        body = frame[offset + 2 : offset + 2 + length]
        if element == 0 and ssid is None:
            ssid = body
        elif element in (48, 221) and not akms:
            akms = akm_suites(frame[offset : offset + 2 + length])
        offset += 2 + length
    if ssid is None:
        return None
    return ApAnnouncement(bssid=bssid, ssid=ssid, akms=akms)


# --- radio headers in front of 802.11 -----------------------------------------------


def _from_radiotap(frame: bytes, ts: float) -> Frame | None:
    if len(frame) < 8 or frame[0] != 0:
        return None
    (length,) = struct.unpack("<H", frame[2:4])
    if length > len(frame) or length < 8:
        return None
    body = frame[length:]
    if _radiotap_flags(frame[:length]) & _RADIOTAP_FLAGS_FCS:
        body = body[:-4]
    return _from_80211(body, ts)


def _radiotap_flags(header: bytes) -> int:
    """The Flags field (present bit 1), or 0: TSFT (bit 0, 8 bytes, 8-aligned) is the
    only field before it, after the chain of present words (bit 31: another follows)."""
    offset = 4
    (present,) = struct.unpack("<I", header[4:8])
    word = present
    while word & 0x80000000 and offset + 8 <= len(header):
        offset += 4
        (word,) = struct.unpack("<I", header[offset : offset + 4])
    offset += 4
    if not present & 0x2:
        return 0
    if present & 0x1:
        offset = (offset + 7) // 8 * 8 + 8
    return header[offset] if offset < len(header) else 0


def _from_prism(frame: bytes, ts: float) -> Frame | None:
    if len(frame) < 8:
        return None
    if struct.unpack(">I", frame[:4])[0] in _AVS_MAGIC:  # an AVS header under DLT 119
        return _from_avs(frame, ts)
    code_le, length_le = struct.unpack("<II", frame[:8])
    length = length_le if code_le in _PRISM_MSGCODES else struct.unpack(">I", frame[4:8])[0]
    return _from_80211(frame[length:], ts) if 8 <= length <= len(frame) else None


def _from_avs(frame: bytes, ts: float) -> Frame | None:
    if len(frame) < 8:
        return None
    magic, length = struct.unpack(">II", frame[:8])
    if magic not in _AVS_MAGIC or not 8 <= length <= len(frame):
        return None
    return _from_80211(frame[length:], ts)


def _from_ppi(frame: bytes, ts: float) -> Frame | None:
    if len(frame) < 8:
        return None
    _version, _flags, length, dlt = struct.unpack("<BBHI", frame[:8])
    if dlt != DLT_IEEE802_11 or not 8 <= length <= len(frame):
        return None
    return _from_80211(frame[length:], ts)


def _from_ethernet(frame: bytes, ts: float) -> Frame | None:
    offset = 12
    while offset + 2 <= len(frame):
        (ethertype,) = struct.unpack("!H", frame[offset : offset + 2])
        if ethertype not in _VLAN_ETHERTYPES:
            break
        offset += 4  # an 802.1Q/802.1ad tag
    else:
        return None
    if ethertype != _EAPOL_ETHERTYPE:
        return None
    return EapolObservation(src=_mac(frame[6:12]), dst=_mac(frame[0:6]),
                            eapol=frame[offset + 2 :], ts=ts)


_DECODERS: dict[int, Callable[[bytes, float], Frame | None]] = {
    DLT_EN10MB: _from_ethernet,
    DLT_IEEE802_11: _from_80211,
    DLT_PRISM_HEADER: _from_prism,
    DLT_IEEE802_11_RADIO: _from_radiotap,
    DLT_IEEE802_11_RADIO_AVS: _from_avs,
    DLT_PPI: _from_ppi,
}
_SUPPORTED = "802.11, radiotap, Prism, AVS, PPI or Ethernet"


# --- files ----------------------------------------------------------------------------


def _pcap_frames(handle: BinaryIO, name: str) -> Iterator[tuple[int, float, bytes]]:
    try:
        reader = dpkt.pcap.Reader(handle)
    except _READ_ERRORS as exc:
        raise CaptureError(f"{name}: not a pcap or pcapng file") from exc
    linktype = reader.datalink()
    if linktype not in _DECODERS:
        raise CaptureError(f"{name}: link type {linktype} is not supported ({_SUPPORTED})")
    for ts, frame in reader:
        yield linktype, float(ts), bytes(frame)


def _pcapng_frames(handle: BinaryIO, name: str) -> Iterator[tuple[int, float, bytes]]:
    """Section header, interface description (link type, if_tsresol), enhanced/simple/
    obsolete packet blocks; every section restarts the interface list."""
    order = "<"
    interfaces: list[tuple[int, float]] = []
    while True:
        head = handle.read(8)
        if len(head) < 8:
            return  # end of file (a cut last block ends the capture, like pcap)
        if head[:4] == _PCAPNG_SHB:
            bom = handle.read(4)
            order = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(bom, "")
            if not order:
                raise CaptureError(f"{name}: pcapng section with a bad byte-order magic")
            handle.read(_block_length(head, order, name) - 12)
            interfaces = []
            continue
        block_type = struct.unpack(order + "I", head[:4])[0]
        body = handle.read(_block_length(head, order, name) - 8)[:-4]
        if block_type == 1:
            interfaces.append(_interface(body, order))
        packet = _packet(block_type, body, order)
        if packet is not None and packet[0] < len(interfaces):
            linktype, unit = interfaces[packet[0]]
            yield linktype, packet[1] * unit, packet[2]


def _block_length(head: bytes, order: str, name: str) -> int:
    (length,) = struct.unpack(order + "I", head[4:8])
    if length < 12 or length % 4 or length > _MAX_BLOCK:
        raise CaptureError(f"{name}: corrupt pcapng block (length {length})")
    return int(length)


def _interface(body: bytes, order: str) -> tuple[int, float]:
    """(link type, seconds per timestamp unit) of an interface description block."""
    if len(body) < 8:
        return -1, 1e-6
    linktype = struct.unpack(order + "H", body[:2])[0]
    unit, offset = 1e-6, 8
    while offset + 4 <= len(body):
        code, length = struct.unpack(order + "HH", body[offset : offset + 4])
        if code == 0:
            break
        if code == 9 and length >= 1 and offset + 4 < len(body):  # if_tsresol
            value = body[offset + 4]
            unit = 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -value
        offset += 4 + (length + 3) // 4 * 4
    return linktype, unit


def _packet(block_type: int, body: bytes, order: str) -> tuple[int, int, bytes] | None:
    """(interface, timestamp in units, frame) of a packet block."""
    if block_type == 6 and len(body) >= 20:  # enhanced packet block
        iface, high, low, caplen = struct.unpack(order + "IIII", body[:16])
        return iface, (high << 32) | low, body[20 : 20 + caplen]
    if block_type == 3 and len(body) >= 4:  # simple packet block: interface 0, no time
        return 0, 0, body[4:]
    if block_type == 2 and len(body) >= 20:  # obsolete packet block
        iface, _drops, high, low, caplen = struct.unpack(order + "HHIII", body[:16])
        return iface, (high << 32) | low, body[20 : 20 + caplen]
    return None


def capture_frames(path: Path) -> Iterator[Frame]:
    """Yield every EAPOL frame and AP announcement in a pcap or pcapng file, in order."""
    with path.open("rb") as handle:
        reader = _pcapng_frames if handle.read(4) == _PCAPNG_SHB else _pcap_frames
        handle.seek(0)
        unsupported: set[int] = set()
        decoded = False
        try:
            for count, (linktype, ts, frame) in enumerate(reader(handle, path.name)):
                if count >= _MAX_FRAMES:
                    raise CaptureError(f"{path.name}: more than {_MAX_FRAMES} frames")
                decoder = _DECODERS.get(linktype)
                if decoder is None:
                    unsupported.add(linktype)
                    continue
                decoded = True
                item = decoder(frame, ts)
                if item is not None:
                    yield item
        except _READ_ERRORS as exc:
            raise CaptureError(f"{path.name}: truncated or corrupt capture") from exc
        if unsupported and not decoded:
            raise CaptureError(f"{path.name}: link type {min(unsupported)} is not supported "
                               f"({_SUPPORTED})")


def eapol_observations(path: Path) -> Iterator[EapolObservation]:
    """Yield every EAPOL frame in a pcap or pcapng file, in capture order."""
    for item in capture_frames(path):
        if isinstance(item, EapolObservation):
            yield item


def read_capture(path: Path) -> CaptureContents:
    """Handshake candidates (AKM taken from the AP's beacon when message 2 has none)
    and the SSIDs each AP announced."""
    observations: list[EapolObservation] = []
    ssids: dict[str, set[bytes]] = {}
    ap_akms: dict[str, int] = {}
    for item in capture_frames(path):
        if isinstance(item, EapolObservation):
            observations.append(item)
            continue
        if item.ssid.strip(b"\x00"):
            ssids.setdefault(item.bssid, set()).add(item.ssid)
        if item.akms:
            ap_akms.setdefault(item.bssid, item.akms[0])
    handshakes = [hs if hs.akm is not None or hs.aa not in ap_akms
                  else replace(hs, akm=ap_akms[hs.aa]) for hs in find_handshakes(observations)]
    return CaptureContents(handshakes=handshakes, ssids=ssids)


def read_handshakes(path: Path) -> list[Handshake]:
    """Every handshake candidate in a capture (see ``mudguard.keys.handshake``)."""
    return read_capture(path).handshakes
