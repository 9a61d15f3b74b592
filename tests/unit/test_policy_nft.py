"""The nftables compiler: structure, names, hostile input, updates (pure, no kernel).

The kernel itself checks the same output in ``tests/netns/test_policy_compile.py`` and
proves it with packets in ``tests/netns/test_enforce.py``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from mudguard.mud import Direction, Forwarding, PortMatch, PortOperator, parse_mud
from mudguard.policy import (
    BIND4,
    BIND6,
    GW_DISPATCH,
    IN_DISPATCH4,
    KNOWN_MACS,
    MANAGED4,
    MANAGED6,
    OUT_DISPATCH,
    PENDING4,
    PENDING6,
    TABLE,
    DeviceFacts,
    DevicePolicy,
    HomeContext,
    LifecycleState,
    PeerKind,
    Rule,
    compile_base,
    compile_device,
    compile_device_record,
    compile_home,
    decide,
    dependents,
    device_chain,
    device_id,
    dns_set_name,
    log_prefix,
    shard_count,
    shard_names,
    shard_table,
)
from mudguard.policy._nft import TLS_RATE_SET, sanitise_comment, tls_hello_rule
from tests.conftest import CORPUS

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CTX = HomeContext(lan_prefixes=("192.0.2.0/24", "2001:db8:1::/64"),
                  gateway_addresses=("192.0.2.1", "2001:db8:1::1"), lan_interface="br-lan",
                  portal_ports=(8443,))
MAC = "02:00:00:00:00:01"
NAME_RE = re.compile(r"^[a-z0-9_]{1,40}$")


def facts(**kw: Any) -> DeviceFacts:
    base: dict[str, Any] = {"mac": MAC, "ipv4": ("192.0.2.10",), "ipv6": ("2001:db8:1::10",),
                            "state": LifecycleState.PROFILED}
    base.update(kw)
    return DeviceFacts(**base)


def policy_of(*rules: Rule, **kw: Any) -> DevicePolicy:
    return DevicePolicy(device=facts(**kw), state=LifecycleState.PROFILED, rules=rules)


def rules_in(cmds: list[dict[str, Any]], kind: str, mac: str = MAC) -> list[dict[str, Any]]:
    chain = device_chain(mac, kind)
    return [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})
            and c["add"]["rule"]["chain"] == chain]


def walk(obj: Any) -> Iterator[Any]:
    yield obj
    if isinstance(obj, dict):
        for value in obj.values():
            yield from walk(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from walk(value)


def corpus_policies() -> Iterator[tuple[str, DevicePolicy]]:
    for path in sorted((CORPUS / "mud").rglob("*.json")):
        result = parse_mud(path.read_bytes())
        if result.ok and result.mud is not None:
            dev = facts(mud_url=result.mud.mud_url)
            yield path.name, decide(dev, result.mud, (), CTX, now=NOW)


def test_base_has_dispatch_maps_and_fail_closed_chains() -> None:
    cmds = compile_base(CTX)
    chains = {(c["add"]["chain"]["table"], c["add"]["chain"]["name"]): c["add"]["chain"]
              for c in cmds if "chain" in c.get("add", {})}
    assert chains[(TABLE, "forward")]["policy"] == "drop"
    # The main table decides after every shard (a shard's drop is final, its accept not).
    for shard in shard_names():
        assert chains[(shard, "forward")]["policy"] == "accept"
        assert chains[(shard, "forward")]["prio"] < chains[(TABLE, "forward")]["prio"]
        assert chains[(shard, "input")]["prio"] < chains[(TABLE, "input")]["prio"]
    assert len(shard_names()) == shard_count() == 16
    maps = {(c["add"]["map"]["table"], c["add"]["map"]["name"]) for c in cmds
            if "map" in c.get("add", {})}
    assert maps == {(shard, m) for shard in shard_names()
                    for m in ("out_dispatch", "gw_dispatch", "in_dispatch4", "in_dispatch6")}
    sets = {c["add"]["set"]["name"] for c in cmds if "set" in c.get("add", {})}
    assert sets == {KNOWN_MACS, MANAGED4, MANAGED6, BIND4, BIND6, PENDING4, PENDING6, TLS_RATE_SET,
                    "identify_macs", "identify_rate", "identify_rate4", "identify_rate6"}

    def rules(table: str, chain: str) -> list[list[dict[str, object]]]:
        return [c["add"]["rule"]["expr"] for c in cmds if "rule" in c.get("add", {})
                and (c["add"]["rule"]["table"], c["add"]["rule"]["chain"]) == (table, chain)]

    forward = rules(TABLE, "forward")
    # unknown LAN MACs: nothing forwarded, not even into an established flow
    assert {"drop": None} in forward[0]
    assert forward[0][1]["match"]["right"] == "@" + KNOWN_MACS
    # then every LAN packet's source binding, established ones too (the shards accepted
    # them at once): MAC . source must be a managed device's pair
    for rule, ip, bind in ((forward[1], "ip", BIND4), (forward[2], "ip6", BIND6)):
        assert rule[1]["match"] == {"op": "!=", "left": {"concat": [
            {"payload": {"protocol": "ether", "field": "saddr"}},
            {"payload": {"protocol": ip, "field": "saddr"}}]}, "right": "@" + bind}
        assert rule[-1] == {"drop": None}
    forward = forward[2:]
    assert forward[1] == tls_hello_rule(CTX)  # RFC 9761 ClientHello log: non-terminal
    assert not any(v in e for e in forward[1] for v in ("accept", "drop", "return"))
    # identification (#16): a marked flow's packets to identify_log, non-terminal
    assert forward[2][-1] == {"jump": {"target": "identify_log"}}
    forward = forward[3:]
    assert forward[0][-1] == {"accept": None}  # then established
    assert forward[2][-1] == {"jump": {"target": "identify_new"}}  # a new web flow, observed
    observing = [e for c in cmds if "rule" in c.get("add", {})
                 and c["add"]["rule"]["chain"].startswith("identify_") for e in
                 c["add"]["rule"]["expr"]]
    assert observing and not any(v in e for e in observing for v in ("accept", "drop", "jump",
                                                                      "goto"))
    shard = rules(shard_names()[0], "forward")
    established = {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                             "right": ["established", "related"]}}
    # a shard accepts established traffic at once (one rule: the cost on every packet);
    # the main table, whose drop is final, binds a LAN packet's source afterwards
    assert shard[0] == [established, {"accept": None}]
    assert [e for e in shard[2] if "vmap" in e]
    assert all(established not in rule for rule in shard[1:])


def test_every_corpus_file_compiles_deterministically_with_our_names_only() -> None:
    count = 0
    for name, policy in corpus_policies():
        cmds = compile_home([policy], CTX)
        assert cmds == compile_home([policy], CTX), name
        text = json.dumps(cmds)
        for node in walk(cmds):
            if isinstance(node, dict):
                for key in ("chain", "name", "target", "table"):
                    value = node.get(key)
                    if isinstance(value, str):
                        assert NAME_RE.match(value), (name, value)
        for dns in policy.dns_names():
            assert f"@{dns_set_name(dns, 4)}" in text or f"@{dns_set_name(dns, 6)}" in text
        count += 1
    assert count >= 40


def test_mud_names_only_reach_comments() -> None:
    for _, policy in corpus_policies():
        for cmd in compile_device(policy, CTX):
            rule = cmd.get("add", {}).get("rule")
            if not rule:
                continue
            exprs = json.dumps(rule["expr"])
            for dns in policy.dns_names():
                assert dns not in exprs


def test_hostile_names_cannot_inject() -> None:
    hostile = 'x" ; flush ruleset ; add rule inet mudguard forward accept # \n\\'
    rule = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT,
                peer=PeerKind.DNSNAME, peer_value=hostile, origin=hostile)
    cmds = compile_device(policy_of(rule), CTX)
    comments = [r.get("comment", "") for r in rules_in(cmds, "out")]
    assert all(re.fullmatch(r"[A-Za-z0-9 ._:/@+=,()#-]*", c) for c in comments)
    assert any("flush ruleset" in c for c in comments)  # kept as harmless text
    assert not any('"' in c or "\n" in c or "\\" in c for c in comments)
    sets = [c["add"]["set"]["name"] for c in cmds if "set" in c.get("add", {})]
    assert sets == [dns_set_name(hostile, 4), dns_set_name(hostile, 6)]
    assert all(NAME_RE.match(s) for s in sets)
    assert len(sanitise_comment("é" * 500)) <= 100


def test_device_chains_shape() -> None:
    rule = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT, family=4,
                peer=PeerKind.NETWORK, peer_value="198.51.100.0/24", protocol=6,
                dst_port=PortMatch(operator=PortOperator.EQ, port=443), origin="a/b")
    cmds = compile_device(policy_of(rule), CTX)
    out = rules_in(cmds, "out")
    assert out[0]["expr"][1]["limit"]["inv"] is True  # rate cap first
    assert out[0]["expr"][1]["limit"]["rate"] == CTX.new_conn_rate
    assert out[1]["expr"][0]["match"]["op"] == "!="  # own IPv4 only
    assert out[2]["expr"][0]["match"]["op"] == "!="  # own IPv6 only
    assert out[3]["expr"][-1] == {"return": None}  # new flows only: no established rule
    assert out[-2]["expr"][1]["log"] == {"prefix": log_prefix(MAC, "out"), "group": 100}
    assert out[-1]["expr"] == [{"drop": None}]
    assert log_prefix(MAC, "in") == f"mg {device_id(MAC)} in"
    inn = rules_in(cmds, "in")
    assert inn[-2]["expr"][1]["log"]["prefix"] == f"mg {device_id(MAC)} in"
    gw = rules_in(cmds, "gw")
    assert gw[0]["comment"].startswith("the portal")
    elements = {c["add"]["element"]["name"]: c["add"]["element"]["elem"] for c in cmds
                if "element" in c.get("add", {})}
    tables = {c["add"]["element"]["name"]: c["add"]["element"]["table"] for c in cmds
              if "element" in c.get("add", {})}
    assert tables[OUT_DISPATCH] == tables[IN_DISPATCH4] == shard_table(MAC)
    assert tables[KNOWN_MACS] == tables[MANAGED4] == TABLE
    assert elements[KNOWN_MACS] == [MAC] and elements[MANAGED4] == ["192.0.2.10"]
    assert tables[BIND4] == TABLE  # the binding every LAN packet meets in the main table
    assert elements[BIND4] == [{"concat": [MAC, "192.0.2.10"]}]
    assert {r["table"] for kind in ("out", "in", "gw") for r in rules_in(cmds, kind)} == {
        shard_table(MAC)}
    assert elements[OUT_DISPATCH] == [[MAC, {"jump": {"target": device_chain(MAC, "out")}}]]
    assert elements[GW_DISPATCH] == [[MAC, {"jump": {"target": device_chain(MAC, "gw")}}]]
    assert elements[IN_DISPATCH4] == [["192.0.2.10", {"jump": {"target":
                                                                 device_chain(MAC, "in")}}]]
    # Each chain is flushed and refilled in the same batch.
    ops = [(next(iter(c)), next(iter(c[next(iter(c))]))) for c in cmds]
    assert ("flush", "chain") in ops


@pytest.mark.parametrize(("port", "op", "right"), [
    (PortMatch(operator=PortOperator.EQ, port=80), "==", 80),
    (PortMatch(operator=PortOperator.NEQ, port=80), "!=", 80),
    (PortMatch(operator=PortOperator.LT, port=80), "<", 80),
    (PortMatch(operator=PortOperator.GTE, port=80), ">=", 80),
    (PortMatch(operator=PortOperator.RANGE, lower=1000, upper=2000), "==", {"range": [1000, 2000]}),
])
def test_port_operators(port: PortMatch, op: str, right: Any) -> None:
    rule = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT, protocol=17,
                dst_port=port)
    exprs = rules_in(compile_device(policy_of(rule), CTX), "out")[3]["expr"]
    assert exprs[0]["match"] == {"op": op, "left": {"payload": {"protocol": "udp",
                                                                  "field": "dport"}},
                                 "right": right}


def test_direction_initiated() -> None:
    opens = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT, protocol=6,
                 initiated=Direction.FROM_DEVICE)
    answers = Rule(direction=Direction.TO_DEVICE, action=Forwarding.ACCEPT, protocol=6,
                   initiated=Direction.FROM_DEVICE)
    cmds = compile_device(policy_of(opens, answers), CTX)
    out = json.dumps(rules_in(cmds, "out")[3]["expr"])
    assert '"right": "syn"' in out  # only a bare SYN opens
    inn = rules_in(cmds, "in")[0]["expr"]
    assert {"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "reply"}} in inn


def test_icmp_and_family_split() -> None:
    ping4 = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT, family=4, protocol=1,
                 icmp_type=8, icmp_code=0)
    lan = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT,
               peer=PeerKind.LOCAL_NETWORKS)
    out = rules_in(compile_device(policy_of(ping4, lan), CTX), "out")
    body = out[3:-2]
    assert len(body) == 3  # ping (v4 only) + local-networks v4 + v6
    assert {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}},
                      "right": 8}} in body[0]["expr"]
    assert body[2]["expr"][0]["match"]["right"] == {"prefix": {"addr": "2001:db8:1::",
                                                                "len": 64}}


def test_unresolvable_peers_compile_to_nothing() -> None:
    rules = [Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT, peer=kind,
                  peer_value=value)
             for kind, value in ((PeerKind.CONTROLLER, "urn:x"), (PeerKind.MY_CONTROLLER, None),
                                 (PeerKind.SAME_MANUFACTURER, None))]
    out = rules_in(compile_device(policy_of(*rules, mud_url="https://a.example.com/x"), CTX),
                   "out")
    assert len(out) == 5  # rate cap, two source bindings, log, drop: nothing opened


def test_dns_rules_use_the_device_address_pair_sets() -> None:
    rule = Rule(direction=Direction.TO_DEVICE, action=Forwarding.ACCEPT, peer=PeerKind.DNSNAME,
                peer_value="cloud.example.com", family=6)
    inn = rules_in(compile_device(policy_of(rule), CTX), "in")
    match = inn[0]["expr"][0]["match"]
    assert match["left"] == {"concat": [{"payload": {"protocol": "ip6", "field": "daddr"}},
                                        {"payload": {"protocol": "ip6", "field": "saddr"}}]}
    assert match["right"] == "@" + dns_set_name("cloud.example.com", 6)


def test_update_unmaps_stale_addresses_and_fingerprint_changes() -> None:
    _, first = compile_device_record(policy_of(), CTX)
    moved = policy_of(ipv4=("192.0.2.99",))
    cmds, second = compile_device_record(moved, CTX, previous=first)
    deletes = [c["delete"]["element"] for c in cmds if "delete" in c]
    assert deletes == [{"family": "inet", "table": shard_table(MAC), "name": IN_DISPATCH4,
                        "elem": ["192.0.2.10"]},
                       {"family": "inet", "table": TABLE, "name": MANAGED4,
                        "elem": ["192.0.2.10"]},
                       {"family": "inet", "table": TABLE, "name": BIND4,
                        "elem": [{"concat": [MAC, "192.0.2.10"]}]}]
    added = [c["add"]["element"] for c in cmds if "element" in c.get("add", {})]
    assert {"family": "inet", "table": TABLE, "name": BIND4,
            "elem": [{"concat": [MAC, "192.0.2.99"]}]} in added
    assert first.fingerprint != second.fingerprint
    assert rules_in(cmds, "out")[-1]["comment"] == f"policy {second.fingerprint}"
    assert second.rule_counts == tuple(len(rules_in(cmds, k)) for k in ("out", "in", "gw"))
    assert compile_device_record(policy_of(), CTX)[1] == first


def test_same_manufacturer_resolves_from_context_and_dependents() -> None:
    a = facts(mud_url="https://maker.example.com/a")
    b = DeviceFacts(mac="02:00:00:00:00:02", ipv4=("192.0.2.20",),
                    mud_url="https://maker.example.com/b", state=LifecycleState.PROFILED)
    c = DeviceFacts(mac="02:00:00:00:00:03", ipv4=("192.0.2.30",),
                    mud_url="https://other.example.org/c", state=LifecycleState.PROFILED)
    rule = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT,
                peer=PeerKind.SAME_MANUFACTURER)
    pa = DevicePolicy(device=a, state=LifecycleState.PROFILED, rules=(rule,))
    ctx = HomeContext(lan_prefixes=CTX.lan_prefixes, gateway_addresses=CTX.gateway_addresses,
                      devices=(a, b, c))
    out = rules_in(compile_device(pa, ctx), "out")
    assert out[3]["expr"][0]["match"]["right"] == "192.0.2.20"
    pc = DevicePolicy(device=c, state=LifecycleState.PROFILED, rules=())
    assert dependents([pa, pc], b) == [a.mac]
    assert dependents([pa, pc], c) == []


def test_gateway_rules_go_to_the_gw_chain_and_to_device_gateway_rules_vanish() -> None:
    to_gw = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT, peer=PeerKind.GATEWAY,
                 protocol=17, dst_port=PortMatch(operator=PortOperator.EQ, port=123),
                 origin="ntp")
    from_gw = Rule(direction=Direction.TO_DEVICE, action=Forwarding.ACCEPT,
                   peer=PeerKind.GATEWAY, protocol=17, origin="from-gw")
    cmds = compile_device(policy_of(to_gw, from_gw), CTX)
    assert [r["comment"] for r in rules_in(cmds, "gw") if r.get("comment") == "ntp"]
    assert not [r for r in rules_in(cmds, "in") if r.get("comment") == "from-gw"]


def test_mud_group_and_local_rules_also_compile_into_the_gw_chain() -> None:
    """A MUD rule whose peer covers destinations the gateway receives itself is also
    compiled into the gw chain, restricted to exactly those destinations."""
    eq = PortMatch(operator=PortOperator.EQ, port=5353)
    mdns = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT, family=4,
                peer=PeerKind.NETWORK, peer_value="224.0.0.251/32", also_local=True,
                protocol=17, dst_port=eq, origin="mdns", local_delivery=True)
    lan = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT,
               peer=PeerKind.LOCAL_NETWORKS, protocol=17, origin="lan", local_delivery=True)
    anything = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT, protocol=17,
                    origin="any", local_delivery=True)
    default_lan = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT,
                       peer=PeerKind.LOCAL_NETWORKS, origin="default/lan")
    cmds = compile_device(policy_of(mdns, lan, anything, default_lan), CTX)
    gw = {r.get("comment"): r["expr"] for r in rules_in(cmds, "gw")}
    assert gw["mdns"] == [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                   "right": "224.0.0.251"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                   "right": 5353}},
        {"accept": None}]
    lan_rights = [e["match"]["right"] for c, exprs in
                  [(r.get("comment"), r["expr"]) for r in rules_in(cmds, "gw")]
                  if c == "lan" for e in exprs[:1]]
    # local-networks reaches the LAN's broadcast, never the gateway's own services
    assert lan_rights == ["192.0.2.255"]
    assert "any" not in gw and "default/lan" not in gw
    # the portal drop still comes first
    assert rules_in(cmds, "gw")[0]["comment"].startswith("the portal")


def test_a_peer_index_resolves_as_the_scan_does() -> None:
    """The Enforcer's incremental index and a scan of the home give the same rules."""
    import random

    from mudguard.policy import PeerIndex

    rng = random.Random(7)
    policies = list(corpus_policies())
    urls: list[str | None] = [None]
    for _name, policy in policies:  # URLs the corpus's same-maker/maker/model rules name
        urls.append(policy.device.mud_url)
        for rule in policy.rules:
            if rule.peer is PeerKind.MANUFACTURER and rule.peer_value:
                urls.append(f"https://{rule.peer_value}/another-model")
            elif rule.peer is PeerKind.MODEL and rule.peer_value:
                urls.append(rule.peer_value)
    states = [LifecycleState.PROFILED, LifecycleState.FORGOTTEN, LifecycleState.DEFAULT]
    devices: dict[str, DeviceFacts] = {}
    index = PeerIndex.of(())
    for step in range(1500):
        mac = f"02:00:00:00:01:{rng.randrange(60):02x}"
        previous = devices.get(mac)
        if previous is not None and rng.random() < 0.2:
            index = index.with_device(mac, previous, None)
            del devices[mac]
        else:
            facts = DeviceFacts(mac=mac, ipv4=(f"192.0.2.{step % 200 + 20}",),
                                mud_url=rng.choice(urls), state=rng.choice(states))
            index = index.with_device(mac, previous, facts)
            devices[mac] = facts
        assert index == PeerIndex.of(devices.values())
    scanned = dataclasses.replace(CTX, devices=tuple(devices.values()))
    indexed = dataclasses.replace(scanned, peers=index)
    named = 0
    for name, policy in policies:
        assert compile_device(policy, indexed) == compile_device(policy, scanned), name
        named += compile_device(policy, scanned) != compile_device(policy, CTX)
    assert named >= 3  # some corpus rules really do name the random devices
