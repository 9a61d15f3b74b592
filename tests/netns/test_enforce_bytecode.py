"""The nfnetlink translator installs exactly what libnftables installs.

Two namespaces get the same base table through libnftables; then every device
batch (every valid corpus file, in every lifecycle state, with grants, several
addresses, controllers, same-maker peers and the portal's ports) goes to one
through libnftables and to the other through ``bytecode.py`` + the netlink socket.
After each step both tables are listed back by nft and must be equal, as JSON
and as the kernel's bytecode (``nft --debug=netlink``: every load, register,
comparison and set element; only the order in which the kernel dumps set
elements is ignored). Real-packet behaviour of the translated rules is covered
by every other netns test, which now goes through it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mudguard.enforce import Nft, NftError
from mudguard.enforce.bytecode import encode_batch
from mudguard.mud import parse_mud
from mudguard.policy import (
    TABLE,
    DeviceFacts,
    Grant,
    GrantKind,
    HomeContext,
    LifecycleState,
    PeerKind,
    compile_base,
    compile_device_record,
    compile_home,
    decide,
    remove_device_commands,
    shard_names,
)
from mudguard.vhome import _netns
from tests.conftest import CORPUS

pytestmark = pytest.mark.root

VALID = [p for p in sorted((CORPUS / "mud").rglob("*.json")) if parse_mud(p.read_bytes()).ok]
NOW = datetime(2026, 11, 26, tzinfo=UTC)
MAC = "02:00:00:00:00:10"
STATES = (LifecycleState.PROFILED, LifecycleState.QUARANTINED, LifecycleState.DEFAULT,
          LifecycleState.OUT_OF_SUPPORT, LifecycleState.TRUSTED, LifecycleState.NEW)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Nft, Nft, str, str]]:
    """(libnftables handle, netlink handle) in two fresh namespaces."""
    tag = os.getpid() % 10000
    names = (f"mgbA{tag}", f"mgbB{tag}")
    for ns in names:
        _netns.delete(ns)
        _netns.add(ns)
    try:
        yield (Nft.in_namespace(names[0], netlink=False), Nft.in_namespace(names[1]), *names)
    finally:
        for ns in names:
            _netns.delete(ns)


def _listing(ns: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"],
                         capture_output=True, text=True, check=True).stdout
    items: list[dict[str, Any]] = json.loads(out)["nftables"]
    for item in items:
        for body in item.values():
            if isinstance(body, dict):
                body.pop("handle", None)
    return [i for i in items if "metainfo" not in i]


def _bytecode(ns: str) -> tuple[list[str], list[str]]:
    """nft's dump of the kernel's bytecode: (rules and sets in order, set elements sorted).

    Anonymous sets are named by the kernel per table; their contents are compared.
    """
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "--debug=netlink", "list", "ruleset"],
                         capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    return ([line for line in lines if "element " not in line],
            sorted(line for line in lines if "element " in line))


def _context(mud_url: str, rules_controllers: set[str]) -> HomeContext:
    peer = DeviceFacts(mac="02:00:00:00:00:20", ipv4=("192.0.2.20",),
                       ipv6=("2001:db8:1::20",), mud_url=mud_url,
                       state=LifecycleState.PROFILED)
    return HomeContext(
        lan_prefixes=("192.0.2.0/24", "2001:db8:1::/64"),
        gateway_addresses=("192.0.2.1", "2001:db8:1::1"),
        controllers={c: ("192.0.2.50", "198.51.100.7", "2001:db8:1::50")
                     for c in rules_controllers},
        my_controllers={mud_url: ("192.0.2.60", "192.0.2.61", "2001:db8:9::/48")},
        devices=(peer,), portal_ports=(80, 443))


GRANTS = (Grant(kind=GrantKind.DENY, host="203.0.113.0/25"),
          Grant(kind=GrantKind.SERVICE, host="updates.example.com", protocol=6, port=443),
          Grant(kind=GrantKind.SERVICE, host="198.51.100.0/24", protocol=17, port=123))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_netlink_installs_what_libnftables_installs(
        path: Path, pair: tuple[Nft, Nft, str, str]) -> None:
    reference, netlink, ns_ref, ns_nl = pair
    mud = parse_mud(path.read_bytes()).mud
    assert mud is not None
    probe = decide(DeviceFacts(mac=MAC, mud_url=mud.mud_url, state=LifecycleState.PROFILED),
                   mud, (), HomeContext(lan_prefixes=(), gateway_addresses=()), now=NOW)
    controllers = {r.peer_value for r in probe.rules
                   if r.peer is PeerKind.CONTROLLER and r.peer_value}
    context = _context(mud.mud_url, controllers)
    for nft in (reference, netlink):
        nft.apply(compile_base(context))
    previous = None
    sets: set[str] = set()
    for step, state in enumerate(STATES):
        v6 = ("2001:db8:1::10", "2001:db8:1::11") if step % 2 else ("2001:db8:1::12",)
        device = DeviceFacts(mac=MAC, ipv4=(f"192.0.2.{10 + step}",), ipv6=v6,
                             mud_url=mud.mud_url, state=state)
        policy = decide(device, mud, GRANTS if step % 3 == 0 else (), context, now=NOW)
        batch, record = compile_device_record(policy, context, previous=previous,
                                              existing_sets=sets)
        encode_batch(batch)  # every device batch is in the translator's vocabulary
        before = netlink.netlink_batches
        reference.apply(batch)
        netlink.apply(batch)
        assert netlink.netlink_batches == before + 1
        assert _listing(ns_nl) == _listing(ns_ref), f"{path.name} in state {state}"
        assert _bytecode(ns_nl) == _bytecode(ns_ref), f"{path.name} in state {state}"
        previous = record
        sets |= set(record.dns_sets)
    assert previous is not None
    for nft in (reference, netlink):
        nft.apply(remove_device_commands(previous))
    assert _listing(ns_nl) == _listing(ns_ref)


def test_a_refused_batch_changes_nothing_and_names_the_command(
        pair: tuple[Nft, Nft, str, str]) -> None:
    _reference, netlink, _ns_ref, ns_nl = pair
    context = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",))
    netlink.apply(compile_base(context))
    before = _listing(ns_nl)
    batch = [{"add": {"chain": {"family": "inet", "table": "mudguard", "name": "dev_x_out"}}},
             {"add": {"rule": {"family": "inet", "table": "mudguard", "chain": "dev_x_out",
                               "expr": [{"accept": None}]}}},
             {"add": {"rule": {"family": "inet", "table": "mudguard", "chain": "no_such_chain",
                               "expr": [{"drop": None}]}}}]
    with pytest.raises(NftError) as caught:
        netlink.apply(batch)
    assert "#2" in str(caught.value) and "no_such_chain" in str(caught.value)
    assert _listing(ns_nl) == before


def test_readback_matches_nfts_own_listing(pair: tuple[Nft, Nft, str, str]) -> None:
    """``read_tables`` (what reconcile reads) sees what ``nft -j list ruleset`` shows."""
    _reference, netlink, _ns_ref, ns_nl = pair
    context = _context("https://maker.example.com/x", set())
    policies = []
    for i, path in enumerate(VALID[:12]):
        mud = parse_mud(path.read_bytes()).mud
        assert mud is not None
        device = DeviceFacts(mac=f"02:00:00:00:01:{i:02x}", ipv4=(f"192.0.2.{100 + i}",),
                             ipv6=(f"2001:db8:1::{100 + i:x}",), mud_url=mud.mud_url,
                             state=LifecycleState.PROFILED)
        policies.append(decide(device, mud, (), context, now=NOW))
    netlink.apply(compile_home(policies, context))
    ours = {TABLE, *shard_names()}
    got = netlink.read_tables(ours)
    listed = [i for i in json.loads(subprocess.run(
        ["ip", "netns", "exec", ns_nl, "nft", "-j", "list", "ruleset"],
        capture_output=True, text=True, check=True).stdout)["nftables"]
        if next(iter(i.values())).get("table") in ours]

    def shape(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for item in items:
            (kind, body), = item.items()
            if kind == "chain":
                out.append((kind, body["table"], body["name"], "hook" in body))
            elif kind == "rule":
                out.append((kind, body["table"], body["chain"], body.get("comment")))
            elif kind in ("map", "set") and not body["name"].startswith("dns"):
                elems = sorted(json.dumps(e, sort_keys=True) for e in body.get("elem", []))
                out.append((kind, body["table"], body["name"], tuple(elems)))
        return sorted(out, key=repr)

    assert shape(got) == shape(listed)
    assert any(kind == "map" and elems for kind, _t, _n, elems in
               [s for s in shape(got) if s[0] == "map"])


def test_a_batch_of_thousands_of_rules_goes_in_whole(pair: tuple[Nft, Nft, str, str]) -> None:
    """One acknowledgement per message must all come back (a lost one would make an
    applied batch look refused): 30,000 rules, one transaction."""
    _reference, netlink, _ns_ref, ns_nl = pair
    netlink.apply(compile_base(HomeContext(lan_prefixes=("192.0.2.0/24",),
                                           gateway_addresses=("192.0.2.1",))))
    chain = {"family": "inet", "table": TABLE, "name": "dev_bulk_out"}
    batch: list[dict[str, Any]] = [{"add": {"chain": chain}}]
    batch += [{"add": {"rule": {**{k: chain[k] for k in ("family", "table")},
                                "chain": "dev_bulk_out",
                                "expr": [{"match": {"op": "==", "left": {"payload": {
                                    "protocol": "tcp", "field": "dport"}}, "right": 1 + i}},
                                    {"accept": None}]}}} for i in range(30_000)]
    before = netlink.netlink_batches
    netlink.apply(batch)
    assert netlink.netlink_batches == before + 1
    out = subprocess.run(["ip", "netns", "exec", ns_nl, "nft", "-j", "list", "chain", "inet",
                          TABLE, "dev_bulk_out"], capture_output=True, text=True,
                         check=True).stdout
    assert sum(1 for i in json.loads(out)["nftables"] if "rule" in i) == 30_000
