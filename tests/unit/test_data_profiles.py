"""Policy as data compiles once per distinct profile, never a wrong one for a device.

``policy._data`` caches what a policy's rows give (``_bundle``: rows, profile id and
elements, DNS templates) under ``_compile_key``; devices with equal keys share it, and
only their MAC and addresses are bound per device. A key too loose would hand a device
another device's profile: wider access. So each case below compiles a first device
(warming the cache) then a second one that differs in one thing a verdict depends on,
and checks that the second device's record is exactly what a cold compile gives (caches
emptied) and that it differs from the first's profile (the case really discriminates:
with that input left out of the key, the second device would get the first's profile).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mudguard.mud import Direction, Forwarding, MudFile, PortMatch, PortOperator, parse_mud
from mudguard.policy import (
    DeviceFacts,
    DevicePolicy,
    Grant,
    GrantKind,
    HomeContext,
    LifecycleState,
    _data,
    decide,
)
from mudguard.policy._data import DeviceElements, device_elements
from mudguard.policy._model import PeerIndex, PeerKind, Rule

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus" / "mud" / "rfc"
LAN = ("192.0.2.0/24", "2001:db8:1::/64")
GW = ("192.0.2.1", "2001:db8:1::1")
FROM, TO = Direction.FROM_DEVICE, Direction.TO_DEVICE
ACCEPT = Forwarding.ACCEPT
URL_A = "https://maker-a.example.com/lamp.json"
URL_B = "https://maker-b.example.com/lamp.json"
PLAIN = "nist-mudfile-local-networks-test.json"  # no rule names another device


def _mud(name: str) -> MudFile:
    result = parse_mud((CORPUS / name).read_bytes())
    assert result.mud is not None, name
    return result.mud


def _device(i: int, url: str | None = URL_A, *, v4: bool = True,
            state: LifecycleState = LifecycleState.PROFILED) -> DeviceFacts:
    return DeviceFacts(mac=f"02:00:5e:00:00:{i:02x}", ipv4=(f"192.0.2.{10 + i}",) if v4 else (),
                       ipv6=(f"2001:db8:1::{0x10 + i:x}",), mud_url=url, state=state)


def _home(devices: tuple[DeviceFacts, ...] = (), **changes: object) -> HomeContext:
    context = HomeContext(lan_prefixes=LAN, gateway_addresses=GW, portal_ports=(8443,),
                          devices=devices, peers=PeerIndex.of(devices))
    return replace(context, **changes)  # type: ignore[arg-type]


def _policy(device: DeviceFacts, *rules: Rule) -> DevicePolicy:
    return DevicePolicy(device=device, state=device.state, rules=rules)


def _tcp(peer: PeerKind, value: str | None = None, *, direction: Direction = FROM,
         family: int | None = None) -> Rule:
    return Rule(direction=direction, action=ACCEPT, peer=peer, peer_value=value, protocol=6,
                family=family, dst_port=PortMatch(operator=PortOperator.EQ, port=443),
                origin=f"test/{peer.value}")


def _empty_caches() -> None:
    _data._BUNDLES.clear()
    _data._ROWS.clear()


def _cold(policy: DevicePolicy, context: HomeContext) -> DeviceElements:
    _empty_caches()
    try:
        return device_elements(policy, context)
    finally:
        _empty_caches()


def _warm_pair(first: tuple[DevicePolicy, HomeContext], second: tuple[DevicePolicy, HomeContext]
               ) -> tuple[DeviceElements, DeviceElements]:
    _empty_caches()
    a = device_elements(*first)
    b = device_elements(*second)
    return a, b


def test_devices_with_the_same_file_and_state_share_one_compiled_profile() -> None:
    mud = _mud(PLAIN)
    devices = tuple(_device(i, mud.mud_url, v4=i < 2) for i in range(4))
    context = _home(devices)
    policies = [decide(d, mud, (), context, now=NOW) for d in devices]
    assert policies[0].rules is not policies[1].rules  # four decisions, equal rules
    _empty_caches()
    records = [device_elements(p, context) for p in policies]
    assert len(_data._BUNDLES) == 1  # compiled once, not once per device
    assert len({r.profile for r in records}) == 1 and records[0].profile
    assert all(r.profile_elements is records[0].profile_elements for r in records)
    for policy, record in zip(policies, records, strict=True):
        # bound per device: its MAC and its own addresses
        assert record.elements[_data.KNOWN_MACS] == (policy.device.mac,)
        assert record.ipv4 == policy.device.ipv4 and record.ipv6 == policy.device.ipv6
        assert record == _cold(policy, context)


def test_fifty_devices_of_three_files_compile_three_times() -> None:
    files = [_mud(n) for n in ("nist-mudfile-local-networks-test.json", "brother-DCP-L2540DW.json",
                               "mudmaker-cloud-service.json")]
    devices = tuple(_device(i, files[i % 3].mud_url) for i in range(50))
    context = _home(devices)
    policies = [decide(d, files[i % 3], (), context, now=NOW) for i, d in enumerate(devices)]
    _empty_caches()
    records = [device_elements(p, context) for p in policies]
    assert len(_data._BUNDLES) == 3
    assert len({r.profile for r in records}) == 3
    for i in (0, 1, 2, 47, 48, 49):
        assert records[i] == _cold(policies[i], context)


Case = Callable[[], tuple[tuple[DevicePolicy, HomeContext], tuple[DevicePolicy, HomeContext]]]


def _state() -> tuple[tuple[DevicePolicy, HomeContext], tuple[DevicePolicy, HomeContext]]:
    mud = _mud(PLAIN)
    a = _device(1, mud.mud_url)
    b = _device(2, mud.mud_url, state=LifecycleState.QUARANTINED)
    context = _home((a, b))
    return ((decide(a, mud, (), context, now=NOW), context),
            (decide(b, mud, (), context, now=NOW), context))


def _grants() -> tuple[tuple[DevicePolicy, HomeContext], tuple[DevicePolicy, HomeContext]]:
    mud = _mud(PLAIN)
    a, b = _device(1, mud.mud_url), _device(2, mud.mud_url)
    context = _home((a, b))
    granted = (Grant(kind=GrantKind.INTERNET),)
    return ((decide(a, mud, (), context, now=NOW), context),
            (decide(b, mud, granted, context, now=NOW), context))


def _other_grant() -> tuple[tuple[DevicePolicy, HomeContext], tuple[DevicePolicy, HomeContext]]:
    # As many rules either way: a service grant to one network or to another.
    mud = _mud(PLAIN)
    a, b = _device(1, mud.mud_url), _device(2, mud.mud_url)
    context = _home((a, b))
    one = (Grant(kind=GrantKind.SERVICE, host="198.51.100.0/28", protocol=6, port=443),)
    other = (Grant(kind=GrantKind.SERVICE, host="198.51.100.16/28", protocol=6, port=443),)
    first, second = (decide(a, mud, one, context, now=NOW),
                     decide(b, mud, other, context, now=NOW))
    assert len(first.rules) == len(second.rules)
    return (first, context), (second, context)


def _my_controller() -> tuple[tuple[DevicePolicy, HomeContext], tuple[DevicePolicy, HomeContext]]:
    # Equal rules, other MUD URL: the owner assigned a controller to A's URL only.
    a, b = _device(1, URL_A), _device(2, URL_B)
    rule = _tcp(PeerKind.MY_CONTROLLER)
    context = _home((a, b), my_controllers={URL_A: ("192.0.2.200", "2001:db8:1::200")})
    return (_policy(a, rule), context), (_policy(b, rule), context)


def _same_manufacturer_self() -> tuple[tuple[DevicePolicy, HomeContext],
                                       tuple[DevicePolicy, HomeContext]]:
    # One maker, three devices: A's peers are B and C, B's are A and C.
    devices = (_device(1, URL_A), _device(2, URL_A), _device(3, URL_A))
    rule = _tcp(PeerKind.SAME_MANUFACTURER)
    context = _home(devices)
    return (_policy(devices[0], rule), context), (_policy(devices[1], rule), context)


def _same_manufacturer_other_maker() -> tuple[tuple[DevicePolicy, HomeContext],
                                              tuple[DevicePolicy, HomeContext]]:
    # Equal rules, another maker: its peers are maker B's devices, not maker A's.
    devices = (_device(1, URL_A), _device(2, URL_A), _device(3, URL_B), _device(4, URL_B))
    rule = _tcp(PeerKind.SAME_MANUFACTURER)
    context = _home(devices)
    return (_policy(devices[0], rule), context), (_policy(devices[2], rule), context)


def _model_peer_moved() -> tuple[tuple[DevicePolicy, HomeContext],
                                 tuple[DevicePolicy, HomeContext]]:
    # The same device and rules before and after a peer of the model took another
    # address (a new home state: a new context, as the enforcer makes one).
    me = _device(1, URL_B)
    rule = _tcp(PeerKind.MODEL, URL_A)
    peer = _device(2, URL_A)
    before = _home((me, peer))
    after = _home((me, replace(peer, ipv4=("192.0.2.99",))))
    return (_policy(me, rule), before), (_policy(me, rule), after)


def _manufacturer_peer_address_in_use() -> tuple[tuple[DevicePolicy, HomeContext],
                                                 tuple[DevicePolicy, HomeContext]]:
    # An IPv4-only rule: the peers' IPv4 addresses are read, and they differ (B is one
    # of maker A's devices itself, so its peers lack its own IPv4 address).
    devices = (_device(1, URL_B), _device(2, URL_A), _device(3, URL_A))
    rule = _tcp(PeerKind.MANUFACTURER, "maker-a.example.com", family=4)
    context = _home(devices)
    return (_policy(devices[0], rule), context), (_policy(devices[1], rule), context)


def _local_networks() -> tuple[tuple[DevicePolicy, HomeContext],
                               tuple[DevicePolicy, HomeContext]]:
    me = _device(1, URL_A)
    rules = (_tcp(PeerKind.LOCAL_NETWORKS), _tcp(PeerKind.LOCAL_NETWORKS, direction=TO))
    return ((_policy(me, *rules), _home((me,))),
            (_policy(me, *rules), _home((me,), lan_prefixes=("192.0.2.0/25",
                                                             "2001:db8:1::/64"))))


def _internet_edge() -> tuple[tuple[DevicePolicy, HomeContext], tuple[DevicePolicy, HomeContext]]:
    # "Internet" is everything outside the LAN: a wider LAN is less Internet.
    me = _device(1, URL_A)
    rule = _tcp(PeerKind.INTERNET)
    return ((_policy(me, rule), _home((me,))),
            (_policy(me, rule), _home((me,), lan_prefixes=("192.0.2.0/23",
                                                           "2001:db8:1::/64"))))


def _controller() -> tuple[tuple[DevicePolicy, HomeContext], tuple[DevicePolicy, HomeContext]]:
    me = _device(1, URL_A)
    rule = _tcp(PeerKind.CONTROLLER, "urn:ietf:params:mud:ntp")
    return ((_policy(me, rule), _home((me,), controllers={
                "urn:ietf:params:mud:ntp": ("192.0.2.123",)})),
            (_policy(me, rule), _home((me,), controllers={
                "urn:ietf:params:mud:ntp": ("192.0.2.124",)})))


DANGEROUS: dict[str, Case] = {
    "state": _state, "grants": _grants, "another grant": _other_grant,
    "my-controller": _my_controller,
    "same-manufacturer excludes itself": _same_manufacturer_self,
    "same-manufacturer of another maker": _same_manufacturer_other_maker,
    "model peer moved": _model_peer_moved,
    "manufacturer peers' addresses in the rule's family": _manufacturer_peer_address_in_use,
    "local-networks": _local_networks, "internet edge": _internet_edge,
    "controller": _controller,
}


@pytest.mark.parametrize("case", DANGEROUS, ids=list(DANGEROUS))
def test_a_device_differing_in_what_a_verdict_reads_gets_its_own_profile(case: str) -> None:
    first, second = DANGEROUS[case]()
    cold = _cold(*second)
    a, b = _warm_pair(first, second)
    assert (a.profile, a.profile_elements) != (cold.profile, cold.profile_elements), \
        "the case does not discriminate"
    assert b == cold  # the cache gave exactly what a cold compile gives
    assert b.profile_elements == cold.profile_elements and b.dns == cold.dns


def test_peers_differing_only_in_a_family_the_rule_does_not_read_share() -> None:
    # An IPv4-only same-manufacturer rule: devices 2 and 3 of one maker each exclude
    # themselves, so their peers differ in IPv6 only (they have no IPv4 address): the
    # rule reads IPv4, they share one profile.
    devices = (_device(1, URL_A), _device(2, URL_A, v4=False), _device(3, URL_A, v4=False))
    rule = _tcp(PeerKind.SAME_MANUFACTURER, family=4)
    context = _home(devices)
    first, second = _policy(devices[1], rule), _policy(devices[2], rule)
    a, b = _warm_pair((first, context), (second, context))
    assert a.profile == b.profile and len(_data._BUNDLES) == 1
    assert b == _cold(second, context)
    # A dual-stack rule reads the IPv6 peers too: 2 sees 3's address, 3 sees 2's.
    both = _tcp(PeerKind.SAME_MANUFACTURER)
    c, d = _warm_pair((_policy(devices[1], both), context), (_policy(devices[2], both), context))
    assert c.profile != d.profile
    assert d == _cold(_policy(devices[2], both), context)


def test_the_cache_never_changes_a_record_over_a_mixed_home() -> None:
    # Every device of a home with all of the above, compiled warm in one pass, equals
    # its cold compile.
    files = [_mud(n) for n in ("nist-mudfile-dhcptest.json", "mudmaker-same-manufacturer.json",
                               "nist-mudfile-local-and-same-mfg-test.json",
                               "mudmaker-my-controller.json", "nist-sensor.json")]
    states = (LifecycleState.PROFILED, LifecycleState.QUARANTINED, LifecycleState.TRUSTED)
    devices = tuple(_device(i, files[i % 5].mud_url, v4=i % 4 != 0,
                            state=states[i % 3]) for i in range(30))
    context = _home(devices, my_controllers={files[3].mud_url: ("192.0.2.250",)})
    grants = [(), (Grant(kind=GrantKind.INTERNET),), (Grant(kind=GrantKind.LAN),)]
    policies = [decide(d, files[i % 5], grants[i % 7 % 3], context, now=NOW)
                for i, d in enumerate(devices)]
    _empty_caches()
    warm = [device_elements(p, context) for p in policies]
    assert len(_data._BUNDLES) < len(policies)  # some sharing happened
    for policy, record in zip(policies, warm, strict=True):
        assert record == _cold(policy, context), policy.device.mac


def test_peer_index_of_equals_adding_devices_one_by_one() -> None:
    devices = (_device(1, URL_A), _device(2, URL_A), _device(3, URL_B), _device(4, None),
               _device(5, URL_A, state=LifecycleState.FORGOTTEN), _device(6, URL_B, v4=False))
    folded = PeerIndex({}, {})
    for device in devices:
        folded = folded.with_device(device.mac, None, device)
    assert PeerIndex.of(devices) == folded
