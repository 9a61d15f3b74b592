"""LLDP discovery: the MUD URL in an LLDP frame (RFC 8520 §11).

RFC 8520 §11: "the MUD URL is carried in an organizationally specific TLV
(type 127) with the IANA OUI 00-00-5E and subtype 1". The parser
(``parse_lldp_frame``) is pure: Ethernet frame bytes in, ``LldpInfo`` out, or an
``LldpError`` naming what is wrong (truncated TLV, missing mandatory TLV, wrong
ethertype). ``build_lldp_frame`` is its inverse, used by device simulators and
tests. ``LldpListener`` is the adapter: an AF_PACKET socket for ethertype 0x88CC on
one interface; without CAP_NET_RAW it logs one clear line and the source is off.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from mudguard.devices._model import MacError, MudSource, device_mac
from mudguard.devices.lifecycle import MudUrlError, check_mud_url
from mudguard.discovery.sighting import Sighting
from mudguard.errors import RemoteInputError

log = logging.getLogger(__name__)

ETH_P_LLDP = 0x88CC
LLDP_MULTICAST = bytes.fromhex("0180c200000e")
IANA_OUI = bytes.fromhex("00005e")
MUD_SUBTYPE = 1
MAX_FRAME = 1522
_TLV_END, _TLV_CHASSIS, _TLV_PORT, _TLV_TTL, _TLV_SYSNAME, _TLV_ORG = 0, 1, 2, 3, 5, 127
_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, _PACKET_MR_MULTICAST = 263, 1, 0


class LldpError(RemoteInputError):
    """A frame that is not a well-formed LLDPDU."""

    key = "bad_lldp"


@dataclass(frozen=True, slots=True)
class LldpInfo:
    """What one LLDP frame says about the device that sent it."""

    mac: str  # the frame's source MAC
    chassis_id: bytes
    port_id: bytes
    ttl: int
    system_name: str | None = None
    mud_url: str | None = None

    def sighting(self) -> Sighting:
        """The frame as a discovery sighting."""
        return Sighting(mac=self.mac, source=MudSource.LLDP, mud_url=self.mud_url,
                        hostname=self.system_name)


def _tlvs(payload: bytes) -> list[tuple[int, bytes]]:
    tlvs: list[tuple[int, bytes]] = []
    offset = 0
    while True:
        if offset + 2 > len(payload):
            raise LldpError(f"truncated TLV header at byte {offset}")
        header, = struct.unpack_from("!H", payload, offset)
        kind, length = header >> 9, header & 0x1FF
        offset += 2
        if offset + length > len(payload):
            raise LldpError(f"TLV type {kind} at byte {offset - 2} claims {length} bytes; "
                            f"only {len(payload) - offset} remain")
        if kind == _TLV_END:
            return tlvs
        tlvs.append((kind, payload[offset:offset + length]))
        offset += length


def parse_lldp_frame(frame: bytes) -> LldpInfo:
    """Parse an Ethernet frame carrying an LLDPDU (optionally one 802.1Q tag).

    Raises ``LldpError`` for a frame that is not LLDP or is malformed. A MUD URL TLV
    with a bad URL is an error too (the caller drops the whole frame).
    """
    if len(frame) > MAX_FRAME:
        raise LldpError(f"frame of {len(frame)} bytes is larger than Ethernet allows")
    if len(frame) < 14:
        raise LldpError("frame shorter than an Ethernet header")
    src = frame[6:12]
    ethertype, = struct.unpack_from("!H", frame, 12)
    offset = 14
    if ethertype == 0x8100 and len(frame) >= 18:
        ethertype, = struct.unpack_from("!H", frame, 16)
        offset = 18
    if ethertype != ETH_P_LLDP:
        raise LldpError(f"ethertype 0x{ethertype:04x} is not LLDP")
    tlvs = _tlvs(frame[offset:])
    kinds = [kind for kind, _ in tlvs[:3]]
    if kinds != [_TLV_CHASSIS, _TLV_PORT, _TLV_TTL]:
        raise LldpError("LLDPDU must start with chassis ID, port ID and TTL TLVs")
    chassis, port, ttl_raw = (value for _, value in tlvs[:3])
    if len(ttl_raw) != 2 or not 2 <= len(chassis) <= 256 or not 2 <= len(port) <= 256:
        raise LldpError("mandatory TLV of the wrong length")
    try:  # IEEE 802.3: a source address is an individual one; a forged frame's may not be
        mac = device_mac(src.hex())
    except MacError as exc:
        raise LldpError(f"source {exc}") from None
    info = LldpInfo(mac=mac, chassis_id=chassis, port_id=port,
                    ttl=struct.unpack("!H", ttl_raw)[0])
    name: str | None = None
    url: str | None = None
    for kind, value in tlvs[3:]:
        if kind == _TLV_SYSNAME:
            name = value.decode("utf-8", "replace")
        elif kind == _TLV_ORG and value[:3] == IANA_OUI and value[3:4] == bytes([MUD_SUBTYPE]):
            if url is not None:
                raise LldpError("more than one MUD URL TLV")
            url = _mud_url(value[4:])
    return LldpInfo(mac=info.mac, chassis_id=chassis, port_id=port, ttl=info.ttl,
                    system_name=name, mud_url=url)


def _mud_url(raw: bytes) -> str:
    try:
        return check_mud_url(raw.decode("ascii"))
    except UnicodeDecodeError:
        raise LldpError("MUD URL TLV is not ASCII") from None
    except MudUrlError as exc:
        raise LldpError(f"MUD URL TLV: {exc}") from None


def _tlv(kind: int, value: bytes) -> bytes:
    if len(value) > 511:
        raise ValueError(f"TLV value of {len(value)} bytes; LLDP allows 511")
    return struct.pack("!H", (kind << 9) | len(value)) + value


def build_lldp_frame(src_mac: str, *, mud_url: str | None, system_name: str | None = None,
                     ttl: int = 120, port: str = "eth0") -> bytes:
    """An LLDP frame as a device sends it (chassis ID = its MAC), with the MUD URL TLV."""
    mac = bytes.fromhex(src_mac.replace(":", ""))
    body = (_tlv(_TLV_CHASSIS, b"\x04" + mac) + _tlv(_TLV_PORT, b"\x05" + port.encode())
            + _tlv(_TLV_TTL, struct.pack("!H", ttl)))
    if system_name:
        body += _tlv(_TLV_SYSNAME, system_name.encode())
    if mud_url:
        body += _tlv(_TLV_ORG, IANA_OUI + bytes([MUD_SUBTYPE]) + mud_url.encode())
    return LLDP_MULTICAST + mac + struct.pack("!H", ETH_P_LLDP) + body + _tlv(_TLV_END, b"")


class LldpListener:
    """Receives LLDP frames on one interface (AF_PACKET; needs CAP_NET_RAW)."""

    def __init__(self, interface: str) -> None:
        """Open the socket; raises ``PermissionError`` without CAP_NET_RAW (see ``open``)."""
        self.interface = interface
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_LLDP))
        try:
            self._sock.bind((interface, ETH_P_LLDP))
            index = socket.if_nametoindex(interface)
            # struct packet_mreq: ifindex, type, alen, address[8]
            mreq = struct.pack("iHH8s", index, _PACKET_MR_MULTICAST, 6, LLDP_MULTICAST)
            self._sock.setsockopt(_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, mreq)
        except OSError:
            self._sock.close()
            raise

    @classmethod
    def open(cls, interface: str) -> LldpListener | None:
        """The listener, or None (with one log line) when the capability or interface
        is missing: LLDP discovery is then off and everything else runs."""
        try:
            return cls(interface)
        except PermissionError:
            log.error("LLDP discovery off on %s: needs CAP_NET_RAW", interface)
        except OSError as exc:
            log.error("LLDP discovery off on %s: %s", interface, exc.strerror or exc)
        return None

    def fileno(self) -> int:
        """The socket's descriptor (for selectors and ``loop.add_reader``)."""
        return self._sock.fileno()

    def receive(self, timeout: float | None = None) -> LldpInfo | None:
        """The next valid LLDP frame's info; None on timeout or a bad frame (logged)."""
        self._sock.settimeout(timeout)
        try:
            frame = self._sock.recv(MAX_FRAME + 1)
        except TimeoutError:
            return None
        try:
            return parse_lldp_frame(frame)
        except LldpError as exc:
            log.warning("ignored an LLDP frame on %s: %s", self.interface, exc)
            return None

    def drain(self, on_info: Callable[[LldpInfo], object], max_frames: int = 64) -> int:
        """Read the frames already queued, without waiting (for ``loop.add_reader``),
        passing each valid one to ``on_info``; returns how many were passed."""
        passed = 0
        for _ in range(max_frames):
            try:
                frame = self._sock.recv(MAX_FRAME + 1, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            try:
                info = parse_lldp_frame(frame)
            except LldpError as exc:
                log.warning("ignored an LLDP frame on %s: %s", self.interface, exc)
                continue
            on_info(info)
            passed += 1
        return passed

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> LldpListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
