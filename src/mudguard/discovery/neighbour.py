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

import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from mudguard.devices._model import MacError, MudSource, device_mac
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

    Only new/updated entries in a usable state with a unicast 6-byte link-layer address
    (``device_mac``) and a usable (not link-local, loopback, multicast…) address; with
    ``ifindex``, only entries of that interface. Malformed messages end the parse; never raises.
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
        try:  # an entry claiming an all-zero or group link-layer address names no device
            mac = device_mac(lladdr.hex())
        except MacError:
            continue
        sightings.append(Sighting(mac=mac, ip=address, source=MudSource.NEIGHBOUR))
    return sightings


RTM_NEWADDR, RTM_GETADDR, NLMSG_DONE, NLMSG_ERROR = 20, 22, 3, 2
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS = 1
_IFADDRMSG = struct.Struct("=BBBBI")


def parse_addr_messages(data: bytes, *, ifindex: int) -> tuple[list[ipaddress.IPv6Network], bool]:
    """The IPv6 prefixes (not link-local) of interface ``ifindex`` in one read of an
    RTM_GETADDR dump, and whether the dump ended. Never raises."""
    prefixes: list[ipaddress.IPv6Network] = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size or offset + length > len(data):
            return prefixes, True
        body = data[offset + _NLMSG.size:offset + length]
        offset += (length + 3) & ~3
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            return prefixes, True
        if kind != RTM_NEWADDR or len(body) < _IFADDRMSG.size:
            continue
        family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(body)
        address = _attributes(body[_IFADDRMSG.size:]).get(IFA_ADDRESS, b"")
        if family != socket.AF_INET6 or index != ifindex or len(address) != 16:
            continue
        network = ipaddress.IPv6Network((address, prefixlen), strict=False)
        if not network.is_link_local:
            prefixes.append(network)
    return prefixes, False


def on_link(sightings: list[Sighting], prefixes: list[ipaddress.IPv6Network]) -> list[Sighting]:
    """The sightings whose address is in one of the LAN's own prefixes.

    The kernel makes a neighbour entry for the source of any neighbour solicitation, so
    a device can "claim" an address of another prefix (an Internet server's, the
    upstream resolver's): taken as the device's, it would put that address's traffic
    from every other device through this device's rules.
    """
    return [s for s in sightings if s.ip is not None
            and any(ipaddress.ip_address(s.ip) in net for net in prefixes)]


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
        # A second socket (opened here, so in the same namespace) asks for the LAN's
        # current prefixes; they change with the ISP's delegation, so per read.
        self._addr = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self._sock.bind((0, RTMGRP_NEIGH))
            self._addr.bind((0, 0))
        except OSError:
            self._sock.close()
            self._addr.close()
            raise
        self._seq = 0

    def prefixes(self) -> list[ipaddress.IPv6Network]:
        """The interface's IPv6 prefixes now (link-local excluded); empty on failure."""
        self._seq += 1
        request = _NLMSG.pack(_NLMSG.size + _IFADDRMSG.size, RTM_GETADDR,
                              NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0)
        request += _IFADDRMSG.pack(socket.AF_INET6, 0, 0, 0, 0)
        found: list[ipaddress.IPv6Network] = []
        try:
            self._addr.settimeout(1.0)
            self._addr.send(request)
            for _ in range(64):  # bounded: a dump is a few reads
                part, done = parse_addr_messages(self._addr.recv(MAX_BUFFER),
                                                 ifindex=self.ifindex)
                found += part
                if done:
                    return found
        except OSError as exc:
            log.warning("cannot read the IPv6 prefixes of %s: %s", self.interface, exc)
        return found

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
        return on_link(parse_neigh_messages(data, ifindex=self.ifindex), self.prefixes())

    def drain(self, on_sighting: Callable[[Sighting], object], max_reads: int = 64) -> int:
        """Pass the sightings already queued to ``on_sighting`` without waiting."""
        passed = 0
        for _ in range(max_reads):
            try:
                data = self._sock.recv(MAX_BUFFER, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            sightings = parse_neigh_messages(data, ifindex=self.ifindex)
            for sighting in on_link(sightings, self.prefixes() if sightings else []):
                on_sighting(sighting)
                passed += 1
        return passed

    def close(self) -> None:
        """Close the sockets."""
        self._sock.close()
        self._addr.close()

    def __enter__(self) -> NeighbourWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
