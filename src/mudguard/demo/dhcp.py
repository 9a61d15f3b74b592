"""A small DHCPv4 client for the demo's devices: DISCOVER, OFFER, REQUEST, ACK, with
the MUD URL in option 161 (RFC 8520 §9) the way a real device announces it.

It uses plain UDP sockets bound to the device's interface with the broadcast flag set
(RFC 2131 §4.1), so the server's replies are broadcast and reach a socket that has no
address yet. Packets are built and parsed with dpkt. Every wait is bounded.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass

import dpkt

OPTION_MUD_URL = 161  # RFC 8520 §9
_DISCOVER, _OFFER, _REQUEST, _ACK, _NAK, _RELEASE = 1, 2, 3, 5, 6, 7


class DhcpError(RuntimeError):
    """No lease: the server did not answer in time or refused."""


@dataclass(frozen=True, slots=True)
class Lease:
    """What the server gave: the address, prefix length, router, DNS servers."""

    address: str
    prefixlen: int
    router: str | None
    dns: tuple[str, ...]
    server: str
    lease_seconds: int


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def build(kind: int, mac: str, xid: int, *, hostname: str | None, mud_url: str | None,
          requested: str | None = None, server: str | None = None) -> bytes:
    """One client message (``kind`` is the DHCP message type) in wire format."""
    opts: list[tuple[int, bytes]] = [(dpkt.dhcp.DHCP_OPT_MSGTYPE, bytes([kind])),
                                     (dpkt.dhcp.DHCP_OPT_PARAM_REQ, bytes([1, 3, 6, 51]))]
    if hostname:
        opts.append((dpkt.dhcp.DHCP_OPT_HOSTNAME, hostname.encode()))
    if mud_url:
        opts.append((OPTION_MUD_URL, mud_url.encode()))
    if requested:
        opts.append((dpkt.dhcp.DHCP_OPT_REQ_IP, socket.inet_aton(requested)))
    if server:
        opts.append((dpkt.dhcp.DHCP_OPT_SERVER_ID, socket.inet_aton(server)))
    msg = dpkt.dhcp.DHCP(op=dpkt.dhcp.DHCP_OP_REQUEST, chaddr=_mac_bytes(mac), xid=xid,
                         flags=0x8000, opts=opts)
    return bytes(msg)


def parse(wire: bytes, xid: int) -> tuple[int, dpkt.dhcp.DHCP] | None:
    """The message type and message of a server reply for ``xid``; None if not ours."""
    try:
        msg = dpkt.dhcp.DHCP(wire)
    except (dpkt.UnpackError, struct.error, ValueError):
        return None
    if msg.op != dpkt.dhcp.DHCP_OP_REPLY or msg.xid != xid:
        return None
    opts = dict(msg.opts)
    kind = opts.get(dpkt.dhcp.DHCP_OPT_MSGTYPE)
    if not kind:
        return None
    return kind[0], msg


def _lease(msg: dpkt.dhcp.DHCP) -> Lease:
    opts = dict(msg.opts)
    mask = opts.get(dpkt.dhcp.DHCP_OPT_NETMASK, socket.inet_aton("255.255.255.0"))
    router = opts.get(dpkt.dhcp.DHCP_OPT_ROUTER)
    dns = opts.get(dpkt.dhcp.DHCP_OPT_DNS_SVRS, b"")
    seconds = opts.get(dpkt.dhcp.DHCP_OPT_LEASE_SEC, struct.pack("!I", 3600))
    server = opts.get(dpkt.dhcp.DHCP_OPT_SERVER_ID, b"\0\0\0\0")
    return Lease(
        address=socket.inet_ntoa(struct.pack("!I", msg.yiaddr)),
        prefixlen=ipaddress.IPv4Network(f"0.0.0.0/{socket.inet_ntoa(mask)}").prefixlen,
        router=socket.inet_ntoa(router[:4]) if router else None,
        dns=tuple(socket.inet_ntoa(dns[i:i + 4]) for i in range(0, len(dns) - 3, 4)),
        server=socket.inet_ntoa(server[:4]),
        lease_seconds=struct.unpack("!I", seconds[:4])[0])


def obtain(interface: str, mac: str, *, hostname: str | None, mud_url: str | None,
           timeout: float = 20.0, retry: float = 2.0, requested: str | None = None) -> Lease:
    """Get a lease on ``interface``, announcing ``mud_url`` (asking for the address
    ``requested``, if given); raise ``DhcpError`` on timeout."""
    xid = int.from_bytes(os.urandom(4), "big")
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", 68))  # noqa: S104 - no address yet; bound to the interface
        offer = _exchange(sock, build(_DISCOVER, mac, xid, hostname=hostname, mud_url=mud_url,
                                      requested=requested),
                          xid, _OFFER, deadline, retry)
        offered = socket.inet_ntoa(struct.pack("!I", offer.yiaddr))
        server = dict(offer.opts).get(dpkt.dhcp.DHCP_OPT_SERVER_ID, b"")
        request = build(_REQUEST, mac, xid, hostname=hostname, mud_url=mud_url,
                        requested=offered,
                        server=socket.inet_ntoa(server[:4]) if server else None)
        return _lease(_exchange(sock, request, xid, _ACK, deadline, retry))


def _exchange(sock: socket.socket, wire: bytes, xid: int, want: int, deadline: float,
              retry: float) -> dpkt.dhcp.DHCP:
    while time.monotonic() < deadline:
        sock.sendto(wire, ("255.255.255.255", 67))
        resend = min(deadline, time.monotonic() + retry)
        while (left := resend - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                break
            got = parse(data, xid)
            if got is None:
                continue
            kind, msg = got
            if kind == _NAK:
                raise DhcpError("the DHCP server refused the request (NAK)")
            if kind == want:
                return msg
    raise DhcpError("no answer from a DHCP server in time")


def release(lease: Lease, mac: str) -> None:
    """Give ``lease`` back to its server (DHCPRELEASE, unicast from the leased address,
    which must still be configured)."""
    msg = dpkt.dhcp.DHCP(
        op=dpkt.dhcp.DHCP_OP_REQUEST, chaddr=_mac_bytes(mac),
        xid=int.from_bytes(os.urandom(4), "big"),
        ciaddr=struct.unpack("!I", socket.inet_aton(lease.address))[0],
        opts=[(dpkt.dhcp.DHCP_OPT_MSGTYPE, bytes([_RELEASE])),
              (dpkt.dhcp.DHCP_OPT_SERVER_ID, socket.inet_aton(lease.server))])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((lease.address, 68))
        sock.sendto(bytes(msg), (lease.server, 67))
