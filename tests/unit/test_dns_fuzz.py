"""Hostile wire input to DnsGuard never raises and never grants anything."""

from __future__ import annotations

import dns.message
from hypothesis import given, settings
from hypothesis import strategies as st

from mudguard.dns.core import AddSetElements, DnsGuard, Drop, ForwardUpstream, SendAnswer

QUERY = dns.message.make_query("cloud.example.com", "A", id=0x1234).to_wire()


def guard() -> DnsGuard:
    g = DnsGuard()
    g.update_client("192.0.2.10", ["cloud.example.com"])
    return g


def mutate(base: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(base)
    for pos, val in flips:
        data[pos % len(data)] = val
    return bytes(data[: max(0, cut)])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_queries_get_an_answer_or_are_dropped(wire: bytes) -> None:
    out = guard().handle_query(wire, ("192.0.2.10", 5353), 0.0)
    assert len(out) == 1
    cmd = out[0]
    assert isinstance(cmd, Drop | ForwardUpstream | SendAnswer)
    if isinstance(cmd, SendAnswer):
        assert cmd.wire[:2] == wire[:2]  # the device's own id, echoed
        assert dns.message.from_wire(cmd.wire).flags & dns.flags.QR


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       st.integers(0, len(QUERY) + 4))
def test_mutated_queries_never_raise(flips: list[tuple[int, int]], cut: int) -> None:
    out = guard().handle_query(mutate(QUERY, flips, cut), ("192.0.2.10", 5353), 0.0)
    assert len(out) == 1 and not isinstance(out[0], AddSetElements)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       st.integers(0, 200))
def test_mutated_upstream_replies_never_raise_or_grant_foreign_names(
        flips: list[tuple[int, int]], cut: int) -> None:
    g = guard()
    (fwd,) = g.handle_query(QUERY, ("192.0.2.10", 5353), 0.0)
    assert isinstance(fwd, ForwardUpstream)
    q = dns.message.from_wire(fwd.wire)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("cloud.example.com.", 60, "IN", "A", "203.0.113.5"))
    r.answer.append(dns.rrset.from_text("other.example.com.", 60, "IN", "A", "203.0.113.6"))
    wire = r.to_wire()
    head, tail = wire[:2], wire[2:]  # keep the id so the reply is matched
    out = g.handle_upstream(head + mutate(tail, flips, cut + 10), 0.0)
    for cmd in out:
        if isinstance(cmd, AddSetElements):
            assert all(pair[0] == "192.0.2.10" for pair in cmd.elements)
            assert all(pair[1] != "203.0.113.6" for pair in cmd.elements)
