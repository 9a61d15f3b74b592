"""Compile device policies to libnftables JSON commands (pure: no I/O, never text).

Theory of operation. Devices live in ``SHARDS`` device tables (``inet
mudguard_00`` …, chosen by a hash of the MAC: ``shard_table``), each with its own
dispatch maps, device chains and DNS sets, and base chains at priority 0; the main
``inet mudguard`` table runs after them (priority 10) and decides the rest::

    mudguard_NN forward (policy accept)           mudguard forward (policy drop)
      ct state established,related accept           iifname LAN ether saddr != @known_macs drop
      ct state invalid drop                          iifname LAN ether saddr . ip saddr
      iifname LAN ether saddr vmap @out_dispatch       != @bind4 drop (and ip6, @bind6)
      ip daddr vmap @in_dispatch4                    <RFC 9761: log a marked flow's ClientHello>
      ip6 daddr vmap @in_dispatch6                   ct state established,related accept
    mudguard_NN input (policy accept)                ct state invalid drop
      ct state established,related accept            ip daddr @pending4 drop
      iifname LAN ether saddr vmap @gw_dispatch      ip6 daddr @pending6 drop
                                                     ip daddr @managed4 accept
                                                     ip6 daddr @managed6 accept
                                                     iifname LAN accept
                                                   mudguard input (policy accept)
                                                     iifname != LAN ct state established accept
                                                     iifname LAN ct state established
                                                       <bound MAC . source, or fe80::/10> accept
                                                     iifname LAN <DHCP, ND> accept
                                                     iifname LAN ct state established drop
                                                     iifname LAN ether saddr @known_macs accept
                                                     iifname LAN drop
                                                   mudguard output: no ICMP redirects to the LAN

A drop in any table is final and an accept only passes the packet on to the next
table, so a packet from the LAN is forwarded only if its sender's ``out`` chain let
it through (its shard) and, when it goes to a managed device, the receiver's ``in``
chain too (the receiver's shard); the main table then accepts what came from a
known device or went to a managed address and drops everything else. A shard
accepts established traffic at once (one rule in each shard: the cost paid on
every packet), but the main table drops any LAN packet whose ``MAC . source`` pair is
not a managed device's (``bind4``/``bind6``) before its own established accept: a
device or an unknown MAC that knows another device's flow tuple and sequence numbers
cannot inject into it (conntrack does not look at MACs). Why shards:
the kernel re-validates a whole table at each commit that adds a rule; one table
per device would put a table's base chain on every packet's path, one table for
all would make each update cost in proportion to the home.

Each managed device has three chains, reached only through its shard's verdict
maps, so the kernel's per-packet cost does not grow with the number of devices:

- ``dev_<id>_out`` (new flows only): new-connection rate cap, source-address binding
  (a device's packets must carry its own addresses; the same pairs as the main
  table's ``bind4``/``bind6``, here so that a forged packet is dropped before the
  rules and never logged as a deviation), its from-device rules (a match
  ``return``s to the forward chain, which then applies the receiver's ``in``
  chain if the destination is a managed device), rate-limited NFLOG, drop;
- ``dev_<id>_in``: its to-device rules (a match accepts), NFLOG, drop;
- ``dev_<id>_gw``: traffic to the gateway itself (its addresses, multicast and
  broadcast): the portal's ports are dropped, then the baseline, the
  ``PeerKind.GATEWAY`` rules and, in policy order among them, each MUD rule
  restricted to the destinations the gateway receives itself
  (``_local.local_destinations``: mDNS/SSDP groups, IGMP/MLD, broadcasts, a
  controller that is the gateway), NFLOG (as ``out``), drop.

So a LAN-to-LAN flow between two managed devices passes the sender's ``out`` chain
AND the receiver's ``in`` chain. Only new connections reach the device chains'
rules; established packets are accepted at once (after the main table's binding
when they come from the LAN), which is what ``direction-initiated``
builds on: a rule whose packets may not open the TCP connection compiles to a
``ct direction reply`` match (it can never admit a new connection).

DNS names compile to the shard-wide sets ``dns_set_name(name, 4|6)`` of
``device address . remote address`` pairs; the resolver fills the set in the
asking device's shard. Names from a MUD file only ever reach a rule's
``comment``, sanitised.

RFC 9761 (D)TLS profiles are observed, not enforced: ``tls_watch_rules`` marks the new
flows of a profiled ACE (or logs a DTLS first datagram) and ``tls_hello_rule``, the main
table's first rule, logs the first payload packet of a marked flow to a separate NFLOG
group (at most ``TLS_DEVICE_RATE``/s per device MAC, ``TLS_LOG_RATE``/s in all); every
other packet pays one conntrack-mark test.

Updating one device re-sends only its chains (add + flush + rules) and its map
and main-set entries, in one batch: the kernel swaps them atomically.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
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
    GW_DISPATCH,
    IN_DISPATCH4,
    IN_DISPATCH6,
    KNOWN_MACS,
    MANAGED4,
    MANAGED6,
    OUT_DISPATCH,
    PENDING4,
    PENDING6,
    TABLE,
    device_chain,
    dns_set_name,
    log_prefix,
    shard_names,
    shard_table,
    surplus_shard_names,
)

NftCommand = dict[str, Any]
Expr = dict[str, Any]

FAMILY: Final = "inet"
LOG_RATE: Final = 5  # NFLOG messages per second per device and direction
LOG_BURST: Final = 10
MAX_COMMENT: Final = 100  # nftables stores at most 128 bytes of comment

_PROTO_NAMES: Final = {6: "tcp", 17: "udp"}
_PORT_OPS: Final = {PortOperator.EQ: "==", PortOperator.NEQ: "!=", PortOperator.LT: "<",
                    PortOperator.GT: ">", PortOperator.LTE: "<=", PortOperator.GTE: ">="}
_COMMENT_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:/@+=,()#-]")

CHAIN_KINDS: Final = ("out", "in", "gw")

# RFC 9761 (D)TLS profiles: observed, never enforced in the kernel (see tls_watch_rules).
TLS_WATCH_MARK: Final = 0x10  # conntrack mark bit: "log this flow's first payload packet"
TLS_LOG_PREFIX: Final = "mgt"
TLS_LOG_RATE: Final = 50  # ClientHello logs per second (whole home, main table)
TLS_DEVICE_RATE: Final = 10  # … and per device (MAC), burst 2x: one device cannot use it all
TLS_RATE_SET: Final = "tls_rate"  # main table: per-MAC limiter state (dynamic, 1 min)
TLS_SNAPLEN: Final = 2048  # bytes copied per logged packet (watch.clienthello.SNAPLEN)
TLS_HANDSHAKE: Final = 0x16  # TLS/DTLS record content type "handshake"

# Identification (#16): the first client payload of a device's new web flows and its TLS
# servers' first flight, logged for devices without a MUD file (``policy._data``).
IDENTIFY_CLIENT_MARK: Final = 0x20  # ct mark bit: "log the client's first payload packet"
IDENTIFY_SERVER_MARK: Final = 0x40  # ct mark bit: "log the server's replies" (first flight)
IDENTIFY_CLIENT_PREFIX: Final = "mgic"  # NFLOG prefix of a client's first payload
IDENTIFY_SERVER_PREFIX: Final = "mgis"  # NFLOG prefix of a server's reply packet
IDENTIFY_TLS_PORTS: Final = (443, 8443)  # client payload and server's first flight
IDENTIFY_HTTP_PORTS: Final = (80, 8080)  # client payload only (User-Agent, Host)
IDENTIFY_DEVICE_RATE: Final = 20  # logged packets per second per device, burst 2x
IDENTIFY_LOG_RATE: Final = 200  # logged packets per second, whole home
IDENTIFY_SERVER_PACKETS: Final = 12  # server packets per flow (with conntrack accounting)
IDENTIFY_CLIENT_SNAPLEN: Final = 2048  # a ClientHello or an HTTP request's headers
IDENTIFY_SERVER_SNAPLEN: Final = 4096  # a reply segment (a GRO aggregate is cut here)


# -- tiny expression builders (firewalld's _fragment helpers) --------------------------------


def _match(left: Expr, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol: str, field: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": field}}


def _meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def _ct(key: str) -> Expr:
    return {"ct": {"key": key}}


def _ipproto(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def _addr_value(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Any:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def address_set(addresses: Iterable[str], family: int) -> Any | None:
    """The right-hand side matching ``addresses`` of ``family`` (None if there are none).

    Prefixes and addresses are merged first: nftables refuses overlapping intervals.
    """
    nets = _merged(tuple(addresses), family)
    if not nets:
        return None
    merged = [_addr_value(n) for n in nets]  # fresh dicts: callers own their commands
    return merged[0] if len(merged) == 1 else {"set": merged}


@functools.lru_cache(maxsize=8192)
def _merged(addresses: tuple[str, ...], family: int
            ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The ``family`` prefixes among ``addresses``, collapsed (cached: a home compiles
    the same LAN, gateway and peer lists for every device)."""
    nets: list[Any] = []
    for text in addresses:
        net = ipaddress.ip_network(text, strict=False)
        if net.version == family:
            nets.append(net)
    return tuple(ipaddress.collapse_addresses(nets)) if nets else ()


def sanitise_comment(text: str) -> str:
    """A comment safe in any rendering of the ruleset (text or JSON), length-capped."""
    return _COMMENT_UNSAFE.sub("_", text)[:MAX_COMMENT]


def _rule(chain: str, exprs: list[Expr], comment: str | None = None, *,
          table: str = TABLE) -> NftCommand:
    body: dict[str, Any] = {"family": FAMILY, "table": table, "chain": chain, "expr": exprs}
    if comment:
        body["comment"] = sanitise_comment(comment)
    return {"add": {"rule": body}}


# -- peers -------------------------------------------------------------------------------------


def peer_addresses(rule: Rule, device: DeviceFacts, context: HomeContext) -> list[str] | None:
    """Addresses/prefixes a rule's peer stands for; ``None`` means "no address test".

    ``PeerKind.DNSNAME`` and ``PeerKind.INTERNET`` are not address lists and return None
    (the compiler handles them); an empty list means the peer is nobody (yet).
    """
    kind, value = rule.peer, rule.peer_value
    if kind in (PeerKind.ANY, PeerKind.GATEWAY, PeerKind.DNSNAME, PeerKind.INTERNET):
        return None
    if kind is PeerKind.NETWORK:
        return [value] if value else []
    if kind is PeerKind.LOCAL_NETWORKS:
        return list(context.lan_prefixes)
    if kind is PeerKind.CONTROLLER:
        return list(context.controllers.get(value or "", ()))
    if kind is PeerKind.MY_CONTROLLER:
        return list(context.my_controllers.get(device.mud_url or "", ()))
    return list(peer_device_addresses(kind, value, device, context))


def _families(rule: Rule) -> list[int]:
    """The address families a rule applies to: its own, narrowed by ICMP vs ICMPv6."""
    families = [4, 6] if rule.family is None else [rule.family]
    if rule.protocol == 1:
        return [f for f in families if f == 4]
    if rule.protocol == 58:
        return [f for f in families if f == 6]
    if _typed_icmp(rule):  # an ICMP type/code without a protocol: the rule's family
        return families[:1]
    return families


def _typed_icmp(rule: Rule) -> bool:
    """The rule tests the ICMP type or code (either alone is a test: never dropped)."""
    return rule.icmp_type is not None or rule.icmp_code is not None


def _needs_family(rule: Rule) -> bool:
    return (rule.family is not None or rule.peer not in (PeerKind.ANY, PeerKind.GATEWAY)
            or _gateway_service(rule)
            or rule.also_local or rule.protocol in (1, 58) or _typed_icmp(rule))


def _gateway_service(rule: Rule) -> bool:
    """A MUD rule naming one of the gateway's services (``GATEWAY_SERVICES``): it reaches
    the gateway's own addresses only, never a group or broadcast the gateway receives."""
    return rule.peer is PeerKind.GATEWAY and rule.peer_value is not None


def _peer_exprs(rule: Rule, family: int, device: DeviceFacts,
                context: HomeContext) -> list[Expr] | None:
    """Expressions matching the rule's peer in ``family``; None if it can match nobody."""
    ip = _ipproto(family)
    remote = "daddr" if rule.direction is Direction.FROM_DEVICE else "saddr"
    local = "saddr" if remote == "daddr" else "daddr"
    exprs: list[Expr] = []
    if rule.peer is PeerKind.DNSNAME:
        if not rule.peer_value:
            return None
        pair = [_payload(ip, local), _payload(ip, remote)]
        exprs.append(_match({"concat": pair}, "@" + dns_set_name(rule.peer_value, family)))
    elif rule.peer is PeerKind.INTERNET:
        lan = address_set(context.lan_prefixes, family)
        exprs.append(_match(_payload(ip, remote), lan, "!=") if lan is not None
                     else _match(_meta("nfproto"), "ipv4" if family == 4 else "ipv6"))
    else:
        addresses = peer_addresses(rule, device, context)
        if addresses is None:
            exprs.append(_match(_meta("nfproto"), "ipv4" if family == 4 else "ipv6"))
        else:
            right = address_set(addresses, family)
            if right is None:
                return None
            exprs.append(_match(_payload(ip, remote), right))
    if rule.also_local:
        lan = address_set(context.lan_prefixes, family)
        if lan is None:
            return None
        exprs.append(_match(_payload(ip, remote), lan))
    return exprs


def _port_expr(proto: str, field: str, port: PortMatch) -> Expr:
    if port.operator is PortOperator.RANGE:
        return _match(_payload(proto, field), {"range": [port.lower, port.upper]})
    return _match(_payload(proto, field), port.port, _PORT_OPS[port.operator])


def _transport_exprs(rule: Rule, family: int | None) -> list[Expr]:
    exprs: list[Expr] = []
    proto = _PROTO_NAMES.get(rule.protocol or -1)
    has_ports = proto is not None and (rule.src_port or rule.dst_port)
    if rule.ethertype is not None:
        exprs.append(_match(_meta("protocol"), rule.ethertype))
    if rule.eth_dst is not None:
        exprs.append(_match(_payload("ether", "daddr"), rule.eth_dst.lower()))
    typed = _typed_icmp(rule)
    if rule.protocol is not None and not has_ports and not typed:
        exprs.append(_match(_meta("l4proto"), rule.protocol))
    if proto is not None:
        if rule.src_port:
            exprs.append(_port_expr(proto, "sport", rule.src_port))
        if rule.dst_port:
            exprs.append(_port_expr(proto, "dport", rule.dst_port))
    if typed:
        icmp_proto = "icmp" if family == 4 else "icmpv6"
        if rule.icmp_type is not None:
            exprs.append(_match(_payload(icmp_proto, "type"), rule.icmp_type))
        if rule.icmp_code is not None:
            exprs.append(_match(_payload(icmp_proto, "code"), rule.icmp_code))
    if rule.protocol == 6 and rule.initiated is not None:
        if rule.initiated is rule.direction:
            # The opening packet must be a bare SYN: conntrack's loose pick-up of a
            # mid-stream ACK would otherwise count as a connection this side opened.
            flags = {"&": [_payload("tcp", "flags"), ["fin", "syn", "rst", "ack"]]}
            exprs.append(_match(flags, "syn"))
        else:
            # These packets may flow only inside a connection the other side opened;
            # conntrack accepts those before any device chain, so nothing new passes.
            exprs.append(_match(_ct("direction"), "reply"))
    return exprs


def rule_exprs(rule: Rule, device: DeviceFacts, context: HomeContext) -> list[list[Expr]]:
    """Every nft expression list (one per address family as needed) for one rule."""
    if rule.peer is PeerKind.GATEWAY:
        # In the gateway's input chain the destination is the gateway by construction.
        variants: list[list[Expr]] = []
        if not _needs_family(rule):
            return [_transport_exprs(rule, None)]
        for family in _families(rule):
            fam = [_match(_meta("nfproto"), "ipv4" if family == 4 else "ipv6")]
            if _gateway_service(rule):
                right = address_set(context.gateway_addresses, family)
                if right is None:
                    continue
                fam = [_match(_payload(_ipproto(family), "daddr"), right)]
            variants.append(fam + _transport_exprs(rule, family))
        return variants
    if not _needs_family(rule):
        return [_transport_exprs(rule, None)]
    out: list[list[Expr]] = []
    for family in _families(rule):
        peer = _peer_exprs(rule, family, device, context)
        if peer is not None:
            out.append(peer + _transport_exprs(rule, family))
    return out


def local_rule_exprs(rule: Rule, device: DeviceFacts, context: HomeContext) -> list[list[Expr]]:
    """The ``gw``-chain variants of a from-device rule: its destinations the gateway
    receives itself (empty if none), with the rule's own protocol/port/ICMP tests."""
    destinations = local_destinations(rule, device, context)
    out: list[list[Expr]] = []
    if not destinations:
        return out
    for family in _families(rule):
        right = address_set(destinations, family)
        if right is not None:
            daddr = _match(_payload(_ipproto(family), "daddr"), right)
            out.append([daddr, *_transport_exprs(rule, family)])
    return out


# -- device chains -------------------------------------------------------------------------------


def _verdict(rule: Rule, kind: str) -> Expr:
    if rule.action is not Forwarding.ACCEPT:
        return {"drop": None}
    return {"return": None} if kind == "out" else {"accept": None}


def _chain_of(rule: Rule) -> str | None:
    if rule.peer is PeerKind.GATEWAY:
        # Traffic from the gateway to a device is the gateway's own output: not filtered.
        return "gw" if rule.direction is Direction.FROM_DEVICE else None
    return "out" if rule.direction is Direction.FROM_DEVICE else "in"


def _source_binding(device: DeviceFacts, chain: str, *, gateway: bool,
                    table: str) -> list[NftCommand]:
    """Drop packets that do not carry the device's own addresses (anti-spoofing)."""
    cmds: list[NftCommand] = []
    for family, addresses in ((4, device.ipv4), (6, device.ipv6)):
        allowed = list(addresses)
        if family == 6 and gateway:
            allowed.append("fe80::/10")  # link-local sources are normal towards the gateway
        right = address_set(allowed, family)
        ip = _ipproto(family)
        if right is None:
            exprs = [_match(_meta("nfproto"), "ipv4" if family == 4 else "ipv6"), {"drop": None}]
        else:
            exprs = [_match(_payload(ip, "saddr"), right, "!="), {"drop": None}]
        cmds.append(_rule(chain, exprs, f"source must be the device own IPv{family}",
                          table=table))
    return cmds


def _final(chain: str, mac: str, direction: str, context: HomeContext) -> list[NftCommand]:
    log = [{"limit": {"rate": LOG_RATE, "per": "second", "burst": LOG_BURST}},
           {"log": {"prefix": log_prefix(mac, direction), "group": context.log_group}}]
    table = shard_table(mac)
    return [_rule(chain, log, table=table), _rule(chain, [{"drop": None}], table=table)]


def device_rules(policy: DevicePolicy, context: HomeContext) -> dict[str, list[NftCommand]]:
    """The rule commands of each of the device's chains (``out``, ``in``, ``gw``)."""
    device = policy.device
    mac = device.mac.lower()
    names = {kind: device_chain(mac, kind) for kind in CHAIN_KINDS}
    table = shard_table(mac)

    def add(chain: str, exprs: list[Expr], comment: str | None = None) -> NftCommand:
        return _rule(chain, exprs, comment, table=table)

    chains: dict[str, list[NftCommand]] = {kind: [] for kind in CHAIN_KINDS}
    out, gw = names["out"], names["gw"]
    rate = {"limit": {"rate": context.new_conn_rate, "per": "second",
                      "burst": context.new_conn_burst, "inv": True}}
    chains["out"].append(add(out, [_match(_ct("state"), "new"), rate, {"drop": None}],
                             "new-connection rate cap"))
    chains["out"] += _source_binding(device, out, gateway=False, table=table)
    if context.portal_ports and policy.state is not LifecycleState.TRUSTED:
        ports = sorted(set(context.portal_ports))
        right = ports[0] if len(ports) == 1 else {"set": ports}
        chains["gw"].append(add(gw, [_match(_payload("tcp", "dport"), right), {"drop": None}],
                                "the portal is not for managed devices"))
    early = [r for r in policy.rules if r.any_source and _chain_of(r) == "gw"]
    late = [r for r in policy.rules if r not in early]
    for rule in early:
        for exprs in rule_exprs(rule, device, context):
            chains["gw"].append(add(gw, [*exprs, _verdict(rule, "gw")], rule.origin))
    chains["gw"] += _source_binding(device, gw, gateway=True, table=table)
    watched = tls_watched_origins(policy)
    for rule in late:
        kind = _chain_of(rule)
        if kind is None:
            continue
        for exprs in rule_exprs(rule, device, context):
            if kind == "out" and rule.origin in watched:
                chains[kind] += [add(out, e, "RFC 9761: watch the (D)TLS ClientHello")
                                 for e in tls_watch_rules(rule, exprs, context)]
            chains[kind].append(add(names[kind], [*exprs, _verdict(rule, kind)], rule.origin))
        if kind == "out":
            for exprs in local_rule_exprs(rule, device, context):
                chains["gw"].append(add(gw, [*exprs, _verdict(rule, "gw")], rule.origin))
    chains["out"] += _final(out, mac, "out", context)
    chains["in"] += _final(names["in"], mac, "in", context)
    chains["gw"] += _final(gw, mac, "out", context)
    return chains


def tls_watched_origins(policy: DevicePolicy) -> frozenset[str]:
    """The ``<acl>/<ace>`` origins of the device's from-device ACEs that carry RFC 9761
    (D)TLS profiles: their flows' ClientHellos are logged (``tls_watch_rules``)."""
    if policy.mud is None:
        return frozenset()
    found = set()
    for acl in policy.mud.acls:
        for ace in acl.aces:
            if ace.matches.tls_profiles and ace.action is Forwarding.ACCEPT:
                found.add(f"{acl.name}/{ace.name}")
    return frozenset(found)


def tls_watch_rules(rule: Rule, exprs: list[Expr], context: HomeContext) -> list[list[Expr]]:
    """Observation of a (D)TLS-profiled rule's new flows, placed before its accept in the
    device's ``out`` chain (which sees only packets that open a flow). Non-terminal.

    TCP: the SYN sets ``TLS_WATCH_MARK`` on the connection; the main table's first rule
    (``tls_hello_rule``) logs the flow's first payload packet from the device (the
    ClientHello) and clears the mark. UDP: the flow's first datagram, the DTLS
    ClientHello, is logged here if it is a handshake record. Both go to NFLOG group
    ``context.tls_log_group`` with prefix ``mgt``, rate-limited; nothing is dropped.
    """
    if rule.action is not Forwarding.ACCEPT or rule.protocol not in (6, 17):
        return []
    if rule.protocol == 6:
        mark = {"mangle": {"key": _ct("mark"),
                           "value": {"|": [_ct("mark"), TLS_WATCH_MARK]}}}
        return [[*exprs, _match(_ct("state"), "new", "in"), mark]]
    handshake = _match({"payload": {"base": "ih", "offset": 0, "len": 8}}, TLS_HANDSHAKE)
    return [[*exprs, handshake, *_tls_log(context)]]


def _tls_log(context: HomeContext) -> list[Expr]:
    return [{"limit": {"rate": TLS_LOG_RATE, "per": "second", "burst": TLS_LOG_RATE}},
            {"log": {"prefix": TLS_LOG_PREFIX, "group": context.tls_log_group,
                     "snaplen": TLS_SNAPLEN}}]


def tls_hello_rule(context: HomeContext) -> list[Expr]:
    """The main forward chain's first rule: a packet the device sent on a TCP flow
    ``tls_watch_rules`` marked, carrying payload (the inner-header load fails on a bare
    ACK), clears the mark and is logged: its payload is the ClientHello, or shows the flow
    is not TLS. Costs one conntrack-mark test for every other forwarded packet."""
    bit = _match({"&": [_ct("mark"), TLS_WATCH_MARK]}, TLS_WATCH_MARK)
    payload = _match({"payload": {"base": "ih", "offset": 0, "len": 8}}, 0, ">=")
    clear = {"mangle": {"key": _ct("mark"),
                        "value": {"&": [_ct("mark"), 0xFFFFFFFF ^ TLS_WATCH_MARK]}}}
    per_device = {"set": {"op": "update", "elem": _payload("ether", "saddr"),
                          "set": "@" + TLS_RATE_SET,
                          "stmt": [{"limit": {"rate": TLS_DEVICE_RATE, "per": "second",
                                              "burst": 2 * TLS_DEVICE_RATE}}]}}
    return [bit, _match(_ct("direction"), "original"), payload, clear, per_device,
            *_tls_log(context)]


def _tls_rate_set() -> NftCommand:
    """The main table's per-MAC ClientHello log limiter (``tls_hello_rule``)."""
    return {"add": {"set": {"family": FAMILY, "table": TABLE, "name": TLS_RATE_SET,
                            "type": "ether_addr", "flags": ["timeout"], "timeout": 60,
                            "size": 4096}}}


# -- identification (#16): web flows of devices without a MUD file, either design ------------

IDENTIFY_MACS: Final = "identify_macs"  # main table: the devices whose web flows are read
IDENTIFY_RATE, IDENTIFY_RATE4, IDENTIFY_RATE6 = "identify_rate", "identify_rate4", "identify_rate6"
IDENTIFY_STATES: Final = frozenset({LifecycleState.NEW, LifecycleState.DEFAULT,
                                    LifecycleState.LEARNING, LifecycleState.PROPOSED})
_IDENTIFY_BITS: Final = IDENTIFY_CLIENT_MARK | IDENTIFY_SERVER_MARK


def identify_observed(policy: DevicePolicy) -> bool:
    """Whether the kernel logs the device's web flows for identification (#16): a device
    without a MUD file on the home default (new, default, learning, proposed). A device
    with a MUD file names its maker; the owner's trusted computers and phones are not
    read; a quarantined device is already restricted. Observation only: the log rules
    never accept or drop."""
    return policy.mud is None and policy.state in IDENTIFY_STATES


def _ct_dir(key: str, direction: str) -> Expr:
    return {"ct": {"key": key, "dir": direction}}


def _ct_bits(bits: int, value: int) -> Expr:
    return _match({"&": [_ct("mark"), bits]}, value)


def _ct_clear(bits: int) -> Expr:
    return {"mangle": {"key": _ct("mark"), "value": {"&": [_ct("mark"), 0xFFFFFFFF ^ bits]}}}


def identify_sets() -> list[NftCommand]:
    """The main table's ``identify_macs`` and its per-device log limiters."""
    def limiter(name: str, key: str) -> NftCommand:
        return {"add": {"set": {"family": FAMILY, "table": TABLE, "name": name, "type": key,
                                "flags": ["timeout"], "timeout": 60, "size": 4096}}}
    return [_set(IDENTIFY_MACS, "ether_addr"), limiter(IDENTIFY_RATE, "ether_addr"),
            limiter(IDENTIFY_RATE4, "ipv4_addr"), limiter(IDENTIFY_RATE6, "ipv6_addr")]


def identify_log_jump() -> NftCommand:
    """The main forward chain's rule (before ``established accept``) that sends a marked
    flow's packets to ``identify_log``: every other packet pays one ct-mark test."""
    return _rule("forward", [_match({"&": [_ct("mark"), _IDENTIFY_BITS]}, 0, "!="),
                             {"jump": {"target": "identify_log"}}],
                 "identification: the first payloads of a marked flow are logged")


def identify_new_jump(context: HomeContext) -> NftCommand:
    """The main forward chain's rule that sends a new TCP flow of a device in
    ``identify_macs`` to ``identify_new``."""
    return _rule("forward", [_match(_meta("iifname"), context.lan_interface),
                             _match(_meta("l4proto"), "tcp"),
                             _match(_payload("ether", "saddr"), "@" + IDENTIFY_MACS),
                             {"jump": {"target": "identify_new"}}],
                 "identification: a new web flow of a device without a MUD file")


def identify_rules(context: HomeContext,
                   source_sets: tuple[str, str] | None = None) -> list[NftCommand]:
    """Identification (#16), observation only: no rule here accepts or drops.

    ``identify_new`` (a new TCP flow of a device in ``identify_macs``) marks flows to
    the web ports: the client bit for HTTP and TLS, the server bit for TLS too.
    ``identify_log`` (any packet of a marked flow; every other packet pays one ct-mark
    test in ``forward``): the client's first payload packet (ClientHello or HTTP request)
    clears the client bit (and the server bit unless it starts a TLS handshake record)
    and is logged with prefix ``IDENTIFY_CLIENT_PREFIX``; the
    server's payload packets are logged with ``IDENTIFY_SERVER_PREFIX`` until the client
    sends its second payload (the server's first flight is over: a TLS 1.2 Certificate
    is in it), which clears the server bit, and at most ``IDENTIFY_SERVER_PACKETS`` of
    them where conntrack counts packets (``nf_conntrack_acct``). Each log is limited per
    device (its MAC for the client's packets, its address for the replies) and for the
    whole home, to NFLOG group ``context.identify_log_group``. The chains are the main
    table's in both designs (``identify_sets``, ``identify_log_jump``,
    ``identify_new_jump``).

    ``source_sets`` (policy as data: ``bind4``, ``bind6``): before all that, a packet
    from the LAN whose (MAC, source address) is not in them leaves ``identify_log``
    unread, so another device's forgery (a ClientHello injected into a device's open
    connection, a "server" certificate sent from the LAN) never becomes a device's
    clue. The chains design needs no gate: each device's own chains drop a packet whose
    source address is not its sender's before the main table sees it, and the main
    table's first rule drops an unknown MAC's."""
    original, reply = _match(_ct("direction"), "original"), _match(_ct("direction"), "reply")
    payload = _match({"payload": {"base": "ih", "offset": 0, "len": 8}}, 0, ">=")
    dport = _payload("tcp", "dport")
    every = {"limit": {"rate": IDENTIFY_LOG_RATE, "per": "second",
                       "burst": IDENTIFY_LOG_RATE}}
    both = IDENTIFY_CLIENT_MARK | IDENTIFY_SERVER_MARK

    def per_device(key: Expr, name: str) -> Expr:
        return {"set": {"op": "update", "elem": key, "set": "@" + name,
                        "stmt": [{"limit": {"rate": IDENTIFY_DEVICE_RATE, "per": "second",
                                            "burst": 2 * IDENTIFY_DEVICE_RATE}}]}}

    def log(prefix: str, snaplen: int) -> Expr:
        return {"log": {"prefix": prefix, "group": context.identify_log_group,
                        "snaplen": snaplen}}

    set_bits = {"mangle": {"key": _ct("mark"), "value": {"|": [_ct("mark"), both]}}}
    set_client = {"mangle": {"key": _ct("mark"),
                             "value": {"|": [_ct("mark"), IDENTIFY_CLIENT_MARK]}}}
    cmds = [] if source_sets is None else [
        _rule("identify_log", [_match(_meta("iifname"), context.lan_interface),
                               _match(_meta("nfproto"), f"ipv{family}"),
                               _match({"concat": [_payload("ether", "saddr"),
                                                  _payload(ip, "saddr")]},
                                      "@" + bind, "!="),
                               {"return": None}])
        for (family, ip), bind in zip(((4, "ip"), (6, "ip6")), source_sets, strict=True)]
    cmds += [
        _rule("identify_new", [_match(dport, {"set": list(IDENTIFY_TLS_PORTS)}), set_bits]),
        _rule("identify_new", [_match(dport, {"set": list(IDENTIFY_HTTP_PORTS)}), set_client]),
        # the client's second payload: the server's first flight is over
        _rule("identify_log", [original, _ct_bits(IDENTIFY_CLIENT_MARK, 0), payload,
                               _ct_clear(IDENTIFY_SERVER_MARK), {"return": None}]),
        # a first payload that is no TLS handshake record: its server's replies are not
        # read (a plain download on port 443 would otherwise be logged at the rate limit)
        _rule("identify_log", [original, _ct_bits(both, both),
                               _match({"payload": {"base": "ih", "offset": 0, "len": 8}},
                                      TLS_HANDSHAKE, "!="),
                               _ct_clear(IDENTIFY_SERVER_MARK)]),
        _rule("identify_log", [original, _ct_bits(IDENTIFY_CLIENT_MARK, IDENTIFY_CLIENT_MARK),
                               payload, _ct_clear(IDENTIFY_CLIENT_MARK),
                               per_device(_payload("ether", "saddr"), IDENTIFY_RATE), every,
                               log(IDENTIFY_CLIENT_PREFIX, IDENTIFY_CLIENT_SNAPLEN)]),
    ]
    for family, rate_set in ((4, IDENTIFY_RATE4), (6, IDENTIFY_RATE6)):
        ip = "ip" if family == 4 else "ip6"
        cmds.append(_rule("identify_log", [
            reply, _ct_bits(IDENTIFY_SERVER_MARK, IDENTIFY_SERVER_MARK),
            _match(_meta("nfproto"), f"ipv{family}"), payload,
            _match(_ct_dir("packets", "reply"), IDENTIFY_SERVER_PACKETS, "<="),
            per_device(_payload(ip, "daddr"), rate_set), every,
            log(IDENTIFY_SERVER_PREFIX, IDENTIFY_SERVER_SNAPLEN)]))
    return cmds


# -- installation records and batches -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Installed:
    """What one device's batch put in the kernel: enough to check, replace or remove it.

    ``fingerprint`` (a hash of the device's compiled rules and addresses) is also
    written into the comment of its ``out`` chain's final rule, so ``reconcile``
    can tell from a read-back whether the kernel holds exactly this policy.
    """

    mac: str
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    dns_sets: tuple[str, ...]
    fingerprint: str = ""
    rule_counts: tuple[int, int, int] = (0, 0, 0)  # out, in, gw
    observed: bool = False  # its MAC is in ``identify_macs`` (``identify_observed``)

    @property
    def chains(self) -> tuple[str, ...]:
        """The device's chain names (out, in, gw)."""
        return tuple(device_chain(self.mac, kind) for kind in CHAIN_KINDS)

    @property
    def table(self) -> str:
        """The shard table that holds the device's chains, maps entries and DNS sets."""
        return shard_table(self.mac)


def fingerprint_comment(fingerprint: str) -> str:
    """The comment carried by a device's last ``out`` rule."""
    return f"policy {fingerprint}"


def _fingerprint(rules: dict[str, list[NftCommand]], ipv4: Sequence[str],
                 ipv6: Sequence[str]) -> str:
    blob = json.dumps({"rules": rules, "ipv4": list(ipv4), "ipv6": list(ipv6)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def installed_record(policy: DevicePolicy, context: HomeContext) -> Installed:
    """The record of what ``compile_device(policy, context)`` installs."""
    return compile_device_record(policy, context)[1]


def _canon(addresses: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted({str(ipaddress.ip_address(a)) for a in addresses}))


def map_element(cmd: str, map_name: str, keys: Sequence[str], chain: str | None, *,
                table: str) -> NftCommand:
    """An ``add``/``delete`` of dispatch-map elements in a shard (``chain`` None: keys only)."""
    elems: list[Any] = [[k, {"jump": {"target": chain}}] for k in keys] if chain else list(keys)
    return {cmd: {"element": {"family": FAMILY, "table": table, "name": map_name,
                              "elem": elems}}}


def main_set_element(cmd: str, set_name: str, keys: Sequence[Any]) -> NftCommand:
    """An ``add``/``delete`` of elements of a main-table set (``known_macs``, ``managed4/6``,
    ``bind4/6``, ``pending4/6``)."""
    return {cmd: {"element": {"family": FAMILY, "table": TABLE, "name": set_name,
                              "elem": list(keys)}}}


def dns_set_commands(names: Iterable[str], *, table: str,
                     existing: Collection[str] = ()) -> list[NftCommand]:
    """``add set`` commands (idempotent) for a shard's sets of these DNS names.

    Sets named in ``existing`` are left out (they are installed in ``table`` already).
    """
    cmds: list[NftCommand] = []
    for name in sorted(set(names)):
        for family, addr in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            if dns_set_name(name, family) in existing:
                continue
            cmds.append({"add": {"set": {"family": FAMILY, "table": table,
                                         "name": dns_set_name(name, family),
                                         "type": [addr, addr], "flags": ["timeout"]}}})
    return cmds


def bind_elements(mac: str, addresses: Iterable[str]) -> list[Any]:
    """The ``bind4``/``bind6`` elements (``MAC . address``) of a device's addresses."""
    return [{"concat": [mac.lower(), address]} for address in addresses]


def unmap_commands(previous: Installed, *, keep4: Iterable[str] = (),
                   keep6: Iterable[str] = ()) -> list[NftCommand]:
    """Delete a device's address entries (its shard's in-dispatch maps, the main table's
    managed and binding sets), except ``keep``."""
    cmds: list[NftCommand] = []
    gone4 = sorted(set(previous.ipv4) - set(keep4))
    gone6 = sorted(set(previous.ipv6) - set(keep6))
    for gone, dispatch, managed, bind in ((gone4, IN_DISPATCH4, MANAGED4, BIND4),
                                          (gone6, IN_DISPATCH6, MANAGED6, BIND6)):
        if gone:
            cmds.append(map_element("delete", dispatch, gone, None, table=previous.table))
            cmds.append(main_set_element("delete", managed, gone))
            cmds.append(main_set_element("delete", bind, bind_elements(previous.mac, gone)))
    return cmds


def compile_device(policy: DevicePolicy, context: HomeContext, *,
                   previous: Installed | None = None) -> list[NftCommand]:
    """The batch that installs or replaces one device's chains and map entries (pure).

    See ``compile_device_record``.
    """
    return compile_device_record(policy, context, previous=previous)[0]


def compile_device_record(policy: DevicePolicy, context: HomeContext, *,
                          previous: Installed | None = None,
                          existing_sets: Collection[str] = (),
                          ) -> tuple[list[NftCommand], Installed]:
    """The batch for one device and the record of what it installs (pure).

    The base table (``compile_base``) must already be installed. ``previous`` is
    what was installed for this device before: its stale addresses are unmapped,
    and map entries it already has are not sent again. ``existing_sets`` are DNS
    sets already in the device's shard table. Each chain is added, flushed and refilled in the
    same batch, so the kernel swaps the old rules for the new ones atomically.

    Sending only what changed matters for speed: libnftables fetches the elements
    of every set in the table before it adds any element, and that cost grows
    with the home (see ``bench/bench_enforce_update.py``).
    """
    device = policy.device
    mac = device.mac.lower()
    ipv4, ipv6 = _canon(device.ipv4), _canon(device.ipv6)
    rules = device_rules(policy, context)
    fingerprint = _fingerprint(rules, ipv4, ipv6)
    rules["out"][-1]["add"]["rule"]["comment"] = fingerprint_comment(fingerprint)
    sets = sorted({dns_set_name(name, fam) for name in policy.dns_names() for fam in (4, 6)})
    observed = identify_observed(policy)
    record = Installed(mac=mac, ipv4=ipv4, ipv6=ipv6, dns_sets=tuple(sets),
                       fingerprint=fingerprint,
                       rule_counts=(len(rules["out"]), len(rules["in"]), len(rules["gw"])),
                       observed=observed)
    table = record.table
    cmds: list[NftCommand] = []
    if previous is not None:
        same = previous.mac == mac  # else its bindings (old MAC . address) all go
        cmds += unmap_commands(previous, keep4=record.ipv4 if same else (),
                               keep6=record.ipv6 if same else ())
    cmds += dns_set_commands(policy.dns_names(), table=table, existing=existing_sets)
    for kind in CHAIN_KINDS:
        name = device_chain(mac, kind)
        cmds.append({"add": {"chain": {"family": FAMILY, "table": table, "name": name}}})
        cmds.append({"flush": {"chain": {"family": FAMILY, "table": table, "name": name}}})
        cmds += rules[kind]
    known = previous is not None and previous.mac == mac
    if not known:
        cmds.append(map_element("add", OUT_DISPATCH, [mac], device_chain(mac, "out"),
                                table=table))
        cmds.append(map_element("add", GW_DISPATCH, [mac], device_chain(mac, "gw"), table=table))
        cmds.append(main_set_element("add", KNOWN_MACS, [mac]))
    had = previous is not None and previous.mac == mac and previous.observed
    if observed and not had:
        cmds.append(main_set_element("add", IDENTIFY_MACS, [mac]))
    elif had and not observed:
        cmds.append(main_set_element("delete", IDENTIFY_MACS, [mac]))
    new4 = [a for a in record.ipv4 if not (known and previous and a in previous.ipv4)]
    new6 = [a for a in record.ipv6 if not (known and previous and a in previous.ipv6)]
    for new, dispatch, managed, bind in ((new4, IN_DISPATCH4, MANAGED4, BIND4),
                                         (new6, IN_DISPATCH6, MANAGED6, BIND6)):
        if new:
            cmds.append(map_element("add", dispatch, new, device_chain(mac, "in"), table=table))
            cmds.append(main_set_element("add", managed, new))
            cmds.append(main_set_element("add", bind, bind_elements(mac, new)))
    return cmds, record


def remove_device_commands(previous: Installed) -> list[NftCommand]:
    """The batch that removes one device: main-set and map entries first, then its chains."""
    table = previous.table
    cmds = [main_set_element("delete", KNOWN_MACS, [previous.mac]),
            map_element("delete", OUT_DISPATCH, [previous.mac], None, table=table),
            map_element("delete", GW_DISPATCH, [previous.mac], None, table=table)]
    if previous.observed:
        cmds.append(main_set_element("delete", IDENTIFY_MACS, [previous.mac]))
    cmds += unmap_commands(previous)
    for name in previous.chains:
        cmds.append({"flush": {"chain": {"family": FAMILY, "table": table, "name": name}}})
        cmds.append({"delete": {"chain": {"family": FAMILY, "table": table, "name": name}}})
    return cmds


def _base_chain(name: str, hook: str, policy: str, *, table: str = TABLE,
                prio: int = 0) -> NftCommand:
    return {"add": {"chain": {"family": FAMILY, "table": table, "name": name, "type": "filter",
                              "hook": hook, "prio": prio, "policy": policy}}}


def _map(name: str, key: str, table: str) -> NftCommand:
    return {"add": {"map": {"family": FAMILY, "table": table, "name": name, "type": key,
                            "map": "verdict"}}}


def _fresh_table(name: str) -> list[NftCommand]:
    table = {"family": FAMILY, "name": name}
    # add-then-delete: "delete" of a missing table fails (firewalld does the same).
    return [{"add": {"table": table}}, {"delete": {"table": table}}, {"add": {"table": table}}]


SHARD_PRIORITY: Final = 0
MAIN_PRIORITY: Final = 10  # after every shard: a shard's drop is final, its accept is not


def compile_shard(table: str, context: HomeContext) -> list[NftCommand]:
    """One device table: its dispatch maps and base chains (no device yet: all pass on)."""
    lan = _match(_meta("iifname"), context.lan_interface)
    est = _match(_ct("state"), ["established", "related"], "in")
    ether_saddr = _payload("ether", "saddr")
    cmds = _fresh_table(table) + [
        _map(OUT_DISPATCH, "ether_addr", table), _map(GW_DISPATCH, "ether_addr", table),
        _map(IN_DISPATCH4, "ipv4_addr", table), _map(IN_DISPATCH6, "ipv6_addr", table),
        _base_chain("forward", "forward", "accept", table=table, prio=SHARD_PRIORITY),
        _base_chain("input", "input", "accept", table=table, prio=SHARD_PRIORITY),
    ]
    rule = functools.partial(_rule, table=table)
    cmds += [
        # one rule for an established packet: the main table, which runs after every
        # shard and whose drop is final, checks a LAN packet's source binding
        rule("forward", [est, {"accept": None}], "bound in the main table"),
        rule("forward", [_match(_ct("state"), "invalid", "in"), {"drop": None}]),
        rule("forward", [lan, {"vmap": {"key": ether_saddr, "data": "@" + OUT_DISPATCH}}]),
        rule("forward", [{"vmap": {"key": _payload("ip", "daddr"), "data": "@" + IN_DISPATCH4}}]),
        rule("forward", [{"vmap": {"key": _payload("ip6", "daddr"),
                                   "data": "@" + IN_DISPATCH6}}]),
        rule("input", [est, {"accept": None}]),
        rule("input", [lan, {"vmap": {"key": ether_saddr, "data": "@" + GW_DISPATCH}}]),
    ]
    return cmds


def _set(name: str, key: str | list[str]) -> NftCommand:
    return {"add": {"set": {"family": FAMILY, "table": TABLE, "name": name, "type": key}}}


BASE_MARK_PREFIX: Final = "mudguard base "
"""The comment on the main forward chain's first rule: ``mudguard base <digest>``."""


def compile_base(context: HomeContext) -> list[NftCommand]:
    """The main table and every shard table (replacing any previous ones).

    Installed before any device (one small transaction, also the static ruleset an
    early-boot unit loads: ``mudguard base``): with no device known, nothing from the
    LAN is forwarded (fail closed) and only DHCP and neighbour discovery reach the
    gateway. The main forward chain's first rule carries ``base_mark(context)``, a
    digest of the whole base, so a start-up can tell this base from another
    (another LAN interface, shard count or mudguard version) without comparing rules.
    """
    cmds = _base_commands(context)
    first = next(c["add"]["rule"] for c in cmds if "rule" in c.get("add", {}))
    first["comment"] = BASE_MARK_PREFIX + _base_digest(cmds)
    return cmds


def base_ruleset(context: HomeContext) -> dict[str, Any]:
    """``compile_base`` as a whole libnftables JSON document: what ``nft -j -f FILE``
    loads at boot (``mudguard base``), the same base the daemon then takes over."""
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *compile_base(context)]}


def base_mark(context: HomeContext) -> str:
    """The comment that marks ``compile_base(context)``'s base in the kernel."""
    return BASE_MARK_PREFIX + _base_digest(_base_commands(context))


def _base_digest(cmds: list[NftCommand]) -> str:
    text = json.dumps(cmds, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _bound_source(family: int, op: str) -> Expr:
    """A LAN packet's ``MAC . source address`` pair against the main table's bindings
    (``bind4``/``bind6``): ``==`` a managed device's own, ``!=`` no device's (nft adds
    the ``meta nfproto`` dependency of ``ip``/``ip6 saddr`` in an inet table itself)."""
    ip, bind = ("ip", BIND4) if family == 4 else ("ip6", BIND6)
    return _match({"concat": [_payload("ether", "saddr"), _payload(ip, "saddr")]},
                  "@" + bind, op)


def source_binding_rules(lan: str) -> list[NftCommand]:
    """The main table's forward binding (both designs): a packet from the LAN whose
    ``MAC . source`` pair is no managed device's is dropped, established ones too, so a
    device or an unknown MAC that knows another device's flow tuple and sequence numbers
    cannot inject into it (conntrack does not look at MACs)."""
    iif = _match(_meta("iifname"), lan)
    return [_rule("forward", [iif, _bound_source(family, "!="), {"drop": None}],
                  f"source must be the device own IPv{family}") for family in (4, 6)]


def established_input_rules(lan: str) -> list[NftCommand]:
    """The main table's input fast path (both designs): established traffic from any
    other interface, and from the LAN only from a bound ``MAC . source`` pair or an IPv6
    link-local source (never bound). Another LAN packet goes on to the rules as if new,
    so no LAN sender joins another device's connection to the gateway (its TCP DNS, the
    portal) even knowing its sequence numbers."""
    iif = _match(_meta("iifname"), lan)
    est = _match(_ct("state"), ["established", "related"], "in")
    return [
        _rule("input", [_match(_meta("iifname"), lan, "!="), est, {"accept": None}]),
        *(_rule("input", [iif, est, _bound_source(family, "=="), {"accept": None}],
                f"established, from the sender's own IPv{family}") for family in (4, 6)),
        _rule("input", [iif, est, _match(_payload("ip6", "saddr"),
                                         {"prefix": {"addr": "fe80::", "len": 10}}),
                        {"accept": None}], "established, from an IPv6 link-local address"),
    ]


def _base_commands(context: HomeContext) -> list[NftCommand]:
    """``compile_base`` without its mark."""
    lan = context.lan_interface
    iif = _match(_meta("iifname"), lan)
    est = _match(_ct("state"), ["established", "related"], "in")
    ether_saddr = _payload("ether", "saddr")
    cmds: list[NftCommand] = [*_fresh_table(TABLE),
        _set(KNOWN_MACS, "ether_addr"), _set(MANAGED4, "ipv4_addr"), _set(MANAGED6, "ipv6_addr"),
        _set(BIND4, ["ether_addr", "ipv4_addr"]), _set(BIND6, ["ether_addr", "ipv6_addr"]),
        _set(PENDING4, "ipv4_addr"), _set(PENDING6, "ipv6_addr"), _tls_rate_set(),
        *identify_sets(),
        _base_chain("forward", "forward", "drop", prio=MAIN_PRIORITY),
        _base_chain("input", "input", "accept", prio=MAIN_PRIORITY),
        _base_chain("output", "output", "accept", prio=MAIN_PRIORITY),
        {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": "identify_new"}}},
        {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": "identify_log"}}},
    ]
    cmds += [
        # first rule (compile_base marks it): an unknown MAC has no flow of its own, so
        # it can inject nothing into a device's established one either
        _rule("forward", [iif, _match(ether_saddr, "@" + KNOWN_MACS, "!="), {"drop": None}],
              "unknown device on the LAN: nothing forwarded"),
        # the source binding of every LAN packet, established ones too (the shards
        # accepted those at once)
        *source_binding_rules(lan),
        _rule("forward", tls_hello_rule(context)),
        identify_log_jump(),
        _rule("forward", [est, {"accept": None}]),
        _rule("forward", [_match(_ct("state"), "invalid", "in"), {"drop": None}]),
        # here a new flow has passed its sender's out chain (the shards come first)
        identify_new_jump(context),
        _rule("forward", [_match(_payload("ip", "daddr"), "@" + PENDING4), {"drop": None}],
              "receiver's rules not in yet"),
        _rule("forward", [_match(_payload("ip6", "daddr"), "@" + PENDING6), {"drop": None}],
              "receiver's rules not in yet"),
        _rule("forward", [_match(_payload("ip", "daddr"), "@" + MANAGED4), {"accept": None}],
              "passed the receiver in chain"),
        _rule("forward", [_match(_payload("ip6", "daddr"), "@" + MANAGED6), {"accept": None}],
              "passed the receiver in chain"),
        _rule("forward", [iif, {"accept": None}], "passed the sender out chain"),
        # to the gateway itself: the shards accepted established packets before their gw
        # dispatch, so here, as in forward, the binding comes first
        *established_input_rules(lan),
        _rule("input", [iif, _match(_payload("udp", "sport"), 68),
                        _match(_payload("udp", "dport"), 67), {"accept": None}],
              "unknown device: DHCPv4 only"),
        _rule("input", [iif, _match(_payload("udp", "dport"), 547), {"accept": None}],
              "unknown device: DHCPv6 only"),
        _rule("input", [iif, _match(_payload("icmpv6", "type"), {"set": [133, 135, 136]}),
                        {"accept": None}], "unknown device: neighbour discovery"),
        _rule("input", [iif, est, {"drop": None}],
              "established from a (MAC, source) pair no device holds"),
        _rule("input", [iif, _match(ether_saddr, "@" + KNOWN_MACS), {"accept": None}],
              "passed the device gw chain"),
        _rule("input", [iif, {"drop": None}]),
        _rule("output", [_match(_meta("oifname"), lan), _match(_payload("icmp", "type"), 5),
                         {"drop": None}], "no redirects: lateral traffic stays routed"),
        _rule("output", [_match(_meta("oifname"), lan), _match(_payload("icmpv6", "type"), 137),
                         {"drop": None}], "no redirects: lateral traffic stays routed"),
        *identify_rules(context),
    ]
    for table in shard_names():
        cmds += compile_shard(table, context)
    for table in surplus_shard_names():  # left from a bigger setting: their drops are final
        cmds += _fresh_table(table)[:2]
    return cmds


def compile_home(policies: Iterable[DevicePolicy], context: HomeContext) -> list[NftCommand]:
    """The complete batch for a home: main and shard tables, then every device."""
    cmds = compile_base(context)
    sets: dict[str, set[str]] = {}
    for policy in policies:
        table = shard_table(policy.device.mac)
        in_shard = sets.setdefault(table, set())
        device_cmds, record = compile_device_record(policy, context, existing_sets=in_shard)
        cmds += device_cmds
        in_shard.update(record.dns_sets)
    return cmds


def peer_refs(policy: DevicePolicy) -> frozenset[tuple[str, str]]:
    """The other devices a policy's rules name: ``("mfg", authority)`` / ``("model", url)``."""
    refs: set[tuple[str, str]] = set()
    me = policy.device
    for rule in policy.rules:
        if rule.peer is PeerKind.SAME_MANUFACTURER and me.manufacturer:
            refs.add(("mfg", me.manufacturer))
        elif rule.peer is PeerKind.MANUFACTURER and rule.peer_value:
            refs.add(("mfg", rule.peer_value.lower()))
        elif rule.peer is PeerKind.MODEL and rule.peer_value:
            refs.add(("model", rule.peer_value))
    return frozenset(refs)


def identity_refs(device: DeviceFacts) -> frozenset[tuple[str, str]]:
    """The keys under which other policies can name ``device`` (see ``peer_refs``)."""
    refs: set[tuple[str, str]] = set()
    if device.manufacturer:
        refs.add(("mfg", device.manufacturer))
    if device.mud_url:
        refs.add(("model", device.mud_url))
    return frozenset(refs)


def dependents(policies: Iterable[DevicePolicy], changed: DeviceFacts) -> list[str]:
    """MACs of the devices whose compiled rules name ``changed`` through an abstraction.

    When ``changed`` joins, leaves or changes address, these devices must be
    recompiled (same-manufacturer, manufacturer and model peers resolve to the
    addresses of other devices).
    """
    keys = identity_refs(changed)
    return [p.device.mac for p in policies
            if p.device.mac != changed.mac and peer_refs(p) & keys]
