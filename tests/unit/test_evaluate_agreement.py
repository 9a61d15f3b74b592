"""The evaluator and the compiler agree: for every valid corpus MUD file, flows that each
rule should admit and near misses get the same verdict from ``evaluate()`` and from the
compiled libnftables JSON, run by a small interpreter of exactly that JSON (chains,
verdict maps, sets, payload/meta/ct matches). ``tests/netns/test_watch_kernel_agrees.py``
replays a sample through the real kernel."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mudguard.mud import Direction, MudFile, PortMatch, PortOperator, parse_mud
from mudguard.policy import (
    DeviceFacts,
    DevicePolicy,
    Flow,
    HomeContext,
    LifecycleState,
    NameMap,
    PeerKind,
    Rule,
    compile_home,
    decide,
    dns_set_name,
    evaluate,
)

OUT, IN = Direction.FROM_DEVICE, Direction.TO_DEVICE
DEV_MAC = "02:00:00:00:00:0a"
GW_MAC = "02:00:00:00:00:01"  # the gateway's LAN side: every unicast frame's destination
DEV4, DEV6 = "192.0.2.10", "2001:db8:1::10"
GW4, GW6 = "192.0.2.1", "2001:db8:1::1"
LAN_IF, WAN_IF = "mgwlan", "mgwwan"
INTERNET = {4: "203.0.113.", 6: "2001:db8:f::"}
NEAR = {4: "198.51.100.99", 6: "2001:db8:e::99"}  # neither LAN, named, nor a controller


def corpus_muds(corpus: Path) -> Iterator[tuple[str, MudFile]]:
    for path in sorted((corpus / "mud").rglob("*.json")):
        result = parse_mud(path.read_bytes())
        if result.ok and result.mud is not None:
            yield path.name, result.mud


# -- the home each corpus file is placed in ------------------------------------------------


@dataclass
class Scenario:
    policy: DevicePolicy
    context: HomeContext
    names: NameMap
    dns: dict[str, set[tuple[str, str]]]  # nft set name -> (device, remote) pairs
    flows: list[Flow]


def _host(prefix: str, index: int) -> str:
    return str(ipaddress.ip_address(prefix + "0") + index) if prefix.endswith(".") else \
        str(ipaddress.ip_address(prefix + "1") + index)


def build(mud: MudFile, *, state: LifecycleState = LifecycleState.PROFILED) -> Scenario:
    """Place the device in a home where every abstraction of its file has a peer."""
    rules = decide(DeviceFacts(mac=DEV_MAC, mud_url=mud.mud_url, state=state), mud, (),
                   HomeContext(lan_prefixes=(), gateway_addresses=()),
                   now=datetime(2026, 1, 1, tzinfo=UTC)).rules
    controllers = sorted({r.peer_value for r in rules
                          if r.peer is PeerKind.CONTROLLER and r.peer_value})
    manufacturers = sorted({r.peer_value for r in rules
                            if r.peer is PeerKind.MANUFACTURER and r.peer_value})
    models = sorted({r.peer_value for r in rules if r.peer is PeerKind.MODEL and r.peer_value})
    me = DeviceFacts(mac=DEV_MAC, ipv4=(DEV4,), ipv6=(DEV6,), mud_url=mud.mud_url,
                     state=state)
    others = [DeviceFacts(mac="02:00:00:00:01:01", ipv4=("192.0.2.11",),
                          ipv6=("2001:db8:1::11",), mud_url=mud.mud_url,
                          state=LifecycleState.PROFILED)]
    for i, host in enumerate(manufacturers):
        others.append(DeviceFacts(mac=f"02:00:00:00:02:{i:02x}", ipv4=(f"192.0.2.{20 + i}",),
                                  mud_url=f"https://{host}/x.json",
                                  state=LifecycleState.PROFILED))
    for i, url in enumerate(models):
        others.append(DeviceFacts(mac=f"02:00:00:00:03:{i:02x}", ipv4=(f"192.0.2.{40 + i}",),
                                  mud_url=url, state=LifecycleState.PROFILED))
    context = HomeContext(
        lan_prefixes=("192.0.2.0/24", "2001:db8:1::/64"), gateway_addresses=(GW4, GW6),
        lan_interface=LAN_IF, wan_interface=WAN_IF, portal_ports=(8443,),
        # Controllers include the gateway itself: their rules reach its input too.
        controllers={c: (f"192.0.2.{60 + i}", f"2001:db8:1::{60 + i:x}", GW4, GW6)
                     for i, c in enumerate(controllers)},
        my_controllers={mud.mud_url: ("192.0.2.70", "2001:db8:1::70", GW4, GW6)},
        devices=(me, *others))
    policy = decide(me, mud, (), context, now=datetime(2026, 1, 1, tzinfo=UTC))
    pairs: list[tuple[str, str]] = []
    for i, name in enumerate(sorted(policy.dns_names())):
        pairs += [(name, f"203.0.113.{10 + i}"), (name, f"2001:db8:f::{10 + i:x}")]
    names = NameMap.build(pairs)
    dns: dict[str, set[tuple[str, str]]] = {}
    for name, address in pairs:
        family = 6 if ":" in address else 4
        dns.setdefault(dns_set_name(name, family), set()).add(
            (DEV6 if family == 6 else DEV4, address))
    scenario = Scenario(policy=policy, context=context, names=names, dns=dns, flows=[])
    scenario.flows = generate_flows(scenario)
    return scenario


# -- flows: what each rule should admit, and near misses --------------------------------------


def _port_in(match: PortMatch | None) -> int:
    if match is None:
        return 40000
    op, port = match.operator, match.port or 0
    if op is PortOperator.RANGE:
        return match.lower or 0
    return {PortOperator.EQ: port, PortOperator.GTE: port, PortOperator.LTE: port,
            PortOperator.LT: max(port - 1, 0), PortOperator.GT: min(port + 1, 65535),
            PortOperator.NEQ: (port + 1) % 65536}[op]


def _port_out(match: PortMatch | None) -> int | None:
    if match is None:
        return None
    op, port = match.operator, match.port or 0
    if op is PortOperator.RANGE:
        return (match.upper or 0) + 1 if (match.upper or 0) < 65535 else None
    return {PortOperator.EQ: (port + 1) % 65536, PortOperator.NEQ: port,
            PortOperator.GTE: port - 1 if port else None, PortOperator.GT: port,
            PortOperator.LTE: port + 1 if port < 65535 else None,
            PortOperator.LT: port}[op]


def _remote(rule: Rule, family: int, s: Scenario) -> str | None:
    kind, value, ctx = rule.peer, rule.peer_value, s.context
    if kind in (PeerKind.ANY, PeerKind.INTERNET):
        return INTERNET[family] + "200"
    if kind is PeerKind.GATEWAY:
        return GW4 if family == 4 else GW6
    if kind is PeerKind.DNSNAME:
        found = [a for a in s.names.by_name.get(value or "", ()) if (":" in a) == (family == 6)]
        return sorted(found)[0] if found else None
    if kind is PeerKind.LOCAL_NETWORKS:
        return "192.0.2.77" if family == 4 else "2001:db8:1::77"
    if kind is PeerKind.NETWORK and value:
        net = ipaddress.ip_network(value)
        if net.version != family:
            return None
        return str(net.network_address + (1 if net.num_addresses > 2 else 0))
    pools: tuple[str, ...] = ()
    if kind is PeerKind.CONTROLLER:
        pools = ctx.controllers.get(value or "", ())
    elif kind is PeerKind.MY_CONTROLLER:
        pools = ctx.my_controllers.get(s.policy.device.mud_url or "", ())
    else:
        me = s.policy.device
        for other in ctx.devices:
            if other.mac == me.mac:
                continue
            if ((kind is PeerKind.SAME_MANUFACTURER and other.manufacturer == me.manufacturer)
                    or (kind is PeerKind.MANUFACTURER and other.manufacturer == value)
                    or (kind is PeerKind.MODEL and other.mud_url == value)):
                pools += other.ipv4 + other.ipv6
    found = [a for a in pools if (":" in a) == (family == 6)]
    return found[0] if found else None


def _flow(direction: Direction, family: int, remote: str, protocol: int, *, sport: int | None,
          dport: int | None, icmp: tuple[int, int] | None = None, opens: bool = True,
          src: str | None = None) -> Flow:
    device = DEV4 if family == 4 else DEV6
    source, dest = (device, remote) if direction is OUT else (remote, device)
    return Flow(direction=direction, family=family, src=src or source, dst=dest,
                protocol=protocol, src_port=sport, dst_port=dport,
                icmp_type=icmp[0] if icmp else None, icmp_code=icmp[1] if icmp else None,
                opens=opens)


def flows_for_rule(rule: Rule, s: Scenario) -> list[Flow]:
    out: list[Flow] = []
    families = (4, 6) if rule.family is None else (rule.family,)
    for family in families:
        remote = _remote(rule, family, s)
        if remote is None:
            continue
        protocols = [rule.protocol] if rule.protocol is not None else [6, 17]
        if rule.icmp_type is not None and rule.protocol is None:
            protocols = [1 if family == 4 else 58]
        for proto in protocols:
            if proto in (6, 17):
                sport, dport = _port_in(rule.src_port), _port_in(rule.dst_port)
                if rule.src_port is None and rule.direction is IN:
                    sport = 443
                base = _flow(rule.direction, family, remote, proto, sport=sport, dport=dport)
                out += [base, replace(base, opens=False)]
                for field, match in (("src_port", rule.src_port), ("dst_port", rule.dst_port)):
                    miss = _port_out(match)
                    if miss is not None:
                        out.append(replace(base, **{field: miss}))
                out.append(replace(base, protocol=23 - proto))  # tcp <-> udp
            elif proto in (1, 58):
                itype = rule.icmp_type if rule.icmp_type is not None else 8
                code = rule.icmp_code if rule.icmp_code is not None else 0
                base = _flow(rule.direction, family, remote, proto, sport=None, dport=None,
                             icmp=(itype, code))
                out += [base, replace(base, icmp_type=(itype + 1) % 256),
                        replace(base, icmp_code=(code + 1) % 256)]
            else:
                out.append(_flow(rule.direction, family, remote, proto, sport=None, dport=None))
                continue
            near = NEAR[family]
            out.append(replace(base, dst=near) if rule.direction is OUT
                       else replace(base, src=near))
            if rule.direction is OUT and not rule.any_source:
                spoof = "192.0.2.99" if family == 4 else "2001:db8:1::99"
                out.append(replace(base, src=spoof))
            if rule.any_source and family == 4:
                out.append(replace(base, src="0.0.0.0", dst="255.255.255.255"))
            if rule.any_source and family == 6:
                out.append(replace(base, src="fe80::a"))
    return out


# Destinations the gateway receives itself: its addresses, groups, broadcasts, and a
# near miss (a unicast LAN address that is not the gateway's).
LOCAL = {4: (GW4, "224.0.0.251", "239.255.255.250", "224.0.0.22", "255.255.255.255",
             "192.0.2.255", "192.0.2.78"),
         6: (GW6, "ff02::fb", "ff02::16", "ff05::c", "2001:db8:1::78")}


def local_variants(flow: Flow) -> list[Flow]:
    """The same opening packet sent to each destination the gateway receives itself."""
    if flow.direction is not OUT:
        return []
    return [replace(flow, dst=dst) for dst in LOCAL[flow.family] if dst != flow.dst]


def generate_flows(s: Scenario) -> list[Flow]:
    flows: list[Flow] = []
    for rule in s.policy.rules:
        for flow in flows_for_rule(rule, s):
            flows.append(flow)
            if not rule.any_source:
                flows += local_variants(flow)
    for family in (4, 6):  # the usual suspects, whatever the file says
        remote = INTERNET[family] + "201"
        flows += [_flow(OUT, family, remote, 6, sport=40000, dport=443),
                  _flow(OUT, family, remote, 17, sport=40000, dport=53),
                  _flow(IN, family, remote, 6, sport=40000, dport=22),
                  _flow(OUT, family, GW4 if family == 4 else GW6, 6, sport=40000, dport=8443)]
    return flows


# -- a small interpreter of the compiled libnftables JSON -------------------------------------


class Kernel:
    """Runs one packet through the compiled batch the way nftables would (the subset the
    compiler emits): every table's base chain for the hook in priority order, a drop
    anywhere final, an accept passing the packet on. Rate limits are assumed not
    exceeded; logs do nothing."""

    def __init__(self, commands: list[dict[str, Any]], dns: dict[str, set[tuple[str, str]]]):
        self.chains: dict[tuple[str, str], list[list[dict[str, Any]]]] = {}
        self.base: list[tuple[int, str, str, str, str]] = []  # prio, table, name, hook, policy
        self.maps: dict[tuple[str, str], dict[str, str]] = {}
        self.plain: dict[tuple[str, str], set[Any]] = {}
        # Named concatenations (policy as data): each element a box of closed intervals.
        self.concat: dict[tuple[str, str], list[tuple[tuple[int, int], ...]]] = {}
        self.ignored: set[tuple[str, str]] = set()  # dynamic sets
        self.data_maps: dict[tuple[str, str], dict[Any, Any]] = {}  # key -> mark
        self.sets = {name: {tuple(map(_canon, pair)) for pair in pairs}
                     for name, pairs in dns.items()}
        for command in commands:
            self._load(command)

    def _load(self, command: dict[str, Any]) -> None:
        (verb, body), = command.items()
        (kind, obj), = body.items()
        if kind == "table":
            if verb == "delete":
                name = obj["name"]
                for store in (self.chains, self.maps, self.plain, self.concat):
                    for key in [k for k in store if k[0] == name]:
                        del store[key]
                self.base = [b for b in self.base if b[1] != name]
            return
        table = obj["table"]
        if kind == "chain":
            if verb == "add":
                self.chains.setdefault((table, obj["name"]), [])
                if "hook" in obj:
                    self.base.append((obj["prio"], table, obj["name"], obj["hook"],
                                      obj["policy"]))
                    self.base.sort()
            elif verb == "flush":
                self.chains[(table, obj["name"])] = []
        elif kind == "rule" and verb == "add":
            self.chains[(table, obj["chain"])].append(obj["expr"])
        elif kind == "map" and verb == "add" and obj.get("map") != "verdict":
            self.data_maps.setdefault((table, obj["name"]), {})
        elif kind == "map" and verb == "add":
            self.maps.setdefault((table, obj["name"]), {})
        elif kind == "set" and verb == "add" and "dynamic" in obj.get("flags", ()):
            self.ignored.add((table, obj["name"]))
        elif kind == "set" and verb == "add" and isinstance(obj.get("type"), list) \
                and obj.get("flags") != ["timeout"]:  # the chains design's DNS sets are
            self.concat.setdefault((table, obj["name"]), [])  # given to the constructor
        elif kind == "set" and verb == "add" and "type" in obj \
                and not isinstance(obj["type"], list):
            self.plain.setdefault((table, obj["name"]), set())
        elif kind == "element" and (table, obj["name"]) in self.ignored:
            return
        elif kind == "element" and (table, obj["name"]) in self.data_maps:
            target_map = self.data_maps[(table, obj["name"])]
            for item in obj["elem"]:
                key = item[0] if isinstance(item, list) else item
                if verb == "add":
                    target_map[_canon(key)] = item[1]
                else:
                    target_map.pop(_canon(key), None)
        elif kind == "element" and (table, obj["name"]) in self.concat:
            target = self.concat[(table, obj["name"])]
            for item in obj["elem"]:
                if isinstance(item, dict) and "elem" in item:
                    item = item["elem"]["val"]
                box = tuple(_span(part) for part in item["concat"])
                if verb == "add":
                    target.append(box)
                elif box in target:
                    target.remove(box)
        elif kind == "element" and (table, obj["name"]) in self.maps:
            for key, verdict in obj["elem"]:
                self.maps[(table, obj["name"])][_canon(key)] = verdict["jump"]["target"]
        elif kind == "element" and (table, obj["name"]) in self.plain:
            target = self.plain[(table, obj["name"])]
            for key in obj["elem"]:
                (target.add if verb == "add" else target.discard)(_canon(key))

    def accepts(self, flow: Flow, gateway: bool, from_gateway: bool,
                first_byte: int | None = None) -> bool:
        """The verdict on the flow's first packet (``first_byte``: the first byte of its
        transport payload, none by default); what observation rules did to it is left in
        ``observed`` (the conntrack mark bits set, the NFLOG prefixes logged)."""
        packet = _packet(flow)
        if first_byte is not None:
            packet[("ih", 0)] = first_byte
        self.observed: tuple[int, tuple[str, ...]] = (0, ())
        try:
            return self._accepts(packet, gateway, from_gateway)
        finally:
            self.observed = (packet.get(("ct", "mark"), 0), tuple(packet.get("logs", ())))

    def _accepts(self, packet: dict[Any, Any], gateway: bool, from_gateway: bool) -> bool:
        hook = "output" if from_gateway else "input" if gateway else "forward"
        chains = [b for b in self.base if b[3] == hook]
        assert chains, f"no base chain on {hook}"
        for _prio, table, name, _hook, policy in chains:
            verdict = self._run(table, name, packet, 0) or policy
            if verdict == "drop":
                return False
        return True

    def _run(self, table: str, chain: str, packet: dict[Any, Any], depth: int) -> str | None:
        assert depth < 8
        for exprs in self.chains[(table, chain)]:
            verdict = self._rule(table, exprs, packet, depth)
            if verdict == "return":
                return None
            if verdict is not None:
                return verdict
        return None

    def _rule(self, table: str, exprs: list[dict[str, Any]], packet: dict[Any, Any],
              depth: int) -> str | None:
        for expr in exprs:
            (kind, arg), = expr.items()
            if kind == "match":
                if not self._match(table, arg, packet):
                    return None
            elif kind == "limit":
                if arg.get("inv"):
                    return None  # "over the rate" never holds here
            elif kind == "log":
                packet.setdefault("logs", []).append(arg.get("prefix", ""))
            elif kind == "counter":
                continue
            elif kind == "mangle" and "ct" in arg["key"]:  # ct mark set ct mark | / & bits
                (op, (_mark, bits)), = arg["value"].items()
                mark = packet.get(("ct", "mark"), 0)
                packet[("ct", "mark")] = mark | bits if op == "|" else mark & bits
            elif kind == "mangle":  # meta mark set <value> / set <key> map @m
                value = arg["value"]
                if isinstance(value, dict) and "map" in value:
                    found = self._value(value["map"]["key"], packet)
                    entries = self.data_maps[(table, value["map"]["data"].lstrip("@"))]
                    if found is None or _canon(found) not in entries:
                        return None  # a map lookup that misses ends the rule
                    value = entries[_canon(found)]
                packet[("meta", "mark")] = value
            elif kind == "set":  # a dynamic set's update: a per-element limit
                if any(s.get("limit", {}).get("inv") for s in arg.get("stmt", ())):
                    return None  # "over the rate" never holds here
            elif kind == "goto":
                verdict = self._run(table, arg["target"], packet, depth + 1)
                return verdict if verdict is not None else "return"
            elif kind in ("accept", "drop", "return"):
                return kind
            elif kind == "jump":
                verdict = self._run(table, arg["target"], packet, depth + 1)
                if verdict is not None:
                    return verdict
            elif kind == "vmap":
                key = self._value(arg["key"], packet)
                entries = self.maps[(table, arg["data"].lstrip("@"))]
                target = entries.get(_canon(key)) if key else None
                if target is not None:
                    verdict = self._run(table, target, packet, depth + 1)
                    if verdict is not None:
                        return verdict
            else:
                raise AssertionError(f"interpreter does not know {kind!r}")
        return None

    def _value(self, left: dict[str, Any], packet: dict[Any, Any]) -> Any:
        (kind, arg), = left.items()
        if kind == "payload" and "base" in arg:  # raw payload: @ih,<offset>,8
            return packet.get((arg["base"], arg["offset"]))
        if kind == "payload":
            return packet.get((arg["protocol"], arg["field"]))
        if kind in ("meta", "ct"):
            return packet.get((kind, arg["key"]))
        if kind == "concat":
            parts = [self._value(p, packet) for p in arg]
            return None if None in parts else tuple(parts)
        if kind == "&":
            flags = self._value(arg[0], packet)
            if isinstance(flags, int):  # ct mark & bits
                return flags & arg[1]
            return None if flags is None else frozenset(flags) & frozenset(arg[1])
        raise AssertionError(f"interpreter does not know {kind!r}")

    def _match(self, table: str, match: dict[str, Any], packet: dict[Any, Any]) -> bool:
        value = self._value(match["left"], packet)
        if value is None:
            return False  # nft's implicit protocol dependency: no such header, no match
        right, op = match["right"], match["op"]
        if isinstance(right, str) and right.startswith("@"):
            name = right[1:]
            if (table, name) in self.concat:
                point = tuple(_scalar(v) for v in value)
                hit = any(all(lo <= p <= hi for p, (lo, hi) in zip(point, box, strict=True))
                          for box in self.concat[(table, name)])
            elif (table, name) in self.maps:
                hit = _canon(value) in self.maps[(table, name)]
            elif (table, name) in self.plain:
                hit = _canon(value) in self.plain[(table, name)]
            else:
                hit = tuple(map(_canon, value)) in self.sets.get(name, set())
        elif isinstance(value, frozenset):
            hit = value == frozenset([right] if isinstance(right, str) else right)
        else:
            hit = _contains(right, value)
        if op in ("==", "in"):
            return hit
        if op == "!=":
            return not hit
        bound = int(right)
        return {"<": value < bound, ">": value > bound, "<=": value <= bound,
                ">=": value >= bound}[op]


_PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58}


def _scalar(value: Any) -> int:
    """A key part as an integer: an address, a MAC, a protocol name or a number."""
    if isinstance(value, int):
        return value
    return _scalar_text(value)


@functools.lru_cache(maxsize=65536)
def _scalar_text(value: str) -> int:
    if value in _PROTO_NUMBERS:
        return _PROTO_NUMBERS[value]
    try:
        return int(ipaddress.ip_address(value))
    except ValueError:
        return int(value.replace(":", ""), 16)  # a MAC


def _span(part: Any) -> tuple[int, int]:
    """One element part as a closed interval (a value, a prefix or a range)."""
    if isinstance(part, dict) and "prefix" in part:
        net = ipaddress.ip_network(f"{part['prefix']['addr']}/{part['prefix']['len']}")
        return int(net.network_address), int(net.broadcast_address)
    if isinstance(part, dict) and "range" in part:
        low, high = part["range"]
        return _scalar(low), _scalar(high)
    return _scalar(part), _scalar(part)


def _canon(value: Any) -> Any:
    return _canon_text(value) if isinstance(value, str) else value


@functools.lru_cache(maxsize=65536)
def _canon_text(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value.lower()


def _contains(right: Any, value: Any) -> bool:
    if isinstance(right, dict) and "set" in right:
        return any(_contains(r, value) for r in right["set"])
    if isinstance(right, list):
        return any(_contains(r, value) for r in right)
    if isinstance(right, dict) and "prefix" in right:
        net = ipaddress.ip_network(f"{right['prefix']['addr']}/{right['prefix']['len']}")
        try:
            return ipaddress.ip_address(value) in net
        except (TypeError, ValueError):
            return False
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return low <= value <= high
    if isinstance(right, str) and isinstance(value, int) and right in _PROTO_NUMBERS:
        return _PROTO_NUMBERS[right] == value  # meta l4proto tcp
    return _canon(right) == _canon(value)


def _packet(flow: Flow) -> dict[Any, Any]:
    ip = "ip" if flow.family == 4 else "ip6"
    device_sends = flow.direction is OUT
    packet: dict[Any, Any] = {
        ("meta", "iifname"): LAN_IF if device_sends else WAN_IF,
        ("meta", "oifname"): WAN_IF if device_sends else LAN_IF,
        ("meta", "nfproto"): "ipv4" if flow.family == 4 else "ipv6",
        ("meta", "protocol"): 0x0800 if flow.family == 4 else 0x86DD,
        ("meta", "l4proto"): flow.protocol,
        ("ether", "saddr"): DEV_MAC if device_sends else "02:00:00:00:ff:ff",
        ("ether", "daddr"): _frame_destination(flow),
        (ip, "saddr"): flow.src, (ip, "daddr"): flow.dst,
        ("ct", "state"): "new", ("ct", "direction"): "original",
    }
    transport = {6: "tcp", 17: "udp"}.get(flow.protocol)
    if transport:
        packet[(transport, "sport")] = flow.src_port
        packet[(transport, "dport")] = flow.dst_port
    if flow.protocol == 6:
        packet[("tcp", "flags")] = {"syn"} if flow.opens else {"ack"}
    icmp = {1: "icmp", 58: "icmpv6"}.get(flow.protocol)
    if icmp and (flow.family == 4) == (flow.protocol == 1):
        packet[(icmp, "type")] = flow.icmp_type
        packet[(icmp, "code")] = flow.icmp_code
    packet.update(transport_bytes(flow.protocol, flow.src_port, flow.dst_port,
                                  flow.icmp_type, flow.icmp_code))
    return packet


def transport_bytes(protocol: int, sport: int | None, dport: int | None,
                    icmp_type: int | None, icmp_code: int | None) -> dict[Any, Any]:
    """``th sport``/``th dport``: the first two 16-bit words of the transport header
    (ports for TCP/UDP; type and code, then the checksum, for ICMP)."""
    if protocol in (6, 17) and sport is not None and dport is not None:
        return {("th", "sport"): sport, ("th", "dport"): dport}
    if protocol in (1, 58) and icmp_type is not None:
        return {("th", "sport"): (icmp_type << 8) | (icmp_code or 0), ("th", "dport"): 0}
    return {}


def _frame_destination(flow: Flow) -> str:
    """The destination MAC of the opening packet's frame, as the gateway receives it:
    a multicast group's MAC, the broadcast MAC, else the gateway's own."""
    dst = ipaddress.ip_address(flow.dst)
    if flow.dst in ("255.255.255.255", "192.0.2.255"):
        return "ff:ff:ff:ff:ff:ff"
    if dst.is_multicast and dst.version == 4:
        return "01:00:5e:" + ":".join(f"{b:02x}" for b in (int(dst) & 0x7FFFFF).to_bytes(3, "big"))
    if dst.is_multicast:
        return "33:33:" + ":".join(f"{b:02x}" for b in dst.packed[-4:])
    return GW_MAC


def kernel_verdict(s: Scenario, kernel: Kernel, flow: Flow) -> bool:
    from mudguard.policy._evaluate import is_local_delivery

    from_gateway = flow.direction is IN and flow.src in (GW4, GW6)
    gateway = flow.direction is OUT and is_local_delivery(flow.dst, s.context)
    return kernel.accepts(flow, gateway, from_gateway)


def disagreements(s: Scenario) -> list[str]:
    kernel = Kernel(compile_home([s.policy], s.context), s.dns)
    out = []
    for flow in s.flows:
        expected = kernel_verdict(s, kernel, flow)
        verdict = evaluate(s.policy, flow, s.context, s.names)
        if verdict.allowed != expected:
            out.append(f"{flow} -> evaluate {verdict.origin} ({verdict.action.value}), "
                       f"compiled {'accept' if expected else 'drop'}")
    return out


def test_evaluator_agrees_with_compiled_rules_on_the_corpus(corpus: Path) -> None:
    files = flows = accepted = local = 0
    problems: list[str] = []
    for name, mud in corpus_muds(corpus):
        for state in (LifecycleState.PROFILED, LifecycleState.QUARANTINED):
            scenario = build(mud, state=state)
            problems += [f"{name} [{state.value}]: {p}" for p in disagreements(scenario)]
            kernel = Kernel(compile_home([scenario.policy], scenario.context), scenario.dns)
            accepted += sum(kernel_verdict(scenario, kernel, f) for f in scenario.flows)
            local += sum(kernel_verdict(scenario, kernel, f) for f in scenario.flows
                         if f.dst in LOCAL[f.family] and f.direction is OUT
                         and f.dst not in (GW4, GW6) and f.dst_port != 53)
            flows += len(scenario.flows)
        files += 1
    assert files >= 40
    assert not problems, "\n".join(problems[:20])
    # Both outcomes are exercised, in volume.
    assert flows > 3000 and 0.15 < accepted / flows < 0.85, (flows, accepted)
    assert local > 100, local  # multicast/broadcast rules do reach the gateway's input


@pytest.mark.parametrize("state", [LifecycleState.NEW, LifecycleState.DEFAULT,
                                   LifecycleState.OUT_OF_SUPPORT, LifecycleState.TRUSTED,
                                   LifecycleState.FORGOTTEN])
def test_evaluator_agrees_in_every_lifecycle_state(corpus: Path, state: LifecycleState) -> None:
    mud = parse_mud((corpus / "mud/rfc/nist-mudfile-local-and-same-mfg-test.json").read_bytes())
    assert mud.mud is not None
    scenario = build(mud.mud, state=state)
    assert not disagreements(scenario)


def test_the_interpreter_is_not_trivially_agreeable(corpus: Path) -> None:
    """A deliberately wrong evaluator input (names the kernel does not have) disagrees."""
    mud = parse_mud((corpus / "mud/rfc/brother-DCP-L2540DW.json").read_bytes()).mud
    assert mud is not None
    scenario = build(mud)
    scenario.dns = {}  # the kernel's DNS sets are empty, the evaluator's names are not
    assert disagreements(scenario)


def test_evaluator_without_local_delivery_disagrees(corpus: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An evaluator that ignores rules for the gateway's own input (the old gap) is
    caught: Amazon Echo's mDNS/SSDP/IGMP rules are compiled into its gw chain."""
    import mudguard.policy._evaluate as evaluator

    mud = parse_mud((corpus / "mud/unsw/amazonEchoMud.json").read_bytes()).mud
    assert mud is not None
    scenario = build(mud)
    assert not disagreements(scenario)
    monkeypatch.setattr(evaluator, "local_destinations", lambda *a: ())
    found = disagreements(scenario)
    assert any("224.0.0.251" in p for p in found) and any("239.255.255.250" in p for p in found)
