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

from mudguard.mud import parse_mud
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
    compile_fixed_ruleset,
    device_elements,
    set_name,
)
from tests import fail_closed
from tests.unit.test_evaluate_agreement import (
    Kernel,
    Scenario,
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
    assert 30 <= len(rules) <= 130, len(rules)  # 9 of them identification (#16)
