"""Decide what one device may do: its lifecycle state selects the rules.

Theory of operation: ``decide()`` is pure. It turns the device's facts, its MUD
file (if any), the owner's grants and the home's context into a ``DevicePolicy``
whose rules are flat and symbolic (``PeerKind``); the compiler and the flow
evaluator both read those rules, so they cannot disagree.

Rule order is evaluation order (first match wins):

1. the baseline (``_baseline.py``), unless the device is forgotten;
2. the owner's DENY and PAUSE grants (so they override what follows; a PAUSE, which
   drops the Internet both ways, also holds for a trusted device);
3. what the state allows (table below);
4. the owner's other active grants (LAN, INTERNET, SERVICE).

========================  =========================================================
state                     rules
========================  =========================================================
PROFILED                  the MUD ACEs (falls back to DEFAULT when no MUD file)
DEFAULT                   the home default: "internet" (Internet only) or "lan"
OUT_OF_SUPPORT            LAN only
QUARANTINED               the ACEs the MUD file enables during quarantine
                          (draft-richardson-shg-mud-quarantined-access), else
                          MUD rules whose DNS name lies in the maker's domain;
                          plus the ACEs the owner excepted for the device
TRUSTED                   everything out; anything from the LAN in
NEW                       baseline only
FORGOTTEN                 nothing at all (not even the baseline)
========================  =========================================================

Owner grants do not apply to quarantined or forgotten devices.

Fail closed (issue #13): the kernel never allows what the MUD file does not name.
Every match field of RFC 8519 (``ietf-packet-fields``) and RFC 8520 is either
enforced or makes the ACE allow nothing; ``mudguard.mud.ace_limits`` decides which,
the parser warns about each one (``mud check`` prints it) and ``ace_rules`` obeys.
"Allows nothing" means: an accepting ACE gives no rule; a dropping ACE gives its
rule without that field, so it drops more, never less (skipping a drop would let a
later accept through). A field that can never hold (a well-known class whose
service the ACE excludes) gives no rule whatever the action. Tested against a
literal oracle over random mutants of the corpus (``tests/fail_closed.py``).

==================================  =====================================================
field (container.member)            handling
==================================  =====================================================
eth.ethertype                       enforced (``meta protocol``)
eth.destination-mac-address         enforced (``ether daddr``)
eth.source-mac-address, both masks  allows nothing (warning)
ipv4/ipv6.protocol                  enforced (``meta l4proto``, or implied by the
                                    transport/ICMP match)
destination network (from-device),  enforced: the peer (``ip daddr`` / ``ip saddr``);
source network (to-device)          the device's own address is bound separately
source network (from-device),       the device's own side: allows nothing (warning);
destination network (to-device)     never becomes "any peer". Choice: a MUD file
                                    cannot know the home's addressing, so a test of
                                    the device's own address is not enforced
acldns dst-dnsname (from-device),   enforced: the peer, through the device's DNS sets
src-dnsname (to-device)
acldns src-dnsname (from-device),   the device's own side: allows nothing (warning)
dst-dnsname (to-device)
ipv4/ipv6 dscp, ecn, ttl, length,   allows nothing (warning): a per-packet header
ipv6 flow-label, ipv4 ihl, flags,   field; the gateway judges a flow by its opening
offset, identification              packet and conntrack admits the rest, and the
                                    forward hook sees a decremented TTL and
                                    reassembled fragments
tcp/udp source-port,                enforced (``th sport``/``dport``: eq, neq, lte,
destination-port                    gte, range)
tcp sequence-number, acknowledge-   allows nothing (warning)
ment-number, data-offset,
reserved, flags, window-size,
urgent-pointer, options; udp length
icmp type, code                     enforced, each on its own (``icmp``/``icmpv6``)
icmp rest-of-header                 allows nothing (warning)
egress-/ingress-interface           the file is refused (error): a MUD file cannot
                                    name the gateway's interfaces
mud direction-initiated (tcp)       enforced on accepts (a bare SYN, or ``ct direction
                                    reply``); a drop ignores it (drops more)
mud manufacturer, same-manufac-     enforced: addresses of the home's devices with that
turer, model                        MUD URL authority / MUD URL
mud local-networks                  enforced: the LAN prefixes (and the groups and
                                    broadcasts that never leave the link); beside
                                    another peer, both must hold
mud my-controller                   enforced: the owner's controllers for this MUD URL
mud controller                      ``urn:ietf:params:mud:dns``: the gateway's own
                                    addresses, UDP/TCP 53; ``...:ntp``: UDP 123 (each
                                    intersected with the rest of the ACE: an ACE that
                                    excludes the service matches nothing); any other
                                    class (``...:gateway``, ``...:dhcp``, URIs, bare
                                    names like ``bacnet``): the owner's controllers of
                                    that class only, never the gateway as a whole
two peers in one ACE (e.g.          allows nothing (warning): peers are not intersected
manufacturer + model, controller    (local-networks aside)
+ a network)
==================================  =====================================================
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Final, Literal

from publicsuffixlist import PublicSuffixList

from mudguard.mud import (
    GATEWAY_SERVICES,
    Ace,
    AclType,
    Direction,
    Forwarding,
    Matches,
    MudFile,
    PortMatch,
    PortOperator,
    ace_limits,
    service_ports,
)
from mudguard.policy._baseline import baseline_rules
from mudguard.policy._model import (
    DeviceFacts,
    DevicePolicy,
    Grant,
    GrantKind,
    HomeContext,
    LifecycleState,
    PeerKind,
    Rule,
)

HomeDefault = Literal["internet", "lan"]

FROM, TO = Direction.FROM_DEVICE, Direction.TO_DEVICE
ACCEPT = Forwarding.ACCEPT

@functools.cache
def _public_suffixes() -> PublicSuffixList:
    """The Public Suffix List bundled with ``publicsuffixlist`` (ICANN and private
    sections: ``vendor.github.io`` is its owner's, not GitHub's). Read once."""
    return PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def registrable_domain(host: str | None) -> str | None:
    """The registrable part of a host name: ``mud.example.co.uk`` -> ``example.co.uk``.

    Returns ``None`` for empty input, IP address literals, and names that are a public
    suffix themselves (``github.io``: no one maker owns it).
    """
    if not host:
        return None
    host = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        pass
    domain: str | None = _public_suffixes().privatesuffix(host)
    return domain


def in_domain(name: str, domain: str) -> bool:
    """True if DNS ``name`` is ``domain`` or one of its subdomains."""
    name = name.lower().rstrip(".")
    return name == domain or name.endswith("." + domain)


# -- MUD ACEs to rules ---------------------------------------------------------------------


def _peer(ace: Ace, direction: Direction) -> tuple[PeerKind, str | None, bool]:
    """The far side of an ACE: (kind, value, also_local). Only the far side's fields count:
    the device's own side never becomes the peer (``ace_limits`` reports it)."""
    m, ip = ace.matches.mud, ace.matches.ip
    local = bool(m and m.local_networks)
    if m is not None:
        if m.same_manufacturer:
            return PeerKind.SAME_MANUFACTURER, None, local
        if m.manufacturer:
            return PeerKind.MANUFACTURER, m.manufacturer.lower(), local
        if m.model:
            return PeerKind.MODEL, m.model, local
        if m.my_controller:
            return PeerKind.MY_CONTROLLER, None, local
        if m.controller:
            if m.controller in GATEWAY_SERVICES:
                return PeerKind.GATEWAY, m.controller, False
            return PeerKind.CONTROLLER, m.controller, local
    if ip is not None:
        name = ip.dst_dnsname if direction is FROM else ip.src_dnsname
        if name:
            return PeerKind.DNSNAME, name.lower().rstrip("."), local
        network = ip.dst_network if direction is FROM else ip.src_network
        if network:
            return PeerKind.NETWORK, network, local
    if local:
        return PeerKind.LOCAL_NETWORKS, None, False
    return PeerKind.ANY, None, False


_ACL_FAMILY: Final = {AclType.IPV4: 4, AclType.MIXED_ETH_IPV4: 4,
                      AclType.IPV6: 6, AclType.MIXED_ETH_IPV6: 6}


def ace_rules(ace: Ace, direction: Direction, origin: str,
              acl_type: AclType | None = None) -> tuple[Rule, ...]:
    """One MUD ACE as flat symbolic rules (packet fields relative to ``direction``).

    Fail closed (see the module's field table): an ACE whose match can never hold gives
    no rule; an accepting ACE with anything mudguard cannot enforce gives no rule (it
    allows nothing); a dropping one gives its rule without those fields (it drops more).
    A dropping TCP ACE ignores ``direction-initiated`` for the same reason. A gateway
    service class (``GATEWAY_SERVICES``) gives one rule per service port the ACE allows.

    The address family comes from the ACE's ``ipv4``/``ipv6`` match, else from the
    ACL's type (an ``ipv4-acl-type`` ACL with only a MUD abstraction is IPv4 only).
    """
    limits = ace_limits(ace, direction)
    if any(limit.never for limit in limits):
        return ()
    if limits and ace.action is ACCEPT:
        return ()
    matches = ace.matches
    kind, value, also_local = _peer(ace, direction)
    transport, icmp, eth = matches.transport, matches.icmp, matches.eth
    initiated = None
    if transport is not None and transport.protocol == 6 and ace.action is ACCEPT:
        initiated = transport.direction_initiated  # RFC 8520 §2.1: TCP only
    rule = Rule(
        direction=direction,
        action=ace.action,
        family=(matches.ip.version if matches.ip is not None
                else _ACL_FAMILY.get(acl_type) if acl_type is not None else None),
        peer=kind,
        peer_value=value,
        also_local=also_local,
        protocol=matches.protocol,
        src_port=transport.src_port if transport else None,
        dst_port=transport.dst_port if transport else None,
        icmp_type=icmp.type if icmp else None,
        icmp_code=icmp.code if icmp else None,
        initiated=initiated,
        ethertype=eth.ethertype if eth else None,
        eth_dst=eth.dst_mac if eth else None,
        origin=origin,
        local_delivery=True,
    )
    if kind is PeerKind.GATEWAY and value is not None and value in GATEWAY_SERVICES:
        return _service_rules(rule, matches, GATEWAY_SERVICES[value])
    return (rule,)


def _service_rules(rule: Rule, matches: Matches,
                   service: tuple[tuple[int, int], ...]) -> tuple[Rule, ...]:
    """``rule`` narrowed to each (protocol, port) of a gateway service the ACE allows."""
    out: list[Rule] = []
    outgoing = rule.direction is FROM
    for protocol, port in service_ports(matches, rule.direction, service):
        service_port = PortMatch(operator=PortOperator.EQ, port=port)  # inside the ACE's own
        same = matches.transport is not None and matches.transport.protocol == protocol
        device_port = (rule.src_port if outgoing else rule.dst_port) if same else None
        src, dst = (device_port, service_port) if outgoing else (service_port, device_port)
        out.append(replace(rule, protocol=protocol, src_port=src, dst_port=dst,
                           initiated=rule.initiated if protocol == 6 and same else None))
    return tuple(out)


_RULES_OF_FILE: dict[int, tuple[MudFile, tuple[Rule, ...]]] = {}
"""``mud_rules`` by the identity of the (immutable) file, the file kept alive with them."""
RULES_OF_FILE_CACHE: Final = 256


def mud_rules(mud: MudFile) -> tuple[Rule, ...]:
    """Every ACE of the file's from-device then to-device policy, as rules, in order.

    Memoised per file object (a ``MudFile`` never changes): the devices of one model
    share one parsed file and so one set of ``Rule`` objects, not a copy each (5,000
    devices held 123,000 rules)."""
    hit = _RULES_OF_FILE.get(id(mud))
    if hit is not None and hit[0] is mud:
        return hit[1]
    rules = _mud_rules(mud)
    while len(_RULES_OF_FILE) >= RULES_OF_FILE_CACHE:
        try:
            del _RULES_OF_FILE[next(iter(_RULES_OF_FILE))]  # the oldest first
        except (KeyError, StopIteration, RuntimeError):  # another thread trimmed it
            break
    _RULES_OF_FILE[id(mud)] = (mud, rules)
    return rules


def _mud_rules(mud: MudFile) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for direction, names in ((FROM, mud.from_device_policy), (TO, mud.to_device_policy)):
        for acl_name in names:
            acl = mud.acl(acl_name)
            for ace in acl.aces:
                rules += ace_rules(ace, direction, f"{acl_name}/{ace.name}", acl.type)
    return tuple(rules)


# -- state rules ---------------------------------------------------------------------------


def _lan_only(origin: str) -> tuple[Rule, ...]:
    return tuple(Rule(direction=d, action=ACCEPT, peer=PeerKind.LOCAL_NETWORKS, origin=origin)
                 for d in (FROM, TO))


def _internet_only(origin: str) -> tuple[Rule, ...]:
    return (Rule(direction=FROM, action=ACCEPT, peer=PeerKind.INTERNET, origin=origin),)


def _default_rules(home_default: HomeDefault) -> tuple[Rule, ...]:
    if home_default == "lan":
        return _lan_only("default/lan")
    return _internet_only("default/internet")


def _quarantine_rules(device: DeviceFacts, mud: MudFile | None) -> tuple[Rule, ...]:
    """What stays open while quarantined, in the file's order: exactly the ACEs the MUD
    file names in ``quaranteed-device-policy`` when it has that extension, else the
    MUD rules towards the maker's own domain (its update server); and in both cases
    the ACEs the owner excepted for this device. An ACE is named by its name, in
    whichever policy ACL it appears (a v4 and a v6 ACL often share names)."""
    if mud is None:
        return ()
    keep = set(device.quarantine_exceptions)
    if mud.quarantine_ace_names is not None:
        keep.update(mud.quarantine_ace_names)
        return tuple(r for r in mud_rules(mud) if _ace_name(r) in keep)
    domain = registrable_domain(device.manufacturer or _host(mud.mud_url))
    return tuple(r for r in mud_rules(mud)
                 if _ace_name(r) in keep or (
                     domain is not None and r.peer is PeerKind.DNSNAME and r.peer_value
                     and in_domain(r.peer_value, domain) and r.action is ACCEPT))


def _ace_name(rule: Rule) -> str:
    """The ACE name of a MUD rule (its origin is ``<acl name>/<ace name>``)."""
    return rule.origin.rpartition("/")[2]


def _quarantine_reason(device: DeviceFacts, mud: MudFile | None) -> str:
    if mud is not None and mud.quarantine_ace_names is not None:
        reason = ("quarantined: only the ACEs its MUD file enables during quarantine ("
                  + (", ".join(mud.quarantine_ace_names) or "none") + ")")
    else:
        reason = "quarantined: only the maker's update servers"
    if device.quarantine_exceptions:
        reason += ", and the owner's exceptions (" + ", ".join(device.quarantine_exceptions) + ")"
    return reason


def _host(url: str) -> str | None:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname


def _trusted_rules() -> tuple[Rule, ...]:
    return (
        Rule(direction=FROM, action=ACCEPT, peer=PeerKind.ANY, origin="trusted/out"),
        Rule(direction=FROM, action=ACCEPT, peer=PeerKind.GATEWAY, origin="trusted/gateway"),
        Rule(direction=TO, action=ACCEPT, peer=PeerKind.LOCAL_NETWORKS, origin="trusted/lan"),
    )


# -- grants ----------------------------------------------------------------------------------


def _host_peer(host: str | None) -> tuple[PeerKind, str | None]:
    if not host:
        return PeerKind.ANY, None
    try:
        return PeerKind.NETWORK, str(ipaddress.ip_network(host, strict=False))
    except ValueError:
        return PeerKind.DNSNAME, host.lower().rstrip(".")


def grant_rules(grant: Grant) -> tuple[Rule, ...]:
    """The rules one owner grant adds (DENY grants drop, the others accept)."""
    origin = f"grant/{grant.kind.value}"
    if grant.kind is GrantKind.PAUSE:  # Internet dropped; the LAN and the baseline stay
        return (Rule(direction=FROM, action=Forwarding.DROP, peer=PeerKind.INTERNET,
                     origin=origin),
                Rule(direction=TO, action=Forwarding.DROP, peer=PeerKind.INTERNET,
                     origin=origin))
    if grant.kind is GrantKind.LAN:
        return _lan_only(origin)
    if grant.kind is GrantKind.INTERNET:
        return _internet_only(origin)
    kind, value = _host_peer(grant.host)
    action = Forwarding.DROP if grant.kind is GrantKind.DENY else ACCEPT
    port = None
    if grant.port is not None:
        port = PortMatch(operator=PortOperator.EQ, port=grant.port)
    protocol = grant.protocol
    if port is not None and protocol is None:
        protocol = 6
    return (Rule(direction=FROM, action=action, peer=kind, peer_value=value, protocol=protocol,
                 dst_port=port, origin=origin),)


def _split_grants(grants: Iterable[Grant], now: datetime) -> tuple[list[Rule], list[Rule]]:
    deny: list[Rule] = []
    allow: list[Rule] = []
    order = {GrantKind.PAUSE: 0, GrantKind.DENY: 0, GrantKind.SERVICE: 1, GrantKind.LAN: 2,
             GrantKind.INTERNET: 3}
    for grant in sorted((g for g in grants if g.active(now)), key=lambda g: order[g.kind]):
        narrowing = grant.kind in (GrantKind.DENY, GrantKind.PAUSE)
        (deny if narrowing else allow).extend(grant_rules(grant))
    return deny, allow


# -- decide ----------------------------------------------------------------------------------


def decide(device: DeviceFacts, mud: MudFile | None, grants: Iterable[Grant],
           context: HomeContext, *, home_default: HomeDefault = "internet",
           now: datetime) -> DevicePolicy:
    """The policy for ``device`` in its lifecycle state (pure).

    Args:
        device: what the gateway knows about the device, including its ``state``.
        mud: its MUD file, or ``None`` if there is none (yet).
        grants: the owner's grants; expired ones (at ``now``) are ignored.
        context: the home (used for nothing but validation here; the compiler
            resolves peers from it).
        home_default: the limited default for devices without a profile:
            ``"internet"`` (Internet only, no lateral LAN) or ``"lan"`` (LAN only).
        now: the current time, for grant expiry.

    Returns:
        A ``DevicePolicy`` with rules in evaluation order and the reasons for them.
    """
    del context  # peers stay symbolic; the compiler resolves them
    if home_default not in ("internet", "lan"):
        raise ValueError(f"home_default must be 'internet' or 'lan', got {home_default!r}")
    state = device.state
    reasons: list[str] = []
    if state is LifecycleState.FORGOTTEN:
        return DevicePolicy(device=device, state=state, rules=(), mud=mud,
                            reasons=("forgotten: no access",))
    if state is LifecycleState.PROFILED and mud is None:
        state = LifecycleState.DEFAULT
        reasons.append("profiled but no MUD file available: home default")
    body: tuple[Rule, ...]
    if state is LifecycleState.PROFILED:
        assert mud is not None
        body = mud_rules(mud)
        reasons.append(f"MUD profile {mud.mud_url}")
    elif state in (LifecycleState.DEFAULT, LifecycleState.LEARNING, LifecycleState.PROPOSED):
        # Learning and a waiting proposal change nothing until the owner locks it.
        body = _default_rules(home_default)
        reasons.append(f"no MUD profile: home default ({home_default} only)")
    elif state is LifecycleState.OUT_OF_SUPPORT:
        body = _lan_only("out-of-support/lan")
        reasons.append("out of support: LAN only")
    elif state is LifecycleState.QUARANTINED:
        body = _quarantine_rules(device, mud)
        reasons.append(_quarantine_reason(device, mud))
    elif state is LifecycleState.TRUSTED:
        body = _trusted_rules()
        reasons.append("trusted by the owner: not restricted")
    else:  # NEW
        body = ()
        reasons.append("new: baseline only until a decision is made")
    deny: list[Rule] = []
    allow: list[Rule] = []
    if state not in (LifecycleState.QUARANTINED, LifecycleState.TRUSTED):
        deny, allow = _split_grants(grants, now)
    elif state is LifecycleState.TRUSTED:  # the owner's own phone paused at bedtime too
        deny, _ = _split_grants((g for g in grants if g.kind is GrantKind.PAUSE), now)
    if any(r.origin == "grant/pause" for r in deny):
        reasons.append("paused by the owner: no Internet")
    rules = (*baseline_rules(), *deny, *body, *allow)
    return DevicePolicy(device=device, state=state, rules=rules, mud=mud, reasons=tuple(reasons))
