"""Adapter: stream packets out of pcap and pcapng files, in bounded memory.

The file is read in 1 MiB chunks and records are cut out with ``struct``; the pure
core (``profile.core.decode_ethernet`` and ``Observer.add_frames``) decodes only the
headers the profile needs. DNS responses are decoded here, with dpkt. dpkt's own
pcapng reader builds an object per block and ran at ~0.18 M packets/s here, which is
why the container is cut by hand (a few times faster); its formats are simple and
documented (pcap: the libpcap file format; pcapng: draft-ietf-opsawg-pcapng).

Link types: Ethernet as is; the others are turned into Ethernet frames by
``profile.link`` (Linux cooked SLL/SLL2, raw IP, BSD loopback, 802.11 and
radiotap data frames when unencrypted); any other is refused by name.

Malformed input never raises past ``CaptureError`` (a clear message naming the
offset); a truncated packet is skipped and counted, never guessed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from mudguard.errors import RemoteInputError
from mudguard.profile.core import RawPacket, decode_ethernet
from mudguard.profile.link import LINKTYPE_ETHERNET, LinkDecoder, UnsupportedLink, link_decoder

CHUNK = 1 << 20
MAX_RECORD = 1 << 24  # no legitimate block is bigger; a bigger length means corruption
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


class CaptureError(RemoteInputError):
    """The capture file is not a readable pcap/pcapng file."""

    key = "capture_unreadable"


class CaptureStats:
    """What the reader saw: records, decoded packets, skipped ones, bytes read."""

    __slots__ = ("bytes_read", "encrypted", "link_types", "non_ip", "records", "truncated",
                 "unsupported")

    def __init__(self) -> None:
        self.records = 0
        self.non_ip = 0
        self.truncated = 0
        self.bytes_read = 0
        self.encrypted = 0  # protected 802.11 data frames (nothing to read without the key)
        self.unsupported: dict[int, int] = {}  # pcapng link type -> records skipped
        self.link_types: set[int] = set()


def read_frames(path: Path, *, stats: CaptureStats | None = None,
                progress: Callable[[int], None] | None = None
                ) -> Iterator[tuple[float, bytes, int]]:
    """Yield ``(timestamp, Ethernet frame, original length)`` for every packet of a pcap or
    pcapng file (other link types turned into Ethernet frames, see ``profile.link``).

    Args:
        path: the capture file.
        stats: filled with counts while reading.
        progress: called with the bytes read so far, once per chunk.

    Raises:
        CaptureError: not a pcap/pcapng file, an unsupported link type, or a
            corrupt record.
    """
    stats = stats if stats is not None else CaptureStats()
    with path.open("rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        if magic in PCAP_MAGICS:
            frames = _pcap_frames(fh, stats, progress)
        elif magic == PCAPNG_MAGIC:
            frames = _pcapng_frames(fh, stats, progress)
        else:
            raise CaptureError(f"{path.name}: not a pcap or pcapng file")
        for record in frames:
            stats.records += 1
            yield record


def read_packets(path: Path, *, stats: CaptureStats | None = None,
                 progress: Callable[[int], None] | None = None) -> Iterator[RawPacket]:
    """Yield every IP packet of a capture, decoded (``decode_ethernet``, DNS with dpkt).

    ``Observer.add_frames(read_frames(...), dns=dns_answers)`` does the same work
    faster; this is the general form for other consumers.
    """
    stats = stats if stats is not None else CaptureStats()
    for ts, frame, length in read_frames(path, stats=stats, progress=progress):
        packet = decode_ethernet(ts, frame, length, dns_answers)
        if packet is None:
            stats.non_ip += 1
        else:
            yield packet


def _chunks(fh: BinaryIO, stats: CaptureStats,
            progress: Callable[[int], None] | None) -> Iterator[bytes]:
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            return
        stats.bytes_read += len(chunk)
        if progress is not None:
            progress(stats.bytes_read)
        yield chunk


def _pcap_frames(fh: BinaryIO, stats: CaptureStats, progress: Callable[[int], None] | None
                 ) -> Iterator[tuple[float, bytes, int]]:
    header = fh.read(24)
    if len(header) < 24:
        raise CaptureError("pcap file header is truncated")
    endian, resolution = PCAP_MAGICS[header[:4]]
    linktype = struct.unpack(endian + "I", header[20:24])[0] & 0x0FFFFFFF
    try:
        decoder = link_decoder(linktype)
    except UnsupportedLink as exc:
        raise CaptureError(str(exc)) from None
    stats.link_types.add(linktype)
    stats.bytes_read = 24
    record = struct.Struct(endian + "IIII")
    buf = b""
    offset = 24
    for chunk in _chunks(fh, stats, progress):
        buf = buf[offset:] + chunk if offset < len(buf) else chunk
        offset = 0
        end = len(buf)
        while offset + 16 <= end:
            sec, frac, caplen, origlen = record.unpack_from(buf, offset)
            if caplen > MAX_RECORD:
                raise CaptureError(f"corrupt pcap record (length {caplen}) near byte "
                                   f"{stats.bytes_read - end + offset}")
            if offset + 16 + caplen > end:
                break
            start = offset + 16
            offset = start + caplen
            if decoder is None:
                yield sec + frac * resolution, buf[start:offset], origlen
            else:
                frame = _converted(decoder, buf[start:offset], stats)
                if frame is not None:
                    yield sec + frac * resolution, frame, origlen
    if offset < len(buf):
        stats.truncated += 1  # the file ends inside a record


def _pcapng_frames(fh: BinaryIO, stats: CaptureStats, progress: Callable[[int], None] | None
                   ) -> Iterator[tuple[float, bytes, int]]:
    endian = "<"
    interfaces: list[tuple[int, float]] = []  # (linktype, seconds per timestamp unit)
    decoders: dict[int, LinkDecoder | None] = {}
    buf = b""
    offset = 0
    for chunk in _chunks(fh, stats, progress):
        buf = buf[offset:] + chunk if offset < len(buf) else chunk
        offset = 0
        end = len(buf)
        while offset + 12 <= end:
            btype, blen = struct.unpack_from(endian + "II", buf, offset)
            if btype == 0x0A0D0D0A:  # section header (a palindrome): byte order may change
                magic = buf[offset + 8:offset + 12]
                if magic == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                elif magic == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                else:
                    raise CaptureError("pcapng section header with a bad byte-order magic")
                interfaces = []
                blen = struct.unpack_from(endian + "I", buf, offset + 4)[0]
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                raise CaptureError(f"corrupt pcapng block (length {blen}) near byte "
                                   f"{stats.bytes_read - end + offset}")
            if offset + blen > end:
                break
            body = offset + 8
            offset += blen
            if btype == 6:  # enhanced packet block
                iface, hi, lo, caplen, origlen = struct.unpack_from(endian + "IIIII", buf, body)
                if iface >= len(interfaces) or caplen > blen - 32:
                    raise CaptureError("pcapng packet names an unknown interface or overruns")
                linktype, unit = interfaces[iface]
                data = buf[body + 20:body + 20 + caplen]
                if linktype == LINKTYPE_ETHERNET:
                    yield ((hi << 32) | lo) * unit, data, origlen
                else:
                    frame = _pcapng_frame(linktype, data, decoders, stats)
                    if frame is not None:
                        yield ((hi << 32) | lo) * unit, frame, origlen
            elif btype == 1:  # interface description block
                interfaces.append(_interface(buf, body, offset - 4, endian))
            elif btype == 3 and interfaces:  # simple packet block
                origlen = struct.unpack_from(endian + "I", buf, body)[0]
                caplen = min(origlen, blen - 16)
                frame = _pcapng_frame(interfaces[0][0], buf[body + 4:body + 4 + caplen],
                                      decoders, stats)
                if frame is not None:
                    yield 0.0, frame, origlen
    if offset < len(buf):
        stats.truncated += 1


def _converted(decoder: LinkDecoder, data: bytes, stats: CaptureStats) -> bytes | None:
    frame = decoder.ethernet(data)
    if frame is None and decoder.last_encrypted:
        stats.encrypted += 1
    return frame


def _pcapng_frame(linktype: int, data: bytes, decoders: dict[int, LinkDecoder | None],
                  stats: CaptureStats) -> bytes | None:
    """One pcapng packet as an Ethernet frame; None if its link type is not read."""
    if linktype not in decoders:
        try:
            decoders[linktype] = link_decoder(linktype)
            stats.link_types.add(linktype)
        except UnsupportedLink:
            decoders[linktype] = None
    decoder = decoders[linktype]
    if decoder is None:
        if linktype == LINKTYPE_ETHERNET:
            return data
        stats.unsupported[linktype] = stats.unsupported.get(linktype, 0) + 1
        return None
    return _converted(decoder, data, stats)


def _interface(buf: bytes, body: int, end: int, endian: str) -> tuple[int, float]:
    """An IDB's link type and timestamp unit (option if_tsresol, default microseconds)."""
    linktype = struct.unpack_from(endian + "H", buf, body)[0]
    unit = 1e-6
    pos = body + 8
    for _ in range(64):  # options: bounded walk
        if pos + 4 > end:
            break
        code, length = struct.unpack_from(endian + "HH", buf, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:  # if_tsresol
            value = buf[pos + 4]
            unit = 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -value
        pos += 4 + ((length + 3) & ~3)
    return linktype, unit


def dns_answers(payload: bytes) -> tuple[tuple[str, bytes], ...] | None:
    """``(question name, address)`` for each A/AAAA answer of a DNS response, or None.

    CNAME chains are followed implicitly: every address in the answer section is
    attributed to the name the device asked for, which is what its MUD file names.
    """
    import dpkt  # here: the daemon reads no capture file and should not carry dpkt (#19)

    try:
        msg = dpkt.dns.DNS(payload)
    except (dpkt.UnpackError, IndexError, ValueError, struct.error):
        return None
    if msg.qr != dpkt.dns.DNS_R or not msg.qd or not msg.an:
        return None
    name = str(msg.qd[0].name).lower().rstrip(".")
    if not name or len(name) > 253:
        return None
    out = []
    for rr in msg.an[:64]:
        size = {dpkt.dns.DNS_A: 4, dpkt.dns.DNS_AAAA: 16}.get(rr.type)
        if size is not None and len(rr.rdata) == size:
            out.append((name, bytes(rr.rdata)))
    return tuple(out) or None
