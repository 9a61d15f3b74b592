"""Devices resolving with another DNS server (RFC 9726): the pure classifier, the
once-per-server telling, DoH addresses learnt from the gateway's answers, and how
these flows count (or not) toward quarantine."""

from __future__ import annotations

import shutil
import subprocess

import dns.message
import dns.name
import dns.rrset
import pytest

from mudguard.daemon.config import parse_config
from mudguard.daemon.dnsmasq import dns_advertising_options, dnsmasq_argv
from mudguard.mud import Direction
from mudguard.watch import DeviationTracker, FlowEvent, Thresholds
from mudguard.watch.listener import Watcher
from mudguard.watch.resolvers import (
    DohEndpoints,
    ResolverUse,
    ResolverWatch,
    Transport,
    load_doh_endpoints,
)

TCP, UDP = 6, 17
DEV = "0123456789ab"
GATEWAY = ("192.0.2.1", "2001:db8:1::1")
LAN = ("192.0.2.0/24", "2001:db8:1::/64")


def flow(dst: str, port: int, protocol: int = UDP, *, device: str = DEV,
         name: str | None = None, direction: Direction = Direction.FROM_DEVICE) -> FlowEvent:
    family = 6 if ":" in dst else 4
    src = "2001:db8:1::10" if family == 6 else "192.0.2.10"
    return FlowEvent(device_id=device, direction=direction, family=family, src=src, dst=dst,
                     protocol=protocol, src_port=40000, dst_port=port, remote_name=name)


@pytest.fixture
def watch() -> ResolverWatch:
    return ResolverWatch(GATEWAY, lan_prefixes=LAN)


def test_plain_dns_to_another_server_is_do53_with_an_explanation(watch: ResolverWatch) -> None:
    use = watch.classify(flow("198.51.100.53", 53))
    assert use is not None
    assert (use.transport, use.server, use.allowed) == (Transport.DO53, "198.51.100.53", False)
    text = use.explain()
    assert "198.51.100.53" in text and "plain DNS" in text and "RFC 9726" in text
    assert "blocked" in text
    assert use.message_key == "dns_elsewhere.do53"
    assert use.as_dict()["kind"] == "dns-elsewhere"
    tcp = watch.classify(flow("198.51.100.53", 53, TCP))
    assert tcp is not None and tcp.transport is Transport.DO53


@pytest.mark.parametrize("dst,port,protocol", [
    ("192.0.2.1", 53, UDP), ("192.0.2.1", 53, TCP), ("2001:db8:1::1", 53, UDP),
    ("2001:db8:1:0::0001", 53, TCP), ("192.0.2.1", 853, TCP), ("192.0.2.1", 443, TCP),
])
def test_the_gateways_own_resolver_is_never_flagged(watch: ResolverWatch, dst: str, port: int,
                                                    protocol: int) -> None:
    assert watch.classify(flow(dst, port, protocol)) is None
    assert watch.classify(flow(dst, port, protocol), allowed=True) is None


def test_port_853_is_dns_over_tls_on_tcp_and_quic_on_udp(watch: ResolverWatch) -> None:
    dot = watch.classify(flow("203.0.113.9", 853, TCP))
    doq = watch.classify(flow("2001:db8:ff:1::30", 853, UDP))
    assert dot is not None and dot.transport is Transport.DOT
    assert doq is not None and doq.transport is Transport.DOQ
    assert "DNS over TLS" in dot.explain() and "DNS over QUIC" in doq.explain()


def test_https_to_a_listed_doh_address_is_doh_named(watch: ResolverWatch) -> None:
    use = watch.classify(flow("8.8.8.8", 443, TCP))
    assert use is not None and use.transport is Transport.DOH
    assert use.server_name == "dns.google" and "dns.google (8.8.8.8)" in use.explain()
    v6 = watch.classify(flow("2606:4700:4700::1111", 443, UDP))  # HTTP/3
    assert v6 is not None and v6.server_name == "cloudflare-dns.com"
    # Plain DNS to a listed address is named too.
    do53 = watch.classify(flow("9.9.9.9", 53))
    assert do53 is not None and do53.transport is Transport.DO53
    assert do53.server_name == "dns.quad9.net"


def test_https_elsewhere_is_not_dns(watch: ResolverWatch) -> None:
    assert watch.classify(flow("198.51.100.10", 443, TCP)) is None
    assert watch.classify(flow("198.51.100.10", 8443, TCP)) is None
    assert watch.classify(flow("198.51.100.10", 53, 1)) is None  # ICMP has no port 53


def test_https_to_a_doh_name_the_device_resolved_is_doh(watch: ResolverWatch) -> None:
    use = watch.classify(flow("198.51.100.77", 443, TCP, name="DNS.Quad9.net."))
    assert use is not None and use.transport is Transport.DOH
    assert use.server_name == "dns.quad9.net"


def answer(name: str, *addresses: str, cname: str | None = None) -> bytes:
    query = dns.message.make_query(name, "A")
    response = dns.message.make_response(query)
    owner = dns.name.from_text(name)
    if cname is not None:
        response.answer.append(dns.rrset.from_text(owner, 60, "IN", "CNAME", cname))
        owner = dns.name.from_text(cname)
    for address in addresses:
        kind = "AAAA" if ":" in address else "A"
        response.answer.append(dns.rrset.from_text(owner, 60, "IN", kind, address))
    return response.to_wire()


def test_doh_addresses_are_learnt_from_the_gateways_answers(watch: ResolverWatch) -> None:
    assert watch.classify(flow("198.51.100.77", 443, TCP)) is None
    watch.learn_answer(answer("cloudflare-dns.com", "198.51.100.77", "2001:db8:ff:1::77"))
    use = watch.classify(flow("198.51.100.77", 443, TCP))
    assert use is not None and use.server_name == "cloudflare-dns.com"
    assert watch.classify(flow("2001:db8:ff:1::77", 443, TCP)) is not None
    # Through the CNAME chain of a DoH name too (an operator's CDN name).
    watch.learn_answer(answer("dns.google", "198.51.100.78", cname="cdn.example.net."))
    chained = watch.classify(flow("198.51.100.78", 443, TCP))
    assert chained is not None and chained.server_name == "dns.google"


def test_a_name_the_device_chose_cannot_mark_an_address_as_doh(watch: ResolverWatch) -> None:
    """``c2.example CNAME dns.google`` with a forged address: not learnt, else the
    device's blocked flows to that address would stop counting toward quarantine."""
    watch.learn_answer(answer("c2.example", "198.51.100.66", cname="dns.google."))
    assert watch.classify(flow("198.51.100.66", 443, TCP)) is None


def test_other_answers_teach_nothing_and_junk_is_ignored(watch: ResolverWatch) -> None:
    watch.learn_answer(answer("cloud.example.com", "198.51.100.10"))
    watch.learn_answer(b"\x00\x01garbage dns\x06google\x00")
    watch.learn_answer(b"")
    assert watch.classify(flow("198.51.100.10", 443, TCP)) is None


def test_lan_resolver_allowed_by_the_profile_is_the_owners_choice(watch: ResolverWatch) -> None:
    assert watch.classify(flow("192.0.2.53", 53), allowed=True) is None
    dropped = watch.classify(flow("192.0.2.53", 53))
    assert dropped is not None and not dropped.allowed
    internet = watch.classify(flow("198.51.100.53", 53), allowed=True)
    assert internet is not None and internet.allowed
    assert "allows this server" in internet.explain()


def test_only_what_the_device_sent_counts(watch: ResolverWatch) -> None:
    assert watch.classify(flow("198.51.100.53", 53, direction=Direction.TO_DEVICE)) is None


def test_each_device_and_server_is_told_once(watch: ResolverWatch) -> None:
    def use(dst: str, port: int = 53, protocol: int = UDP, device: str = DEV) -> ResolverUse:
        found = watch.classify(flow(dst, port, protocol, device=device))
        assert found is not None
        return found

    assert watch.first(use("198.51.100.53"))
    assert not watch.first(use("198.51.100.53"))
    assert not watch.first(use("198.51.100.53", 53, TCP))  # same server, other transport
    assert watch.first(use("198.51.100.54"))
    assert watch.first(use("198.51.100.53", device="ba9876543210"))


def test_telling_is_bounded() -> None:
    watch = ResolverWatch(GATEWAY, max_devices=2, max_servers=2)
    uses = [watch.classify(flow(f"198.51.100.{i}", 53)) for i in (1, 2, 3)]
    assert all(u is not None and watch.first(u) for u in uses)
    assert uses[0] is not None and watch.first(uses[0])  # forgotten: the oldest of 3 > 2
    for device in ("000000000001", "000000000002", "000000000003"):
        other = watch.classify(flow("198.51.100.9", 53, device=device))
        assert other is not None and watch.first(other)
    again = watch.classify(flow("198.51.100.2", 53))
    assert again is not None and watch.first(again)  # DEV was forgotten (max_devices 2)


def test_the_packaged_doh_list_has_provenance_and_parses() -> None:
    endpoints = load_doh_endpoints()
    assert {"dns.google", "cloudflare-dns.com", "dns.quad9.net"} <= endpoints.names
    assert endpoints.addresses["2001:4860:4860::8888"] == "dns.google"


@pytest.mark.parametrize("doc,complaint", [
    ([], "endpoints"),
    ({"endpoints": [{"name": "dns.example", "addresses": "8.8.8.8"}]}, "needs a name"),
    ({"endpoints": [{"addresses": []}]}, "needs a name"),
    ({"endpoints": [{"name": "dns.example", "addresses": ["not-an-ip"]}]}, "not an IP"),
])
def test_a_bad_doh_list_is_refused_clearly(doc: object, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        DohEndpoints.parse(doc)


def test_dns_elsewhere_does_not_count_toward_deviation_quarantine() -> None:
    """A device with hard-wired public resolvers (4 addresses × UDP and TCP = 8 flows)
    is misconfigured, not compromised: no quarantine. 8 other blocked flows are."""
    thresholds = Thresholds(deviation_flows=8)
    resolvers = ["8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844"]
    flows = [flow(a, 53, p) for a in resolvers for p in (UDP, TCP)]
    calm = DeviationTracker(thresholds)
    assert [calm.observe(e, 20.0 * i, deviation=False) for i, e in enumerate(flows)] == [[]] * 8
    strict = DeviationTracker(thresholds)
    alerts = [a for i, e in enumerate(flows) for a in strict.observe(e, 20.0 * i)]
    assert [a.kind for a in alerts] == ["deviation"]


def test_watcher_tells_once_and_spares_quarantine() -> None:
    told: list[ResolverUse] = []
    alerts: list[object] = []
    times = iter(range(0, 10_000, 20))
    watcher = Watcher(alerts.append, tracker=DeviationTracker(Thresholds(deviation_flows=3)),
                      resolvers=ResolverWatch(GATEWAY, lan_prefixes=LAN),
                      on_dns_elsewhere=told.append, clock=lambda: float(next(times)))
    for _ in range(3):
        for event in (flow("198.51.100.53", 53), flow("198.51.100.53", 53, TCP),
                      flow("198.51.100.30", 853, TCP), flow("192.0.2.1", 53)):
            watcher.handle(event)
    assert [(u.server, u.transport) for u in told] == [
        ("198.51.100.53", Transport.DO53), ("198.51.100.30", Transport.DOT)]
    assert alerts == []


def test_dnsmasq_announces_the_gateways_ipv6_resolver() -> None:
    text = """
[gateway]
lan_interface = "br-lan"
lan_prefixes = ["192.0.2.0/24", "2001:db8:1::/64"]
addresses = ["192.0.2.1", "2001:db8:1::1"]
[dhcp]
range = ["192.0.2.100", "192.0.2.199"]
"""
    config = parse_config(text)
    assert dns_advertising_options(config) == ["--dhcp-option=option6:dns-server,[2001:db8:1::1]"]
    argv = dnsmasq_argv(config, hook="/bin/true")
    assert "--dhcp-option=option:dns-server,192.0.2.1" in argv
    assert "--dhcp-option=option6:dns-server,[2001:db8:1::1]" in argv
    assert not any("162" in a or "144" in a for a in argv)  # no DNR: no encrypted resolver
    v4_only = parse_config(text.replace(', "2001:db8:1::/64"', "").replace(
        ', "2001:db8:1::1"', ""))
    assert dns_advertising_options(v4_only) == []
    binary = shutil.which("dnsmasq")
    if binary is not None:  # the real dnsmasq accepts the whole command line
        check = subprocess.run([binary, "--test", *argv[1:]], capture_output=True, text=True,
                               timeout=10)
        assert check.returncode == 0, check.stderr


def test_allowed_connections_to_another_resolver_are_told_too() -> None:
    """A profile allowing any peer on 53 lets the flow through (no drop log): the
    conntrack NEW event is classified instead; a LAN resolver it allows is not told."""
    from mudguard.watch.conntrack import ConnEvent

    told: list[ResolverUse] = []
    watcher = Watcher(lambda _alert: None, resolvers=ResolverWatch(GATEWAY, lan_prefixes=LAN),
                      on_dns_elsewhere=told.append,
                      device_of={"192.0.2.10": DEV}.get)
    for dst, port in (("198.51.100.53", 53), ("198.51.100.53", 53), ("192.0.2.53", 53),
                      ("192.0.2.1", 53), ("1.1.1.1", 443), ("198.51.100.10", 443)):
        watcher.handle_connection(ConnEvent(family=4, src="192.0.2.10", dst=dst, protocol=UDP,
                                            src_port=40000, dst_port=port))
    watcher.handle_connection(ConnEvent(family=4, src="192.0.2.99", dst="8.8.8.8",
                                        protocol=UDP, src_port=1, dst_port=53))  # not ours
    assert [(u.server, u.transport, u.allowed) for u in told] == [
        ("198.51.100.53", Transport.DO53, True), ("1.1.1.1", Transport.DOH, True)]
    assert "allows this server" in told[0].explain()


def test_many_distinct_resolvers_count_toward_quarantine_again() -> None:
    """Port 53 or 853 is no free pass: beyond a device's first 4 resolvers (a public
    pair in each family) its flows count as deviation again."""
    alerts: list[object] = []
    times = iter(range(0, 10_000, 20))
    told: list[ResolverUse] = []
    watcher = Watcher(alerts.append, tracker=DeviationTracker(Thresholds(deviation_flows=3)),
                      resolvers=ResolverWatch(GATEWAY, lan_prefixes=LAN),
                      on_dns_elsewhere=told.append, clock=lambda: float(next(times)))
    for host in range(1, 5):  # 4 resolvers, UDP and TCP: 8 flows, exempt
        watcher.handle(flow(f"198.51.100.{host}", 53))
        watcher.handle(flow(f"198.51.100.{host}", 853, TCP))
    assert alerts == []
    for host in range(5, 8):  # 3 more "resolvers": counted, quarantined
        watcher.handle(flow(f"198.51.100.{host}", 853, TCP))
    assert [getattr(a, "kind", None) for a in alerts] == ["deviation"]
    assert len(told) == 7
