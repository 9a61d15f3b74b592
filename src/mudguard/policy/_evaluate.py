"""The flow evaluator: would this flow pass a device's policy?

Theory of operation: a device's ``DevicePolicy`` is an ordered tuple of symbolic
``Rule``s. The nftables compiler (``_nft.py``) turns them into three chains per
device; this module reads the very same rules and walks them the way the kernel
walks those chains, so ``evaluate()`` and the kernel give the same verdict:

- ``ct state established,related accept`` comes before any device rule (after the
  sender's source binding only), so a
  ``Flow`` describes the packet that *opens* a flow (a TCP SYN, the first UDP
  datagram, an ICMP request): replies to an allowed flow are never evaluated.
- A packet the device sends to the gateway itself (one of its addresses, a
  broadcast or a multicast group) meets the ``gw`` chain: the portal's ports are
  dropped, then the ``any_source`` baseline rules, then the source-address
  binding (link-local IPv6 allowed), then, in policy order, the other
  ``PeerKind.GATEWAY`` rules and the from-device MUD rules whose peer covers the
  destination among those the gateway receives itself
  (``_local.local_destinations``: its addresses for local-networks/controller/
  my-controller, multicast and broadcast groups).
- Any other packet the device sends meets the ``out`` chain: source-address
  binding (the device's own addresses only), then every from-device rule whose
  peer is not the gateway, in order.
- A packet to the device meets its ``in`` chain (the to-device rules), unless it
  comes from the gateway itself, whose own output is not filtered. (A flow
  between two managed devices must pass the sender's ``out`` *and* the
  receiver's ``in``: evaluate it once with each device's policy.)
- The first matching rule decides; none means the chain's final drop. The
  per-device new-connection rate cap and the log rule are not modelled (rates,
  not flows).
- Peers are resolved from the ``HomeContext`` (LAN prefixes, controllers, other
  devices) and the ``NameMap`` (addresses the resolver saw in DNS answers to
  this device: the kernel's ``dns4_*``/``dns6_*`` sets). ``direction-initiated``
  (TCP rules only) needs a bare SYN when the rule's side opens the connection,
  and a packet of a connection the other side opened otherwise.

Pure: no I/O, no clock. Addresses are compared as ``ipaddress`` objects, so
``2001:DB8::1`` and ``2001:db8::1`` are the same peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

from mudguard.mud import Direction, Forwarding
from mudguard.policy._local import local_destinations
from mudguard.policy._model import (
    DevicePolicy,
    HomeContext,
    LifecycleState,
    PeerKind,
    Rule,
    peer_device_addresses,
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58


@lru_cache(maxsize=4096)
def _addr(text: str) -> IpAddress:
    return ipaddress.ip_address(text)


@lru_cache(maxsize=4096)
def _net(text: str) -> IpNetwork:
    return ipaddress.ip_network(text, strict=False)


def _norm_name(name: str) -> str:
    return name.lower().rstrip(".")


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """The packet that opens one flow, seen from the device it belongs to.

    ``direction`` is FROM_DEVICE for a packet the device sends, TO_DEVICE for one
    it receives. ``opens`` is True when the packet is a bare SYN (it opens a TCP
    connection); False for a TCP packet conntrack picks up mid-stream. Ignored
    for other protocols.
    """

    direction: Direction
    family: int  # 4 or 6
    src: str
    dst: str
    protocol: int
    src_port: int | None = None
    dst_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    opens: bool = True
    # The Ethernet destination the gateway received the packet with; None: what the
    # IP destination implies (a group MAC for multicast/broadcast, else unknown).
    eth_dst: str | None = None

    def __post_init__(self) -> None:
        if self.family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, got {self.family}")
        for text in (self.src, self.dst):
            if _addr(text).version != self.family:
                raise ValueError(f"address {text!r} is not IPv{self.family}")
        if not 0 <= self.protocol <= 255:
            raise ValueError(f"protocol must be 0..255, got {self.protocol}")
        for port in (self.src_port, self.dst_port):
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"port must be 0..65535, got {port}")

    @property
    def remote(self) -> str:
        """The address of the far side (not the device)."""
        return self.dst if self.direction is Direction.FROM_DEVICE else self.src


@dataclass(frozen=True, slots=True)
class NameMap:
    """Addresses seen in DNS answers for each name (to this device).

    The kernel's counterpart is the ``dns4_*``/``dns6_*`` set of each name.
    """

    by_name: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, str]]) -> NameMap:
        """A map from ``(name, address)`` pairs; names are case-folded, addresses normalised."""
        out: dict[str, set[str]] = {}
        for name, address in pairs:
            out.setdefault(_norm_name(name), set()).add(str(_addr(address)))
        return cls({name: frozenset(addrs) for name, addrs in out.items()})

    def resolves(self, name: str, address: str) -> bool:
        """True if ``address`` was seen in an answer for ``name``."""
        addrs = self.by_name.get(_norm_name(name))
        return addrs is not None and str(_addr(address)) in addrs

    def names_of(self, address: str) -> tuple[str, ...]:
        """Every name whose answers contained ``address``, sorted."""
        text = str(_addr(address))
        return tuple(sorted(n for n, addrs in self.by_name.items() if text in addrs))


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What the policy does with a flow, and which rule decided (None: default drop)."""

    action: Forwarding
    rule: Rule | None = None
    index: int | None = None  # position of ``rule`` in ``policy.rules``
    chain: str = ""  # "out", "in", "gw", or "" (not filtered)
    reason: str = ""  # why, when no rule decided: "default-drop", "source-binding", ...

    @property
    def allowed(self) -> bool:
        """True if the flow is accepted."""
        return self.action is Forwarding.ACCEPT

    @property
    def origin(self) -> str:
        """The rule's origin (``acl/ace``, ``baseline/dns``) or the reason (``default-drop``)."""
        if self.rule is not None:
            return self.rule.origin
        return self.reason or "default-drop"


DEFAULT_DROP = Verdict(action=Forwarding.DROP, reason="default-drop")
LINK_LOCAL6 = "fe80::/10"


def evaluate(policy: DevicePolicy, flow: Flow, context: HomeContext, names: NameMap) -> Verdict:
    """Decide a flow exactly as the compiled ruleset would.

    Args:
        policy: the device's decided policy (``decide()``'s output).
        flow: the packet that opens the flow, relative to ``policy.device``.
        context: the home (LAN prefixes, gateway, controllers, other devices).
        names: addresses the resolver has put in each DNS name's set for this device.

    Returns:
        The first matching rule's verdict, or a drop with its reason
        (``default-drop``, ``source-binding``, ``portal``).
    """
    flow = with_eth_destination(flow, context)
    if flow.direction is Direction.TO_DEVICE:
        if _addr(flow.src) in _Prefixes(context.gateway_addresses):
            return Verdict(action=Forwarding.ACCEPT, reason="gateway-output")
        return _chain(policy, flow, context, names, "in")
    if is_local_delivery(flow.dst, context):
        return _gateway_chain(policy, flow, context, names)
    if not _source_bound(policy, flow, gateway=False):
        return Verdict(action=Forwarding.DROP, chain="out", reason="source-binding")
    return _chain(policy, flow, context, names, "out")


def is_local_delivery(address: str, context: HomeContext) -> bool:
    """True if a packet to ``address`` is for the gateway itself (not forwarded)."""
    ip = _addr(address)
    if ip.is_multicast or ip in _Prefixes(context.gateway_addresses):
        return True
    if ip.version == 4:
        if int(ip) == 0xFFFFFFFF:
            return True
        for prefix in context.lan_prefixes:
            net = _net(prefix)
            if net.version == 4 and net.prefixlen < 31 and ip == net.broadcast_address:
                return True
    return False


BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def with_eth_destination(flow: Flow, context: HomeContext) -> Flow:
    """``flow`` with the Ethernet destination its packet necessarily carries.

    A multicast IP destination travels to its group MAC (RFC 1112 §6.4:
    01:00:5e + the low 23 bits; RFC 2464 §7: 33:33 + the low 32 bits), a
    broadcast one (255.255.255.255, the LAN's directed broadcast) to
    ff:ff:ff:ff:ff:ff; the kernel's ``ether daddr`` sees exactly that. A unicast
    destination's MAC (the gateway's, or a LAN peer's) is not implied: only an
    ``eth_dst`` the flow names can match a rule's unicast MAC.
    """
    if flow.eth_dst is not None:
        return flow
    ip = _addr(flow.dst)
    if ip.is_multicast:
        if ip.version == 4:
            low = int(ip) & 0x7FFFFF
            mac = bytes((0x01, 0x00, 0x5E, low >> 16, (low >> 8) & 0xFF, low & 0xFF))
        else:
            mac = b"\x33\x33" + ip.packed[-4:]
        return replace(flow, eth_dst=":".join(f"{b:02x}" for b in mac))
    if ip.version == 4 and is_local_delivery(flow.dst, context) and (
            int(ip) == 0xFFFFFFFF or ip not in _Prefixes(context.gateway_addresses)):
        return replace(flow, eth_dst=BROADCAST_MAC)
    return flow


def chain_of(rule: Rule) -> str | None:
    """The device chain a rule is compiled into (None: not filtered at all)."""
    if rule.peer is PeerKind.GATEWAY:
        return "gw" if rule.direction is Direction.FROM_DEVICE else None
    return "out" if rule.direction is Direction.FROM_DEVICE else "in"


def _source_bound(policy: DevicePolicy, flow: Flow, *, gateway: bool) -> bool:
    device = policy.device
    own: tuple[str, ...] = device.ipv4 if flow.family == 4 else device.ipv6
    if gateway and flow.family == 6:
        own = (*own, LINK_LOCAL6)
    return _addr(flow.src) in _Prefixes(own)


def _chain(policy: DevicePolicy, flow: Flow, context: HomeContext, names: NameMap,
           chain: str) -> Verdict:
    for index, rule in enumerate(policy.rules):
        if chain_of(rule) == chain and rule_matches(rule, flow, policy, context, names):
            return Verdict(action=rule.action, rule=rule, index=index, chain=chain)
    return Verdict(action=Forwarding.DROP, chain=chain, reason="default-drop")


def _gateway_chain(policy: DevicePolicy, flow: Flow, context: HomeContext,
                   names: NameMap) -> Verdict:
    if (context.portal_ports and policy.state is not LifecycleState.TRUSTED
            and flow.protocol == TCP and flow.dst_port in context.portal_ports):
        return Verdict(action=Forwarding.DROP, chain="gw", reason="portal")
    ordered = [(i, r) for i, r in enumerate(policy.rules) if chain_of(r) == "gw"]
    early = [(i, r) for i, r in ordered if r.any_source]
    early_ids = {i for i, _ in early}
    for index, rule in early:
        if rule_matches(rule, flow, policy, context, names):
            return Verdict(action=rule.action, rule=rule, index=index, chain="gw")
    if not _source_bound(policy, flow, gateway=True):
        return Verdict(action=Forwarding.DROP, chain="gw", reason="source-binding")
    for index, rule in enumerate(policy.rules):
        if index in early_ids:
            continue
        if chain_of(rule) == "gw":
            hit = rule_matches(rule, flow, policy, context, names)
        else:
            hit = _delivered_match(rule, flow, policy, context)
        if hit:
            return Verdict(action=rule.action, rule=rule, index=index, chain="gw")
    return Verdict(action=Forwarding.DROP, chain="gw", reason="default-drop")


def rule_matches(rule: Rule, flow: Flow, policy: DevicePolicy, context: HomeContext,
                 names: NameMap) -> bool:
    """True if every test of ``rule`` holds for ``flow`` (in the rule's own chain)."""
    if rule.direction is not flow.direction:
        return False
    if _needs_family(rule) and flow.family not in _families(rule):
        return False
    if not _layer4_matches(rule, flow):
        return False
    if rule.peer is PeerKind.GATEWAY:
        # In the gateway's chain the destination is the gateway by construction; a MUD
        # service class (``GATEWAY_SERVICES``) reaches the gateway's own addresses only.
        return rule.peer_value is None or _addr(flow.dst) in _Prefixes(context.gateway_addresses)
    return _peer_matches(rule, flow, policy, context, names)


def _delivered_match(rule: Rule, flow: Flow, policy: DevicePolicy,
                     context: HomeContext) -> bool:
    """True if a from-device rule matches a flow the gateway receives itself."""
    if rule.direction is not flow.direction or flow.family not in _families(rule):
        return False
    if not _layer4_matches(rule, flow):
        return False
    destinations = local_destinations(rule, policy.device, context)
    return bool(destinations) and _addr(flow.dst) in _Prefixes(destinations)


def _families(rule: Rule) -> tuple[int, ...]:
    """The address families a rule is compiled for (``_nft._families``)."""
    families: tuple[int, ...] = (4, 6) if rule.family is None else (rule.family,)
    if rule.protocol == ICMP:
        families = tuple(f for f in families if f == 4)
    elif rule.protocol == ICMPV6:
        families = tuple(f for f in families if f == 6)
    if _typed_icmp(rule) and rule.protocol not in (ICMP, ICMPV6):
        wanted = 6 if rule.family == 6 else 4
        families = tuple(f for f in families if f == wanted)
    return families


def _needs_family(rule: Rule) -> bool:
    return (rule.family is not None or rule.peer not in (PeerKind.ANY, PeerKind.GATEWAY)
            or (rule.peer is PeerKind.GATEWAY and rule.peer_value is not None)
            or rule.also_local or rule.protocol in (ICMP, ICMPV6) or _typed_icmp(rule))


def _typed_icmp(rule: Rule) -> bool:
    """The rule tests the ICMP type or code (``_nft._typed_icmp``)."""
    return rule.icmp_type is not None or rule.icmp_code is not None


def _layer4_matches(rule: Rule, flow: Flow) -> bool:
    if rule.ethertype is not None:
        wanted = ETHERTYPE_IPV4 if flow.family == 4 else ETHERTYPE_IPV6
        if rule.ethertype != wanted:
            return False
    if rule.eth_dst is not None and (flow.eth_dst is None
                                     or rule.eth_dst.lower() != flow.eth_dst.lower()):
        return False
    has_ports = rule.protocol in (TCP, UDP) and bool(rule.src_port or rule.dst_port)
    typed_icmp = _typed_icmp(rule)
    if (rule.protocol is not None and not has_ports and not typed_icmp
            and flow.protocol != rule.protocol):
        return False
    if has_ports:
        if flow.protocol != rule.protocol:
            return False
        for match, port in ((rule.src_port, flow.src_port), (rule.dst_port, flow.dst_port)):
            if match is not None and (port is None or not match.contains(port)):
                return False
    if typed_icmp:
        # "icmp type" in IPv4, "icmpv6 type" in IPv6: the payload match implies the protocol.
        if flow.protocol != (ICMP if flow.family == 4 else ICMPV6):
            return False
        if rule.icmp_type is not None and flow.icmp_type != rule.icmp_type:
            return False
        if rule.icmp_code is not None and flow.icmp_code != rule.icmp_code:
            return False
    if rule.protocol == TCP and rule.initiated is not None:
        # The rule's side opens: only a bare SYN matches (never a picked-up mid-stream
        # packet). The other side opens: compiled to "ct direction reply", which only
        # packets of an existing connection carry, and those conntrack accepts before
        # any device chain: such a rule admits no new flow.
        return rule.initiated is rule.direction and flow.protocol == TCP and flow.opens
    return True


def _peer_matches(rule: Rule, flow: Flow, policy: DevicePolicy, context: HomeContext,
                  names: NameMap) -> bool:
    remote = _addr(flow.remote)
    if rule.also_local and not _in_any(remote, context.lan_prefixes):
        return False
    if rule.peer is PeerKind.INTERNET:
        return not _in_any(remote, context.lan_prefixes)
    return remote in _peer_addresses(rule, remote, policy, context, names)
class _Everything:
    """The ``PeerKind.ANY`` peer: contains every address."""

    def __contains__(self, item: object) -> bool:
        return True


class _Prefixes:
    """A peer given as prefixes (networks or single addresses)."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        self._nets = tuple(_net(p) for p in prefixes)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, IpAddress) and any(
            item.version == n.version and item in n for n in self._nets)


def _peer_addresses(rule: Rule, remote: IpAddress, policy: DevicePolicy, context: HomeContext,
                    names: NameMap) -> _Everything | _Prefixes | frozenset[IpAddress]:
    kind, value = rule.peer, rule.peer_value
    if kind is PeerKind.ANY:
        return _Everything()
    if kind is PeerKind.DNSNAME:
        hit = value is not None and names.resolves(value, str(remote))
        return frozenset({remote}) if hit else frozenset()
    if kind is PeerKind.NETWORK:
        return _Prefixes((value,) if value else ())
    if kind is PeerKind.LOCAL_NETWORKS:
        return _Prefixes(context.lan_prefixes)
    if kind is PeerKind.GATEWAY:
        return _Prefixes(context.gateway_addresses)
    if kind is PeerKind.CONTROLLER:
        return _Prefixes(context.controllers.get(value or "", ()))
    if kind is PeerKind.MY_CONTROLLER:
        url = policy.device.mud_url or ""
        return _Prefixes(context.my_controllers.get(url, ()))
    return _Prefixes(peer_device_addresses(kind, value, policy.device, context))


def _in_any(address: IpAddress, prefixes: Iterable[str]) -> bool:
    return address in _Prefixes(prefixes)
