"""The flow evaluator on hand-built policies: every rule test, first match, default drop."""

from __future__ import annotations

import pytest

from mudguard.mud import Direction, Forwarding, PortMatch, PortOperator
from mudguard.policy import (
    DeviceFacts,
    DevicePolicy,
    Flow,
    HomeContext,
    LifecycleState,
    NameMap,
    PeerKind,
    Rule,
    evaluate,
)

OUT, IN = Direction.FROM_DEVICE, Direction.TO_DEVICE
ME = DeviceFacts(mac="02:00:00:00:00:01", ipv4=("192.0.2.10",), ipv6=("2001:db8:1::10",),
                 mud_url="https://mud.example.com/cam.json")
SIBLING = DeviceFacts(mac="02:00:00:00:00:02", ipv4=("192.0.2.11",),
                      mud_url="https://mud.example.com/plug.json")
STRANGER = DeviceFacts(mac="02:00:00:00:00:03", ipv4=("192.0.2.12",),
                       mud_url="https://other.example.net/x.json")
HOME = HomeContext(
    lan_prefixes=("192.0.2.0/24", "2001:db8:1::/64"),
    gateway_addresses=("192.0.2.1", "2001:db8:1::1"),
    controllers={"urn:example:hub": ("192.0.2.50",)},
    my_controllers={"https://mud.example.com/cam.json": ("192.0.2.60",)},
    devices=(ME, SIBLING, STRANGER),
)
NAMES = NameMap.build([("Cloud.Example.com.", "203.0.113.5"),
                       ("cloud.example.com", "2001:db8:f::5")])


def policy(*rules: Rule) -> DevicePolicy:
    return DevicePolicy(device=ME, state=LifecycleState.PROFILED, rules=rules)


def out_tcp(dst: str, port: int, *, opens: bool = True, family: int = 4) -> Flow:
    src = "192.0.2.10" if family == 4 else "2001:db8:1::10"
    return Flow(direction=OUT, family=family, src=src, dst=dst, protocol=6,
                src_port=40000, dst_port=port, opens=opens)


def eq(port: int) -> PortMatch:
    return PortMatch(operator=PortOperator.EQ, port=port)


def test_no_rule_is_default_drop() -> None:
    verdict = evaluate(policy(), out_tcp("203.0.113.5", 443), HOME, NAMES)
    assert verdict.action is Forwarding.DROP and verdict.rule is None
    assert verdict.origin == "default-drop" and not verdict.allowed


def test_first_matching_rule_decides() -> None:
    deny = Rule(direction=OUT, action=Forwarding.DROP, protocol=6, dst_port=eq(443),
                origin="a/deny")
    allow = Rule(direction=OUT, action=Forwarding.ACCEPT, protocol=6, origin="a/allow")
    first = evaluate(policy(deny, allow), out_tcp("203.0.113.5", 443), HOME, NAMES)
    assert first.origin == "a/deny"
    verdict = evaluate(policy(deny, allow), out_tcp("203.0.113.5", 80), HOME, NAMES)
    assert verdict.allowed and verdict.index == 1


def test_direction_must_match() -> None:
    rule = Rule(direction=IN, action=Forwarding.ACCEPT)
    assert not evaluate(policy(rule), out_tcp("203.0.113.5", 443), HOME, NAMES).allowed


@pytest.mark.parametrize(("dst", "family", "allowed"), [
    ("203.0.113.5", 4, True),
    ("203.0.113.6", 4, False),          # not in any answer for the name
    ("2001:db8:f::5", 6, True),
    ("2001:DB8:F:0::5", 6, True),       # same address, other spelling
])
def test_dnsname_peer_uses_the_name_map(dst: str, family: int, allowed: bool) -> None:
    rule = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.DNSNAME,
                peer_value="cloud.example.com", protocol=6, dst_port=eq(443))
    assert evaluate(policy(rule), out_tcp(dst, 443, family=family), HOME, NAMES).allowed is allowed


def test_dnsname_peer_without_answers_drops() -> None:
    rule = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.DNSNAME,
                peer_value="cloud.example.com")
    assert not evaluate(policy(rule), out_tcp("203.0.113.5", 443), HOME, NameMap()).allowed


@pytest.mark.parametrize(("peer", "value", "dst", "allowed"), [
    (PeerKind.LOCAL_NETWORKS, None, "192.0.2.77", True),
    (PeerKind.LOCAL_NETWORKS, None, "203.0.113.5", False),
    (PeerKind.GATEWAY, None, "192.0.2.1", True),
    (PeerKind.GATEWAY, None, "192.0.2.2", False),
    (PeerKind.CONTROLLER, "urn:example:hub", "192.0.2.50", True),
    (PeerKind.CONTROLLER, "urn:example:other", "192.0.2.50", False),
    (PeerKind.MY_CONTROLLER, None, "192.0.2.60", True),
    (PeerKind.MY_CONTROLLER, None, "192.0.2.50", False),
    (PeerKind.SAME_MANUFACTURER, None, "192.0.2.11", True),
    (PeerKind.SAME_MANUFACTURER, None, "192.0.2.12", False),
    (PeerKind.SAME_MANUFACTURER, None, "192.0.2.10", False),  # the device itself is not a peer
    (PeerKind.MANUFACTURER, "other.example.net", "192.0.2.12", True),
    (PeerKind.MANUFACTURER, "other.example.net", "192.0.2.11", False),
    (PeerKind.MODEL, "https://mud.example.com/plug.json", "192.0.2.11", True),
    (PeerKind.MODEL, "https://mud.example.com/plug.json", "192.0.2.12", False),
    (PeerKind.NETWORK, "203.0.113.0/28", "203.0.113.5", True),
    (PeerKind.NETWORK, "203.0.113.0/28", "203.0.113.17", False),
    (PeerKind.ANY, None, "198.51.100.1", True),
])
def test_peer_kinds_resolve_from_the_context(peer: PeerKind, value: str | None, dst: str,
                                             allowed: bool) -> None:
    rule = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=peer, peer_value=value)
    assert evaluate(policy(rule), out_tcp(dst, 80), HOME, NAMES).allowed is allowed


def test_also_local_requires_a_lan_peer() -> None:
    rule = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.NETWORK,
                peer_value="0.0.0.0/0", also_local=True)
    assert evaluate(policy(rule), out_tcp("192.0.2.99", 80), HOME, NAMES).allowed
    assert not evaluate(policy(rule), out_tcp("203.0.113.5", 80), HOME, NAMES).allowed


def test_ipv4_prefix_never_matches_ipv6() -> None:
    rule = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.NETWORK,
                peer_value="0.0.0.0/0")
    assert not evaluate(policy(rule), out_tcp("2001:db8:f::5", 80, family=6), HOME, NAMES).allowed


@pytest.mark.parametrize(("match", "port", "allowed"), [
    (PortMatch(operator=PortOperator.RANGE, lower=1000, upper=2000), 1500, True),
    (PortMatch(operator=PortOperator.RANGE, lower=1000, upper=2000), 2001, False),
    (PortMatch(operator=PortOperator.NEQ, port=23), 23, False),
    (PortMatch(operator=PortOperator.GTE, port=1024), 1024, True),
    (PortMatch(operator=PortOperator.LT, port=1024), 1024, False),
])
def test_port_operators(match: PortMatch, port: int, allowed: bool) -> None:
    rule = Rule(direction=OUT, action=Forwarding.ACCEPT, protocol=6, dst_port=match)
    assert evaluate(policy(rule), out_tcp("203.0.113.5", port), HOME, NAMES).allowed is allowed


def test_ports_apply_only_with_tcp_or_udp() -> None:
    ping = Flow(direction=OUT, family=4, src="192.0.2.10", dst="203.0.113.5", protocol=1,
                icmp_type=8, icmp_code=0)
    tcp_rule = Rule(direction=OUT, action=Forwarding.ACCEPT, protocol=6, dst_port=eq(0))
    assert not evaluate(policy(tcp_rule), ping, HOME, NAMES).allowed
    # As compiled: a port test without TCP/UDP is no test (the parser never makes one).
    bare = Rule(direction=OUT, action=Forwarding.ACCEPT, dst_port=eq(0))
    assert evaluate(policy(bare), ping, HOME, NAMES).allowed


def test_protocol_and_icmp_type_code() -> None:
    rule = Rule(direction=OUT, action=Forwarding.ACCEPT, family=4, protocol=1, icmp_type=8,
                icmp_code=0)
    def ping(t: int, c: int) -> Flow:
        return Flow(direction=OUT, family=4, src="192.0.2.10", dst="203.0.113.5", protocol=1,
                    icmp_type=t, icmp_code=c)
    assert evaluate(policy(rule), ping(8, 0), HOME, NAMES).allowed
    assert not evaluate(policy(rule), ping(8, 1), HOME, NAMES).allowed
    assert not evaluate(policy(rule), ping(13, 0), HOME, NAMES).allowed
    assert not evaluate(policy(rule), out_tcp("203.0.113.5", 80), HOME, NAMES).allowed


def test_direction_initiated_follows_who_opened_the_connection() -> None:
    # from-device ACE: "the device may open TCP/443"; to-device ACE: replies only.
    out_rule = Rule(direction=OUT, action=Forwarding.ACCEPT, protocol=6, dst_port=eq(443),
                    initiated=OUT)
    in_rule = Rule(direction=IN, action=Forwarding.ACCEPT, protocol=6, src_port=eq(443),
                   initiated=OUT)
    pol = policy(out_rule, in_rule)
    assert evaluate(pol, out_tcp("203.0.113.5", 443), HOME, NAMES).allowed
    # A SYN from the remote side with source port 443: the remote opens, not allowed.
    syn_in = Flow(direction=IN, family=4, src="203.0.113.5", dst="192.0.2.10", protocol=6,
                  src_port=443, dst_port=40000, opens=True)
    assert not evaluate(pol, syn_in, HOME, NAMES).allowed
    # Replies of a connection the device opened are conntrack's (established), never a
    # device chain's: the to-device rule admits no new packet, not even a picked-up one.
    picked_up = Flow(direction=IN, family=4, src="203.0.113.5", dst="192.0.2.10", protocol=6,
                     src_port=443, dst_port=40000, opens=False)
    assert not evaluate(pol, picked_up, HOME, NAMES).allowed
    # A mid-stream packet the device sends is not a bare SYN either.
    assert not evaluate(pol, out_tcp("203.0.113.5", 443, opens=False), HOME, NAMES).allowed


def test_direction_initiated_ignored_for_udp() -> None:
    rule = Rule(direction=IN, action=Forwarding.ACCEPT, initiated=OUT)
    dgram = Flow(direction=IN, family=4, src="203.0.113.5", dst="192.0.2.10", protocol=17,
                 src_port=123, dst_port=123)
    assert evaluate(policy(rule), dgram, HOME, NAMES).allowed


def test_ethertype_and_family() -> None:
    v6_only = Rule(direction=OUT, action=Forwarding.ACCEPT, ethertype=0x86DD)
    assert not evaluate(policy(v6_only), out_tcp("203.0.113.5", 80), HOME, NAMES).allowed
    assert evaluate(policy(v6_only), out_tcp("2001:db8:f::5", 80, family=6), HOME, NAMES).allowed
    fam4 = Rule(direction=OUT, action=Forwarding.ACCEPT, family=4)
    assert not evaluate(policy(fam4), out_tcp("2001:db8:f::5", 80, family=6), HOME, NAMES).allowed


def test_ethernet_destination_is_the_one_the_ip_destination_implies() -> None:
    """``destination-mac-address`` rules match as ``ether daddr`` does: the broadcast MAC
    for broadcasts, the group MAC for multicast, a named MAC only when the flow names it."""
    def udp(dst: str, eth_dst: str | None = None, family: int = 4) -> Flow:
        src = "192.0.2.10" if family == 4 else "2001:db8:1::10"
        return Flow(direction=OUT, family=family, src=src, dst=dst, protocol=17,
                    src_port=9999, dst_port=9999, eth_dst=eth_dst)

    def allowed(mac: str, flow: Flow) -> bool:
        peer = f"{flow.dst}/{32 if flow.family == 4 else 128}"
        rule = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.NETWORK,
                    peer_value=peer, eth_dst=mac, local_delivery=True, origin="a/eth")
        return evaluate(policy(rule), flow, HOME, NAMES).allowed

    broadcast = "ff:ff:ff:ff:ff:ff"
    assert allowed(broadcast, udp("255.255.255.255"))
    assert allowed(broadcast, udp("192.0.2.255"))  # the LAN's directed broadcast
    assert not allowed(broadcast, udp("203.0.113.5"))  # unicast: the next hop's MAC
    assert not allowed(broadcast, udp("224.0.0.251"))
    assert allowed("01:00:5e:00:00:fb", udp("224.0.0.251"))
    assert allowed("33:33:00:00:00:fb", udp("ff02::fb", family=6))
    assert allowed("02:00:00:00:00:99", udp("203.0.113.5", eth_dst="02:00:00:00:00:99"))
    assert not allowed("02:00:00:00:00:99", udp("203.0.113.5"))


def test_reject_is_reported_as_reject() -> None:
    rule = Rule(direction=OUT, action=Forwarding.REJECT, protocol=6)
    verdict = evaluate(policy(rule), out_tcp("203.0.113.5", 80), HOME, NAMES)
    assert verdict.action is Forwarding.REJECT and not verdict.allowed


@pytest.mark.parametrize("kwargs", [
    {"family": 5},
    {"src": "2001:db8::1"},                 # IPv6 address in an IPv4 flow
    {"dst": "not-an-address"},
    {"protocol": 300},
    {"dst_port": 70000},
])
def test_bad_flows_are_refused_clearly(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"direction": OUT, "family": 4, "src": "192.0.2.10",
                                 "dst": "203.0.113.5", "protocol": 6}
    fields.update(kwargs)
    with pytest.raises(ValueError):
        Flow(**fields)  # type: ignore[arg-type]


def test_name_map_reverse_lookup() -> None:
    names = NameMap.build([("a.example.com", "203.0.113.5"), ("b.example.com", "203.0.113.5")])
    assert names.names_of("203.0.113.5") == ("a.example.com", "b.example.com")
    assert names.names_of("203.0.113.6") == ()


# -- the chains the compiler builds: source binding, the gateway's chain, portal -------------


def test_spoofed_source_is_dropped_before_any_rule() -> None:
    rule = Rule(direction=OUT, action=Forwarding.ACCEPT)
    spoofed = Flow(direction=OUT, family=4, src="192.0.2.99", dst="203.0.113.5", protocol=6,
                   src_port=1, dst_port=80)
    verdict = evaluate(policy(rule), spoofed, HOME, NAMES)
    assert not verdict.allowed and verdict.origin == "source-binding"


def test_gateway_rules_live_in_the_gateway_chain() -> None:
    dns = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.GATEWAY, protocol=17,
               dst_port=eq(53))
    to_gw = Flow(direction=OUT, family=4, src="192.0.2.10", dst="192.0.2.1", protocol=17,
                 src_port=5000, dst_port=53)
    verdict = evaluate(policy(dns), to_gw, HOME, NAMES)
    assert verdict.allowed and verdict.chain == "gw"
    # An "any" rule is in the out chain: it never admits traffic to the gateway itself.
    anything = Rule(direction=OUT, action=Forwarding.ACCEPT)
    assert not evaluate(policy(anything), to_gw, HOME, NAMES).allowed


def test_any_source_rules_come_before_source_binding() -> None:
    dhcp = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.GATEWAY, family=4,
                protocol=17, src_port=eq(68), dst_port=eq(67), any_source=True)
    discover = Flow(direction=OUT, family=4, src="0.0.0.0", dst="255.255.255.255",
                    protocol=17, src_port=68, dst_port=67)
    assert evaluate(policy(dhcp), discover, HOME, NAMES).allowed
    strict = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.GATEWAY, family=4,
                  protocol=17, src_port=eq(68), dst_port=eq(67))
    assert evaluate(policy(strict), discover, HOME, NAMES).origin == "source-binding"


def test_portal_ports_are_never_reachable_from_managed_devices() -> None:
    home = HomeContext(lan_prefixes=HOME.lan_prefixes, gateway_addresses=HOME.gateway_addresses,
                       portal_ports=(8443,))
    everything = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.GATEWAY)
    to_portal = Flow(direction=OUT, family=4, src="192.0.2.10", dst="192.0.2.1", protocol=6,
                     src_port=40000, dst_port=8443)
    assert evaluate(policy(everything), to_portal, home, NAMES).origin == "portal"
    trusted = DevicePolicy(device=ME, state=LifecycleState.TRUSTED, rules=(everything,))
    assert evaluate(trusted, to_portal, home, NAMES).allowed


def test_gateway_output_is_not_filtered() -> None:
    from_gw = Flow(direction=IN, family=4, src="192.0.2.1", dst="192.0.2.10", protocol=17,
                   src_port=67, dst_port=68)
    verdict = evaluate(policy(), from_gw, HOME, NAMES)
    assert verdict.allowed and verdict.origin == "gateway-output"


def test_internet_peer_is_everything_outside_the_lan() -> None:
    rule = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.INTERNET)
    assert evaluate(policy(rule), out_tcp("203.0.113.5", 80), HOME, NAMES).allowed
    assert not evaluate(policy(rule), out_tcp("192.0.2.77", 80), HOME, NAMES).allowed


def test_forgotten_devices_are_no_peers() -> None:
    gone = DeviceFacts(mac=SIBLING.mac, ipv4=SIBLING.ipv4, mud_url=SIBLING.mud_url,
                       state=LifecycleState.FORGOTTEN)
    home = HomeContext(lan_prefixes=HOME.lan_prefixes, gateway_addresses=HOME.gateway_addresses,
                       devices=(ME, gone))
    rule = Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.SAME_MANUFACTURER)
    assert not evaluate(policy(rule), out_tcp("192.0.2.11", 80), home, NAMES).allowed


# -- MUD rules for destinations the gateway receives itself (_local.py) -------------------


def mud_rule(**kw: object) -> Rule:
    """A rule as decide() makes it from a MUD ACE (``local_delivery``)."""
    return Rule(direction=OUT, action=Forwarding.ACCEPT, local_delivery=True,
                origin="acl/ace", **kw)  # type: ignore[arg-type]


def out_udp(dst: str, port: int, *, family: int = 4, src: str | None = None) -> Flow:
    own = "192.0.2.10" if family == 4 else "2001:db8:1::10"
    return Flow(direction=OUT, family=family, src=src or own, dst=dst, protocol=17,
                src_port=5353, dst_port=port)


@pytest.mark.parametrize(("rule", "flow", "allowed"), [
    # explicit groups: mDNS, SSDP, IGMP, broadcasts, IPv6 mDNS from link-local
    (mud_rule(family=4, peer=PeerKind.NETWORK, peer_value="224.0.0.251/32", protocol=17,
              dst_port=eq(5353)), out_udp("224.0.0.251", 5353), True),
    (mud_rule(family=4, peer=PeerKind.NETWORK, peer_value="224.0.0.251/32", protocol=17,
              dst_port=eq(5353)), out_udp("224.0.0.251", 5354), False),
    (mud_rule(family=4, peer=PeerKind.NETWORK, peer_value="224.0.0.251/32", protocol=17,
              dst_port=eq(5353)), out_udp("239.255.255.250", 5353), False),
    (mud_rule(family=4, peer=PeerKind.NETWORK, peer_value="239.255.255.250/32", protocol=17,
              dst_port=eq(1900), also_local=True), out_udp("239.255.255.250", 1900), True),
    (mud_rule(family=6, peer=PeerKind.NETWORK, peer_value="ff00::/8", protocol=17,
              dst_port=eq(5353)), out_udp("ff02::fb", 5353, family=6, src="fe80::1"), True),
    (mud_rule(family=4, peer=PeerKind.NETWORK, peer_value="255.255.255.255/32", protocol=17,
              dst_port=eq(6667)), out_udp("255.255.255.255", 6667), True),
    (mud_rule(family=4, peer=PeerKind.NETWORK, peer_value="192.0.2.255/32", protocol=17,
              dst_port=eq(6667)), out_udp("192.0.2.255", 6667), True),
    # a network that contains the gateway's unicast address does not open the gateway
    (mud_rule(peer=PeerKind.NETWORK, peer_value="0.0.0.0/0", protocol=17),
     out_udp("192.0.2.1", 123), False),
    (mud_rule(peer=PeerKind.NETWORK, peer_value="0.0.0.0/0", protocol=17),
     out_udp("224.0.0.251", 5353), True),
    # local-networks: the LAN's directed broadcast; never the gateway's own services,
    # no groups
    (mud_rule(peer=PeerKind.LOCAL_NETWORKS, protocol=17, dst_port=eq(123)),
     out_udp("192.0.2.1", 123), False),
    (mud_rule(peer=PeerKind.LOCAL_NETWORKS, protocol=17, dst_port=eq(123)),
     out_udp("2001:db8:1::1", 123, family=6), False),
    (mud_rule(peer=PeerKind.LOCAL_NETWORKS, protocol=17, dst_port=eq(6667)),
     out_udp("192.0.2.255", 6667), True),
    (mud_rule(peer=PeerKind.LOCAL_NETWORKS, protocol=17, dst_port=eq(5353)),
     out_udp("224.0.0.251", 5353), False),
    # controllers: only when the controller is the gateway
    (mud_rule(peer=PeerKind.MY_CONTROLLER, protocol=17, dst_port=eq(123)),
     out_udp("192.0.2.1", 123), False),
    # ANY, INTERNET and synthesised rules never reach the gateway's services
    (mud_rule(protocol=17, dst_port=eq(123)), out_udp("192.0.2.1", 123), False),
    (mud_rule(protocol=17, dst_port=eq(5353)), out_udp("224.0.0.251", 5353), False),
    (mud_rule(peer=PeerKind.INTERNET, protocol=17), out_udp("224.0.0.251", 5353), False),
    (Rule(direction=OUT, action=Forwarding.ACCEPT, peer=PeerKind.LOCAL_NETWORKS,
          origin="default/lan"), out_udp("192.0.2.1", 123), False),
])
def test_mud_rules_reach_the_gateway_only_where_their_peer_covers_it(
        rule: Rule, flow: Flow, allowed: bool) -> None:
    verdict = evaluate(policy(rule), flow, HOME, NAMES)
    assert verdict.allowed is allowed, verdict
    assert verdict.chain == "gw"


def test_my_controller_that_is_the_gateway_reaches_it() -> None:
    home = HomeContext(lan_prefixes=HOME.lan_prefixes, gateway_addresses=HOME.gateway_addresses,
                       my_controllers={ME.mud_url or "": ("192.0.2.1",)}, devices=HOME.devices)
    rule = mud_rule(peer=PeerKind.MY_CONTROLLER, protocol=17, dst_port=eq(123))
    assert evaluate(policy(rule), out_udp("192.0.2.1", 123), home, NAMES).allowed
    assert not evaluate(policy(rule), out_udp("192.0.2.1", 124), home, NAMES).allowed
    assert not evaluate(policy(rule), out_udp("2001:db8:1::1", 123, family=6), home,
                        NAMES).allowed


def test_portal_and_source_binding_still_hold_for_local_rules() -> None:
    home = HomeContext(lan_prefixes=HOME.lan_prefixes, gateway_addresses=HOME.gateway_addresses,
                       portal_ports=(8443,), my_controllers={ME.mud_url or "": ("192.0.2.1",)},
                       devices=HOME.devices)
    rule = mud_rule(peer=PeerKind.MY_CONTROLLER, protocol=6)
    assert evaluate(policy(rule), out_tcp("192.0.2.1", 22), home, NAMES).allowed
    local = mud_rule(peer=PeerKind.LOCAL_NETWORKS, protocol=6)
    assert not evaluate(policy(local), out_tcp("192.0.2.1", 22), home, NAMES).allowed
    assert evaluate(policy(rule), out_tcp("192.0.2.1", 8443), home, NAMES).origin == "portal"
    spoofed = Flow(direction=OUT, family=4, src="192.0.2.99", dst="192.0.2.1", protocol=6,
                   src_port=4000, dst_port=22)
    assert evaluate(policy(rule), spoofed, home, NAMES).origin == "source-binding"


def test_first_match_order_holds_across_local_rules() -> None:
    deny = Rule(direction=OUT, action=Forwarding.DROP, peer=PeerKind.NETWORK,
                peer_value="224.0.0.0/4", local_delivery=True, origin="acl/deny")
    allow = mud_rule(peer=PeerKind.NETWORK, peer_value="224.0.0.251/32", protocol=17)
    assert evaluate(policy(deny, allow), out_udp("224.0.0.251", 5353), HOME,
                    NAMES).origin == "acl/deny"
    assert evaluate(policy(allow, deny), out_udp("224.0.0.251", 5353), HOME, NAMES).allowed
