"""Conntrack NEW events: one message per new connection, never per packet.

The drop logs (NFLOG) show what a policy refused; they cannot show a device that
floods destinations its profile allows, or that hits its per-device
new-connection cap (those drops are not logged). ctnetlink's NEW events fill
that gap: the kernel multicasts one ``IPCTNL_MSG_CT_NEW`` message per connection
it starts tracking (group ``NFNLGRP_CONNTRACK_NEW``), and the deviation tracker
counts them per device (``DeviationTracker.observe_connection``).

Pure parsing (``parse_conntrack``) plus a small socket adapter
(``ConntrackSocket``); see ``include/uapi/linux/netfilter/nfnetlink_conntrack.h``.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from mudguard.watch.listener import RECV_BUFFER, WatchError, in_netns, receive_datagram
from mudguard.watch.nflog import NETLINK_NETFILTER, NflogError, _attributes, netlink_messages

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
NFNLGRP_CONNTRACK_NEW = 1
NLM_F_CREATE = 0x400
CTA_TUPLE_ORIG = 1
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnEvent:
    """A connection the kernel started tracking (its original direction)."""

    family: int
    src: str
    dst: str
    protocol: int
    src_port: int | None = None
    dst_port: int | None = None


def parse_conntrack(data: bytes) -> list[ConnEvent]:
    """The NEW connections in one netlink datagram (malformed messages are skipped)."""
    events: list[ConnEvent] = []
    for kind, flags, _seq, body in netlink_messages(data):
        if kind != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW or not flags & NLM_F_CREATE:
            continue
        try:
            event = _event(body)
        except (NflogError, struct.error, ValueError):
            continue
        if event is not None:
            events.append(event)
    return events


def _event(body: bytes) -> ConnEvent | None:
    if len(body) < 4:
        return None
    tuple_orig = _attributes(body, 4).get(CTA_TUPLE_ORIG)
    if tuple_orig is None:
        return None
    parts = _attributes(tuple_orig, 0)
    ip = _attributes(parts.get(CTA_TUPLE_IP, b""), 0)
    proto = _attributes(parts.get(CTA_TUPLE_PROTO, b""), 0)
    if CTA_IP_V4_SRC in ip and CTA_IP_V4_DST in ip:
        family, src, dst = 4, ip[CTA_IP_V4_SRC], ip[CTA_IP_V4_DST]
    elif CTA_IP_V6_SRC in ip and CTA_IP_V6_DST in ip:
        family, src, dst = 6, ip[CTA_IP_V6_SRC], ip[CTA_IP_V6_DST]
    else:
        return None
    number = proto.get(CTA_PROTO_NUM)
    if number is None or len(number) < 1:
        return None
    sport = proto.get(CTA_PROTO_SRC_PORT)
    dport = proto.get(CTA_PROTO_DST_PORT)
    return ConnEvent(family=family, src=str(ipaddress.ip_address(src)),
                     dst=str(ipaddress.ip_address(dst)), protocol=number[0],
                     src_port=struct.unpack("!H", sport[:2])[0] if sport else None,
                     dst_port=struct.unpack("!H", dport[:2])[0] if dport else None)


class ConntrackSocket:
    """A ctnetlink socket subscribed to NEW events (needs CAP_NET_ADMIN)."""

    def __init__(self, *, netns: str | None = None, timeout: float = 2.0) -> None:
        try:
            with in_netns(netns):
                self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except PermissionError as exc:
            raise WatchError("conntrack events need CAP_NET_ADMIN") from exc
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            self.sock.bind((0, 1 << (NFNLGRP_CONNTRACK_NEW - 1)))
            self.sock.settimeout(timeout)
        except OSError as exc:
            self.sock.close()
            raise WatchError(f"cannot subscribe to conntrack events: {exc.strerror}") from exc

    def fileno(self) -> int:
        """The socket's file descriptor (for ``add_reader``)."""
        return self.sock.fileno()

    def events(self, *, block: bool = True) -> list[ConnEvent]:
        """The new connections of one datagram ([] on timeout or a buffer overrun)."""
        data = receive_datagram(self.sock, block=block, what="conntrack events")
        return [] if data is None else parse_conntrack(data)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
