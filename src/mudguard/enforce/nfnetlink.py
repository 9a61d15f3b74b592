"""Adapter: nf_tables batches straight over a netlink socket (one transaction each).

Why not only libnftables: before any ``add rule`` or ``add element`` it fetches
every chain and set of the table (nft 1.0.6's cache flags for those commands), so
one device's update costs 1.6 ms in an empty home and 13.5 ms with 1,000 devices
installed (``bench/bench_enforce_update.py``). The kernel finds a table, chain or
set by name itself: a batch sent here costs the same whatever else is installed.

The wire format is the kernel's ``nf_tables`` netlink ABI
(``include/uapi/linux/netfilter/nf_tables.h``, ``nfnetlink.h``): a batch is
``NFNL_MSG_BATCH_BEGIN``, the messages, ``NFNL_MSG_BATCH_END``; the kernel reports
each refused message by its sequence number (so by the command that caused it) and
then applies none of the batch; the last message asks for an acknowledgement, which
closes the batch's replies. Dumps (``NLM_F_DUMP``) read objects back for reconcile.
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
_RCVBUF_MIN = 1 << 21


def _grow(sock: socket.socket, current: int, want: int, force: int, plain: int) -> int:
    """Raise a socket buffer to ``want`` bytes (forced as root); the size now asked for."""
    if want <= current:
        return current
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, want)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain, want)
    return want


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
    return [(kind, payload) for kind, _whole, payload in iter_raw_attrs(data)]


def iter_raw_attrs(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Every attribute in order as (type without flags, the attribute as sent, padded,
    its payload): what a request needs to send an attribute back unchanged."""
    out: list[tuple[int, bytes, bytes]] = []
    offset = 0
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        whole = data[offset: offset + length]
        out.append((kind & 0x3FFF, whole + b"\0" * (-len(whole) % 4), whole[_ATTR.size:]))
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


def _frame(kind: int, flags: int, seq: int, res_id: int, body: bytes = b"",
           family: int = NFPROTO_INET) -> bytes:
    payload = _NFGEN.pack(family, 0, res_id) + body
    return _HDR.pack(_HDR.size + len(payload), kind, flags, seq, 0) + payload


class NfnetlinkError(MudguardError):
    """The kernel refused a batch (nothing of it was applied)."""

    key = "nft_netlink_refused"

    def __init__(self, code: int, origin: int) -> None:
        what = f"command #{origin}" if origin >= 0 else "the transaction's commit"
        super().__init__(f"kernel refused {what}: {os.strerror(code)} "
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
        # Errors carry only the header of the refused message, not all of it back.
        self._sock.setsockopt(270, NETLINK_CAP_ACK, 1)  # SOL_NETLINK
        self._sock.bind((0, 0))
        self._sndbuf = 0
        self._seq = 1
        self._timeout = timeout_s
        _grow(self._sock, 0, _RCVBUF_MIN, 33, socket.SO_RCVBUF)  # SO_RCVBUFFORCE

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def send_batch(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` as one transaction and wait until the kernel took all of them.

        Only the last message asks for an acknowledgement: the kernel reports every
        refused message and a failed commit (on the batch's first sequence number)
        anyway, and all of it before that acknowledgement, since it handles the whole
        batch inside ``send``. One reply per message would be one socket buffer per
        message: tens of thousands of them overflow the receive queue.

        Raises:
            NfnetlinkError: the kernel refused a message or the commit; nothing applied.
            OSError: the socket failed or the kernel did not answer in time.
        """
        if not messages:
            return
        first = self._next_seq(len(messages) + 2)
        last = first + len(messages)
        frames = [_frame(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first, NFNL_SUBSYS_NFTABLES)]
        frames += [_frame((NFNL_SUBSYS_NFTABLES << 8) | m.kind,
                          NLM_F_REQUEST | m.flags | (NLM_F_ACK if seq == last else 0),
                          seq, 0, m.body)
                   for seq, m in enumerate(messages, start=first + 1)]
        frames.append(_frame(NFNL_MSG_BATCH_END, NLM_F_REQUEST, last + 1, NFNL_SUBSYS_NFTABLES))
        data = b"".join(frames)
        self._ensure_buffers(len(data))
        self._sock.send(data)
        try:
            self._await_outcome(first, last, [m.origin for m in messages])
        finally:
            self._sock.settimeout(self._timeout)

    def _await_outcome(self, first: int, last: int, origins: list[int]) -> None:
        refused: tuple[int, int] | None = None
        for _ in range(len(origins) + 16):  # bounded: at most one reply per message
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                if refused is not None:
                    break  # processing stopped at the refusal: no acknowledgement follows
                raise
            offset = 0
            while offset + _HDR.size <= len(data):
                length, kind, _flags, seq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    break
                if kind == NLMSG_ERROR and first <= seq <= last:
                    (code,) = struct.unpack_from("=i", data, offset + _HDR.size)
                    if code != 0 and refused is None:  # the commit (first) or a message
                        refused = (-code, origins[seq - first - 1] if seq > first else -1)
                    if seq == last:
                        if refused is not None:
                            raise NfnetlinkError(*refused)
                        return
                offset += (length + 3) & ~3
            if refused is not None:
                self._sock.settimeout(0.2)  # the rest is queued already, if it comes
        if refused is not None:
            raise NfnetlinkError(*refused)
        raise OSError(errno.EPROTO, "netlink: no acknowledgement for the batch")

    def dump(self, kind: int, body: bytes, max_messages: int, *,
             subsystem: int = NFNL_SUBSYS_NFTABLES, family: int = NFPROTO_INET) -> list[bytes]:
        """One dump request (``NLM_F_DUMP``); the payloads of its answers (bounded)."""
        seq = self._next_seq(1)
        self._sock.send(_frame((subsystem << 8) | kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0,
                               body, family))
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

    def request(self, subsystem: int, kind: int, family: int, body: bytes) -> int:
        """One acknowledged request outside a batch; 0, or the kernel's errno."""
        seq = self._next_seq(1)
        self._sock.send(_frame((subsystem << 8) | kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0,
                               body, family))
        for _ in range(64):  # bounded: stale replies are skipped
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, msg_kind, _flags, msg_seq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    break
                if msg_kind == NLMSG_ERROR and msg_seq == seq:
                    (code,) = struct.unpack_from("=i", data, offset + _HDR.size)
                    return int(-code)
                offset += (length + 3) & ~3
        raise OSError(errno.EPROTO, "netlink: no acknowledgement for the request")

    def _next_seq(self, count: int) -> int:
        """The first of ``count`` sequence numbers (32-bit on the wire: wraps)."""
        if self._seq + count >= 1 << 31:
            self._seq = 1
        first = self._seq
        self._seq += count
        return first

    def _ensure_buffers(self, size: int) -> None:
        """Room in the send buffer for a batch of ``size`` bytes."""
        self._sndbuf = _grow(self._sock, self._sndbuf, max(_SNDBUF_MIN, 2 * size),
                             32, socket.SO_SNDBUF)  # SO_SNDBUFFORCE
