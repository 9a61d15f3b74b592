"""The DNS guard with the real kernel: answers open nft sets before the device sees them.

A virtual home (``mudguard.vhome``): the gateway namespace holds an ``inet mudguard``
table whose forward chain accepts only established flows and
``ip saddr . ip daddr @dns4_<name>`` (and the IPv6 twin) for each test name, then
drops. Real dnsmasq in the internet namespace is the upstream; the guard runs as
its own process (``python -m mudguard.dns.server``) in the gateway namespace.
Devices resolve through the guard and connect at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mudguard.policy._names import TABLE, dns_set_name
from mudguard.vhome import GW4, GW6, INTERNET_HOSTS, LAN4, LAN6, VirtualHome, run

pytestmark = pytest.mark.root

DNS4 = INTERNET_HOSTS["dns"][0]
RACE4 = "198.51.100.128/25"  # answered by the internet namespace (AnyIP on lo)
RACE6 = "2001:db8:ff:2::/64"
N_RACE = 100  # per family: 200 first connections in all
PORT = 443

# name -> addresses (dnsmasq host records), with the TTL of each name.
RECORDS: dict[str, tuple[list[str], int]] = {
    "cloud.example.com": (["198.51.100.10", "2001:db8:ff:1::10"], 300),
    "multi.example.com": (["198.51.100.200", "198.51.100.201", "198.51.100.202",
                           "2001:db8:ff:2::a1", "2001:db8:ff:2::a2"], 300),
    "target.example.net": (["198.51.100.210", "2001:db8:ff:2::b1"], 300),
    "short.example.com": (["198.51.100.220"], 1),
    "other.example.com": (["198.51.100.230"], 300),
    "rebind.example.com": (["192.0.2.11", "192.0.2.1"], 300),  # device 1 and the gateway
    "noset.example.com": (["198.51.100.240"], 300),  # in a profile, but no set installed
    # Names of corpus MUD files (test_dns_enforce.py).
    "www.nist.local": (["198.51.100.10", "2001:db8:ff:1::10"], 300),
    "cloud-service.example.com": (["198.51.100.20", "2001:db8:ff:1::20"], 300),
    **{f"r{i}.race.example": ([f"198.51.100.{128 + i}"], 300) for i in range(N_RACE)},
    **{f"r{i}.race6.example": ([f"2001:db8:ff:2::{0x1000 + i:x}"], 300) for i in range(N_RACE)},
}
CNAMES = {"alias.example.org": "target.example.net"}
NAMES = sorted({*RECORDS, *CNAMES} - {"noset.example.com"})


# ------------------------------------------------------------------ the home


def ruleset() -> dict[str, Any]:
    """The ``inet mudguard`` table the compiler would install, for the test names."""
    fam = {"family": "inet", "table": TABLE}
    cmds: list[dict[str, Any]] = [{"add": {"table": {"family": "inet", "name": TABLE}}},
                                  {"delete": {"table": {"family": "inet", "name": TABLE}}},
                                  {"add": {"table": {"family": "inet", "name": TABLE}}},
                                  {"add": {"chain": {**fam, "name": "forward", "type": "filter",
                                                     "hook": "forward", "prio": 0,
                                                     "policy": "drop"}}}]
    cmds.append({"add": {"rule": {**fam, "chain": "forward", "expr": [
        {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                   "right": ["established", "related"]}}, {"accept": None}]}}})
    for name in NAMES:
        for family, proto, addr in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
            set_name = dns_set_name(name, family)
            cmds.append({"add": {"set": {**fam, "name": set_name, "type": [addr, addr],
                                         "flags": ["timeout"]}}})
            cmds.append({"add": {"rule": {**fam, "chain": "forward", "expr": [
                {"match": {"op": "==", "left": {"concat": [
                    {"payload": {"protocol": proto, "field": "saddr"}},
                    {"payload": {"protocol": proto, "field": "daddr"}}]},
                    "right": "@" + set_name}}, {"accept": None}]}}})
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *cmds]}


@pytest.fixture(scope="module")
def home() -> Iterator[VirtualHome]:
    """A home with two devices, servers on every test address, dnsmasq upstream."""
    with VirtualHome(prefix=f"mgdD{os.getpid() % 10000}", devices=2) as vh:
        run(["ip", "route", "add", "local", RACE4, "dev", "lo"], ns=vh.inet_ns)
        run(["ip", "-6", "route", "add", "local", RACE6, "dev", "lo"], ns=vh.inet_ns)
        vh.serve(vh.inet_ns, tcp=[PORT])
        vh.serve(vh.nodes[1].ns, tcp=[PORT])
        dnsmasq = start_dnsmasq(vh)
        try:
            yield vh
        finally:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=5)


def start_dnsmasq(vh: VirtualHome) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", vh.inet_ns, "dnsmasq", "--keep-in-foreground",
            "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
            f"--listen-address={DNS4}", "--except-interface=", "--user=root",
            "--pid-file=", "--log-facility=-", "--cache-size=0"]
    for name, (addresses, ttl) in RECORDS.items():
        argv += [f"--host-record={name},{a},{ttl}" for a in addresses]
    argv += [f"--cname={alias},{target},300" for alias, target in CNAMES.items()]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq failed: {proc.stderr.read() if proc.stderr else ''}")
        if vh.call(vh.inet_ns, _answers, DNS4, "cloud.example.com"):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("dnsmasq did not answer")


def _answers(server: str, name: str) -> bool:
    import dns.message
    import dns.query

    try:
        dns.query.udp(dns.message.make_query(name, "A"), server, timeout=0.2)
    except Exception:
        return False
    return True


class Guard:
    """The guard process in the gateway namespace, fed with a policy file."""

    def __init__(self, vh: VirtualHome, devices: Sequence[tuple[int, Sequence[str]]],
                 filler: str = "netlink", upstream: str = DNS4, own_table: bool = True,
                 **config: Any) -> None:
        self.vh = vh
        self.own_table = own_table
        self.filler = filler
        self.upstream = upstream
        self.dir = tempfile.mkdtemp(prefix="mgd-dns-")
        policy = {"lan_prefixes": [str(LAN4), str(LAN6)], "gateway_addresses": [GW4, GW6],
                  "config": config,
                  "devices": [{"id": vh.nodes[i].mac,
                               "addresses": [vh.nodes[i].ipv4, vh.nodes[i].ipv6],
                               "names": list(names)}
                              # its own single table, or the compiler's device shards
                              | ({"table": TABLE} if own_table else {})
                              for i, names in devices]}
        self.policy = Path(self.dir, "policy.json")
        self.policy.write_text(json.dumps(policy))
        self.log = Path(self.dir, "guard.log")
        self.proc: subprocess.Popen[str] | None = None
        self.log_text = ""

    def __enter__(self) -> Guard:
        if self.own_table:
            run(["nft", "-j", "-f", "-"], ns=self.vh.gw_ns, input_text=json.dumps(ruleset()))
        argv = ["ip", "netns", "exec", self.vh.gw_ns, sys.executable, "-m",
                "mudguard.dns.server", "--listen", GW4, "--listen", GW6,
                "--upstream", self.upstream, "--policy", str(self.policy), "--lifetime", "300",
                "--filler", self.filler]
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"guard did not start: {self.log.read_text()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log_text = self.log.read_text()
        shutil.rmtree(self.dir, ignore_errors=True)

    def elements(self, name: str, family: int) -> set[tuple[str, str]]:
        """The set's elements as (device, remote) pairs, read back from the kernel."""
        out = run(["nft", "-j", "list", "set", "inet", TABLE, dns_set_name(name, family)],
                  ns=self.vh.gw_ns).stdout
        return {tuple(e["val"]["concat"]) if "val" in e else tuple(e["concat"])  # type: ignore[misc]
                for e in _elems(out)}

    def expiry(self, name: str, family: int) -> list[tuple[int, int]]:
        """(timeout, expires) of each element of the set."""
        out = run(["nft", "-j", "list", "set", "inet", TABLE, dns_set_name(name, family)],
                  ns=self.vh.gw_ns).stdout
        return [(e["timeout"], e["expires"]) for e in _elems(out) if "timeout" in e]

    def stderr(self) -> str:
        return self.log_text if self.proc and self.proc.poll() is not None else (
            self.log.read_text())


def _elems(out: str) -> list[dict[str, Any]]:
    items = json.loads(out)["nftables"]
    found: list[dict[str, Any]] = []
    for item in items:
        for e in item.get("set", {}).get("elem", []):
            found.append(e["elem"] if isinstance(e, dict) and "elem" in e else e)
    return found


# ------------------------------------------------------------------ device side (in a netns)


def resolve_and_connect(names: Sequence[str], rdtype: str, port: int, timeout: float,
                        tcp_dns: bool = False,
                        server: str = GW4) -> list[tuple[str, list[str], bool]]:
    """For each name: ask the gateway, then connect to every address right away.

    Runs inside a device namespace. Returns (name, addresses, all connected).
    """
    import socket

    import dns.message
    import dns.query
    import dns.rdatatype

    results = []
    for name in names:
        query = dns.message.make_query(name, rdtype)
        ask = dns.query.tcp if tcp_dns else dns.query.udp
        reply = ask(query, server, timeout=3)
        addrs = [rd.address for rrset in reply.answer
                 if rrset.rdtype == dns.rdatatype.from_text(rdtype) for rd in rrset]
        ok = bool(addrs)
        for address in addrs:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect((address, port))
                except OSError:
                    ok = False
        results.append((name, addrs, ok))
    return results


def ask(vh: VirtualHome, device: int, names: Sequence[str], rdtype: str = "A",
        timeout: float = 1.0, tcp_dns: bool = False,
        server: str = GW4) -> list[tuple[str, list[str], bool]]:
    return vh.call(vh.nodes[device].ns, resolve_and_connect, list(names), rdtype, PORT,
                   timeout, tcp_dns, server, timeout=120)


def connects(vh: VirtualHome, device: int, address: str, timeout: float = 0.5) -> bool:
    return vh.tcp(vh.nodes[device].ns, address, PORT, timeout)


# ------------------------------------------------------------------ tests


RACE_NAMES = [f"r{i}.race.example" for i in range(N_RACE)]
RACE6_NAMES = [f"r{i}.race6.example" for i in range(N_RACE)]


def test_first_connection_right_after_the_answer_always_passes(home: VirtualHome) -> None:
    with Guard(home, [(0, RACE_NAMES + RACE6_NAMES)]):
        got = ask(home, 0, RACE_NAMES, "A") + ask(home, 0, RACE6_NAMES, "AAAA")
    assert [n for n, addrs, _ in got if len(addrs) != 1] == []
    passed = sum(ok for _, _, ok in got)
    assert passed == 2 * N_RACE, [n for n, _, ok in got if not ok]


def test_libnftables_filler_also_fills_before_answering(home: VirtualHome) -> None:
    names = RACE_NAMES[:20]
    with Guard(home, [(0, names)], filler="libnftables"):
        got = ask(home, 0, names, "A")
    assert sum(ok for _, _, ok in got) == 20


def test_without_the_fill_first_connections_fail(home: VirtualHome) -> None:
    names = RACE_NAMES[:8]
    with Guard(home, [(0, names)], insert=False) as guard:
        got = ask(home, 0, names, "A", timeout=0.3)
        assert guard.elements(names[0], 4) == set()
    assert [len(a) for _, a, _ in got] == [1] * 8  # the answers did come
    assert sum(ok for _, _, ok in got) == 0


def test_name_outside_the_profile_resolves_but_grants_nothing(home: VirtualHome) -> None:
    with Guard(home, [(0, ["cloud.example.com"])]) as guard:
        ((_, addrs, ok),) = ask(home, 0, ["other.example.com"], timeout=0.3)
        assert addrs == ["198.51.100.230"] and not ok
        assert guard.elements("other.example.com", 4) == set()
        ((_, _, ok),) = ask(home, 0, ["cloud.example.com"])
        assert ok


def test_cname_chain_opens_the_final_addresses(home: VirtualHome) -> None:
    with Guard(home, [(0, ["alias.example.org"])]) as guard:
        ((_, addrs4, ok4),) = ask(home, 0, ["alias.example.org"], "A")
        ((_, addrs6, ok6),) = ask(home, 0, ["alias.example.org"], "AAAA")
        assert (addrs4, addrs6, ok4, ok6) == (["198.51.100.210"], ["2001:db8:ff:2::b1"],
                                              True, True)
        d0 = home.nodes[0]
        assert guard.elements("alias.example.org", 4) == {(d0.ipv4, "198.51.100.210")}
        assert guard.elements("alias.example.org", 6) == {(d0.ipv6, "2001:db8:ff:2::b1")}
        assert guard.elements("target.example.net", 4) == set()  # not in this profile


def test_several_a_and_aaaa_records_all_open(home: VirtualHome) -> None:
    with Guard(home, [(0, ["multi.example.com"])]):
        ((_, addrs4, ok4),) = ask(home, 0, ["multi.example.com"], "A")
        ((_, addrs6, ok6),) = ask(home, 0, ["multi.example.com"], "AAAA")
    assert sorted(addrs4) == ["198.51.100.200", "198.51.100.201", "198.51.100.202"]
    assert sorted(addrs6) == ["2001:db8:ff:2::a1", "2001:db8:ff:2::a2"]
    assert ok4 and ok6


def test_two_devices_asking_the_same_name_each_get_only_their_own(home: VirtualHome) -> None:
    d0, d1 = home.nodes
    with Guard(home, [(0, ["cloud.example.com"]), (1, ["cloud.example.com"])]) as guard:
        ((_, _, ok),) = ask(home, 0, ["cloud.example.com"])
        assert ok
        assert guard.elements("cloud.example.com", 4) == {(d0.ipv4, "198.51.100.10")}
        assert not connects(home, 1, "198.51.100.10", 0.3)  # d1 has not asked yet
        ((_, _, ok),) = ask(home, 1, ["cloud.example.com"])  # served from the guard's cache
        assert ok
        assert guard.elements("cloud.example.com", 4) == {(d0.ipv4, "198.51.100.10"),
                                                          (d1.ipv4, "198.51.100.10")}


def test_ttl_expiry_removes_access_and_a_new_answer_restores_it(home: VirtualHome) -> None:
    with Guard(home, [(0, ["short.example.com"])], min_timeout_s=1, grace_s=1) as guard:
        ((_, _, ok),) = ask(home, 0, ["short.example.com"])
        assert ok
        assert guard.expiry("short.example.com", 4)[0][0] == 2
        time.sleep(3.0)
        assert guard.elements("short.example.com", 4) == set()
        assert not connects(home, 0, "198.51.100.220", 0.3)
        ((_, _, ok),) = ask(home, 0, ["short.example.com"])
        assert ok


def test_every_served_answer_refreshes_the_element(home: VirtualHome) -> None:
    with Guard(home, [(0, ["cloud.example.com"])]) as guard:
        ((_, _, ok),) = ask(home, 0, ["cloud.example.com"])
        assert ok
        ((timeout, expires),) = guard.expiry("cloud.example.com", 4)
        assert timeout == 300 + 10 and expires > 300
        # The element vanishes (e.g. a flush); the next answer, from the guard's
        # cache, puts it back (dnsmasq --nftset does not).
        run(["nft", "flush", "set", "inet", TABLE, dns_set_name("cloud.example.com", 4)],
            ns=home.gw_ns)
        assert not connects(home, 0, "198.51.100.10", 0.3)
        time.sleep(1.1)
        ((_, _, ok),) = ask(home, 0, ["cloud.example.com"])
        assert ok
        ((timeout, expires),) = guard.expiry("cloud.example.com", 4)
        assert timeout <= 300 + 10 and expires >= timeout - 2
    assert "cache_hits=1" in guard.stderr()


def test_hostile_answer_with_lan_addresses_inserts_nothing(home: VirtualHome) -> None:
    d1 = home.nodes[1]
    with Guard(home, [(0, ["rebind.example.com"])]) as guard:
        ((_, addrs, ok),) = ask(home, 0, ["rebind.example.com"], timeout=0.3)
        assert sorted(addrs) == ["192.0.2.1", d1.ipv4]  # the device still gets its answer
        assert not ok
        assert guard.elements("rebind.example.com", 4) == set()
        assert not connects(home, 0, d1.ipv4, 0.3)
    assert "forbidden address" in guard.stderr()


def test_queries_over_tcp_are_forwarded_over_tcp_and_fill(home: VirtualHome) -> None:
    with Guard(home, [(0, ["cloud.example.com"])]):
        ((_, addrs, ok),) = ask(home, 0, ["cloud.example.com"], "AAAA", tcp_dns=True)
    assert addrs == ["2001:db8:ff:1::10"] and ok


def _garbage_then_query(server: str) -> tuple[bytes | None, bool]:
    import socket

    import dns.message
    import dns.query

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(b"\x00\x01\x02", (server, 53))  # shorter than a header: dropped
        sock.sendto(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\xff", (server, 53))
        try:
            formerr = sock.recv(512)
        except OSError:
            formerr = None
    reply = dns.query.udp(dns.message.make_query("cloud.example.com", "A"), server, timeout=2)
    return formerr, bool(reply.answer)


def test_malformed_packets_get_formerr_or_nothing_and_service_goes_on(home: VirtualHome) -> None:
    with Guard(home, [(0, ["cloud.example.com"])]):
        formerr, answered = home.call(home.nodes[0].ns, _garbage_then_query, GW4)
    assert formerr is not None and formerr[:2] == b"\xab\xcd" and formerr[3] & 0x0F == 1
    assert answered


def test_a_query_over_ipv6_fills_the_device_ipv4_pair(home: VirtualHome) -> None:
    d0 = home.nodes[0]
    with Guard(home, [(0, ["cloud.example.com"])]) as guard:
        ((_, addrs, ok),) = ask(home, 0, ["cloud.example.com"], "A", server=GW6)
        assert addrs == ["198.51.100.10"] and ok
        assert guard.elements("cloud.example.com", 4) == {(d0.ipv4, "198.51.100.10")}


def _rcode(server: str, name: str) -> int:
    import dns.message
    import dns.query

    return int(dns.query.udp(dns.message.make_query(name, "A"), server, timeout=5).rcode())


def test_a_failed_fill_answers_servfail_not_the_address(home: VirtualHome) -> None:
    with Guard(home, [(0, ["noset.example.com"])]) as guard:
        assert home.call(home.nodes[0].ns, _rcode, GW4, "noset.example.com") == 2  # SERVFAIL
    assert "set fill failed" in guard.stderr()


def test_an_unreachable_upstream_gets_servfail_in_bounded_time(home: VirtualHome) -> None:
    # 203.0.113.2 is the internet namespace's own address, where nothing serves DNS.
    with Guard(home, [(0, ["cloud.example.com"])], upstream="203.0.113.2",
               upstream_timeout_s=1.0):
        t0 = time.monotonic()
        assert home.call(home.nodes[0].ns, _rcode, GW4, "cloud.example.com") == 2
        assert time.monotonic() - t0 < 3.0


def test_two_devices_racing_for_the_same_names_each_pass_on_the_first_packet(
        home: VirtualHome) -> None:
    from concurrent.futures import ThreadPoolExecutor

    d0, d1 = home.nodes
    names = RACE_NAMES[:50]
    with Guard(home, [(0, names), (1, names)]) as guard, ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(ask, home, i, names) for i in (0, 1)]
        got0, got1 = (f.result(timeout=120) for f in futures)
        assert sum(ok for _, _, ok in got0) == sum(ok for _, _, ok in got1) == 50
        assert guard.elements(names[7], 4) == {(d0.ipv4, "198.51.100.135"),
                                               (d1.ipv4, "198.51.100.135")}
