"""Policy as data: one fixed ruleset, each device's policy as set and map elements (pure).

Theory of operation. ``_nft.py`` compiles each device to code (three chains of
rules); every rule commit makes the kernel re-validate a table, so a home's cold
install, reconcile and even one device's update grow with the home. Here the
ruleset is fixed (``compile_fixed_ruleset``: a few dozen rules in the one
``inet mudguard`` table, independent of the number of devices) and a device is
only elements (``device_elements``): adding, changing or removing it is element
changes in one transaction, with no rule commit.

The fixed ruleset (forward hook; input is alike with the ``gw`` phases)::

    forward (policy drop)
      iifname LAN ether saddr . ip saddr != @bind4 drop (and v6)   source binding first
      ct state established,related accept            then the fast path
      ct state invalid drop
      iifname LAN ether saddr != @known_macs drop    unknown device
      iifname LAN jump from_dev                      returns only if the sender may
      ip daddr @pending4 drop / ip6 daddr @pending6 drop
      ip daddr @managed4 jump to_dev4 / ip6 … to_dev6  returns only if the receiver may
      ip daddr @managed4 accept / ip6 … accept
      iifname LAN accept
    from_dev
      ether saddr vmap @out_fallback ; ether saddr @fallback_macs return
      ct state new update @ratecap { ether saddr limit rate over R } drop
      <key> @out4_d_p drop, … every drop set, then every accept set → return
      mark + per-device log limit + log "mg * out" ; drop

The binding comes before the established fast path: conntrack does not look at
MACs, so a device (or an unknown MAC) that knows another device's connection tuple
and sequence numbers could otherwise inject into that device's established flows.

Each phase (``out``: forwarded from the device, keyed by its MAC; ``in``:
forwarded to it, keyed by its address; ``gwe``/``gw``: to the gateway itself
before/after the source binding, keyed by its MAC; ``gwb``: as ``gw`` for frames to
the Ethernet broadcast address, the one Ethernet destination MUD files name) has,
per family and action, three interval sets of concatenated keys (``SHAPES``):

- ``p``: device . peer address . l4proto (rules without port or ICMP tests);
- ``t``: device . peer . l4proto . th sport . th dport (TCP/UDP ports; for
  ICMP the first transport bytes are type and code, so ``th sport`` is
  ``type << 8 | code`` and a type without a code is a range of 256);
- ``s``: as ``t``, for TCP rules whose connection this side must open (the
  packet must be a bare SYN: conntrack's loose pick-up would otherwise count a
  mid-stream ACK as one).

DNS-name rules become ``dns`` templates: the DNS guard adds (device address .
answer address . l4proto . sport . dport) elements with the answer's TTL as
timeout to the ``dnsout``/``dnsin`` sets (``dns_answer_elements``).

RFC 9761 (D)TLS-profiled ACEs are observed, never enforced (``_nft.tls_watch_rules`` as
data): their accept rows are also in the ``*_w_*`` watch sets, looked up in ``tls_out``
between the drops and the accepts for a profile in ``tls_profiles`` (``_watch_rules``).

Order. A chain's rules match first-match; sets cannot, so drops are looked up
before accepts. That is the same verdict unless an accepting rule comes before
a dropping rule that overlaps it (same phase and family, every key dimension
intersecting): then, and for the few constructs that are not data (an Ethernet
destination, an ICMP code without a type), the device keeps its ``_nft.py``
chains, reached through the ``*_fallback`` maps (``DeviceElements.fallback``).

The drop log cannot name the device in a shared rule's prefix: the rule sets
the packet mark from a map keyed by the device (``device_mark``) and logs
``mg * out``/``mg * in``; the watcher reads the mark (NFULA_MARK).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import ipaddress
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mudguard.mud import Direction, Forwarding, PortMatch, PortOperator
from mudguard.policy._local import local_destinations
from mudguard.policy._model import (
    DeviceFacts,
    DevicePolicy,
    HomeContext,
    LifecycleState,
    PeerKind,
    Rule,
    peer_device_addresses,
)
from mudguard.policy._names import (
    BIND4,
    BIND6,
    KNOWN_MACS,
    MANAGED4,
    MANAGED6,
    PENDING4,
    PENDING6,
    TABLE,
    device_chain,
    device_id,
    dns_set_name,
    shard_names,
    surplus_shard_names,
)
from mudguard.policy._nft import (
    FAMILY,
    IDENTIFY_MACS,
    LOG_BURST,
    LOG_RATE,
    TLS_HANDSHAKE,
    TLS_WATCH_MARK,
    NftCommand,
    _families,
    _gateway_service,
    _meta,
    _needs_family,
    _tls_log,
    _tls_rate_set,
    _typed_icmp,
    device_rules,
    dns_set_commands,
    established_input_rules,
    identify_log_jump,
    identify_new_jump,
    identify_observed,
    identify_rules,
    identify_sets,
    peer_addresses,
    source_binding_rules,
    tls_hello_rule,
    tls_watched_origins,
)
from mudguard.policy._nft import _match as _m
from mudguard.policy._nft import _payload as _pl

Expr = dict[str, Any]
Interval = tuple[int, int]

PHASES: Final = ("out", "in", "gwe", "gw", "gwb")
"""``out``: forwarded from the device; ``in``: forwarded to it; ``gwe``: to the gateway
before the source binding (DHCP from 0.0.0.0, ND from ::); ``gw``: to the gateway."""
DNS_PHASES: Final = ("dnsout", "dnsin")
SHAPES: Final = ("p", "t", "s")
ACTIONS: Final = ("d", "a")  # drops are looked up first
WATCH: Final = "w"
"""The sets of watched rows (``Row.watched``: an RFC 9761 (D)TLS-profiled ACE's accept
rows, also put in ``<phase><family>_w_<shape>``), looked up in ``tls_out`` between the
drops and the accepts; observation only (``_watch_rules``)."""
WATCH_PHASES: Final = ("out", "dnsout")
TLS_PROFILES = "tls_profiles"  # the profile ids that have watched rows (the gate to tls_out)

PORTAL_CLOSED = "portal_closed"
RATECAP = "ratecap"
LOG_OUT, LOG_IN4, LOG_IN6 = "log_out", "log_in4", "log_in6"
MARK_OUT, MARK_IN4, MARK_IN6 = "mark_out", "mark_in4", "mark_in6"
PROFILE_OUT, PROFILE_IN4, PROFILE_IN6 = "profile_out", "profile_in4", "profile_in6"
OUT_FALLBACK, GW_FALLBACK = "out_fallback", "gw_fallback"
IN_FALLBACK4, IN_FALLBACK6 = "in_fallback4", "in_fallback6"
FALLBACK_MACS, FALLBACK4, FALLBACK6 = "fallback_macs", "fallback4", "fallback6"
DATA_MARK_PREFIX: Final = "mudguard data "
LOG_PREFIX_OUT: Final = "mg * out"
LOG_PREFIX_IN: Final = "mg * in"

_FULL_PORT: Final = (0, 65535)
_FULL_PROTO: Final = (0, 255)
_ADDR_TYPE: Final = {4: "ipv4_addr", 6: "ipv6_addr"}
_MAX_ADDR: Final = {4: (1 << 32) - 1, 6: (1 << 128) - 1}


def has_set(phase: str, action: str, shape: str) -> bool:
    """Whether the fixed ruleset has this set: drops never need the bare-SYN shape, and
    the ``gwe``/``gwb`` phases (baseline before the binding, broadcast frames) only
    accept. A rule needing another is not data (its device keeps chains)."""
    if action == "d":
        return shape != "s" and phase not in ("gwe", "gwb")
    if action == WATCH:
        return phase in WATCH_PHASES
    return True


def set_name(phase: str, family: int, action: str, shape: str) -> str:
    """The name of one element set: ``out4_a_t`` (phase, family, action, shape)."""
    return f"{phase}{family}_{action}_{shape}"


def device_mark(mac: str) -> int:
    """The packet mark a device's drops are logged with: the first 32 bits of its id
    (the watcher maps it back, ``watch.nflog.flow_event``), never 0."""
    return int(device_id(mac)[:8], 16) or 1


# -- rows: one rule as boxes of key intervals ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One rule's content in one phase and family: a box of key intervals.

    ``peer`` is the peer address intervals (None for a DNS name: filled by answers),
    ``proto`` the l4proto intervals; ``sport``/``dport`` only for shapes ``t``/``s``.
    """

    phase: str
    family: int
    action: str
    shape: str
    peer: tuple[Interval, ...] | None
    proto: tuple[Interval, ...]
    sport: tuple[Interval, ...] = ()
    dport: tuple[Interval, ...] = ()
    dns_name: str | None = None
    dns_within: tuple[Interval, ...] | None = None  # answers must fall here (also_local)
    watched: bool = False
    """An accept row of a (D)TLS-profiled TCP/UDP ACE: its boxes are also a ``WATCH`` set's."""


class NotData(Exception):
    """A rule construct the fixed ruleset cannot express as elements."""


def _intervals(addresses: Iterable[str], family: int) -> tuple[Interval, ...]:
    return _merge([(lo, hi) for version, lo, hi in map(_span, addresses) if version == family])


@functools.lru_cache(maxsize=1 << 14)
def _span(address: str) -> tuple[int, int, int]:
    """(family, first, last) of an address or prefix (cached: a device's peers by maker
    or model are the same few hundred addresses, parsed once, not once per device)."""
    net = ipaddress.ip_network(address, strict=False)
    return net.version, int(net.network_address), int(net.broadcast_address)


def _merge(spans: Sequence[Interval]) -> tuple[Interval, ...]:
    out: list[Interval] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _complement(spans: tuple[Interval, ...], family: int) -> tuple[Interval, ...]:
    out: list[Interval] = []
    low = 0
    for lo, hi in spans:
        if lo > low:
            out.append((low, lo - 1))
        low = hi + 1
    if low <= _MAX_ADDR[family]:
        out.append((low, _MAX_ADDR[family]))
    return tuple(out)


def _intersect(a: tuple[Interval, ...], b: tuple[Interval, ...]) -> tuple[Interval, ...]:
    out = [(max(x[0], y[0]), min(x[1], y[1])) for x in a for y in b
           if max(x[0], y[0]) <= min(x[1], y[1])]
    return _merge(out)


def _port_intervals(port: PortMatch | None) -> tuple[Interval, ...]:
    if port is None:
        return (_FULL_PORT,)
    op, value = port.operator, port.port or 0
    spans: list[Interval] = {
        PortOperator.RANGE: [(port.lower or 0, port.upper or 0)],
        PortOperator.EQ: [(value, value)],
        PortOperator.NEQ: [(0, value - 1), (value + 1, 65535)],
        PortOperator.LT: [(0, value - 1)], PortOperator.GT: [(value + 1, 65535)],
        PortOperator.LTE: [(0, value)], PortOperator.GTE: [(value, 65535)],
    }[op]
    return tuple((lo, hi) for lo, hi in spans if 0 <= lo <= hi <= 65535)


def _chain_kind(rule: Rule) -> str | None:
    if rule.peer is PeerKind.GATEWAY:
        return "gw" if rule.direction is Direction.FROM_DEVICE else None
    return "out" if rule.direction is Direction.FROM_DEVICE else "in"


def _ethertype_families(rule: Rule, families: list[int]) -> list[int]:
    if rule.ethertype is None:
        return families
    wanted = {0x0800: 4, 0x86DD: 6}.get(rule.ethertype)
    return [f for f in families if f == wanted]


BROADCAST_MAC: Final = "ff:ff:ff:ff:ff:ff"


def _eth_phase(rule: Rule, phase: str) -> str | None:
    """The phase of a rule once its Ethernet destination is taken into account (None:
    it matches nothing). The kernel forwards only frames sent to the gateway's own
    MAC (``ip_forward`` drops other packet types), so a broadcast or multicast
    destination never matches a forwarded packet; to the gateway, the broadcast
    address has its own phase; any other address is not data."""
    if rule.eth_dst is None:
        return phase
    group = int(rule.eth_dst.split(":")[0], 16) & 1
    if phase in ("out", "in") and group:
        return None
    if phase == "gw" and rule.eth_dst.lower() == BROADCAST_MAC:
        return "gwb"
    raise NotData("an Ethernet destination match")


def _transport(rule: Rule, family: int) -> tuple[str, tuple[Interval, ...],
                                                  tuple[Interval, ...],
                                                  tuple[Interval, ...]] | None:
    """(shape, proto, sport, dport) of a rule in one family, None if it matches nothing.

    Mirrors ``_nft._transport_exprs``."""
    tcp_udp = rule.protocol in (6, 17)
    has_ports = tcp_udp and bool(rule.src_port or rule.dst_port)
    typed = _typed_icmp(rule)
    syn = False
    if rule.protocol == 6 and rule.initiated is not None:
        if rule.initiated is not rule.direction:
            return None  # ``ct direction reply``: never a new connection
        syn = True
    if typed:
        if has_ports or syn:
            return None  # a TCP/UDP field and an ICMP field: no packet has both
        icmp_proto = 1 if family == 4 else 58
        if rule.icmp_type is None:  # a code alone: that code under every type
            assert rule.icmp_code is not None
            codes = tuple(((t << 8) | rule.icmp_code, (t << 8) | rule.icmp_code)
                          for t in range(256))
            return "t", ((icmp_proto, icmp_proto),), codes, (_FULL_PORT,)
        base = rule.icmp_type << 8
        code = ((base | rule.icmp_code, base | rule.icmp_code) if rule.icmp_code is not None
                else (base, base | 255))
        return "t", ((icmp_proto, icmp_proto),), (code,), (_FULL_PORT,)
    if has_ports or syn:
        proto = rule.protocol or 6
        sport, dport = _port_intervals(rule.src_port), _port_intervals(rule.dst_port)
        if not sport or not dport:
            return None
        return ("s" if syn else "t"), ((proto, proto),), sport, dport
    if rule.protocol is None:
        return "p", (_FULL_PROTO,), (), ()
    return "p", ((rule.protocol, rule.protocol),), (), ()


def _rule_families(rule: Rule) -> list[int]:
    """The address families a rule's rows are made for (its peer is read in these only)."""
    families = _families(rule) if _needs_family(rule) else [4, 6]
    return _ethertype_families(rule, families)


def _rule_rows(rule: Rule, phase: str, device: DeviceFacts,
               context: HomeContext) -> list[Row]:
    """The rows of one rule in its own chain (mirrors ``_nft.rule_exprs``)."""
    action = "a" if rule.action is Forwarding.ACCEPT else "d"
    families = _rule_families(rule)
    own = _eth_phase(rule, phase) if families else phase
    if own is None:
        return []
    phase = own
    rows: list[Row] = []
    for family in families:
        transport = _transport(rule, family)
        if transport is None:
            continue
        shape, proto, sport, dport = transport
        full = ((0, _MAX_ADDR[family]),)
        peer: tuple[Interval, ...] | None
        name: str | None = None
        within: tuple[Interval, ...] | None = None
        lan = _intervals(context.lan_prefixes, family)
        if rule.peer is PeerKind.GATEWAY:
            peer = _intervals(context.gateway_addresses, family) if _gateway_service(rule) \
                else full
        elif rule.peer is PeerKind.DNSNAME:
            if not rule.peer_value:
                continue
            peer, name = None, rule.peer_value
        elif rule.peer is PeerKind.INTERNET:
            peer = _complement(lan, family) if lan else full
        elif rule.peer is PeerKind.ANY:
            peer = full
        else:
            addresses = peer_addresses(rule, device, context) or []
            peer = _intervals(addresses, family)
        if rule.also_local:
            if not lan:
                continue
            if peer is None:
                within = lan
            else:
                peer = _intersect(peer, lan)
        if peer is not None and not peer:
            continue
        if name is not None:
            phase_of = "dnsout" if phase == "out" else "dnsin"
            rows.append(Row(phase_of, family, action, shape, None, proto, sport, dport,
                            dns_name=name, dns_within=within))
        else:
            rows.append(Row(phase, family, action, shape, peer, proto, sport, dport))
    return rows


def _local_rows(rule: Rule, device: DeviceFacts, context: HomeContext) -> list[Row]:
    """The ``gw`` rows of a from-device rule (mirrors ``_nft.local_rule_exprs``)."""
    destinations = local_destinations(rule, device, context)
    if not destinations:
        return []
    action = "a" if rule.action is Forwarding.ACCEPT else "d"
    rows: list[Row] = []
    families = _ethertype_families(rule, _families(rule))
    phase = _eth_phase(rule, "gw") if families else "gw"
    if phase is None:
        return []
    for family in families:
        peer = _intervals(destinations, family)
        if not peer:
            continue
        transport = _transport(rule, family)
        if transport is None:
            continue
        shape, proto, sport, dport = transport
        rows.append(Row(phase, family, action, shape, peer, proto, sport, dport))
    return rows


_DEVICE_PEERS: Final = (PeerKind.SAME_MANUFACTURER, PeerKind.MANUFACTURER, PeerKind.MODEL)
_ROWS: dict[tuple[Any, ...], tuple[HomeContext, tuple[Row, ...] | str]] = {}
_ROWS_MAX: Final = 4096


def _compile_key(policy: DevicePolicy, context: HomeContext) -> tuple[Any, ...]:
    """Everything a policy's rows depend on, so that devices with equal keys share one
    compiled profile (``policy_rows``, ``_bundle``) and devices that differ in anything
    a verdict depends on never do.

    The rows read, besides the home ``context`` (its identity: prefixes, gateway,
    controllers, owner-assigned controllers; the caller keeps one context object per
    home state) and the decided ``rules`` (state, grants, quarantine exceptions and the
    MUD file all end up there), only: the origins of its (D)TLS-profiled ACEs (watched
    rows), the device's MUD URL (``my-controller`` is looked
    up by it; its authority is the device's manufacturer) and, for each
    same-manufacturer / manufacturer / model rule, the addresses of the other devices
    it names, as the merged intervals of each family (what ``_rule_rows`` makes of
    them) in the families the rule has rows for (``_rule_families``: a rule for IPv4
    only does not read the peers' IPv6 addresses). The device's own MAC and addresses
    are bound per device afterwards (``device_elements``), never compiled in."""
    device = policy.device
    peers: list[tuple[tuple[Interval, ...], ...]] = []
    for rule in policy.rules:
        if rule.peer in _DEVICE_PEERS:
            addresses = peer_device_addresses(rule.peer, rule.peer_value, device, context)
            peers.append(tuple(_intervals(addresses, family) if family in families else ()
                               for families in [_rule_families(rule)] for family in (4, 6)))
    return (id(context), policy.rules, device.mud_url, tuple(peers),
            tls_watched_origins(policy))


def policy_rows(policy: DevicePolicy, context: HomeContext) -> list[Row]:
    """Every row of a policy, in the order its chains would have matched them.

    Raises ``NotData`` for a construct the fixed ruleset cannot express. Rows depend
    on the device only through its MUD URL (my-controller) and the addresses its
    device peers resolve to, so devices of one model in one home share them (cached:
    a cold install of thousands of devices compiles each profile once)."""
    key = _compile_key(policy, context)
    hit = _ROWS.get(key)
    if hit is not None and hit[0] is context:
        if isinstance(hit[1], str):
            raise NotData(hit[1])
        return list(hit[1])
    if len(_ROWS) >= _ROWS_MAX:
        _ROWS.clear()
    try:
        rows = _policy_rows(policy, context)
    except NotData as exc:
        _ROWS[key] = (context, str(exc))
        raise
    _ROWS[key] = (context, tuple(rows))
    return rows


def _policy_rows(policy: DevicePolicy, context: HomeContext) -> list[Row]:
    device = policy.device
    rows: list[Row] = []
    early = [r for r in policy.rules if r.any_source and _chain_kind(r) == "gw"]
    for rule in early:
        rows += _rule_rows(rule, "gwe", device, context)
    watched = tls_watched_origins(policy)
    for rule in policy.rules:
        if rule in early:
            continue
        kind = _chain_kind(rule)
        if kind is None:
            continue
        own = _rule_rows(rule, kind, device, context)
        if kind == "out" and rule.origin in watched and rule.action is Forwarding.ACCEPT \
                and rule.protocol in (6, 17):  # mirrors _nft.tls_watch_rules
            own = [_with(r, watched=True) for r in own]
        rows += own
        if kind == "out":
            rows += _local_rows(rule, device, context)
    for row in rows:
        if not has_set(row.phase, row.action, row.shape):
            raise NotData(f"a {row.phase} rule with action {row.action}, shape {row.shape}")
    return rows


def _box(row: Row) -> tuple[tuple[Interval, ...], ...]:
    full_addr = ((0, _MAX_ADDR[row.family]),)
    ports = (_FULL_PORT,)
    return (row.peer if row.peer is not None else (row.dns_within or full_addr), row.proto,
            row.sport or ports, row.dport or ports)


def _boxes_meet(a: Row, b: Row) -> bool:
    return all(_intersect(x, y) for x, y in zip(_box(a), _box(b), strict=True))


def _shadows(earlier: Row, later: Row) -> bool:
    """Whether ``earlier``, an accept that is not watched, takes some of the watched row
    ``later``'s packets first (the chain returns there without marking the flow)."""
    return (earlier.action == "a" and not earlier.watched and earlier.phase in WATCH_PHASES
            and earlier.family == later.family and _boxes_meet(earlier, later))


def _subtractable(earlier: Row, later: Row) -> bool:
    """Whether the watch set can leave ``earlier``'s boxes out of ``later``'s: both have
    literal addresses and ``earlier`` matches every packet of ``later``'s shape in the
    part they share (a bare-SYN row shadows only SYNs; a row with ports cannot be cut
    out of a row without)."""
    if earlier.dns_name is not None or later.dns_name is not None:
        return False
    return earlier.shape == later.shape or (earlier.shape, later.shape) in (
        ("t", "s"), ("p", "t"), ("p", "s"))


def _watch_shadowed(rows: Sequence[Row]) -> bool:
    """True if a watched row overlaps an earlier accept of the same side and family that
    is not watched, in a way the watch sets cannot leave out (``_watch_boxes``): the
    chain would have returned there without marking the flow, ``tls_out`` would mark it."""
    for i, later in enumerate(rows):
        if later.watched and any(_shadows(e, later) and not _subtractable(e, later)
                                 for e in rows[:i]):
            return True
    return False


def _watch_boxes(rows: Sequence[Row], i: int) -> list[Box]:
    """The boxes of watched row ``rows[i]`` less those of the earlier accepts that are not
    watched (their packets return before the watch rule in the chain)."""
    later = rows[i]
    boxes = _row_boxes(later)
    for earlier in rows[:i]:
        if not _shadows(earlier, later):
            continue
        cuts = _row_boxes(earlier)
        if earlier.shape == "p" and later.shape != "p":
            cuts = [(*box, _FULL_PORT, _FULL_PORT) for box in cuts]
        for cut in cuts:
            boxes = [piece for box in boxes for piece in _subtract(box, cut)]
    return boxes


def _order_matters(rows: Sequence[Row]) -> bool:
    """True if a drop follows an accept it overlaps in the same lookup phase (sets look
    drops up first, the chain would have accepted)."""
    def group(row: Row) -> str:
        return {"dnsout": "out", "dnsin": "in", "gwb": "gw"}.get(row.phase, row.phase)
    for i, later in enumerate(rows):
        if later.action != "d":
            continue
        for earlier in rows[:i]:
            if earlier.action == "a" and group(earlier) == group(later) \
                    and earlier.family == later.family and _boxes_meet(earlier, later):
                return True
    return False


# -- elements -------------------------------------------------------------------------------


def _addr_text(value: int, family: int) -> str:
    return str(ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value))


def _addr_value(span: Interval, family: int) -> Any:
    lo, hi = span
    if lo == hi:
        return _addr_text(lo, family)
    size = hi - lo + 1
    bits = 32 if family == 4 else 128
    if size & (size - 1) == 0 and lo % size == 0:
        return {"prefix": {"addr": _addr_text(lo, family), "len": bits - size.bit_length() + 1}}
    return {"range": [_addr_text(lo, family), _addr_text(hi, family)]}


def _int_value(span: Interval) -> Any:
    return span[0] if span[0] == span[1] else {"range": [span[0], span[1]]}


Box = tuple[Interval, ...]
"""One element's key without the device: peer, l4proto[, sport, dport] as intervals."""


def _row_boxes(row: Row, peer: tuple[Interval, ...] | None = None) -> list[Box]:
    spans = peer if peer is not None else row.peer or ()
    if row.shape == "p":
        return [(a, p) for a in spans for p in row.proto]
    return [(a, p, s, d) for a in spans for p in row.proto for s in row.sport
            for d in row.dport]


def _subtract(box: Box, other: Box) -> list[Box]:
    """``box`` minus ``other`` as disjoint boxes."""
    if any(max(a[0], b[0]) > min(a[1], b[1]) for a, b in zip(box, other, strict=True)):
        return [box]
    pieces: list[Box] = []
    rest = list(box)
    for i, (a, b) in enumerate(zip(box, other, strict=True)):
        if a[0] < b[0]:
            pieces.append((*rest[:i], (a[0], b[0] - 1), *rest[i + 1:]))
        if a[1] > b[1]:
            pieces.append((*rest[:i], (b[1] + 1, a[1]), *rest[i + 1:]))
        rest[i] = (max(a[0], b[0]), min(a[1], b[1]))
    return pieces


def _disjoint(boxes: Sequence[Box]) -> list[Box]:
    """The union of ``boxes`` as disjoint boxes (the kernel's interval sets of
    concatenations refuse overlapping elements)."""
    out: list[Box] = []
    for box in boxes:
        pieces = [box]
        for kept in out:
            pieces = [p for piece in pieces for p in _subtract(piece, kept)]
            if not pieces:
                break
        out += pieces
    return out


def _atoms(spans: Iterable[Interval]) -> list[Interval]:
    """The elementary intervals the ends of ``spans`` cut their union into."""
    cuts: set[int] = set()
    for lo, hi in spans:
        cuts |= {lo, hi + 1}
    points = sorted(cuts)
    covered = _merge(list(spans))
    return [(lo, hi - 1) for lo, hi in itertools.pairwise(points)
            if any(c[0] <= lo and hi - 1 <= c[1] for c in covered)]


def _refined(rows: Sequence[Row]) -> list[Row]:
    """DNS rows with their transport intervals cut at every end any row of the same set
    has: two names answering with one address then add identical or disjoint
    elements, never overlapping ones."""
    groups: dict[tuple[str, int, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.phase, row.family, row.action, row.shape), []).append(row)
    out: list[Row] = []
    for group in groups.values():
        dims = [_atoms([s for r in group for s in getattr(r, d)]) for d in
                (("proto",) if group[0].shape == "p" else ("proto", "sport", "dport"))]

        def cut(spans: tuple[Interval, ...], atoms: list[Interval]) -> tuple[Interval, ...]:
            return tuple(a for a in atoms if any(s[0] <= a[0] and a[1] <= s[1] for s in spans))
        for row in group:
            if row.shape == "p":
                out.append(_with(row, proto=cut(row.proto, dims[0])))
            else:
                out.append(_with(row, proto=cut(row.proto, dims[0]),
                                 sport=cut(row.sport, dims[1]), dport=cut(row.dport, dims[2])))
    return out


def _with(row: Row, **changes: Any) -> Row:
    fields: dict[str, Any] = {
        "phase": row.phase, "family": row.family, "action": row.action, "shape": row.shape,
        "peer": row.peer, "proto": row.proto, "sport": row.sport, "dport": row.dport,
        "dns_name": row.dns_name, "dns_within": row.dns_within, "watched": row.watched}
    fields.update(changes)
    return Row(**fields)


@functools.lru_cache(maxsize=4096)
def _set_tails(rows: tuple[Row, ...]) -> tuple[tuple[str, int, tuple[tuple[Any, ...], ...]], ...]:
    """Per set: (name, family, element parts after the device key), disjoint (cached by
    rows: the parts are shared, never mutated)."""
    boxes: dict[tuple[str, int], list[Box]] = {}
    for i, row in enumerate(rows):
        if row.dns_name is None:
            boxes.setdefault((set_name(row.phase, row.family, row.action, row.shape),
                              row.family), []).extend(_row_boxes(row))
            if row.watched:
                boxes.setdefault((set_name(row.phase, row.family, WATCH, row.shape),
                                  row.family), []).extend(_watch_boxes(rows, i))
    return tuple((name, family, tuple(_tail(box, family) for box in _disjoint(found)))
                 for (name, family), found in boxes.items())


@functools.lru_cache(maxsize=4096)
def _profile(rows: tuple[Row, ...]) -> tuple[int, dict[str, tuple[Any, ...]], str]:
    """A profile's id, elements (keyed by the id) and whole digest: the rows' content
    without the device, so devices whose rows are equal share one profile (cached; never
    mutated). The id is 32 bits of the digest (a packet mark): two contents may share
    one (``profile_collision``)."""
    tails = _set_tails(rows)
    watched_names = sorted({(r.dns_name, r.family, r.shape) for r in rows
                            if r.watched and r.dns_name is not None}, key=repr)
    digest = hashlib.sha256(repr((tails, watched_names) if watched_names else tails
                                 ).encode()).hexdigest()
    profile = int(digest[:8], 16) or 1
    elements: dict[str, tuple[Any, ...]] = {
        name: tuple({"concat": [profile, *tail]} for tail in found)
        for name, _family, found in tails if found}
    if any(row.watched for row in rows):
        elements[TLS_PROFILES] = (profile,)
    return profile, elements, digest


@functools.lru_cache(maxsize=4096)
def _rows_digest(rows: tuple[Row, ...]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@functools.lru_cache(maxsize=4096)
def _templates(rows: tuple[Row, ...]) -> tuple[DnsTemplate, ...]:
    return tuple(DnsTemplate(row.dns_name, row) for row in _refined(
        [r for r in rows if r.dns_name is not None]) if row.dns_name is not None)


def _tail(box: Box, family: int) -> tuple[Any, ...]:
    peer, proto, *ports = box
    return (_addr_value(peer, family), _int_value(proto), *(_int_value(p) for p in ports))


def _render(key: Any, box: Box, family: int) -> Any:
    peer, proto, *ports = box
    return {"concat": [key, _addr_value(peer, family), _int_value(proto),
                       *(_int_value(p) for p in ports)]}


def _row_elements(row: Row, key: Any, peer: tuple[Interval, ...]) -> list[Any]:
    out: list[Any] = []
    for address in peer:
        for proto in row.proto:
            head = [key, _addr_value(address, row.family), _int_value(proto)]
            if row.shape == "p":
                out.append({"concat": head})
                continue
            for sport in row.sport:
                for dport in row.dport:
                    out.append({"concat": [*head, _int_value(sport), _int_value(dport)]})
    return out


@dataclass(frozen=True, slots=True)
class DnsTemplate:
    """What an answer for ``name`` opens for this device: a row without its peer."""

    name: str
    row: Row


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceElements:
    """A device's whole content in the fixed ruleset (pure data).

    ``elements`` maps a set or map name to its elements (libnftables JSON values, each
    element once); ``dns`` holds the templates the DNS guard fills answers with;
    ``fallback`` the device's chains when it is not data (``_nft.py`` chains, in the main
    table), empty otherwise.
    """

    mac: str
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    elements: Mapping[str, tuple[Any, ...]]
    dns: tuple[DnsTemplate, ...] = ()
    fallback: tuple[NftCommand, ...] = ()
    fingerprint: str = ""
    why_fallback: str = ""
    fallback_names: frozenset[str] = frozenset()
    """The DNS names a fallback device's chains look answers up for."""
    profile: int = 0
    """The profile id (packet mark) its rule sets are keyed by; 0: none."""
    profile_elements: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    """The profile's elements (shared by every device with the same profile)."""
    profile_digest: str = ""
    """The profile's whole content digest (``profile`` is its first 32 bits)."""

    def keys(self) -> frozenset[tuple[str, str]]:
        """Every (set, element) pair, elements as canonical JSON text (for diffs)."""
        return frozenset((name, _element_text(e)) for name, elems in self.elements.items()
                         for e in elems)


def _element_text(element: Any) -> str:
    return json.dumps(element, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class _Bundle:
    """What a device's rows give, shared by every device with the same rows."""

    rows: tuple[Row, ...]
    why: str
    profile: int = 0
    profile_elements: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    templates: tuple[DnsTemplate, ...] = ()
    digest: str = ""
    profile_digest: str = ""


_BUNDLES: dict[tuple[Any, ...], tuple[HomeContext, _Bundle]] = {}


def _bundle(policy: DevicePolicy, context: HomeContext) -> _Bundle:
    """The rows of ``policy`` and what follows from them (cached like ``policy_rows``)."""
    key = _compile_key(policy, context)
    hit = _BUNDLES.get(key)
    if hit is not None and hit[0] is context:
        return hit[1]
    if len(_BUNDLES) >= _ROWS_MAX:
        _BUNDLES.clear()
    try:
        rows = tuple(_policy_rows(policy, context))
    except NotData as exc:
        bundle = _Bundle((), str(exc))
    else:
        if _order_matters(rows):
            bundle = _Bundle(rows, "a drop after an accept it overlaps")
        elif _watch_shadowed(rows):
            bundle = _Bundle(rows, "a (D)TLS-profiled ACE after an accept it overlaps")
        else:
            profile, elements, content = _profile(rows)
            bundle = _Bundle(rows, "", profile, elements, _templates(rows), _rows_digest(rows),
                             content)
    _BUNDLES[key] = (context, bundle)
    return bundle


def device_elements(policy: DevicePolicy, context: HomeContext) -> DeviceElements:
    """One device's content as elements of the fixed ruleset's sets and maps (pure).

    Every lifecycle state comes from ``decide()``: this reads its rules exactly as
    ``_nft.device_rules`` does. A device whose rules are not data (an overlapping drop
    after an accept, an Ethernet destination, an ICMP code alone) gets its ``_nft.py``
    chains as ``fallback``, reached through the fallback maps."""
    device = policy.device
    mac = device.mac.lower()
    ipv4 = tuple(sorted({str(ipaddress.ip_address(a)) for a in device.ipv4}))
    ipv6 = tuple(sorted({str(ipaddress.ip_address(a)) for a in device.ipv6}))
    elements: dict[str, list[Any]] = {}

    def put(name: str, *values: Any) -> None:
        bucket = elements.setdefault(name, [])
        for value in values:
            if value not in bucket:
                bucket.append(value)

    put(KNOWN_MACS, mac)
    observed = identify_observed(policy)
    if observed:
        put(IDENTIFY_MACS, mac)
    if ipv4:
        put(MANAGED4, *ipv4)
    if ipv6:
        put(MANAGED6, *ipv6)
    for address in ipv4:  # the forward chain's binding, fallback devices' too
        put(BIND4, {"concat": [mac, address]})
    for address in ipv6:
        put(BIND6, {"concat": [mac, address]})
    bundle = _bundle(policy, context)
    why = bundle.why
    fallback: list[NftCommand] = []
    templates: list[DnsTemplate] = []
    profile = 0
    profile_elements: dict[str, tuple[Any, ...]] = {}
    profile_digest = ""
    if why:
        fallback = _fallback_chains(policy, context)
        put(FALLBACK_MACS, mac)
        put(OUT_FALLBACK, [mac, {"jump": {"target": device_chain(mac, "out")}}])
        put(GW_FALLBACK, [mac, {"jump": {"target": device_chain(mac, "gw")}}])
        for family, addresses, fmap, fset in ((4, ipv4, IN_FALLBACK4, FALLBACK4),
                                              (6, ipv6, IN_FALLBACK6, FALLBACK6)):
            del family
            for address in addresses:
                put(fmap, [address, {"jump": {"target": device_chain(mac, "in")}}])
                put(fset, address)
    else:
        mark = device_mark(mac)
        put(MARK_OUT, [mac, mark])
        for address in ipv4:
            put(MARK_IN4, [address, mark])
        for address in ipv6:
            put(MARK_IN6, [address, mark])
        if context.portal_ports and policy.state is not LifecycleState.TRUSTED:
            put(PORTAL_CLOSED, mac)
        profile, profile_elements = bundle.profile, bundle.profile_elements
        profile_digest = bundle.profile_digest
        if profile_elements:
            put(PROFILE_OUT, [mac, profile])
            for address in ipv4:
                put(PROFILE_IN4, [address, profile])
            for address in ipv6:
                put(PROFILE_IN6, [address, profile])
        else:
            profile, profile_digest = 0, ""
        templates = list(bundle.templates)
    frozen = {name: tuple(values) for name, values in sorted(elements.items())}
    content = json.dumps(fallback, sort_keys=True) if why else bundle.digest
    portal = PORTAL_CLOSED in frozen
    digest = hashlib.sha256(repr((mac, ipv4, ipv6, portal, observed, content)).encode()
                            ).hexdigest()[:16]
    return DeviceElements(mac=mac, ipv4=ipv4, ipv6=ipv6, elements=frozen,
                          profile=profile, profile_elements=profile_elements,
                          profile_digest=profile_digest,
                          dns=tuple(templates), fallback=tuple(fallback),
                          fingerprint=digest, why_fallback=why,
                          fallback_names=frozenset(n.lower().rstrip(".")
                                                   for n in policy.dns_names()) if why
                          else frozenset())


class ProfileCollision(ValueError):
    """Two different profiles (or two devices' log marks) map to one 32-bit packet mark:
    installing the second would give each device the other's rules (or name the wrong
    device in the drop log); it is refused (fail closed)."""


def profile_collision(record: DeviceElements, profiles: Mapping[int, DeviceElements],
                      marks: Mapping[int, str] = {}) -> str | None:
    """Why ``record`` cannot be installed beside ``profiles`` (profile id -> a record
    carrying it) and ``marks`` (log mark -> MAC of the device holding it): its profile
    id is another content's, or its log mark another device's; None if it can."""
    held = profiles.get(record.profile) if record.profile else None
    if held is not None and held.profile_digest != record.profile_digest:
        return (f"{record.mac}: its profile's packet mark {record.profile:#010x} is also "
                f"that of {held.mac}'s different profile; not installed")
    if not record.fallback:
        mark = device_mark(record.mac)
        other = marks.get(mark)
        if other is not None and other != record.mac:
            return (f"{record.mac}: its log mark {mark:#010x} is also {other}'s; "
                    "not installed")
    return None


def without_collisions(records: Iterable[DeviceElements]
                       ) -> tuple[list[DeviceElements], list[str]]:
    """``records`` minus each whose profile id or log mark an earlier one took
    (``profile_collision``), and why each was left out."""
    kept: list[DeviceElements] = []
    errors: list[str] = []
    profiles: dict[int, DeviceElements] = {}
    marks: dict[int, str] = {}
    for record in records:
        why = profile_collision(record, profiles, marks)
        if why is not None:
            errors.append(why)
            continue
        kept.append(record)
        if record.profile:
            profiles.setdefault(record.profile, record)
        if not record.fallback:
            marks[device_mark(record.mac)] = record.mac
    return kept, errors


def _fallback_chains(policy: DevicePolicy, context: HomeContext) -> list[NftCommand]:
    """The device's ``_nft.py`` chains, moved to the main table."""
    mac = policy.device.mac.lower()
    cmds: list[NftCommand] = dns_set_commands(policy.dns_names(), table=TABLE)
    for kind, rules in device_rules(policy, context).items():
        name = device_chain(mac, kind)
        cmds.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}})
        cmds.append({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}})
        for command in rules:
            moved = copy.deepcopy(command)
            moved["add"]["rule"]["table"] = TABLE
            cmds.append(moved)
    return cmds


def dns_answer_elements(record: DeviceElements, name: str, device_address: str,
                        answer: str) -> dict[str, list[Any]]:
    """The elements one DNS answer adds for one device: set name -> elements (the
    caller adds each with the answer's TTL as timeout). A fallback device's chains
    read the chains design's per-name sets (``dns_set_name``) in the main table."""
    wanted = name.lower().rstrip(".")
    ip = ipaddress.ip_address(answer)
    mine = ipaddress.ip_address(device_address)
    out: dict[str, list[Any]] = {}
    if record.fallback:
        if wanted in record.fallback_names and mine.version == ip.version:
            out[dns_set_name(wanted, ip.version)] = [{"concat": [str(mine), str(ip)]}]
        return out
    for template in record.dns:
        row = template.row
        if template.name.lower().rstrip(".") != wanted or row.family != ip.version \
                or mine.version != ip.version:
            continue
        point = ((int(ip), int(ip)),)
        if row.dns_within is not None and not _intersect(point, row.dns_within):
            continue
        for action in (row.action, WATCH) if row.watched else (row.action,):
            target = out.setdefault(set_name(row.phase, row.family, action, row.shape), [])
            for element in _row_elements(row, str(mine), point):
                if element not in target:
                    target.append(element)
    return out


def element_commands(verb: str, elements: Mapping[str, Iterable[Any]], *,
                     timeout: int | None = None) -> list[NftCommand]:
    """``add``/``delete element`` commands, one per set, in the main table."""
    cmds: list[NftCommand] = []
    for name, values in elements.items():
        elems = list(values)
        if not elems:
            continue
        if timeout is not None and verb == "add":
            elems = [{"elem": {"val": e, "timeout": timeout}} for e in elems]
        cmds.append({verb: {"element": {"family": FAMILY, "table": TABLE, "name": name,
                                        "elem": elems}}})
    return cmds


def install_commands(record: DeviceElements, *, with_profile: bool = True
                     ) -> list[NftCommand]:
    """Commands that put a device in: fallback chains, its profile's elements (unless
    installed already for another device), its own elements."""
    profile = element_commands("add", record.profile_elements) if with_profile else []
    return list(record.fallback) + profile + element_commands("add", record.elements)


def update_commands(previous: DeviceElements | None, record: DeviceElements, *,
                    profile_installed: bool = False, drop_previous_profile: bool = False
                    ) -> list[NftCommand]:
    """One transaction from ``previous`` to ``record``: element changes only, unless
    either is a fallback device (whose chains are added, refilled or deleted). The
    caller, who knows which profiles other devices use, says whether ``record``'s
    profile is in already and whether ``previous``'s is now unused."""
    if previous is None:
        return install_commands(record, with_profile=not profile_installed)
    old, new = previous.keys(), record.keys()
    gone: dict[str, list[Any]] = {}
    added: dict[str, list[Any]] = {}
    for name, elems in previous.elements.items():
        gone[name] = [e for e in elems if (name, _element_text(e)) not in new]
    for name, elems in record.elements.items():
        added[name] = [e for e in elems if (name, _element_text(e)) not in old]
    cmds = element_commands("delete", gone)
    if drop_previous_profile and previous.profile != record.profile:
        cmds += element_commands("delete", previous.profile_elements)
    if record.fallback:
        cmds += list(record.fallback)
    if not profile_installed and previous.profile != record.profile:
        cmds += element_commands("add", record.profile_elements)
    cmds += element_commands("add", added)
    if previous.fallback and not record.fallback:
        cmds += _delete_chains(previous.mac)
    return cmds


def _delete_chains(mac: str) -> list[NftCommand]:
    cmds: list[NftCommand] = []
    for kind in ("out", "in", "gw"):
        body = {"family": FAMILY, "table": TABLE, "name": device_chain(mac, kind)}
        cmds += [{"flush": {"chain": dict(body)}}, {"delete": {"chain": dict(body)}}]
    return cmds


def remove_commands(previous: DeviceElements, *, drop_profile: bool = True
                    ) -> list[NftCommand]:
    """Commands that take a device out: its elements (its profile's too when no other
    device uses it), then its fallback chains."""
    cmds = element_commands("delete", previous.elements)
    if drop_profile:
        cmds += element_commands("delete", previous.profile_elements)
    if previous.fallback:
        cmds += _delete_chains(previous.mac)
    return cmds


# -- the fixed ruleset ----------------------------------------------------------------------


def _rule(chain: str, exprs: list[Expr], comment: str | None = None) -> NftCommand:
    body: dict[str, Any] = {"family": FAMILY, "table": TABLE, "chain": chain, "expr": exprs}
    if comment:
        body["comment"] = comment
    return {"add": {"rule": body}}


def _set(name: str, key: str | list[str], flags: Sequence[str] = (),
         **extra: Any) -> NftCommand:
    body: dict[str, Any] = {"family": FAMILY, "table": TABLE, "name": name, "type": key}
    if flags:
        body["flags"] = list(flags)
    body.update(extra)
    return {"add": {"set": body}}


def _map(name: str, key: str, data: str) -> NftCommand:
    return {"add": {"map": {"family": FAMILY, "table": TABLE, "name": name, "type": key,
                            "map": data}}}


def _device_key(phase: str, family: int) -> Expr:
    ip = "ip" if family == 4 else "ip6"
    if phase in ("out", "gw", "gwe", "gwb"):
        return _pl("ether", "saddr")
    if phase == "in":
        return _pl(ip, "daddr")
    if phase == "dnsout":
        return _pl(ip, "saddr")
    return _pl(ip, "daddr")  # dnsin


def _lookup_key(phase: str, family: int, shape: str) -> Expr:
    ip = "ip" if family == 4 else "ip6"
    remote = "saddr" if phase in ("in", "dnsin") else "daddr"
    if phase == "dnsout":
        parts = [_pl(ip, "saddr"), _pl(ip, "daddr")]
    elif phase == "dnsin":
        parts = [_pl(ip, "daddr"), _pl(ip, "saddr")]
    else:
        parts = [_meta("mark"), _pl(ip, remote)]  # the profile, set from a map
    parts.append(_meta("l4proto"))
    if shape != "p":
        parts += [_pl("th", "sport"), _pl("th", "dport")]
    return {"concat": parts}


def _key_type(phase: str, family: int, shape: str) -> list[str]:
    addr = _ADDR_TYPE[family]
    head = [addr] if phase in DNS_PHASES else ["mark"]
    types = [*head, addr, "inet_proto"]
    if shape != "p":
        types += ["inet_service", "inet_service"]
    return types


def _lookups(chain: str, phases: Sequence[str], verdict_accept: str,
             actions: Sequence[str] = ACTIONS) -> list[NftCommand]:
    """Drop sets of every phase and family first, then accept sets (``WATCH`` sets:
    ``goto tls_flow``)."""
    cmds: list[NftCommand] = []
    syn = _m({"&": [_pl("tcp", "flags"), ["fin", "syn", "rst", "ack"]]}, "syn")
    for action in actions:
        verdict = {"drop": None} if action == "d" else \
            {"goto": {"target": "tls_flow"}} if action == WATCH else {verdict_accept: None}
        for phase in phases:
            for family in (4, 6):
                for shape in SHAPES:
                    if not has_set(phase, action, shape):
                        continue
                    lookup = _m(_lookup_key(phase, family, shape),
                                "@" + set_name(phase, family, action, shape))
                    nf = _m(_meta("nfproto"), "ipv4" if family == 4 else "ipv6")
                    exprs = [nf, syn, lookup] if shape == "s" else [nf, lookup]
                    if phase == "gwb":
                        exprs.insert(0, _m(_pl("ether", "daddr"), BROADCAST_MAC))
                    if verdict_accept == "accept" and action == "a":
                        exprs.append(_zero_mark())
                    cmds.append(_rule(chain, [*exprs, verdict]))
    return cmds


def _element_sets() -> list[NftCommand]:
    cmds: list[NftCommand] = []
    for phase in (*PHASES, *DNS_PHASES):
        for family in (4, 6):
            for action in (*ACTIONS, WATCH):
                for shape in SHAPES:
                    if not has_set(phase, action, shape):
                        continue
                    flags = ["interval", "timeout"] if phase in DNS_PHASES else ["interval"]
                    cmds.append(_set(set_name(phase, family, action, shape),
                                     _key_type(phase, family, shape), flags))
    return cmds


def _zero_mark() -> Expr:
    return {"mangle": {"key": _meta("mark"), "value": 0}}


def _profile_mark(key: Expr, profile_map: str) -> Expr:
    return {"mangle": {"key": _meta("mark"), "value": {"map": {"key": key,
                                                                "data": "@" + profile_map}}}}


def _log(chain: str, mark_key: Expr, mark_map: str, rate_set: str, prefix: str,
         context: HomeContext) -> list[NftCommand]:
    mark = {"mangle": {"key": _meta("mark"), "value": {"map": {"key": mark_key,
                                                                "data": "@" + mark_map}}}}
    limit = {"set": {"op": "update", "elem": mark_key, "set": "@" + rate_set,
                     "stmt": [{"limit": {"rate": LOG_RATE, "per": "second",
                                         "burst": LOG_BURST}}]}}
    return [_rule(chain, [mark, limit, {"log": {"prefix": prefix, "group": context.log_group}}]),
            _rule(chain, [{"drop": None}])]


def _ct(key: str, direction: str | None = None) -> Expr:
    return {"ct": {"key": key, "dir": direction}} if direction else {"ct": {"key": key}}


def _identify_rules(context: HomeContext) -> list[NftCommand]:
    """Identification's two chains (``_nft.identify_rules``), in the main table, gated on
    the fixed ruleset's source binding (``bind4``/``bind6``): the forward chain's binding
    check comes after ``identify_log``, so the gate is what keeps another device's
    forgery out of a device's clues."""
    return identify_rules(context, source_sets=(BIND4, BIND6))


def _watch_rules(context: HomeContext) -> list[NftCommand]:
    """RFC 9761 observation (``_nft.tls_watch_rules`` as data), never a verdict: ``tls_out``
    (reached from ``from_dev`` after the drop lookups, for a profile in ``tls_profiles``)
    looks the flow up in the watched rows' sets and goes to ``tls_flow``, which sets
    ``TLS_WATCH_MARK`` on a new TCP connection (``tls_hello_rule`` then logs its
    ClientHello) or logs a UDP flow's first datagram if it is a (D)TLS handshake record;
    either way the packet returns to ``from_dev``, whose accept lookups decide."""
    mark = {"mangle": {"key": _ct("mark"), "value": {"|": [_ct("mark"), TLS_WATCH_MARK]}}}
    handshake = _m({"payload": {"base": "ih", "offset": 0, "len": 8}}, TLS_HANDSHAKE)
    return [
        *_lookups("tls_out", WATCH_PHASES, "return", (WATCH,)),
        _rule("tls_flow", [_m(_meta("l4proto"), "tcp"), _m(_ct("state"), "new", "in"), mark]),
        _rule("tls_flow", [_m(_meta("l4proto"), "udp"), handshake, *_tls_log(context)]),
    ]


def _base_chain(name: str, hook: str, policy: str) -> NftCommand:
    return {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name, "type": "filter",
                              "hook": hook, "prio": 0, "policy": policy}}}


def _chain(name: str) -> NftCommand:
    return {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}}


def _fresh(name: str) -> list[NftCommand]:
    table = {"family": FAMILY, "name": name}
    return [{"add": {"table": table}}, {"delete": {"table": dict(table)}},
            {"add": {"table": dict(table)}}]


def compile_fixed_ruleset(context: HomeContext) -> list[NftCommand]:
    """The whole fixed ruleset (replacing mudguard's tables): the same few dozen rules
    whatever the number of devices. With no element, nothing from the LAN is forwarded
    and only DHCP and neighbour discovery reach the gateway (fail closed). The first
    rule's comment is ``data_mark(context)``."""
    cmds = _fixed_commands(context)
    first = next(c["add"]["rule"] for c in cmds if "rule" in c.get("add", {}))
    first["comment"] = data_mark(context)
    return cmds


def data_ruleset(context: HomeContext) -> dict[str, Any]:
    """``compile_fixed_ruleset`` as a whole libnftables JSON document: what ``nft -j -f``
    loads at boot (``mudguard base`` with ``ruleset = "data"``); the daemon then finds
    its mark and takes it over."""
    return {"nftables": [{"metainfo": {"json_schema_version": 1}},
                         *compile_fixed_ruleset(context)]}


def data_mark(context: HomeContext) -> str:
    """The comment that marks this fixed ruleset in the kernel."""
    text = json.dumps(_fixed_commands(context), sort_keys=True, separators=(",", ":"))
    return DATA_MARK_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]


def _fixed_commands(context: HomeContext) -> list[NftCommand]:
    lan = context.lan_interface
    iif = _m(_meta("iifname"), lan)
    est = _m({"ct": {"key": "state"}}, ["established", "related"], "in")
    invalid = _m({"ct": {"key": "state"}}, "invalid", "in")
    ether = _pl("ether", "saddr")
    cmds: list[NftCommand] = [*_fresh(TABLE)]
    for table in (*shard_names(), *surplus_shard_names()):  # the chains design's tables
        cmds += _fresh(table)[:2]
    cmds += [
        _set(KNOWN_MACS, "ether_addr"), _set(MANAGED4, "ipv4_addr"), _set(MANAGED6, "ipv6_addr"),
        _set(PENDING4, "ipv4_addr"), _set(PENDING6, "ipv6_addr"),
        _set(BIND4, ["ether_addr", "ipv4_addr"]), _set(BIND6, ["ether_addr", "ipv6_addr"]),
        _set(PORTAL_CLOSED, "ether_addr"), *identify_sets(),
        _set(TLS_PROFILES, "mark"),
        _set(FALLBACK_MACS, "ether_addr"), _set(FALLBACK4, "ipv4_addr"),
        _set(FALLBACK6, "ipv6_addr"),
        _set(RATECAP, "ether_addr", ["timeout"], timeout=3600, size=65535),
        _set(LOG_OUT, "ether_addr", ["timeout"], timeout=3600, size=65535),
        _set(LOG_IN4, "ipv4_addr", ["timeout"], timeout=3600, size=65535),
        _set(LOG_IN6, "ipv6_addr", ["timeout"], timeout=3600, size=65535),
        _map(PROFILE_OUT, "ether_addr", "mark"), _map(PROFILE_IN4, "ipv4_addr", "mark"),
        _map(PROFILE_IN6, "ipv6_addr", "mark"),
        _map(MARK_OUT, "ether_addr", "mark"), _map(MARK_IN4, "ipv4_addr", "mark"),
        _map(MARK_IN6, "ipv6_addr", "mark"),
        _map(OUT_FALLBACK, "ether_addr", "verdict"), _map(GW_FALLBACK, "ether_addr", "verdict"),
        _map(IN_FALLBACK4, "ipv4_addr", "verdict"), _map(IN_FALLBACK6, "ipv6_addr", "verdict"),
        *_element_sets(),
        _base_chain("forward", "forward", "drop"),
        _base_chain("input", "input", "accept"),
        _base_chain("output", "output", "accept"),
        _chain("from_dev"), _chain("to_dev4"), _chain("to_dev6"), _chain("to_gw"),
        _chain("identify_new"), _chain("identify_log"), _chain("tls_out"), _chain("tls_flow"),
    ]
    ip4, ip6 = _pl("ip", "daddr"), _pl("ip6", "daddr")
    cmds.append(_tls_rate_set())
    cmds += [
        # first (the first carries the mark): the source binding, before the established
        # fast path, so a packet from the LAN whose (MAC, source) pair is no device's
        # (another device's source, an unknown MAC) joins no flow, not even one it
        # knows the sequence numbers of; from_dev needs no binding of its own after it
        *source_binding_rules(lan),
        # RFC 9761, the ClientHello of a flow a fallback device's chain marked
        # (conntrack mark bit, never the packet mark used below)
        _rule("forward", tls_hello_rule(context)),
        identify_log_jump(),
        _rule("forward", [est, {"accept": None}]),
        _rule("forward", [invalid, {"drop": None}]),
        _rule("forward", [iif, _m(ether, "@" + KNOWN_MACS, "!="), {"drop": None}],
              "unknown device on the LAN: nothing forwarded"),
        identify_new_jump(context),
        _rule("forward", [iif, {"jump": {"target": "from_dev"}}]),
        _rule("forward", [_m(ip4, "@" + PENDING4), {"drop": None}], "receiver's rules not in yet"),
        _rule("forward", [_m(ip6, "@" + PENDING6), {"drop": None}], "receiver's rules not in yet"),
        _rule("forward", [_m(ip4, "@" + MANAGED4), {"jump": {"target": "to_dev4"}}]),
        _rule("forward", [_m(ip6, "@" + MANAGED6), {"jump": {"target": "to_dev6"}}]),
        _rule("forward", [_zero_mark()], "the profile mark stays inside the ruleset"),
        _rule("forward", [_m(ip4, "@" + MANAGED4), {"accept": None}]),
        _rule("forward", [_m(ip6, "@" + MANAGED6), {"accept": None}]),
        _rule("forward", [iif, {"accept": None}], "passed the sender's rules"),
    ]
    cmds += _identify_rules(context)
    cmds += _watch_rules(context)
    # from_dev: the sender's side; returns when allowed.
    rate = {"set": {"op": "update", "elem": ether, "set": "@" + RATECAP,
                    "stmt": [{"limit": {"rate": context.new_conn_rate, "per": "second",
                                        "burst": context.new_conn_burst, "inv": True}}]}}
    cmds += [
        _rule("from_dev", [{"vmap": {"key": ether, "data": "@" + OUT_FALLBACK}}]),
        _rule("from_dev", [_m(ether, "@" + FALLBACK_MACS), {"return": None}]),
        _rule("from_dev", [_m({"ct": {"key": "state"}}, "new", "in"), rate, {"drop": None}],
              "new-connection rate cap"),
        _rule("from_dev", [_zero_mark()]),
        _rule("from_dev", [_profile_mark(ether, PROFILE_OUT)], "the sender's profile"),
        *_lookups("from_dev", ("out", "dnsout"), "return", ("d",)),
        _rule("from_dev", [_m(_meta("mark"), "@" + TLS_PROFILES), {"jump": {"target": "tls_out"}}],
              "RFC 9761: a (D)TLS-profiled ACE's flow is observed"),
        *_lookups("from_dev", ("out", "dnsout"), "return", ("a",)),
        *_log("from_dev", ether, MARK_OUT, LOG_OUT, LOG_PREFIX_OUT, context),
    ]
    for family, chain in ((4, "to_dev4"), (6, "to_dev6")):
        ip = "ip" if family == 4 else "ip6"
        daddr = _pl(ip, "daddr")
        fmap, fset = (IN_FALLBACK4, FALLBACK4) if family == 4 else (IN_FALLBACK6, FALLBACK6)
        lookups = [c for c in _lookups(chain, ("in", "dnsin"), "return")
                   if c["add"]["rule"]["expr"][0]["match"]["right"] == f"ipv{family}"]
        cmds += [
            _rule(chain, [{"vmap": {"key": daddr, "data": "@" + fmap}}]),
            _rule(chain, [_m(daddr, "@" + fset), {"return": None}]),
            _rule(chain, [_zero_mark()]),
            _rule(chain, [_profile_mark(daddr, PROFILE_IN4 if family == 4 else PROFILE_IN6)],
                  "the receiver's profile"),
            *lookups,
            *_log(chain, daddr, MARK_IN4 if family == 4 else MARK_IN6,
                  LOG_IN4 if family == 4 else LOG_IN6, LOG_PREFIX_IN, context),
        ]
    # input: a known device's packets to the gateway itself go through to_gw (final);
    # the established fast path first, bound (MAC, source) pairs only from the LAN (an
    # unknown MAC's DHCP and ND still pass below, as if new)
    cmds += [
        *established_input_rules(lan),
        _rule("input", [iif, _m(ether, "@" + KNOWN_MACS), {"goto": {"target": "to_gw"}}],
              "a managed device: its rules decide"),
        _rule("input", [iif, _m(_pl("udp", "sport"), 68), _m(_pl("udp", "dport"), 67),
                        {"accept": None}], "unknown device: DHCPv4 only"),
        _rule("input", [iif, _m(_pl("udp", "dport"), 547), {"accept": None}],
              "unknown device: DHCPv6 only"),
        _rule("input", [iif, _m(_pl("icmpv6", "type"), {"set": [133, 135, 136]}),
                        {"accept": None}], "unknown device: neighbour discovery"),
        _rule("input", [iif, {"drop": None}]),
    ]
    to_gw: list[NftCommand] = [
        _rule("to_gw", [{"vmap": {"key": ether, "data": "@" + GW_FALLBACK}}]),
        _rule("to_gw", [_zero_mark()]),
        _rule("to_gw", [_profile_mark(ether, PROFILE_OUT)], "the sender's profile"),
    ]
    if context.portal_ports:
        ports = sorted(set(context.portal_ports))
        right: Any = ports[0] if len(ports) == 1 else {"set": ports}
        to_gw.append(_rule("to_gw", [_m(ether, "@" + PORTAL_CLOSED),
                                     _m(_pl("tcp", "dport"), right), {"drop": None}],
                           "the portal is not for managed devices"))
    to_gw += [r for r in _lookups("to_gw", ("gwe",), "accept")]
    to_gw += [
        _rule("to_gw", [_m(_meta("nfproto"), "ipv4"),
                        _m({"concat": [ether, _pl("ip", "saddr")]}, "@" + BIND4, "!="),
                        {"drop": None}], "source must be the device own IPv4"),
        _rule("to_gw", [_m(_meta("nfproto"), "ipv6"),
                        _m(_pl("ip6", "saddr"), {"prefix": {"addr": "fe80::", "len": 10}}, "!="),
                        _m({"concat": [ether, _pl("ip6", "saddr")]}, "@" + BIND6, "!="),
                        {"drop": None}], "source must be the device own IPv6 or link-local"),
        *_lookups("to_gw", ("gw", "gwb"), "accept"),
        *_log("to_gw", ether, MARK_OUT, LOG_OUT, LOG_PREFIX_OUT, context),
    ]
    cmds += to_gw
    cmds += [
        _rule("output", [_m(_meta("oifname"), lan), _m(_pl("icmp", "type"), 5), {"drop": None}],
              "no redirects: lateral traffic stays routed"),
        _rule("output", [_m(_meta("oifname"), lan), _m(_pl("icmpv6", "type"), 137),
                         {"drop": None}], "no redirects: lateral traffic stays routed"),
    ]
    return cmds


def set_layouts() -> dict[str, tuple[tuple[str, ...], bool, str | None]]:
    """Every element set and data map of the fixed ruleset whose elements a netlink
    encoder cannot tell from their text: name -> (key types, interval, data type)."""
    out: dict[str, tuple[tuple[str, ...], bool, str | None]] = {}
    for phase in (*PHASES, *DNS_PHASES):
        for family in (4, 6):
            for action in (*ACTIONS, WATCH):
                for shape in SHAPES:
                    if has_set(phase, action, shape):
                        out[set_name(phase, family, action, shape)] = (
                            tuple(_key_type(phase, family, shape)), True, None)
    out[TLS_PROFILES] = (("mark",), False, None)
    out[BIND4] = (("ether_addr", "ipv4_addr"), False, None)
    out[BIND6] = (("ether_addr", "ipv6_addr"), False, None)
    out[PROFILE_OUT] = (("ether_addr",), False, "mark")
    out[PROFILE_IN4] = (("ipv4_addr",), False, "mark")
    out[PROFILE_IN6] = (("ipv6_addr",), False, "mark")
    out[MARK_OUT] = (("ether_addr",), False, "mark")
    out[MARK_IN4] = (("ipv4_addr",), False, "mark")
    out[MARK_IN6] = (("ipv6_addr",), False, "mark")
    return out


ELEMENT_SETS: Final = (KNOWN_MACS, MANAGED4, MANAGED6, BIND4, BIND6, PORTAL_CLOSED,
                       IDENTIFY_MACS, TLS_PROFILES,
                       PROFILE_OUT, PROFILE_IN4, PROFILE_IN6,
                       MARK_OUT, MARK_IN4, MARK_IN6, FALLBACK_MACS, FALLBACK4, FALLBACK6,
                       OUT_FALLBACK, GW_FALLBACK, IN_FALLBACK4, IN_FALLBACK6)
"""The sets and maps a device's elements go to besides the rule sets (``set_layouts``)."""


def device_sets() -> tuple[str, ...]:
    """Every set or map that holds device elements (not DNS answers): what a reconcile
    reads back."""
    rule_sets = tuple(n for n in set_layouts() if not n.startswith("dns"))
    return tuple(dict.fromkeys((*ELEMENT_SETS, *rule_sets)))


@dataclass(frozen=True, slots=True)
class HomeData:
    """A home compiled as data: the fixed ruleset and every device's elements."""

    ruleset: list[NftCommand]
    devices: list[DeviceElements] = field(default_factory=list)

    def commands(self) -> list[NftCommand]:
        """The fixed ruleset, every fallback chain, then every element, one command per set."""
        return [*self.ruleset, *home_element_commands(self.devices)]


def home_element_commands(records: Iterable[DeviceElements]) -> list[NftCommand]:
    """Every fallback chain, then every element of ``records`` (each profile once), one
    command per set."""
    merged: dict[str, list[Any]] = {}
    chains: list[NftCommand] = []
    profiles: set[int] = set()
    for record in records:
        chains += record.fallback
        if record.profile and record.profile not in profiles:
            profiles.add(record.profile)
            for name, elems in record.profile_elements.items():
                merged.setdefault(name, []).extend(elems)
        for name, elems in record.elements.items():
            merged.setdefault(name, []).extend(elems)
    return [*chains, *element_commands("add", merged)]


def compile_home_data(policies: Iterable[DevicePolicy], context: HomeContext) -> HomeData:
    """A whole home as data (pure)."""
    return HomeData(compile_fixed_ruleset(context),
                    [device_elements(p, context) for p in policies])
