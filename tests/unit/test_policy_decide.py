"""decide(): the lifecycle state selects the rules; baseline first, grants around them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mudguard.mud import Direction, Forwarding, MudFile, parse_mud
from mudguard.policy import (
    BASELINE_RULES,
    DeviceFacts,
    Grant,
    GrantKind,
    HomeContext,
    LifecycleState,
    PeerKind,
    decide,
    mud_rules,
    registrable_domain,
)
from tests.conftest import CORPUS

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CTX = HomeContext(lan_prefixes=("192.0.2.0/24", "2001:db8:1::/64"),
                  gateway_addresses=("192.0.2.1", "2001:db8:1::1"))


def load(relative: str) -> MudFile:
    result = parse_mud((CORPUS / "mud" / relative).read_bytes())
    assert result.mud is not None
    return result.mud


def device(state: LifecycleState, mud: MudFile | None = None) -> DeviceFacts:
    return DeviceFacts(mac="02:00:00:00:00:01", ipv4=("192.0.2.10",), state=state,
                       mud_url=mud.mud_url if mud else None)


def test_profiled_is_baseline_then_every_ace_in_order() -> None:
    mud = load("unsw/SmartThingsMud.json")
    policy = decide(device(LifecycleState.PROFILED, mud), mud, (), CTX, now=NOW)
    assert policy.rules[:len(BASELINE_RULES)] == BASELINE_RULES
    body = policy.rules[len(BASELINE_RULES):]
    assert body == mud_rules(mud)
    assert len(body) == sum(len(mud.acl(n).aces)
                            for n in mud.from_device_policy + mud.to_device_policy)


def test_draft_controller_classes_name_a_gateway_service_or_a_configured_controller() -> None:
    """urn:ietf:params:mud:dns is the gateway's DNS service (a gateway rule on port 53);
    urn:ietf:params:mud:gateway is an ordinary controller class (owner-mapped), never the
    gateway as a whole."""
    rules = mud_rules(load("unsw/SmartThingsMud.json"))
    gateway = [r for r in rules if r.peer is PeerKind.GATEWAY]
    assert {r.peer_value for r in gateway} == {"urn:ietf:params:mud:dns"}
    assert {(r.protocol, r.dst_port.port if r.dst_port else None, r.src_port.port
             if r.src_port else None) for r in gateway} == {(17, 53, None), (17, None, 53)}
    assert {r.peer_value for r in rules if r.peer is PeerKind.CONTROLLER} == {
        "urn:ietf:params:mud:gateway"}


@pytest.mark.parametrize(("relative", "kind"), [
    ("rfc/mudmaker-same-manufacturer.json", PeerKind.SAME_MANUFACTURER),
    ("rfc/mudmaker-my-controller.json", PeerKind.MY_CONTROLLER),
    ("rfc/nist-mudfile-controllerclass-test.json", PeerKind.CONTROLLER),
    ("rfc/nist-mudfile-mfg-test.json", PeerKind.MANUFACTURER),
    ("rfc/nist-mudfile-local-networks-test.json", PeerKind.LOCAL_NETWORKS),
    ("rfc/mudmaker-cloud-service.json", PeerKind.DNSNAME),
])
def test_every_abstraction_stays_symbolic(relative: str, kind: PeerKind) -> None:
    assert kind in {r.peer for r in mud_rules(load(relative))}


def test_acl_type_gives_the_family_when_the_ace_has_no_ip_match() -> None:
    rules = mud_rules(load("rfc/mudmaker-my-controller.json"))
    assert sorted(r.family for r in rules if r.family) == [4, 4, 6, 6]


def test_direction_initiated_is_kept_for_tcp() -> None:
    rules = mud_rules(load("rfc/nist-mudfile-dns-test.json"))
    assert {(r.direction, r.initiated) for r in rules} == {
        (Direction.FROM_DEVICE, Direction.FROM_DEVICE),
        (Direction.TO_DEVICE, Direction.FROM_DEVICE)}


def test_default_internet_and_lan() -> None:
    internet = decide(device(LifecycleState.DEFAULT), None, (), CTX, now=NOW)
    assert [r.peer for r in internet.rules[len(BASELINE_RULES):]] == [PeerKind.INTERNET]
    lan = decide(device(LifecycleState.DEFAULT), None, (), CTX, home_default="lan", now=NOW)
    assert {(r.direction, r.peer) for r in lan.rules[len(BASELINE_RULES):]} == {
        (Direction.FROM_DEVICE, PeerKind.LOCAL_NETWORKS),
        (Direction.TO_DEVICE, PeerKind.LOCAL_NETWORKS)}
    with pytest.raises(ValueError):
        decide(device(LifecycleState.DEFAULT), None, (), CTX, home_default="all", now=NOW)  # type: ignore[arg-type]


def test_profiled_without_a_file_falls_back_to_the_default() -> None:
    policy = decide(device(LifecycleState.PROFILED), None, (), CTX, now=NOW)
    assert policy.state is LifecycleState.DEFAULT and "home default" in policy.reasons[0]


def test_out_of_support_is_lan_only() -> None:
    policy = decide(device(LifecycleState.OUT_OF_SUPPORT), None, (), CTX, now=NOW)
    assert {r.peer for r in policy.rules[len(BASELINE_RULES):]} == {PeerKind.LOCAL_NETWORKS}


def test_new_is_baseline_only_and_forgotten_is_nothing() -> None:
    assert decide(device(LifecycleState.NEW), None, (), CTX, now=NOW).rules == BASELINE_RULES
    assert decide(device(LifecycleState.FORGOTTEN), None, (), CTX, now=NOW).rules == ()


def test_quarantine_keeps_only_names_in_the_makers_domain() -> None:
    mud = load("unsw/dropcamMud.json")
    policy = decide(device(LifecycleState.QUARANTINED, mud), mud,
                    [Grant(kind=GrantKind.INTERNET)], CTX, now=NOW)
    body = policy.rules[len(BASELINE_RULES):]
    assert body and all(r.peer is PeerKind.DNSNAME and r.peer_value is not None
                        and r.peer_value.endswith(".dropcam.com") for r in body)
    assert policy.dns_names() == mud.dns_names() & {r.peer_value for r in body}


def test_quarantine_of_a_device_without_file_is_baseline_only() -> None:
    policy = decide(device(LifecycleState.QUARANTINED), None, (), CTX, now=NOW)
    assert policy.rules == BASELINE_RULES


def test_grants_deny_first_others_last_expired_ignored() -> None:
    mud = load("rfc/mudmaker-cloud-service.json")
    grants = [
        Grant(kind=GrantKind.INTERNET),
        Grant(kind=GrantKind.SERVICE, host="updates.example.com", port=443),
        Grant(kind=GrantKind.DENY, host="198.51.100.0/24"),
        Grant(kind=GrantKind.LAN, expires=NOW - timedelta(seconds=1)),
    ]
    policy = decide(device(LifecycleState.PROFILED, mud), mud, grants, CTX, now=NOW)
    body = policy.rules[len(BASELINE_RULES):]
    assert body[0].action is Forwarding.DROP and body[0].peer_value == "198.51.100.0/24"
    assert body[1:-2] == mud_rules(mud)
    service, internet = body[-2], body[-1]
    assert (service.peer, service.peer_value, service.protocol) == (
        PeerKind.DNSNAME, "updates.example.com", 6)
    assert internet.peer is PeerKind.INTERNET
    assert not [r for r in body if r.origin == "grant/lan"]  # expired


def test_trusted_ignores_grants_and_reaches_everything_out() -> None:
    policy = decide(device(LifecycleState.TRUSTED), None, [Grant(kind=GrantKind.DENY,
                                                                 host="198.51.100.1")],
                    CTX, now=NOW)
    body = policy.rules[len(BASELINE_RULES):]
    assert {(r.direction, r.peer) for r in body} == {
        (Direction.FROM_DEVICE, PeerKind.ANY), (Direction.FROM_DEVICE, PeerKind.GATEWAY),
        (Direction.TO_DEVICE, PeerKind.LOCAL_NETWORKS)}


@pytest.mark.parametrize(("host", "domain"), [
    ("mud.example.com", "example.com"), ("a.b.example.co.uk", "example.co.uk"),
    ("EXAMPLE.com.", "example.com"), ("192.0.2.1", None), ("", None), (None, None),
    # The whole Public Suffix List, private section too: a maker on a shared host owns
    # only its own part of it, never the host's whole domain.
    ("mud.vendor.github.io", "vendor.github.io"), ("github.io", None),
    ("bucket.s3.amazonaws.com", "bucket.s3.amazonaws.com"), ("a.b.example.com.br",
                                                             "example.com.br"),
    ("[2001:db8::1]", None),
])
def test_registrable_domain(host: str | None, domain: str | None) -> None:
    assert registrable_domain(host) == domain


def test_baseline_has_no_ntp_and_nothing_beyond_dhcp_dns_nd_mld_igmp() -> None:
    for rule in BASELINE_RULES:
        assert rule.peer is PeerKind.GATEWAY and rule.direction is Direction.FROM_DEVICE
        ports = {p.port for p in (rule.src_port, rule.dst_port) if p}
        assert ports <= {67, 68, 546, 547, 53} and 123 not in ports
        assert rule.protocol in (6, 17, 58, 2)
        if rule.protocol == 58:
            assert rule.icmp_type in (131, 132, 133, 135, 136, 143)


def test_every_valid_corpus_file_decides(tmp_path: Path) -> None:
    count = 0
    for path in sorted((CORPUS / "mud").rglob("*.json")):
        result = parse_mud(path.read_bytes())
        if not result.ok or result.mud is None:
            continue
        policy = decide(device(LifecycleState.PROFILED, result.mud), result.mud, (), CTX, now=NOW)
        assert len(policy.rules) > len(BASELINE_RULES), path.name
        count += 1
    assert count >= 40


def test_devices_sharing_a_parsed_file_share_its_rules_and_the_memo_is_bounded() -> None:
    """A home of one model holds one set of MUD rules, not a copy per device (memory at
    5,000 devices); a file parsed again gives equal rules; the memo stays bounded."""
    from mudguard.policy import _decide

    mud = load("unsw/lifxbulbMud.json")
    one = decide(device(LifecycleState.PROFILED, mud), mud, (), CTX, now=NOW)
    other = decide(DeviceFacts(mac="02:00:5e:00:53:02", ipv4=("192.0.2.11",),
                               mud_url=mud.mud_url, state=LifecycleState.PROFILED),
                   mud, (), CTX, now=NOW)
    mine = [r for r in one.rules if not r.origin.startswith("baseline")]
    assert mine and all(a is b for a, b in zip(mine, [r for r in other.rules
                                                      if not r.origin.startswith("baseline")],
                                               strict=True))
    again = load("unsw/lifxbulbMud.json")
    assert again is not mud
    assert decide(device(LifecycleState.PROFILED, again), again, (), CTX, now=NOW) == one
    data = (CORPUS / "mud/unsw/lifxbulbMud.json").read_bytes()
    for _ in range(_decide.RULES_OF_FILE_CACHE + 10):
        _decide.mud_rules(parse_mud(data).mud)  # type: ignore[arg-type]
    assert len(_decide._RULES_OF_FILE) <= _decide.RULES_OF_FILE_CACHE
