"""Policy as data (``policy._data``) gives the same verdicts as the chains design
(``policy._nft``) for every corpus file in every lifecycle state, with grants, and for
random flows of random mutants: both compilations are run by the same interpreter of
libnftables JSON (``Kernel``: chains, verdict maps, sets, and now concatenated interval
sets and dynamic-set limits)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mudguard.mud import Direction, Forwarding, MudFile, parse_mud
from mudguard.mud.tls_profile import TlsProfile
from mudguard.policy import (
    DevicePolicy,
    Grant,
    GrantKind,
    HomeContext,
    LifecycleState,
    compile_home,
    decide,
    dns_set_name,
)
from mudguard.policy._data import (
    TLS_PROFILES,
    compile_fixed_ruleset,
    device_elements,
    set_name,
)
from mudguard.policy._nft import TLS_LOG_PREFIX, TLS_WATCH_MARK, tls_watched_origins
from tests import fail_closed
from tests.unit.test_evaluate_agreement import (
    GW4,
    GW6,
    Flow,
    Kernel,
    Scenario,
    _flow,
    build,
    corpus_muds,
    kernel_verdict,
)

STATES = tuple(LifecycleState)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
GATEWAY_MAC = "02:00:00:00:00:01"


def _answers(s: Scenario) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name in s.policy.dns_names():
        for family in (4, 6):
            for _device, address in s.dns.get(dns_set_name(name, family), ()):
                out.setdefault(name, set()).add(address)
    return out


def _kernels(policy: DevicePolicy, context: HomeContext, dns: dict[str, set[tuple[str, str]]],
             answers: dict[str, set[str]]) -> tuple[Kernel, Kernel]:
    chains = Kernel(compile_home([policy], context), dns)
    return chains, fail_closed.data_kernel(policy, context, answers)


def differences(s: Scenario) -> list[str]:
    chains, data = _kernels(s.policy, s.context, s.dns, _answers(s))
    out = []
    for flow in s.flows:
        old, new = kernel_verdict(s, chains, flow), kernel_verdict(s, data, flow)
        if old != new:
            out.append(f"{flow}: chains {'accept' if old else 'drop'}, "
                       f"data {'accept' if new else 'drop'}")
    return out


def test_data_agrees_with_chains_for_every_corpus_file_in_every_state(corpus: Path) -> None:
    problems: list[str] = []
    files = flows = accepted = fallbacks = scenarios = 0
    seen: set[tuple[LifecycleState, tuple[object, ...]]] = set()
    for name, mud in corpus_muds(corpus):
        files += 1
        for state in STATES:
            s = build(mud, state=state)
            key = (state, s.policy.rules)
            if key in seen:  # the states without a MUD file: the same rules for every file
                continue
            seen.add(key)
            scenarios += 1
            problems += [f"{name} [{state.value}]: {p}" for p in differences(s)]
            flows += len(s.flows)
            _, data = _kernels(s.policy, s.context, s.dns, _answers(s))
            accepted += sum(kernel_verdict(s, data, f) for f in s.flows)
            fallbacks += bool(device_elements(s.policy, s.context).fallback)
    assert files >= 40
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:20])
    assert flows > 10000 and 0.1 < accepted / flows < 0.9, (flows, accepted)
    # A per-device chain is the exception: at most one scenario in twenty.
    assert fallbacks * 20 <= scenarios, (fallbacks, scenarios)


GRANTS = (
    (Grant(kind=GrantKind.DENY, host="203.0.113.10"),),
    (Grant(kind=GrantKind.DENY, host="cloud.example.com"),),
    (Grant(kind=GrantKind.PAUSE),),
    (Grant(kind=GrantKind.LAN),),
    (Grant(kind=GrantKind.INTERNET),),
    (Grant(kind=GrantKind.SERVICE, host="198.51.100.0/24", protocol=17, port=5000),),
    (Grant(kind=GrantKind.SERVICE, host="update.maker.example", port=8883),),
    (Grant(kind=GrantKind.PAUSE), Grant(kind=GrantKind.SERVICE, host="192.0.2.0/24")),
    (Grant(kind=GrantKind.INTERNET, expires=NOW - timedelta(hours=1)),),
)


@pytest.mark.parametrize("grants", GRANTS, ids=lambda g: "+".join(x.kind.value for x in g))
@pytest.mark.parametrize("state", [LifecycleState.PROFILED, LifecycleState.QUARANTINED,
                                   LifecycleState.TRUSTED, LifecycleState.DEFAULT])
def test_data_agrees_with_chains_under_grants(corpus: Path, grants: tuple[Grant, ...],
                                              state: LifecycleState) -> None:
    for file in ("rfc/nist-mudfile-local-and-same-mfg-test.json",
                 "unsw/amazonEchoMud.json"):
        mud = parse_mud((corpus / "mud" / file).read_bytes()).mud
        assert mud is not None
        s = build(mud, state=state)
        policy = decide(s.policy.device, mud, grants, s.context, now=NOW)
        names = {n for g in grants if g.host and not g.host[0].isdigit() for n in [g.host]}
        dns = dict(s.dns)
        for i, name in enumerate(sorted(names)):
            dns.setdefault(dns_set_name(name, 4), set()).add(("192.0.2.10", f"203.0.113.{90 + i}"))
        s2 = replace(s, policy=policy, dns=dns)
        from tests.unit.test_evaluate_agreement import generate_flows
        s2.flows = generate_flows(s2)
        assert not differences(s2), differences(s2)[:5]


def test_random_flows_of_mutants_agree(corpus: Path) -> None:
    """The fail-closed harness's sampled flows over mutants: the same verdicts."""
    rng = random.Random(17)
    docs = fail_closed.corpus_documents(corpus)
    problems: list[str] = []
    checked = fallbacks = placed = 0
    for i in range(120):
        name, doc = docs[i % len(docs)]
        mutant = fail_closed.mutate(doc, rng, steps=rng.randrange(1, 4)) if i >= len(docs) \
            else doc
        result = parse_mud(json.dumps(mutant))
        if not result.ok or result.mud is None:
            continue
        trial = fail_closed.place(mutant, result.mud)
        assert trial.policy is not None and trial.context is not None
        data = fail_closed.data_kernel(trial.policy, trial.context, trial.answers)
        record = device_elements(trial.policy, trial.context)
        fallbacks += bool(record.fallback)
        placed += 1
        for flow in fail_closed.flows(trial, rng, 60):
            if not (flow.direction == fail_closed.FROM
                    and fail_closed.to_gateway(flow.dst, trial.home)):
                # The kernel forwards only frames sent to the gateway's own MAC
                # (ip_forward drops broadcast and multicast frames): no other
                # Ethernet destination ever reaches the forward hook.
                flow = replace(flow, eth_dst=GATEWAY_MAC)
            checked += 1
            old = fail_closed.kernel_accepts(trial, flow)
            new = fail_closed.kernel_accepts(trial, flow, data)
            if old != new:
                problems.append(f"{name} #{i}: {flow}: chains {old}, data {new}")
    assert checked > 4000
    # Mutants put drops after accepts: some need their chains, most do not.
    assert 0 < fallbacks < placed / 4, (fallbacks, placed)
    assert not problems, f"{len(problems)}:\n" + "\n".join(problems[:10])


def test_the_comparison_can_fail(corpus: Path) -> None:
    """Emptying one accept set of the data design shows up as differences."""
    mud = parse_mud((corpus / "mud/unsw/amazonEchoMud.json").read_bytes()).mud
    assert mud is not None
    s = build(mud)
    chains, data = _kernels(s.policy, s.context, s.dns, _answers(s))
    data.concat[("mudguard", set_name("out", 4, "a", "t"))].clear()
    assert any(kernel_verdict(s, chains, f) != kernel_verdict(s, data, f) for f in s.flows)


def test_the_fixed_ruleset_does_not_grow_with_the_home() -> None:
    context = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",),
                          portal_ports=(8443,))
    rules = [c for c in compile_fixed_ruleset(context) if "rule" in c.get("add", {})]
    # 9 identification (#16), 15 RFC 9761, 5 source bindings before established (#9)
    assert 30 <= len(rules) <= 145, len(rules)


TLS_EXAMPLE = Path(__file__).parents[1] / "data/mud-extensions/rfc9761-tls-profile.json"


def _tls_variant(mud: MudFile, profiles: tuple[TlsProfile, ...], every: int) -> MudFile:
    """``mud`` with the RFC 9761 example's profiles on every ``every``-th from-device
    accepting TCP/UDP ACE (the others unwatched, so both kinds meet)."""
    acls = []
    count = 0
    for acl in mud.acls:
        aces = []
        for ace in acl.aces:
            if ace.matches.protocol in (6, 17) and ace.action is Forwarding.ACCEPT:
                count += 1
                if count % every == 0:
                    ace = replace(ace, matches=replace(ace.matches, tls_profiles=profiles))
            aces.append(ace)
        acls.append(replace(acl, aces=tuple(aces)))
    return replace(mud, acls=tuple(acls))


def _observations(s: Scenario, kernel: Kernel) -> list[tuple[bool, int, bool]]:
    """Per flow: the verdict, the TLS watch mark, whether a (D)TLS hello was logged (a
    UDP flow's first datagram is a handshake record)."""
    out = []
    for flow in s.flows:
        verdict = kernel.accepts(*_where(s, flow), first_byte=0x16 if flow.protocol == 17
                                 else None)
        mark, logs = kernel.observed
        out.append((verdict, mark & TLS_WATCH_MARK, TLS_LOG_PREFIX in logs))
    return out


def _where(s: Scenario, flow: Flow) -> tuple[Flow, bool, bool]:
    from mudguard.policy._evaluate import is_local_delivery

    from_gateway = flow.direction is Direction.TO_DEVICE and flow.src in (GW4, GW6)
    gateway = flow.direction is Direction.FROM_DEVICE and is_local_delivery(flow.dst,
                                                                            s.context)
    return flow, gateway, from_gateway


@pytest.mark.parametrize("every", [1, 2])
def test_tls_observation_as_data_agrees_with_chains(corpus: Path, every: int) -> None:
    """RFC 9761 (D)TLS-profiled ACEs are data now (no per-device chain): for every corpus
    file with the RFC example's profiles on its TCP/UDP accepts, the same verdicts AND the
    same observation (the SYN of a watched TCP flow gets the ct mark; a watched UDP
    flow's first handshake datagram is logged as ``mgt``) as the chains design."""
    example = parse_mud(TLS_EXAMPLE.read_bytes()).mud
    assert example is not None
    profiles = next(a.matches.tls_profiles for acl in example.acls for a in acl.aces
                    if a.matches.tls_profiles)
    problems: list[str] = []
    watched = fallbacks = marked = logged = flows = 0
    for name, mud in [*corpus_muds(corpus), ("rfc9761", example)]:
        variant = _tls_variant(mud, profiles, every) if name != "rfc9761" else mud
        s = build(variant)
        if not tls_watched_origins(s.policy) or not any(
                r.origin in tls_watched_origins(s.policy) for r in s.policy.rules):
            continue
        watched += 1
        fallbacks += bool(device_elements(s.policy, s.context).fallback)
        chains, data = _kernels(s.policy, s.context, s.dns, _answers(s))
        old, new = _observations(s, chains), _observations(s, data)
        flows += len(old)
        marked += sum(bool(o[1]) for o in old)
        logged += sum(o[2] for o in old)
        problems += [f"{name}: {f}: chains {a}, data {b}"
                     for f, a, b in zip(s.flows, old, new, strict=True) if a != b]
    assert not problems, f"{len(problems)}:\n" + "\n".join(problems[:10])
    # Every accept watched: hardly any chain. Every other one: a watched ACE after an
    # unwatched accept it overlaps keeps its chains (``_watch_shadowed``), about half.
    assert watched >= 30 and fallbacks * (10 if every == 1 else 3) <= watched * (
        1 if every == 1 else 2), (watched, fallbacks)
    assert marked > 100 and logged > 10 and flows > 5000, (marked, logged, flows)


def test_tls_observation_comparison_can_fail(corpus: Path) -> None:
    """Emptying the watched rows' TCP set (or the gate) shows up: the comparison sees
    the mark."""
    example = parse_mud(TLS_EXAMPLE.read_bytes()).mud
    assert example is not None
    s = build(example)
    assert not device_elements(s.policy, s.context).fallback
    chains, data = _kernels(s.policy, s.context, s.dns, _answers(s))
    assert _observations(s, chains) == _observations(s, data)
    for name in [n for (_t, n) in data.concat if "_w_" in n]:
        data.concat[("mudguard", name)].clear()
    assert _observations(s, chains) != _observations(s, data)
    _chains, gate = _kernels(s.policy, s.context, s.dns, _answers(s))
    gate.plain[("mudguard", TLS_PROFILES)].clear()
    assert _observations(s, chains) != _observations(s, gate)


def _ace(name: str, network: str, port: tuple[int, int] | None) -> dict[str, object]:
    matches: dict[str, object] = {"ipv4": {"protocol": 6,
                                           "destination-ipv4-network": network}}
    if port is not None:
        matches["tcp"] = {"destination-port": {"operator": "range", "lower-port": port[0],
                                               "upper-port": port[1]}}
    return {"name": name, "matches": matches, "actions": {"forwarding": "accept"}}


def test_a_watched_ace_after_an_unwatched_accept_it_overlaps_is_cut_not_a_chain() -> None:
    """An unwatched accept before a watched one takes its packets first (the chain
    returns there, no mark): the watch set leaves those boxes out, with ports and
    without, so the device stays data and the observation agrees packet by packet."""
    doc = {"ietf-mud:mud": {
        "mud-version": 1, "mud-url": "https://maker.example.com/cut.json",
        "last-update": "2026-01-01T00:00:00Z", "is-supported": True, "systeminfo": "cut",
        "from-device-policy": {"access-lists": {"access-list": [{"name": "out"}]}}},
        "ietf-access-control-list:acls": {"acl": [{"name": "out", "type": "ipv4-acl-type",
            "aces": {"ace": [_ace("wide", "203.0.113.0/28", (400, 500)),
                             _ace("mqtts", "203.0.113.0/24", (443, 443)),
                             _ace("any", "198.51.100.0/24", None),
                             _ace("p443", "198.51.100.7/32", (443, 443))]}}]}}
    mud = parse_mud(json.dumps(doc)).mud
    assert mud is not None
    example = parse_mud(TLS_EXAMPLE.read_bytes()).mud
    assert example is not None
    profiles = next(a.matches.tls_profiles for acl in example.acls for a in acl.aces
                    if a.matches.tls_profiles)
    acl = mud.acls[0]
    aces = tuple(replace(a, matches=replace(a.matches, tls_profiles=profiles))
                 if a.name in ("mqtts", "p443") else a for a in acl.aces)
    mud = replace(mud, acls=(replace(acl, aces=aces),))
    s = build(mud)
    assert not device_elements(s.policy, s.context).fallback
    out = Direction.FROM_DEVICE
    s.flows = [*s.flows, *(_flow(out, 4, remote, 6, sport=40000, dport=port)
                           for remote in ("203.0.113.5", "203.0.113.100", "198.51.100.7",
                                          "198.51.100.8")
                           for port in (443, 444, 80))]
    chains, data = _kernels(s.policy, s.context, s.dns, _answers(s))
    old, new = _observations(s, chains), _observations(s, data)
    assert old == new
    marked = {(f.dst, f.dst_port) for f, o in zip(s.flows, old, strict=True) if o[1]}
    assert ("203.0.113.100", 443) in marked  # watched, past the narrower accept
    assert ("203.0.113.5", 443) not in marked  # "wide" returned first in the chain
    assert not any(dst.startswith("198.51.100.") for dst, _ in marked)  # "any" first
