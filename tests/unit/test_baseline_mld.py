"""MLDv1 reports and done messages (ICMPv6 131/132, RFC 2710) are baseline exactly as MLDv2
reports (143) are: wherever 143 passes, they pass; wherever 143 is refused, they are
refused; in the evaluator (``profile check``, the false-alarm bench), in the chains
compile and in the fixed ruleset of the data design (both run by the test interpreter
of libnftables JSON, ``Kernel``).

Issue #16: a device that learned before joining a group (the MADEA night's Sensi
thermostat, to ff02::fb and its solicited-node group) deviated at each later join."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudguard.mud import Direction, parse_mud
from mudguard.policy import BASELINE_RULES, Flow, LifecycleState, compile_home, evaluate
from tests import fail_closed
from tests.unit.test_evaluate_agreement import DEV6, GW6, Kernel, Scenario, build, kernel_verdict

OUT = Direction.FROM_DEVICE
MLDV1 = (131, 132)
MLDV2_REPORT = 143

SOURCES = ("::", "fe80::a", DEV6, "2001:db8:1::99", "2001:db8:f::5")
"""Unspecified, link-local, the device's own, another LAN host's, an Internet host's."""
GROUPS = ("ff02::fb", "ff02::1:ff00:10", "ff02::2", "ff05::c", "ff0e::101")
"""mDNS, the device's solicited-node group, all routers, site- and global-scope groups."""
UNICAST = ("2001:db8:1::20", "2001:db8:f::201")
"""A LAN peer and an Internet host: forwarded, never the gateway's."""
DESTINATIONS = (*GROUPS, GW6, *UNICAST)


def mld(icmp_type: int, src: str, dst: str) -> Flow:
    """The opening packet of an MLD message from the device."""
    return Flow(direction=OUT, family=6, src=src, dst=dst, protocol=58, icmp_type=icmp_type,
                icmp_code=0)


def scenario(corpus: Path, state: LifecycleState) -> Scenario:
    mud = parse_mud((corpus / "mud/rfc/nist-mudfile-local-and-same-mfg-test.json")
                    .read_bytes()).mud
    assert mud is not None
    return build(mud, state=state)


def test_mldv1_report_and_done_to_a_group_are_baseline(corpus: Path) -> None:
    """A device that knows only the baseline (NEW) joins and leaves groups without a
    deviation, from its link-local address or ``::``, as RFC 2710 sends them."""
    s = scenario(corpus, LifecycleState.NEW)
    assert s.policy.rules == BASELINE_RULES
    for src in ("fe80::a", "::"):
        for group in ("ff02::fb", "ff02::1:ff00:10"):
            report = evaluate(s.policy, mld(131, src, group), s.context, s.names)
            assert report.allowed and report.origin == "baseline/mldv1-report", (src, group)
        done = evaluate(s.policy, mld(132, src, "ff02::2"), s.context, s.names)
        assert done.allowed and done.origin == "baseline/mldv1-done", src


def test_mldv1_to_a_unicast_peer_is_not_baseline(corpus: Path) -> None:
    """To a LAN peer or an Internet host a report is forwarded, not received by the
    gateway: no baseline rule applies (the same for 143), from any source."""
    s = scenario(corpus, LifecycleState.NEW)
    for icmp_type in (*MLDV1, MLDV2_REPORT):
        for src in SOURCES:
            for dst in UNICAST:
                verdict = evaluate(s.policy, mld(icmp_type, src, dst), s.context, s.names)
                assert not verdict.allowed and not verdict.origin.startswith("baseline/"), \
                    (icmp_type, src, dst, verdict.origin)


def test_other_icmpv6_types_to_a_group_are_not_baseline(corpus: Path) -> None:
    """The baseline names the MLD types only: a query (130, a router's) or an echo
    request to the same group from the same source is dropped."""
    s = scenario(corpus, LifecycleState.NEW)
    for icmp_type in (128, 130):
        verdict = evaluate(s.policy, mld(icmp_type, "fe80::a", "ff02::fb"), s.context, s.names)
        assert not verdict.allowed, icmp_type


@pytest.mark.parametrize("state", [LifecycleState.NEW, LifecycleState.PROFILED,
                                   LifecycleState.DEFAULT])
def test_mldv1_gets_the_mldv2_verdict_everywhere(corpus: Path, state: LifecycleState) -> None:
    """For every source and destination, 131 and 132 get 143's verdict from the
    evaluator, the chains compile and the data design, and the three agree; both
    verdicts occur (the comparison can fail)."""
    s = scenario(corpus, state)
    chains = Kernel(compile_home([s.policy], s.context), s.dns)
    data = fail_closed.data_kernel(s.policy, s.context, {})
    verdicts: dict[tuple[str, str], set[bool]] = {}
    for src in SOURCES:
        for dst in DESTINATIONS:
            found = verdicts.setdefault((src, dst), set())
            for icmp_type in (*MLDV1, MLDV2_REPORT):
                flow = mld(icmp_type, src, dst)
                said = evaluate(s.policy, flow, s.context, s.names).allowed
                assert said == kernel_verdict(s, chains, flow) == kernel_verdict(s, data, flow), \
                    (state, icmp_type, src, dst)
                found.add(said)
    assert all(len(found) == 1 for found in verdicts.values()), \
        {k: v for k, v in verdicts.items() if len(v) > 1}
    outcomes = {next(iter(found)) for found in verdicts.values()}
    assert outcomes == {True, False}
