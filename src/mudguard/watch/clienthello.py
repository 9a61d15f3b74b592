"""A TLS / DTLS ClientHello parser for hostile input (pure, bounded).

Theory of operation: the kernel logs the first payload packet of a profiled device's
new TLS flow, or the first datagram of a DTLS one (``policy._nft.tls_watch_rules``),
through NFLOG with a snap length of ``SNAPLEN`` bytes. ``parse_client_hello`` reads that
payload: TLS records (RFC 8446 §5.1: type 22, version 0x0301-0x0304) or DTLS records
(RFC 6347 §4.1 / RFC 9147 §4: type 22, version 0xfeff/0xfefd/0xfefc, epoch, sequence),
the handshake header (type 1), then the ClientHello body (RFC 8446 §4.1.2, with the
DTLS cookie of RFC 6347 §4.2.1) and the extensions a MUD (D)TLS profile talks about
(RFC 9761 §5).

What the device sent is data from a possibly compromised device: every length is
checked against what is there, loops are bounded (records, extensions, list items),
and a payload that is not a ClientHello raises ``ClientHelloError``. A ClientHello cut
by the snap length or spread over several TCP segments is returned with
``complete=False`` and what was read before the cut; fields not reached are ``None``
(unknown), never guessed.

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from mudguard.errors import RemoteInputError

SNAPLEN = 2048
"""Bytes of each logged packet the kernel copies (IP header, transport header and the
start of the ClientHello: common ClientHellos are 200-600 bytes)."""

HANDSHAKE = 22
CLIENT_HELLO = 1
MAX_RECORDS = 16
MAX_HANDSHAKE = 1 << 16
MAX_EXTENSIONS = 128
MAX_LIST = 512

TLS_VERSION_NAMES = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1",
                     0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
DTLS_VERSION_NAMES = {0xFEFF: "DTLS 1.0", 0xFEFD: "DTLS 1.2", 0xFEFC: "DTLS 1.3"}

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_COMPRESS_CERTIFICATE = 27
EXT_SUPPORTED_VERSIONS = 43
EXT_PSK_KEY_EXCHANGE_MODES = 45
EXT_SIGNATURE_ALGORITHMS_CERT = 50


class ClientHelloError(RemoteInputError):
    """A payload that is not a (D)TLS ClientHello."""

    key = "tls_not_a_client_hello"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHello:
    """What a ClientHello offers. ``None``: the extension is absent, or was not reached
    (``complete`` False); GREASE values are kept as sent (the matcher skips them)."""

    dtls: bool
    record_version: int
    legacy_version: int
    cipher_suites: tuple[int, ...] | None = None
    compression_methods: tuple[int, ...] | None = None
    extension_types: tuple[int, ...] | None = None
    supported_versions: tuple[int, ...] | None = None
    supported_groups: tuple[int, ...] | None = None
    signature_algorithms: tuple[int, ...] | None = None
    signature_algorithms_cert: tuple[int, ...] | None = None
    application_protocols: tuple[str, ...] | None = None
    psk_key_exchange_modes: tuple[int, ...] | None = None
    cert_compression_algorithms: tuple[int, ...] | None = None
    server_name: str | None = None
    complete: bool = True

    @property
    def offered_versions(self) -> tuple[int, ...]:
        """The protocol versions offered: ``supported_versions`` if sent (TLS 1.3 style),
        else the legacy version field (the highest the client supports)."""
        if self.supported_versions is not None:
            return self.supported_versions
        return (self.legacy_version,)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (evidence kept with a deviation)."""
        return {"dtls": self.dtls, "legacy_version": self.legacy_version,
                "versions": list(self.offered_versions),
                "cipher_suites": _listed(self.cipher_suites),
                "extension_types": _listed(self.extension_types),
                "supported_groups": _listed(self.supported_groups),
                "signature_algorithms": _listed(self.signature_algorithms),
                "alpn": _listed(self.application_protocols),
                "server_name": self.server_name, "complete": self.complete}


def _listed(values: tuple[object, ...] | None) -> list[object] | None:
    return None if values is None else list(values)


class _Cut(Exception):
    """The data ended before the structure did (snap length, TCP segment)."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Cut
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vector(self, length_bytes: int) -> bytes:
        n = int.from_bytes(self.take(length_bytes), "big")
        return self.take(n)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def parse_client_hello(payload: bytes) -> ClientHello:
    """The ClientHello at the start of ``payload`` (a TCP segment or UDP datagram)."""
    if len(payload) < 5 or payload[0] != HANDSHAKE:
        raise ClientHelloError("not a TLS handshake record")
    version = struct.unpack_from("!H", payload, 1)[0]
    if version in DTLS_VERSION_NAMES:
        return _hello(_dtls_handshake(payload), dtls=True, record_version=version)
    if version >> 8 != 3 or version & 0xFF > 4:
        raise ClientHelloError(f"record version {version:#06x} is not TLS or DTLS")
    return _hello(_tls_handshake(payload), dtls=False, record_version=version)


def _tls_handshake(payload: bytes) -> tuple[bytes, bool]:
    """The handshake bytes of consecutive TLS handshake records (and whether all of the
    records' announced bytes were there)."""
    reader, out, whole = _Reader(payload), bytearray(), True
    for _ in range(MAX_RECORDS):
        if reader.left == 0:
            break
        if reader.left < 5:
            whole = False
            break
        kind, _version, length = struct.unpack("!BHH", reader.take(5))
        if kind != HANDSHAKE:
            break
        if length == 0 or length > 1 << 14:  # RFC 8446 §5.1: at most 2^14 bytes
            raise ClientHelloError(f"record length {length}")
        piece = reader.data[reader.pos:reader.pos + length]
        reader.pos += len(piece)
        out += piece
        if len(piece) < length:
            whole = False
            break
        if len(out) > MAX_HANDSHAKE:
            raise ClientHelloError("handshake longer than 64 KiB")
    return bytes(out), whole


def _dtls_handshake(payload: bytes) -> tuple[bytes, bool]:
    """The first DTLS handshake message's body (its first fragment)."""
    reader = _Reader(payload)
    try:
        _kind, _version, _epoch, _seq_hi, _seq_lo, length = struct.unpack(
            "!BHHHIH", reader.take(13))
        record = reader.data[reader.pos:reader.pos + length]
        whole = len(record) == length
        inner = _Reader(record)
        kind = inner.u8()
        total = inner.u24()
        _message_seq = inner.u16()
        offset = inner.u24()
        fragment = inner.u24()
    except _Cut:
        raise ClientHelloError("DTLS record shorter than its headers") from None
    if kind != CLIENT_HELLO:
        raise ClientHelloError(f"handshake type {kind} is not a ClientHello")
    if offset != 0:
        raise ClientHelloError("a later fragment of a DTLS ClientHello")
    body = inner.data[inner.pos:inner.pos + fragment]
    whole = whole and len(body) == fragment == total
    # Rebuild a TLS-style handshake header so one body parser serves both.
    return bytes([CLIENT_HELLO]) + total.to_bytes(3, "big") + body, whole


def _hello(handshake: tuple[bytes, bool], *, dtls: bool, record_version: int) -> ClientHello:
    data, whole = handshake
    reader = _Reader(data)
    fields: dict[str, object] = {}
    try:
        kind = reader.u8()
        if kind != CLIENT_HELLO:
            raise ClientHelloError(f"handshake type {kind} is not a ClientHello")
        length = reader.u24()
        body = _Reader(reader.data[reader.pos:reader.pos + length])
        whole = whole and body.left == length
        legacy = body.u16()
    except _Cut:
        raise ClientHelloError("handshake shorter than its header") from None
    if dtls and legacy not in DTLS_VERSION_NAMES:
        raise ClientHelloError(f"DTLS ClientHello version {legacy:#06x}")
    if not dtls and legacy >> 8 != 3:
        raise ClientHelloError(f"ClientHello version {legacy:#06x}")
    try:
        body.take(32)  # random
        session_id = body.vector(1)
        if len(session_id) > 32:
            raise ClientHelloError("session id longer than 32 bytes")
        if dtls:
            body.vector(1)  # cookie
        suites = body.vector(2)
        if len(suites) % 2 or not suites:
            raise ClientHelloError("cipher suite list of odd or zero length")
        fields["cipher_suites"] = _u16_list(suites)
        fields["compression_methods"] = tuple(body.vector(1))
        if body.left == 0:
            fields["extension_types"] = ()  # TLS 1.0-1.2 may omit the extensions block
            complete = whole
        else:
            announced = body.u16()
            block = body.take(min(announced, body.left))
            cut = len(block) < announced
            _extensions(block, fields, cut=cut)
            complete = whole and not cut
    except _Cut:
        complete = False
    return ClientHello(dtls=dtls, record_version=record_version, legacy_version=legacy,
                       complete=complete, **fields)  # type: ignore[arg-type]


def _extensions(block: bytes, fields: dict[str, object], *, cut: bool) -> None:
    """Read the extensions of ``block`` into ``fields``; ``cut``: the block was cut by the
    snap length (the extensions read whole before the cut are kept)."""
    reader, types = _Reader(block), []
    for _ in range(MAX_EXTENSIONS):
        if reader.left == 0:
            break
        try:
            kind = reader.u16()
            data = reader.vector(2)
        except _Cut:
            if cut:
                break
            raise ClientHelloError("an extension longer than the extensions block") from None
        types.append(kind)
        parsed = _extension(kind, data)
        if parsed is not None:
            name, value = parsed
            if name in fields:
                # RFC 8446 §4.2: no extension type appears more than once.
                raise ClientHelloError(f"extension {kind} sent twice")
            fields[name] = value
    else:
        if reader.left:
            raise ClientHelloError(f"more than {MAX_EXTENSIONS} extensions")
    fields["extension_types"] = tuple(types)


def _extension(kind: int, data: bytes) -> tuple[str, object] | None:
    try:
        reader = _Reader(data)
        if kind == EXT_SUPPORTED_GROUPS:
            return "supported_groups", _u16_list(reader.vector(2))
        if kind == EXT_SIGNATURE_ALGORITHMS:
            return "signature_algorithms", _u16_list(reader.vector(2))
        if kind == EXT_SIGNATURE_ALGORITHMS_CERT:
            return "signature_algorithms_cert", _u16_list(reader.vector(2))
        if kind == EXT_SUPPORTED_VERSIONS:
            return "supported_versions", _u16_list(reader.vector(1))
        if kind == EXT_PSK_KEY_EXCHANGE_MODES:
            return "psk_key_exchange_modes", tuple(reader.vector(1))
        if kind == EXT_COMPRESS_CERTIFICATE:
            return "cert_compression_algorithms", _u16_list(reader.vector(1))
        if kind == EXT_ALPN:
            return "application_protocols", _alpn(reader.vector(2))
        if kind == EXT_SERVER_NAME and data:
            return "server_name", _server_name(reader.vector(2))
    except _Cut:
        raise ClientHelloError(f"extension {kind} shorter than its lengths") from None
    return None


def _u16_list(raw: bytes) -> tuple[int, ...]:
    if len(raw) % 2:
        raise ClientHelloError("a list of 16-bit values of odd length")
    if len(raw) > 2 * MAX_LIST:
        raise ClientHelloError(f"a list longer than {MAX_LIST} values")
    return struct.unpack(f"!{len(raw) // 2}H", raw)


def _alpn(raw: bytes) -> tuple[str, ...]:
    reader, names = _Reader(raw), []
    for _ in range(MAX_LIST):
        if reader.left == 0:
            break
        name = reader.vector(1)
        if not name:
            raise ClientHelloError("an empty ALPN protocol name")
        # Shown to the owner: non-printable bytes are escaped, never passed on.
        names.append(name.decode("ascii", "backslashreplace")
                     if name.isascii() and name.decode().isprintable()
                     else name.decode("latin-1").encode("unicode_escape").decode("ascii"))
    return tuple(names)


def _server_name(raw: bytes) -> str | None:
    reader = _Reader(raw)
    for _ in range(8):
        if reader.left == 0:
            break
        kind = reader.u8()
        name = reader.vector(2)
        if kind == 0 and 0 < len(name) <= 253 and name.isascii():
            text = name.decode("ascii").lower()
            if all(c.isalnum() or c in "-._" for c in text):
                return text
    return None


def transport_payload(packet: bytes) -> tuple[int, str, str, int, int, int, bytes] | None:
    """(family, src, dst, protocol, sport, dport, payload) of an IPv4/IPv6 TCP or UDP
    packet as NFLOG hands it; None for anything else, or a fragment."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl or struct.unpack_from("!H", packet, 6)[0] & 0x3FFF:
            return None  # fragment (MF set or an offset)
        family, proto, pos = 4, packet[9], ihl
        src = str(ipaddress.IPv4Address(packet[12:16]))
        dst = str(ipaddress.IPv4Address(packet[16:20]))
    elif version == 6 and len(packet) >= 40:
        family, proto, pos = 6, packet[6], 40
        src = str(ipaddress.IPv6Address(packet[8:24]))
        dst = str(ipaddress.IPv6Address(packet[24:40]))
        for _ in range(8):  # extension headers (bounded); a fragment header: give up
            if proto in (0, 43, 60) and len(packet) >= pos + 2:
                proto, pos = packet[pos], pos + (packet[pos + 1] + 1) * 8
            else:
                break
    else:
        return None
    if proto == 6 and len(packet) >= pos + 20:
        offset = (packet[pos + 12] >> 4) * 4
        if offset < 20:
            return None
        start = pos + offset
    elif proto == 17 and len(packet) >= pos + 8:
        start = pos + 8
    else:
        return None
    sport, dport = struct.unpack_from("!HH", packet, pos)
    return family, src, dst, proto, sport, dport, packet[start:]
