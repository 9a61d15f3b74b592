"""DnsGuard, the resolver's sans-IO core: events in, commands out (a Playbook per case)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from mudguard.dns.core import (
    AddSetElements,
    Command,
    DnsGuard,
    Drop,
    ForwardUpstream,
    GuardConfig,
    SendAnswer,
)
from mudguard.policy._names import dns_set_name

LAN4 = "192.0.2.0/24"
LAN6 = "2001:db8:1::/64"
GW4 = "192.0.2.1"
DEV_A = ("192.0.2.10", "2001:db8:1::10")
DEV_B = ("192.0.2.11", "2001:db8:1::11")
CONFIG = GuardConfig(lan_prefixes=(LAN4, LAN6), gateway_addresses=(GW4, "2001:db8:1::1"),
                     min_timeout_s=30, max_timeout_s=3600, grace_s=10)
NOW = 1000.0

Record = tuple[str, str, str] | tuple[str, str, str, int]  # (name, type, value[, ttl])


def make_guard(config: GuardConfig = CONFIG) -> DnsGuard:
    guard = DnsGuard(config)
    guard.update_device("aa:aa", DEV_A, ["cloud.example.com", "Cdn.Example.NET."])
    guard.update_device("bb:bb", DEV_B, ["cloud.example.com"])
    return guard


def query(name: str, rdtype: str = "A", qid: int = 4242) -> bytes:
    return dns.message.make_query(name, rdtype, id=qid).to_wire()


def reply_to(forward: ForwardUpstream, records: Sequence[Record], *,
             rcode: dns.rcode.Rcode = dns.rcode.NOERROR, ttl: int = 300) -> bytes:
    """What a (possibly hostile) upstream answers to a forwarded query."""
    q = dns.message.from_wire(forward.wire)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for rec in records:
        rr_ttl = rec[3] if len(rec) == 4 else ttl
        r.answer.append(dns.rrset.from_text(rec[0].rstrip(".") + ".", rr_ttl, "IN", rec[1], rec[2]))
    return r.to_wire()


class Playbook:
    """Drives a guard through one exchange, asserting on each step's commands."""

    def __init__(self, guard: DnsGuard) -> None:
        self.guard = guard

    def ask(self, wire: bytes, client: str, now: float = NOW) -> list[Command]:
        return self.guard.handle_query(wire, (client, 5353), now)

    def forwarded(self, wire: bytes, client: str, now: float = NOW) -> ForwardUpstream:
        out = self.ask(wire, client, now)
        assert len(out) == 1 and isinstance(out[0], ForwardUpstream), out
        return out[0]

    def resolve(self, name: str, client: str, records: Sequence[Record], rdtype: str = "A",
                now: float = NOW, ttl: int = 300) -> list[Command]:
        fwd = self.forwarded(query(name, rdtype), client, now)
        return self.guard.handle_upstream(reply_to(fwd, records, ttl=ttl), now)


def fills(commands: Sequence[Command]) -> list[AddSetElements]:
    assert all(isinstance(c, AddSetElements) for c in commands), commands
    return [c for c in commands if isinstance(c, AddSetElements)]


def answer_of(commands: Sequence[Command]) -> dns.message.Message:
    assert len(commands) == 1 and isinstance(commands[0], SendAnswer), commands
    return dns.message.from_wire(commands[0].wire)


def addresses(msg: dns.message.Message) -> set[str]:
    return {rd.address for rrset in msg.answer
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rd in rrset}


# ------------------------------------------------------------------ fill before answer


def test_allowed_name_fills_before_answering() -> None:
    book = Playbook(make_guard())
    out = book.resolve("cloud.example.com", DEV_A[0], [("cloud.example.com", "A", "203.0.113.5")])
    (fill,) = fills(out)
    assert fill.set_name == dns_set_name("cloud.example.com", 4)
    assert fill.family == 4
    assert fill.elements == ((DEV_A[0], "203.0.113.5"),)
    assert fill.timeout_s == 300 + 10
    done = book.guard.fill_done(fill.token, True, NOW)
    msg = answer_of(done)
    assert msg.id == 4242 and msg.rcode() == dns.rcode.NOERROR
    assert addresses(msg) == {"203.0.113.5"}
    assert book.guard.fill_done(fill.token, True, NOW) == [Drop("unknown fill token")]


def test_failed_fill_answers_servfail() -> None:
    book = Playbook(make_guard())
    (fill,) = fills(book.resolve("cloud.example.com", DEV_A[0],
                                 [("cloud.example.com", "A", "203.0.113.5")]))
    msg = answer_of(book.guard.fill_done(fill.token, False, NOW))
    assert msg.rcode() == dns.rcode.SERVFAIL and msg.id == 4242 and not msg.answer


@pytest.mark.parametrize(("name", "client"), [
    ("other.example.com", DEV_A[0]),  # not in the profile
    ("sub.cloud.example.com", DEV_A[0]),  # exact match only, no suffixes
    ("example.com", DEV_A[0]),
    ("cloud.example.com", "192.0.2.99"),  # unknown device
])
def test_names_outside_profile_resolve_but_grant_nothing(name: str, client: str) -> None:
    book = Playbook(make_guard())
    msg = answer_of(book.resolve(name, client, [(name, "A", "203.0.113.5")]))
    assert addresses(msg) == {"203.0.113.5"}


def test_name_match_ignores_case_and_trailing_dot() -> None:
    book = Playbook(make_guard())
    out = book.resolve("CLOUD.Example.com.", DEV_A[0], [("cloud.example.com", "A", "203.0.113.5")])
    assert fills(out)[0].set_name == dns_set_name("cloud.example.com", 4)


# ------------------------------------------------------------------ CNAME, several records


def test_cname_chain_fills_every_allowed_name_with_final_addresses() -> None:
    guard = make_guard()
    guard.update_device("cc:cc", ("192.0.2.12",), ["www.example.org", "cdn.example.net"])
    book = Playbook(guard)
    out = book.resolve("www.example.org", "192.0.2.12", [
        ("www.example.org", "CNAME", "edge.example.org.", 600),
        ("edge.example.org", "CNAME", "cdn.example.net.", 120),
        ("cdn.example.net", "A", "203.0.113.7", 900),
        ("cdn.example.net", "A", "203.0.113.8", 900),
        ("unrelated.example.com", "A", "203.0.113.66"),  # outside the chain: ignored
    ])
    got = {f.set_name: f for f in fills(out)}
    assert set(got) == {dns_set_name("www.example.org", 4), dns_set_name("cdn.example.net", 4)}
    for fill in got.values():
        assert set(fill.elements) == {("192.0.2.12", "203.0.113.7"), ("192.0.2.12", "203.0.113.8")}
        assert fill.timeout_s == 120 + 10  # the chain's minimum TTL
    assert len({f.token for f in got.values()}) == 1
    msg = answer_of(book.guard.fill_done(next(iter(got.values())).token, True, NOW))
    chain_ttls = {rrset.name.to_text(): rrset.ttl for rrset in msg.answer}
    assert chain_ttls["cdn.example.net."] == 120  # never longer than the element lives


def test_records_outside_the_chain_grant_nothing() -> None:
    book = Playbook(make_guard())
    # The device asks for a name it may not use; the answer smuggles an allowed name.
    msg = answer_of(book.resolve("ads.example.com", DEV_A[0], [
        ("ads.example.com", "A", "203.0.113.9"),
        ("cloud.example.com", "A", "203.0.113.66"),
    ]))
    assert msg.rcode() == dns.rcode.NOERROR


def test_aaaa_uses_the_device_ipv6_addresses_whatever_the_transport() -> None:
    book = Playbook(make_guard())
    out = book.resolve("cloud.example.com", DEV_A[0], [
        ("cloud.example.com", "AAAA", "2001:db8:f::1"),
        ("cloud.example.com", "AAAA", "2001:db8:f::2"),
    ], rdtype="AAAA")
    (fill,) = fills(out)
    assert fill.set_name == dns_set_name("cloud.example.com", 6) and fill.family == 6
    assert set(fill.elements) == {(DEV_A[1], "2001:db8:f::1"), (DEV_A[1], "2001:db8:f::2")}


def test_two_devices_same_name_each_get_only_their_own_element() -> None:
    book = Playbook(make_guard(GuardConfig(lan_prefixes=(LAN4,), cache_size=0)))
    rec = [("cloud.example.com", "A", "203.0.113.5")]
    (fa,) = fills(book.resolve("cloud.example.com", DEV_A[0], rec))
    (fb,) = fills(book.resolve("cloud.example.com", DEV_B[0], rec, now=NOW + 1))
    assert fa.elements == ((DEV_A[0], "203.0.113.5"),)
    assert fb.elements == ((DEV_B[0], "203.0.113.5"),)
    assert fa.token != fb.token


# ------------------------------------------------------------------ hostile answers


@pytest.mark.parametrize("bad", [
    "192.0.2.50",  # inside the home LAN (DNS rebinding)
    GW4,  # the gateway
    "127.0.0.1", "0.0.0.0", "169.254.1.1", "224.0.0.251", "255.255.255.255", "240.0.0.1",
    "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1",  # private: the WAN side's modem
])
def test_hostile_ipv4_answer_inserts_nothing(bad: str) -> None:
    book = Playbook(make_guard())
    msg = answer_of(book.resolve("cloud.example.com", DEV_A[0],
                                 [("cloud.example.com", "A", bad)]))
    assert msg.rcode() == dns.rcode.NOERROR
    assert book.guard.counters.rejected_addresses == 1


@pytest.mark.parametrize("bad", [
    "2001:db8:1::99", "2001:db8:1::1", "::1", "::", "fe80::1", "ff02::1", "::ffff:203.0.113.5",
    "fd00::1",
])
def test_hostile_ipv6_answer_inserts_nothing(bad: str) -> None:
    book = Playbook(make_guard())
    answer_of(book.resolve("cloud.example.com", DEV_A[0],
                           [("cloud.example.com", "AAAA", bad)], rdtype="AAAA"))


def test_hostile_addresses_are_filtered_from_a_mixed_answer() -> None:
    book = Playbook(make_guard())
    (fill,) = fills(book.resolve("cloud.example.com", DEV_A[0], [
        ("cloud.example.com", "A", "192.0.2.20"),
        ("cloud.example.com", "A", "203.0.113.5"),
    ]))
    assert fill.elements == ((DEV_A[0], "203.0.113.5"),)


def test_address_count_and_ttl_are_capped() -> None:
    config = GuardConfig(lan_prefixes=(LAN4,), max_addresses=3, max_timeout_s=3600, grace_s=10)
    book = Playbook(make_guard(config))
    recs: list[Record] = [("cloud.example.com", "A", f"203.0.113.{i}", 10**7)
                          for i in range(1, 40)]
    out = book.resolve("cloud.example.com", DEV_A[0], recs)
    (fill,) = fills(out)
    assert len(fill.elements) == 3
    assert fill.timeout_s == 3600 + 10
    msg = answer_of(book.guard.fill_done(fill.token, True, NOW))
    assert all(rrset.ttl <= 3600 for rrset in msg.answer)  # the device never outlives its element


def test_ttl_zero_still_gives_the_minimum_lifetime() -> None:
    book = Playbook(make_guard())
    (fill,) = fills(book.resolve("cloud.example.com", DEV_A[0],
                                 [("cloud.example.com", "A", "203.0.113.5")], ttl=0))
    assert fill.timeout_s == 30 + 10


def test_negative_and_truncated_answers_grant_nothing() -> None:
    book = Playbook(make_guard())
    fwd = book.forwarded(query("cloud.example.com"), DEV_A[0])
    nx = reply_to(fwd, [("cloud.example.com", "A", "203.0.113.5")], rcode=dns.rcode.NXDOMAIN)
    msg = answer_of(book.guard.handle_upstream(nx, NOW))
    assert msg.rcode() == dns.rcode.NXDOMAIN
    fwd = book.forwarded(query("cloud.example.com"), DEV_A[0])
    tc = dns.message.from_wire(reply_to(fwd, [("cloud.example.com", "A", "203.0.113.5")]))
    tc.flags |= dns.flags.TC
    msg = answer_of(book.guard.handle_upstream(tc.to_wire(), NOW))
    assert msg.flags & dns.flags.TC


def test_insertion_can_be_disabled() -> None:
    book = Playbook(make_guard(GuardConfig(insert=False)))
    answer_of(book.resolve("cloud.example.com", DEV_A[0],
                           [("cloud.example.com", "A", "203.0.113.5")]))


# ------------------------------------------------------------------ upstream matching


def test_forwarded_query_is_fresh_and_clean() -> None:
    book = Playbook(make_guard())
    client = dns.message.make_query("cloud.example.com", "A", id=7, use_edns=0)
    client.additional.append(dns.rrset.from_text("junk.example.", 60, "IN", "A", "203.0.113.1"))
    ids = set()
    for _ in range(20):
        fwd = book.forwarded(client.to_wire(), DEV_A[0])
        sent = dns.message.from_wire(fwd.wire)
        assert sent.id == fwd.query_id
        assert [(q.name.to_text(), q.rdtype) for q in sent.question] == [
            ("cloud.example.com.", dns.rdatatype.A)]
        assert not sent.additional and sent.flags & dns.flags.RD
        ids.add(sent.id)
    assert len(ids) >= 15  # random, not sequential or the device's own id
    assert book.guard.outstanding == 20


def test_unmatched_and_mismatched_replies_are_dropped() -> None:
    book = Playbook(make_guard())
    fwd = book.forwarded(query("cloud.example.com"), DEV_A[0])
    good = reply_to(fwd, [("cloud.example.com", "A", "203.0.113.5")])
    other_id = bytes([good[0] ^ 0xFF, good[1]]) + good[2:]
    assert book.guard.handle_upstream(other_id, NOW) == [Drop("upstream reply with unknown id")]
    other_q = dns.message.from_wire(good)
    other_q.question = [dns.message.from_wire(query("cloud.example.com", "AAAA")).question[0]]
    assert book.guard.handle_upstream(other_q.to_wire(), NOW) == [
        Drop("upstream reply for another question")]
    assert book.guard.handle_upstream(good[:12] + b"\xff" * 5, NOW) == [
        Drop("malformed upstream reply")]
    assert book.guard.handle_upstream(b"\x00", NOW) == [Drop("short upstream reply")]
    # The genuine reply is still accepted after the forgeries, and only once.
    assert fills(book.guard.handle_upstream(good, NOW))
    assert book.guard.handle_upstream(good, NOW) == [Drop("upstream reply with unknown id")]


def test_upstream_timeout_answers_servfail() -> None:
    book = Playbook(make_guard())
    book.forwarded(query("cloud.example.com"), DEV_A[0])
    deadline = book.guard.next_timer()
    assert deadline == NOW + CONFIG.upstream_timeout_s
    assert book.guard.handle_timer(NOW + 1) == []
    msg = answer_of(book.guard.handle_timer(deadline))
    assert msg.rcode() == dns.rcode.SERVFAIL
    assert book.guard.next_timer() is None


def test_outstanding_queries_are_capped() -> None:
    book = Playbook(make_guard(GuardConfig(max_outstanding=2)))
    book.forwarded(query("a.example.com"), DEV_A[0])
    book.forwarded(query("b.example.com"), DEV_A[0])
    assert answer_of(book.ask(query("c.example.com"), DEV_A[0])).rcode() == dns.rcode.SERVFAIL


def test_one_flooding_device_cannot_starve_the_others() -> None:
    book = Playbook(make_guard(GuardConfig(max_outstanding_per_client=3)))
    fwds = [book.forwarded(query(f"n{i}.example.com"), DEV_A[0]) for i in range(3)]
    assert answer_of(book.ask(query("n9.example.com"), DEV_A[0])).rcode() == dns.rcode.REFUSED
    book.forwarded(query("n9.example.com"), DEV_B[0])  # another device is still served
    answer_of(book.guard.handle_upstream(reply_to(fwds[0], []), NOW))  # one slot frees up
    book.forwarded(query("n9.example.com"), DEV_A[0])
    assert book.guard.handle_timer(NOW + 60) and book.guard._per_client == {}


# ------------------------------------------------------------------ cache and refresh


def test_cached_answer_refreshes_the_element_for_each_device() -> None:
    book = Playbook(make_guard())
    (first,) = fills(book.resolve("cloud.example.com", DEV_A[0],
                                  [("cloud.example.com", "A", "203.0.113.5")], ttl=300))
    book.guard.fill_done(first.token, True, NOW)
    later = NOW + 100
    out = book.ask(query("cloud.example.com", qid=99), DEV_A[0], later)
    (again,) = fills(out)  # no ForwardUpstream: from the cache, and still a fill
    assert again.elements == first.elements
    assert again.timeout_s == 200 + 10
    msg = answer_of(book.guard.fill_done(again.token, True, later))
    assert msg.id == 99 and msg.answer[0].ttl == 200
    (other,) = fills(book.ask(query("cloud.example.com"), DEV_B[0], later))
    assert other.elements == ((DEV_B[0], "203.0.113.5"),)
    assert book.guard.counters.cache_hits == 2
    # Expired entries go upstream again.
    assert isinstance(book.ask(query("cloud.example.com"), DEV_A[0], NOW + 301)[0],
                      ForwardUpstream)


def test_a_shorter_ttl_never_cuts_an_element_already_granted() -> None:
    book = Playbook(make_guard(GuardConfig(lan_prefixes=(LAN4,), cache_size=0, grace_s=10)))
    rec = [("cloud.example.com", "A", "203.0.113.5")]
    (first,) = fills(book.resolve("cloud.example.com", DEV_A[0], rec, ttl=300))
    book.guard.fill_done(first.token, True, NOW)
    (second,) = fills(book.resolve("cloud.example.com", DEV_A[0], rec, ttl=60, now=NOW + 10))
    assert second.timeout_s == 300  # 310 granted at NOW, 10 s ago: not cut to 60 + 10
    book.guard.fill_done(second.token, True, NOW + 10)
    book.guard.handle_timer(NOW + 400)  # expired records are forgotten
    (third,) = fills(book.resolve("cloud.example.com", DEV_A[0], rec, ttl=60, now=NOW + 400))
    assert third.timeout_s == 70


def test_a_failed_fill_is_not_remembered_as_granted() -> None:
    book = Playbook(make_guard(GuardConfig(lan_prefixes=(LAN4,), cache_size=0, grace_s=10)))
    rec = [("cloud.example.com", "A", "203.0.113.5")]
    (first,) = fills(book.resolve("cloud.example.com", DEV_A[0], rec, ttl=300))
    book.guard.fill_done(first.token, False, NOW)
    (second,) = fills(book.resolve("cloud.example.com", DEV_A[0], rec, ttl=60, now=NOW + 10))
    assert second.timeout_s == 70


# ------------------------------------------------------------------ malformed queries


def test_short_packets_are_dropped() -> None:
    guard = make_guard()
    for wire in (b"", b"\x12", b"\x00" * 11):
        assert guard.handle_query(wire, (DEV_A[0], 1), NOW) == [Drop("short header")]


def test_header_only_garbage_gets_formerr() -> None:
    guard = make_guard()
    wire = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\xc0\xff"  # bad pointer
    msg = answer_of(guard.handle_query(wire, (DEV_A[0], 1), NOW))
    assert msg.id == 0xABCD and msg.rcode() == dns.rcode.FORMERR


def test_question_parses_rest_broken_gets_formerr_with_question() -> None:
    guard = make_guard()
    wire = bytearray(query("cloud.example.com"))
    wire[7] = 1  # claims one answer record that is not there
    msg = answer_of(guard.handle_query(bytes(wire), (DEV_A[0], 1), NOW))
    assert msg.rcode() == dns.rcode.FORMERR and msg.question[0].name.to_text() == (
        "cloud.example.com.")


def test_responses_sent_as_queries_are_dropped() -> None:
    guard = make_guard()
    resp = dns.message.make_response(dns.message.make_query("x.example", "A"))
    assert guard.handle_query(resp.to_wire(), (DEV_A[0], 1), NOW) == [
        Drop("response sent as a query")]


def test_other_opcodes_and_transfers_are_refused() -> None:
    guard = make_guard()
    notify = dns.message.make_query("example.com", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert answer_of(guard.handle_query(notify.to_wire(), (DEV_A[0], 1), NOW)).rcode() == (
        dns.rcode.NOTIMP)
    axfr = query("example.com", "AXFR")
    assert answer_of(guard.handle_query(axfr, (DEV_A[0], 1), NOW)).rcode() == dns.rcode.REFUSED


def test_an_address_handed_on_moves_to_the_newest_device() -> None:
    guard = make_guard(GuardConfig(lan_prefixes=(LAN4, LAN6), cache_size=0))
    guard.update_device("cc:cc", (DEV_A[0],), ["other.example.com"])  # A's IPv4 lease moved
    book = Playbook(guard)
    # The new holder's profile decides; A's old names grant nothing on that address.
    answer_of(book.resolve("cloud.example.com", DEV_A[0],
                           [("cloud.example.com", "A", "203.0.113.5")]))
    (fill,) = fills(book.resolve("other.example.com", DEV_A[0],
                                 [("other.example.com", "A", "203.0.113.6")], now=NOW + 1))
    assert fill.elements == ((DEV_A[0], "203.0.113.6"),)
    # A keeps its IPv6 address; an AAAA answer for it no longer pairs with the moved IPv4.
    (fill6,) = fills(book.resolve("cloud.example.com", DEV_A[1],
                                  [("cloud.example.com", "AAAA", "2001:db8:f::1")],
                                  rdtype="AAAA", now=NOW + 2))
    assert fill6.elements == ((DEV_A[1], "2001:db8:f::1"),)
    answer_of(book.resolve("cloud.example.com", DEV_A[1],
                           [("cloud.example.com", "A", "203.0.113.5")], now=NOW + 3))


def test_policy_addresses_belong_to_one_device() -> None:
    guard = make_guard()
    with pytest.raises(ValueError):
        guard.update_device("cc:cc", ("not-an-address",), [])
    guard.remove_device("aa:aa")
    guard.update_client(DEV_A[0], ["cloud.example.com"])
    out = Playbook(guard).resolve("cloud.example.com", DEV_A[0],
                                  [("cloud.example.com", "A", "203.0.113.5")])
    assert fills(out)[0].elements == ((DEV_A[0], "203.0.113.5"),)
    guard.remove_client(DEV_A[0])
    answer_of(Playbook(guard).resolve("cloud.example.com", DEV_A[0],
                                      [("cloud.example.com", "A", "203.0.113.5")], now=NOW + 400))


def test_core_imports_no_io_adapters() -> None:
    code = ("import sys\nbefore = set(sys.modules)\nimport mudguard.dns.core\n"
            "print(' '.join(sorted(set(sys.modules) - before)))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    leaked = [m for m in loaded
              if m.split(".")[0] in ("asyncio", "nftables", "pyroute2", "subprocess", "sqlite3")]
    assert leaked == []


def test_private_ranges_can_be_allowed_for_homes_that_need_them() -> None:
    book = Playbook(make_guard(GuardConfig(lan_prefixes=(LAN4,), block_private=False)))
    (fill,) = fills(book.resolve("cloud.example.com", DEV_A[0],
                                 [("cloud.example.com", "A", "10.1.2.3")]))
    assert fill.elements == ((DEV_A[0], "10.1.2.3"),)


def test_every_answer_with_addresses_is_told_to_the_observer() -> None:
    # A device being learned has no name sets (home default): the observer (the daemon's
    # learning recorder) is how its peers get their names.
    told: list[tuple[str, str, tuple[str, ...]]] = []
    guard = make_guard()
    guard.on_answer = lambda client, name, addresses: told.append((client, name, addresses))
    book = Playbook(guard)
    out = book.resolve("www.Unrelated.example", "192.0.2.50",
                       [("www.unrelated.example", "CNAME", "edge.cdn.example."),
                        ("edge.cdn.example", "A", "198.51.100.7"),
                        ("edge.cdn.example", "A", "10.0.0.1")])  # a private one is never told
    assert any(isinstance(c, SendAnswer) for c in out)
    book.resolve("nothing.example", "192.0.2.50", [])
    assert told == [("192.0.2.50", "www.unrelated.example", ("198.51.100.7",))]


# ------------------------------------------------------------------ policy as data: re-grant


def test_grants_of_gives_back_the_unexpired_grants_of_names_still_allowed() -> None:
    """Policy as data deletes a device's answers when its rules change; the guard's record
    adds back what it may still reach (remaining lifetime, allowed names only)."""
    book = Playbook(make_guard())
    for name, answer in (("cloud.example.com", "203.0.113.5"), ("cdn.example.net", "203.0.113.6")):
        (fill,) = fills(book.resolve(name, DEV_A[0], [(name, "A", answer)]))
        assert fill.dns_name == name
        book.guard.fill_done(fill.token, True, NOW)
    again = book.guard.grants_of("aa:aa", NOW + 100)
    assert [(g.dns_name, g.elements, g.timeout_s) for g in again] == [
        ("cdn.example.net", ((DEV_A[0], "203.0.113.6"),), 210),
        ("cloud.example.com", ((DEV_A[0], "203.0.113.5"),), 210)]
    book.guard.update_device("aa:aa", DEV_A, ["cloud.example.com"])  # new rules: one name
    assert [g.dns_name for g in book.guard.grants_of("aa:aa", NOW + 100)] == [
        "cloud.example.com"]
    assert book.guard.grants_of("aa:aa", NOW + 400) == []  # expired
    assert book.guard.grants_of("bb:bb", NOW) == [] and book.guard.grants_of("zz", NOW) == []
