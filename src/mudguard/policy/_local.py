"""Which destinations of a from-device rule the gateway receives itself.

Theory of operation: a packet a device sends to one of the gateway's own
addresses, to a multicast group or to a broadcast address is not forwarded: the
kernel delivers it to the gateway's ``input`` hook, where the device's ``gw``
chain decides. So a MUD rule whose peer covers such destinations (mDNS to
224.0.0.251, SSDP to 239.255.255.250, IGMP/MLD reports, Tuya's broadcast, NTP
to a ``my-controller`` that is the gateway) must be applied there too, and only
for those destinations. ``local_destinations()`` says which; the compiler
(``_nft.py``) and the evaluator (``_evaluate.py``) both call it, so they agree.

What a peer covers on the gateway:

==========================================  ==========================================
peer                                        destinations delivered to the gateway
==========================================  ==========================================
``NETWORK`` (an explicit prefix)            its multicast/broadcast part only: a MUD
                                            file cannot know the gateway's unicast
                                            addresses, and ``0.0.0.0/0`` must not open
                                            the gateway's services
``LOCAL_NETWORKS``                          multicast and the LAN's broadcasts only:
                                            the gateway's own services (its management
                                            plane) are not "the local network" a
                                            device may reach; to let a device use a
                                            gateway service, the owner configures the
                                            gateway as its (my-)controller
``CONTROLLER`` / ``MY_CONTROLLER``          the gateway's addresses and groups among
                                            the controller's addresses
``ANY``, ``INTERNET``, ``DNSNAME``, device  nothing: "anything" is not a licence for the
peers (manufacturer, model)                 gateway's own services; the resolver never
                                            puts local addresses in a DNS set
==========================================  ==========================================

Only MUD-derived rules (``Rule.local_delivery``) are extended this way; the
state's synthesised rules (home default, LAN only, grants) are not. ``also_local``
(local-networks combined with another peer, as the UNSW files write mDNS/SSDP:
``local-networks`` + ``224.0.0.251/32``) keeps its meaning: the destination must
also be local, i.e. in the LAN prefixes or a group the gateway receives, which
never leaves the home's link (the gateway does not route multicast). The
portal's ports stay dropped first in the ``gw`` chain whatever a rule says.

Pure: data in, data out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

from mudguard.mud import Direction
from mudguard.policy._model import DeviceFacts, HomeContext, PeerKind, Rule

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Groups every host on the link receives: all multicast, the limited broadcast.
GROUPS: Final[tuple[str, ...]] = ("224.0.0.0/4", "255.255.255.255/32", "ff00::/8")


@lru_cache(maxsize=4096)
def _net(text: str) -> IpNetwork:
    return ipaddress.ip_network(text, strict=False)


def group_destinations(context: HomeContext) -> tuple[str, ...]:
    """Multicast, the limited broadcast and each IPv4 LAN prefix's directed broadcast."""
    return _groups(context.lan_prefixes)


@lru_cache(maxsize=256)
def _groups(lan_prefixes: tuple[str, ...]) -> tuple[str, ...]:
    out = list(GROUPS)
    for prefix in lan_prefixes:
        net = _net(prefix)
        if net.version == 4 and net.prefixlen < 31:
            out.append(f"{net.broadcast_address}/32")
    return tuple(out)


def _intersect(peers: Iterable[str], targets: Iterable[str]) -> list[IpNetwork]:
    """The parts of ``peers`` inside ``targets`` (prefixes either nest or are disjoint)."""
    nets = [_net(t) for t in targets]
    out: list[IpNetwork] = []
    for text in peers:
        peer = _net(text)
        for target in nets:
            if peer.version != target.version:
                continue
            if target.subnet_of(peer):  # type: ignore[arg-type]
                out.append(target)
            elif peer.subnet_of(target):  # type: ignore[arg-type]
                out.append(peer)
    return out


def _peer_prefixes(rule: Rule, device: DeviceFacts, context: HomeContext) -> tuple[str, ...]:
    if rule.peer is PeerKind.NETWORK:
        return (rule.peer_value,) if rule.peer_value else ()
    if rule.peer is PeerKind.LOCAL_NETWORKS:
        return context.lan_prefixes
    if rule.peer is PeerKind.CONTROLLER:
        return context.controllers.get(rule.peer_value or "", ())
    if rule.peer is PeerKind.MY_CONTROLLER:
        return context.my_controllers.get(device.mud_url or "", ())
    return ()


def local_destinations(rule: Rule, device: DeviceFacts,
                       context: HomeContext) -> tuple[str, ...]:
    """The destinations (prefixes) of ``rule`` that the gateway receives itself.

    Empty when the rule does not apply in the device's ``gw`` chain: to-device
    rules, ``PeerKind.GATEWAY`` rules (already there), rules not from the MUD
    file, and peers that cover no local destination (see the module's table).
    """
    if (rule.direction is not Direction.FROM_DEVICE or not rule.local_delivery
            or rule.peer is PeerKind.GATEWAY):
        return ()
    peers = _peer_prefixes(rule, device, context)
    if not peers:
        return ()
    groups = group_destinations(context)
    unicast_ok = rule.peer in (PeerKind.CONTROLLER, PeerKind.MY_CONTROLLER)
    targets = (*context.gateway_addresses, *groups) if unicast_ok else groups
    # A group delivered to the gateway never leaves the home's link: it is local.
    local = (*context.lan_prefixes, *groups) if rule.also_local else None
    return _covered(tuple(peers), tuple(targets), local)


@lru_cache(maxsize=4096)
def _covered(peers: tuple[str, ...], targets: tuple[str, ...],
             local: tuple[str, ...] | None) -> tuple[str, ...]:
    """``peers`` ∩ ``targets`` (∩ ``local`` if given), merged, IPv4 first (cached: a home
    compiles the same few peers over and over)."""
    found = _intersect(peers, targets)
    if local is not None:
        found = _intersect([str(n) for n in found], local)
    v4 = [n for n in found if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in found if isinstance(n, ipaddress.IPv6Network)]
    merged = [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
    return tuple(str(n) for n in merged)
