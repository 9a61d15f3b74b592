"""The flow evaluator: would this flow pass a device's policy?

Theory of operation: a device's ``DevicePolicy`` is an ordered tuple of symbolic
``Rule``s. The nftables compiler (``_nft.py``) turns each rule into one kernel
rule; this module reads the very same rules and answers, for one ``Flow``, which
rule the kernel would hit first and what it does. The semantics mirror the
kernel ruleset:

- ``ct state established,related accept`` comes before any device chain, so a
  ``Flow`` describes the packet that *opens* a connection (or, for UDP/ICMP, the
  first packet of an exchange): replies to an allowed flow are never evaluated.
- Rules are tried in order; the first rule whose every test matches decides.
  No rule matching means the chain's final drop (``default drop``).
- Peers are resolved from the ``HomeContext`` (local networks, the gateway,
  controllers, other devices) and from the ``NameMap`` (addresses the resolver
  saw in DNS answers to this device, i.e. the kernel's ``dns4_*``/``dns6_*`` sets).
- ``initiated`` (RFC 8520 ``direction-initiated``, TCP only) matches when the
  connection was opened by that side: the packet's sender if the packet opens
  the connection (a SYN), the other side otherwise.

Pure: no I/O, no clock. Addresses are compared as ``ipaddress`` objects, so
``2001:DB8::1`` and ``2001:db8::1`` are the same peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from mudguard.mud import Direction, Forwarding
from mudguard.policy._model import DevicePolicy, HomeContext, PeerKind, Rule

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
TCP = 6


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
    it receives. ``opens`` is True when the packet opens a TCP connection (a SYN
    without ACK); for other protocols it is ignored.
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

    @property
    def initiator(self) -> Direction:
        """Which side opened the connection this packet belongs to."""
        sender_is_device = self.direction is Direction.FROM_DEVICE
        device_opened = sender_is_device if self.opens else not sender_is_device
        return Direction.FROM_DEVICE if device_opened else Direction.TO_DEVICE


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

    @property
    def allowed(self) -> bool:
        """True if the flow is accepted."""
        return self.action is Forwarding.ACCEPT

    @property
    def origin(self) -> str:
        """The rule's origin (``acl/ace``, ``baseline/dns``) or ``default-drop``."""
        return self.rule.origin if self.rule is not None else "default-drop"


DEFAULT_DROP = Verdict(action=Forwarding.DROP)


def evaluate(policy: DevicePolicy, flow: Flow, context: HomeContext, names: NameMap) -> Verdict:
    """Decide a flow exactly as the compiled ruleset would.

    Args:
        policy: the device's decided policy (``decide()``'s output).
        flow: the packet that opens the flow, relative to ``policy.device``.
        context: the home (LAN prefixes, gateway, controllers, other devices).
        names: addresses the resolver has put in each DNS name's set for this device.

    Returns:
        The first matching rule's verdict, or ``DEFAULT_DROP``.
    """
    for index, rule in enumerate(policy.rules):
        if rule_matches(rule, flow, policy, context, names):
            return Verdict(action=rule.action, rule=rule, index=index)
    return DEFAULT_DROP


def rule_matches(rule: Rule, flow: Flow, policy: DevicePolicy, context: HomeContext,
                 names: NameMap) -> bool:
    """True if every test of ``rule`` holds for ``flow``."""
    return (rule.direction is flow.direction
            and _layer2_matches(rule, flow)
            and _layer4_matches(rule, flow)
            and _peer_matches(rule, flow, policy, context, names))


def _layer2_matches(rule: Rule, flow: Flow) -> bool:
    if rule.family is not None and rule.family != flow.family:
        return False
    if rule.ethertype is not None:
        wanted = ETHERTYPE_IPV4 if flow.family == 4 else ETHERTYPE_IPV6
        if rule.ethertype != wanted:
            return False
    return rule.eth_dst is None or (flow.eth_dst is not None
                                    and rule.eth_dst.lower() == flow.eth_dst.lower())


def _layer4_matches(rule: Rule, flow: Flow) -> bool:
    if rule.protocol is not None and rule.protocol != flow.protocol:
        return False
    for match, port in ((rule.src_port, flow.src_port), (rule.dst_port, flow.dst_port)):
        if match is not None and (port is None or not match.contains(port)):
            return False
    if rule.icmp_type is not None and rule.icmp_type != flow.icmp_type:
        return False
    if rule.icmp_code is not None and rule.icmp_code != flow.icmp_code:
        return False
    if rule.initiated is not None:
        # RFC 8520 §2.1: direction-initiated only constrains TCP.
        return flow.protocol != TCP or rule.initiated is flow.initiator
    return True


def _peer_matches(rule: Rule, flow: Flow, policy: DevicePolicy, context: HomeContext,
                  names: NameMap) -> bool:
    remote = _addr(flow.remote)
    if rule.also_local and not _in_any(remote, context.lan_prefixes):
        return False
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
    return _Prefixes(_device_addresses(kind, value, policy, context))


def _device_addresses(kind: PeerKind, value: str | None, policy: DevicePolicy,
                      context: HomeContext) -> tuple[str, ...]:
    """Addresses of the other devices a manufacturer/model abstraction names (RFC 8520 §8)."""
    me = policy.device
    out: list[str] = []
    for other in context.devices:
        if other.mac == me.mac:
            continue
        if kind is PeerKind.SAME_MANUFACTURER:
            hit = me.manufacturer is not None and other.manufacturer == me.manufacturer
        elif kind is PeerKind.MANUFACTURER:
            hit = value is not None and other.manufacturer == value.lower()
        else:  # PeerKind.MODEL
            hit = value is not None and other.mud_url == value
        if hit:
            out.extend(other.ipv4 + other.ipv6)
    return tuple(out)


def _in_any(address: IpAddress, prefixes: Iterable[str]) -> bool:
    return address in _Prefixes(prefixes)
