"""IPv6 addresses of known devices from the gateway's neighbour table.

Most devices give themselves IPv6 addresses by SLAAC (and rotate privacy
addresses), so DHCPv6 never reports them; without them the device's IPv6 traffic
would match no rule (fail closed, but broken). The kernel announces every
neighbour entry it creates or updates over rtnetlink (``RTMGRP_NEIGH``); this
module reads those announcements (event-driven, no polling) and turns each
usable IPv6 entry into a ``Sighting(source=NEIGHBOUR)`` carrying no MUD URL.

An entry is what a device *claims* (its own neighbour advertisements), so the
intake trusts it less than a DHCP lease: it only adds an address to a device the
store already knows, and never one another device holds (``Intake`` enforces
both). IPv4 entries are ignored: IPv4 addresses come from dnsmasq's leases.

``parse_neigh_messages`` is pure (bytes in, sightings out); ``NeighbourWatcher``
is the adapter (a raw NETLINK_ROUTE socket bound to the neighbour group).
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable

from mudguard.devices._model import MudSource
from mudguard.discovery.sighting import Sighting, usable_address

log = logging.getLogger(__name__)

RTM_NEWNEIGH = 28
RTMGRP_NEIGH = 0x4
NDA_DST, NDA_LLADDR = 1, 2
# Entries that say the address answered from this link-layer address.
_NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE STALE DELAY PROBE PERMANENT
_NLMSG = struct.Struct("=IHHII")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTA = struct.Struct("=HH")
MAX_BUFFER = 1 << 16


def _attributes(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size or offset + length > len(data):
            break  # malformed: keep what was read
        found.setdefault(kind, data[offset + _RTA.size:offset + length])
        offset += (length + 3) & ~3
    return found


def parse_neigh_messages(data: bytes, *, ifindex: int | None = None) -> list[Sighting]:
    """The IPv6 neighbour sightings in one rtnetlink read (several messages possible).

    Only new/updated entries in a usable state with a 6-byte link-layer address and a
    usable (not link-local, loopback, multicast…) address; with ``ifindex``, only
    entries of that interface. Malformed messages end the parse; never raises.
    """
    sightings: list[Sighting] = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size or offset + length > len(data):
            break
        body = data[offset + _NLMSG.size:offset + length]
        offset += (length + 3) & ~3
        if kind != RTM_NEWNEIGH or len(body) < _NDMSG.size:
            continue
        family, index, state, _ndflags, _type = _NDMSG.unpack_from(body)
        if family != socket.AF_INET6 or not state & _NUD_USABLE:
            continue
        if ifindex is not None and index != ifindex:
            continue
        attrs = _attributes(body[_NDMSG.size:])
        dst, lladdr = attrs.get(NDA_DST, b""), attrs.get(NDA_LLADDR, b"")
        if len(dst) != 16 or len(lladdr) != 6:
            continue
        address = usable_address(socket.inet_ntop(socket.AF_INET6, dst))
        if address is None:
            continue
        mac = ":".join(f"{b:02x}" for b in lladdr)
        sightings.append(Sighting(mac=mac, ip=address, source=MudSource.NEIGHBOUR))
    return sightings


class NeighbourWatcher:
    """Reads neighbour-table announcements for one interface (the LAN bridge).

    Construct it in the gateway's network namespace: a netlink socket stays in the
    namespace it was opened in.
    """

    def __init__(self, interface: str) -> None:
        """Subscribe to neighbour events; raises ``OSError`` if the interface is unknown."""
        self.interface = interface
        self.ifindex = socket.if_nametoindex(interface)
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self._sock.bind((0, RTMGRP_NEIGH))
        except OSError:
            self._sock.close()
            raise

    @classmethod
    def open(cls, interface: str) -> NeighbourWatcher | None:
        """The watcher, or None (with one log line) when the interface is missing:
        neighbour learning is then off and everything else runs."""
        try:
            return cls(interface)
        except OSError as exc:
            log.error("IPv6 neighbour learning off on %s: %s", interface, exc.strerror or exc)
            return None

    def fileno(self) -> int:
        """The socket's descriptor (for selectors and ``loop.add_reader``)."""
        return self._sock.fileno()

    def receive(self, timeout: float | None = None) -> list[Sighting]:
        """Wait up to ``timeout`` s for one read; its sightings (empty on timeout)."""
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(MAX_BUFFER)
        except TimeoutError:
            return []
        return parse_neigh_messages(data, ifindex=self.ifindex)

    def drain(self, on_sighting: Callable[[Sighting], object], max_reads: int = 64) -> int:
        """Pass the sightings already queued to ``on_sighting`` without waiting."""
        passed = 0
        for _ in range(max_reads):
            try:
                data = self._sock.recv(MAX_BUFFER, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            for sighting in parse_neigh_messages(data, ifindex=self.ifindex):
                on_sighting(sighting)
                passed += 1
        return passed

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> NeighbourWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
