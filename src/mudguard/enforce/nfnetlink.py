"""Adapter: nf_tables batches straight over a netlink socket (one transaction each).

Why not only libnftables: before any ``add rule`` or ``add element`` it fetches
every chain and set of the table (nft 1.0.6's cache flags for those commands), so
one device's update costs 1.6 ms in an empty home and 13.5 ms with 1,000 devices
installed (``bench/bench_enforce_update.py``). The kernel finds a table, chain or
set by name itself: a batch sent here costs the same whatever else is installed.

The wire format is the kernel's ``nf_tables`` netlink ABI
(``include/uapi/linux/netfilter/nf_tables.h``, ``nfnetlink.h``): a batch is
``NFNL_MSG_BATCH_BEGIN``, the messages, ``NFNL_MSG_BATCH_END``; each message asks
for an acknowledgement so a refusal is tied to the message (and so the command)
that caused it; the kernel then applies none of the batch.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from mudguard.errors import MudguardError

NETLINK_NETFILTER = 12
NETLINK_CAP_ACK = 10
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLA_F_NESTED = 0x8000
NFPROTO_INET = 1

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NFGEN = struct.Struct("!BBH")  # nfgenmsg: family, version, res_id (big-endian)
_ATTR = struct.Struct("=HH")  # nlattr: len, type
_SNDBUF_MIN = 1 << 20


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def nested(kind: int, *children: bytes) -> bytes:
    """A nested attribute holding ``children``."""
    return attr(kind | NLA_F_NESTED, b"".join(children))


def attr_str(kind: int, text: str) -> bytes:
    """A NUL-terminated ASCII string attribute (names are mudguard's own: ASCII)."""
    return attr(kind, text.encode("ascii") + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    """A big-endian 32-bit attribute (nf_tables' integers are network order)."""
    return attr(kind, struct.pack("!I", value & 0xFFFFFFFF))


def attr_u64(kind: int, value: int) -> bytes:
    """A big-endian 64-bit attribute."""
    return attr(kind, struct.pack("!Q", value))


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """Top-level attributes of a netlink payload: type (flags stripped) -> payload.

    A repeated type keeps its last payload; use ``iter_attrs`` for lists.
    """
    return dict(iter_attrs(data))


def iter_attrs(data: bytes) -> list[tuple[int, bytes]]:
    """Every attribute of a netlink payload in order, as (type without flags, payload)."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        out.append((kind & 0x3FFF, data[offset + _ATTR.size: offset + length]))
        offset += (length + 3) & ~3
    return out


@dataclass(frozen=True, slots=True)
class Message:
    """One nf_tables message of a batch: its type (``NFT_MSG_*``), flags and body.

    ``origin`` is the index of the command it came from, to name it in an error.
    """

    kind: int
    flags: int
    body: bytes
    origin: int = 0


def _frame(kind: int, flags: int, seq: int, res_id: int, body: bytes = b"") -> bytes:
    payload = _NFGEN.pack(NFPROTO_INET, 0, res_id) + body
    return _HDR.pack(_HDR.size + len(payload), kind, flags, seq, 0) + payload


class NfnetlinkError(MudguardError):
    """The kernel refused a batch (nothing of it was applied)."""

    key = "nft_netlink_refused"

    def __init__(self, code: int, origin: int) -> None:
        super().__init__(f"kernel refused command #{origin}: {os.strerror(code)} "
                         f"({errno.errorcode.get(code, code)})")
        self.code = code
        self.origin = origin


class NfnetlinkSocket:
    """A netfilter netlink socket in the namespace it was opened in.

    Not thread-safe: callers serialise (the ``Nft`` adapter holds a lock).
    """

    def __init__(self, timeout_s: float = 5.0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.settimeout(timeout_s)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        # Errors carry only the header of the refused message, not all of it back.
        self._sock.setsockopt(270, NETLINK_CAP_ACK, 1)  # SOL_NETLINK
        self._sock.bind((0, 0))
        self._sndbuf = 0
        self._seq = 1

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def send_batch(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` as one transaction and wait until the kernel took all of them.

        Raises:
            NfnetlinkError: the kernel refused one message; the batch was rolled back.
            OSError: the socket failed or the kernel did not answer in time.
        """
        if not messages:
            return
        first = self._seq
        self._seq += len(messages) + 2
        origins = {first + 1 + i: m.origin for i, m in enumerate(messages)}
        frames = [_frame(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first, NFNL_SUBSYS_NFTABLES)]
        frames += [_frame((NFNL_SUBSYS_NFTABLES << 8) | m.kind,
                          NLM_F_REQUEST | NLM_F_ACK | m.flags, seq, 0, m.body)
                   for seq, m in zip(origins, messages, strict=True)]
        frames.append(_frame(NFNL_MSG_BATCH_END, NLM_F_REQUEST, first + len(messages) + 1,
                             NFNL_SUBSYS_NFTABLES))
        data = b"".join(frames)
        self._ensure_sndbuf(len(data))
        self._sock.send(data)
        self._await_acks(origins)

    def dump(self, kind: int, body: bytes, max_messages: int) -> list[bytes]:
        """One dump request (``NLM_F_DUMP``); the payloads of its answers (bounded)."""
        seq = self._seq
        self._seq += 1
        self._sock.send(_frame((NFNL_SUBSYS_NFTABLES << 8) | kind,
                               NLM_F_REQUEST | NLM_F_DUMP, seq, 0, body))
        out: list[bytes] = []
        while len(out) < max_messages:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, msg_kind, _flags, msg_seq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    break
                if msg_seq == seq:
                    if msg_kind == NLMSG_DONE:
                        return out
                    if msg_kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, offset + _HDR.size)
                        if code != 0:
                            raise NfnetlinkError(-code, 0)
                        return out
                    start = offset + _HDR.size + _NFGEN.size
                    out.append(data[start: offset + length])
                offset += (length + 3) & ~3
        raise OSError(errno.EMSGSIZE, f"netlink dump longer than {max_messages} messages")

    def _ensure_sndbuf(self, size: int) -> None:
        want = max(_SNDBUF_MIN, 2 * size)
        if want <= self._sndbuf:
            return
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, 32, want)  # SO_SNDBUFFORCE (root)
        except PermissionError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, want)
        self._sndbuf = want

    def _await_acks(self, origins: dict[int, int]) -> None:
        waiting = set(origins)
        refused: tuple[int, int] | None = None
        for _ in range(4 * len(origins) + 16):  # bounded: several acks arrive per read
            if not waiting:
                break
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                if refused is not None:
                    break  # the kernel may stop answering after the refusal
                raise
            offset = 0
            while offset + _HDR.size <= len(data):
                length, kind, _flags, seq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    break
                if kind == NLMSG_ERROR and seq in waiting:
                    (code,) = struct.unpack_from("=i", data, offset + _HDR.size)
                    waiting.discard(seq)
                    if code != 0 and refused is None:
                        refused = (-code, origins[seq])
                offset += (length + 3) & ~3
        if refused is not None:
            raise NfnetlinkError(*refused)
        if waiting:
            raise OSError(errno.EPROTO, f"netlink: {len(waiting)} acknowledgements missing")

