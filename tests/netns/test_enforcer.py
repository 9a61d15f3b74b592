"""The Enforcer against the real kernel: atomic updates, removal, reconcile after a restart,
hostile names; checked by reading the table back and with real packets."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mudguard.enforce import Enforcer, Nft, NftError
from mudguard.mud import parse_mud
from mudguard.policy import (
    BIND4,
    OUT_DISPATCH,
    TABLE,
    DeviceFacts,
    LifecycleState,
    decide,
    device_chain,
    set_shard_count,
    shard_names,
    shard_table,
)
from mudguard.vhome import INTERNET_HOSTS, VirtualHome, run

pytestmark = pytest.mark.root

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLOUD4, CLOUD6 = INTERNET_HOSTS["cloud"]


@pytest.fixture
def home() -> Iterator[VirtualHome]:
    with VirtualHome(prefix=f"mgeF{os.getpid() % 1000}", devices=2) as h:
        h.serve(h.inet_ns, tcp=[443])
        yield h


def enforcer(home: VirtualHome) -> Enforcer:
    return Enforcer(Nft.in_namespace(home.gw_ns), home.context(), clock=lambda: NOW)


def facts(home: VirtualHome, i: int, state: LifecycleState = LifecycleState.DEFAULT,
          **kw: object) -> DeviceFacts:
    node = home.nodes[i]
    values: dict[str, object] = {"mac": node.mac, "ipv4": (node.ipv4,), "ipv6": (node.ipv6,),
                                 "state": state}
    values.update(kw)
    return DeviceFacts(**values)  # type: ignore[arg-type]


def listing(home: VirtualHome) -> str:
    return run(["nft", "list", "ruleset"], ns=home.gw_ns).stdout


def test_update_swaps_policy_and_removal_closes(home: VirtualHome) -> None:
    enf = enforcer(home)
    enf.install_home()
    d0 = home.nodes[0]
    enf.apply_device(facts(home, 0), None)
    assert home.tcp(d0.ns, CLOUD4, 443)
    enf.apply_device(facts(home, 0, LifecycleState.OUT_OF_SUPPORT), None)
    assert not home.tcp(d0.ns, CLOUD4, 443, 0.5)
    enf.apply_device(facts(home, 0), None)
    assert home.tcp(d0.ns, CLOUD6, 443)
    enf.remove_device(d0.mac)
    enf.remove_device(d0.mac)  # idempotent
    assert device_chain(d0.mac, "out") not in listing(home)
    assert not home.tcp(d0.ns, CLOUD4, 443, 0.5)  # unknown again: nothing forwarded


def test_address_change_and_address_reuse(home: VirtualHome) -> None:
    enf = enforcer(home)
    enf.install_home()
    enf.apply_device(facts(home, 0, ipv4=("192.0.2.200",)), None)
    enf.apply_device(facts(home, 0), None)  # its lease changed
    text = listing(home)
    assert "192.0.2.200" not in text and home.nodes[0].ipv4 in text
    # DHCP hands d0's address to d1: the map entry moves to d1's chain in one batch.
    enf.apply_device(facts(home, 1, ipv4=(home.nodes[0].ipv4,)), None)
    maps = json.loads(run(["nft", "-j", "list", "maps"], ns=home.gw_ns).stdout)
    elems = [e for i in maps["nftables"] if i.get("map", {}).get("name") == "in_dispatch4"
             for e in i["map"].get("elem", [])]
    assert elems == [[home.nodes[0].ipv4, {"jump": {"target": device_chain(home.nodes[1].mac,
                                                                           "in")}}]]
    assert enf.installed()[home.nodes[0].mac].ipv4 == ()


def test_a_refused_batch_changes_nothing(home: VirtualHome) -> None:
    enf = enforcer(home)
    enf.install_home()
    enf.apply_device(facts(home, 0), None)
    before = listing(home)
    with pytest.raises(NftError):
        enf._nft.apply([{"add": {"rule": {"family": "inet", "table": TABLE,
                                          "chain": "no_such_chain", "expr": [{"accept": None}]}}}])
    assert listing(home) == before


def test_reconcile_after_restart(home: VirtualHome) -> None:
    first = enforcer(home)
    first.install_home()
    p0 = first.apply_device(facts(home, 0), None)
    p1 = first.apply_device(facts(home, 1, LifecycleState.OUT_OF_SUPPORT), None)
    # A restart: a new Enforcer with no record; the kernel still holds the table.
    second = enforcer(home)
    report = second.reconcile([p0, p1])
    assert not report.reinstalled_table and report.repaired == [] and len(report.ok) == 2
    # Someone deletes a rule of d0 and adds a stray device chain: both get repaired.
    out0 = device_chain(home.nodes[0].mac, "out")
    shard0 = shard_table(home.nodes[0].mac)
    rules = json.loads(run(["nft", "-j", "-a", "list", "chain", "inet", shard0, out0],
                           ns=home.gw_ns).stdout)
    handle = next(i["rule"]["handle"] for i in rules["nftables"] if "rule" in i)
    run(["nft", "delete", "rule", "inet", shard0, out0, "handle", str(handle)], ns=home.gw_ns)
    stray_shard = shard_names()[-1]
    run(["nft", "add", "chain", "inet", stray_shard, "dev_000000000000_out"], ns=home.gw_ns)
    run(["nft", "add", "element", "inet", stray_shard, OUT_DISPATCH,
         "{ 02:00:00:00:99:99 : jump dev_000000000000_out }"], ns=home.gw_ns)
    run(["nft", "add", "element", "inet", TABLE, "known_macs", "{ 02:00:00:00:99:99 }"],
        ns=home.gw_ns)
    # ... and d1's source binding in the main table goes, a stray pair comes: repaired too
    node1 = home.nodes[1]
    run(["nft", "delete", "element", "inet", TABLE, BIND4, f"{{ {node1.mac} . {node1.ipv4} }}"],
        ns=home.gw_ns)
    run(["nft", "add", "element", "inet", TABLE, BIND4, "{ 02:00:00:00:99:99 . 192.0.2.99 }"],
        ns=home.gw_ns)
    third = enforcer(home)
    report = third.reconcile([p0, p1])
    assert report.repaired == [home.nodes[0].mac, node1.mac]
    assert f"{node1.mac} . {node1.ipv4}" in listing(home)
    assert report.removed_chains == ["dev_000000000000_out"]
    assert third.reconcile([p0, p1]).ok == [home.nodes[0].mac, home.nodes[1].mac]
    assert "02:00:00:00:99:99" not in listing(home)  # the stray MAC is unknown again
    assert home.tcp(home.nodes[0].ns, CLOUD4, 443)
    # The table is gone (e.g. a reboot): reinstalled whole.
    run(["nft", "delete", "table", "inet", TABLE], ns=home.gw_ns)
    assert enforcer(home).reconcile([p0, p1]).reinstalled_table
    assert home.tcp(home.nodes[0].ns, CLOUD4, 443)
    assert not home.tcp(home.nodes[1].ns, CLOUD4, 443, 0.5)


def test_hostile_mud_names_stay_comments(home: VirtualHome) -> None:
    hostile = 'evil"; flush ruleset; add rule inet mudguard forward accept; #'
    doc = {
        "ietf-mud:mud": {
            "mud-version": 1, "mud-url": "https://evil.example.com/x",
            "last-update": "2024-01-01T00:00:00+00:00", "cache-validity": 48,
            "is-supported": True, "systeminfo": hostile,
            "from-device-policy": {"access-lists": {"access-list": [{"name": hostile}]}},
            "to-device-policy": {"access-lists": {"access-list": [{"name": hostile}]}},
        },
        "ietf-access-control-list:acls": {"acl": [{
            "name": hostile, "type": "ipv4-acl-type",
            "aces": {"ace": [{"name": hostile, "matches": {
                "ipv4": {"ietf-acldns:dst-dnsname": "x.example.com", "protocol": 6},
                "tcp": {"destination-port": {"operator": "eq", "port": 443}}},
                "actions": {"forwarding": "accept"}}]}}]},
    }
    result = parse_mud(json.dumps(doc).encode())
    assert result.mud is not None, [str(f) for f in result.findings]
    enf = enforcer(home)
    enf.install_home()
    dev = facts(home, 0, LifecycleState.PROFILED, mud_url=result.mud.mud_url)
    enf.apply_device(dev, result.mud)
    text = listing(home)
    assert "flush ruleset" in text  # only as (sanitised) comment text
    assert '"evil"' not in text and 'evil";' not in text
    # The listing re-parses as a ruleset with exactly our chains and nothing injected.
    check = subprocess.run(["ip", "netns", "exec", home.gw_ns, "nft", "-c", "-f", "-"],
                           input="flush ruleset\n" + run(["nft", "list", "ruleset"],
                                                          ns=home.gw_ns).stdout,
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert not home.tcp(home.nodes[0].ns, CLOUD4, 443, 0.5)  # nothing was opened
    policy = decide(dev, result.mud, (), enf.context, now=NOW)
    assert policy.dns_names() == {"x.example.com"}


def test_dns_sets_no_device_names_any_more_are_deleted(home: VirtualHome,
                                                        corpus_mud) -> None:  # type: ignore[no-untyped-def]
    """A shard keeps a DNS name's sets while one of its devices names it, no longer."""
    mud = corpus_mud("rfc/mudmaker-cloud-service.json")  # one dst-dnsname rule
    enf = enforcer(home)
    enf.install_home()
    first = "02:00:00:00:77:01"
    second = next(f"02:00:00:00:77:{i:02x}" for i in range(2, 256)
                  if shard_table(f"02:00:00:00:77:{i:02x}") == shard_table(first))
    table = shard_table(first)

    def sets() -> set[str]:
        out = json.loads(run(["nft", "-j", "list", "sets", "inet"], ns=home.gw_ns).stdout)
        return {i["set"]["name"] for i in out["nftables"]
                if "set" in i and i["set"]["table"] == table}

    def device(mac: str, octet: int, state: LifecycleState) -> DeviceFacts:
        return DeviceFacts(mac=mac, ipv4=(f"192.0.2.{octet}",), mud_url=mud.mud_url,
                           state=state)

    enf.apply_device(device(first, 201, LifecycleState.PROFILED), mud)
    enf.apply_device(device(second, 202, LifecycleState.PROFILED), mud)
    named = {s for s in sets() if s.startswith("dns")}
    assert len(named) == 2  # the name's IPv4 and IPv6 sets, shared by both
    enf.apply_device(device(first, 201, LifecycleState.OUT_OF_SUPPORT), mud)
    assert named <= sets()  # the second device still names it
    enf.remove_device(second)
    assert not named & sets()  # nobody does: deleted in the same batch
    enf.apply_device(device(first, 201, LifecycleState.PROFILED), mud)
    assert named <= sets()  # and back when it is named again


def test_fewer_device_tables_after_a_restart_leave_no_table_behind(home: VirtualHome) -> None:
    """An owner lowers ``gateway.device_tables``: reconcile reinstalls, the surplus shard
    tables (whose drops would still apply) are gone, and devices work in the new ones."""
    first = enforcer(home)
    first.install_home()
    p0 = first.apply_device(facts(home, 0, LifecycleState.PROFILED, mud_url=None), None)
    p1 = first.apply_device(facts(home, 1, LifecycleState.OUT_OF_SUPPORT), None)

    def tables() -> set[str]:
        out = json.loads(run(["nft", "-j", "list", "tables"], ns=home.gw_ns).stdout)
        return {i["table"]["name"] for i in out["nftables"] if "table" in i}

    assert len(tables()) == 17
    try:
        set_shard_count(2)
        report = enforcer(home).reconcile([p0, p1])
        assert report.reinstalled_table
        assert tables() == {TABLE, *shard_names()} and len(shard_names()) == 2
        assert home.tcp(home.nodes[0].ns, CLOUD4, 443)
        assert not home.tcp(home.nodes[1].ns, CLOUD4, 443, 0.5)
        assert enforcer(home).reconcile([p0, p1]).ok == sorted([p0.device.mac, p1.device.mac])
    finally:
        set_shard_count(16)
    report = enforcer(home).reconcile([p0, p1])  # and back up
    assert report.reinstalled_table and len(tables()) == 17
    with pytest.raises(ValueError):
        set_shard_count(0)


PINGER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
s.settimeout(1.0)
for line in sys.stdin:  # one datagram per line, on the same flow
    s.send(b"ping")
    try:
        print("echo" if s.recv(100) == b"ping" else "other", flush=True)
    except OSError:
        print("silence", flush=True)
"""


def test_a_narrowed_policy_cuts_the_connections_the_old_one_allowed(home: VirtualHome) -> None:
    """Established flows pass before any device chain: without forgetting them, a device
    quarantined mid-conversation would keep talking to its peer."""
    import subprocess
    import sys

    home.serve(home.inet_ns, udp=[7777])
    enf = enforcer(home)
    enf.install_home()
    node = home.nodes[0]
    enf.apply_device(facts(home, 0), None)  # the home default: Internet
    flow = subprocess.Popen(["ip", "netns", "exec", node.ns, sys.executable, "-c", PINGER,
                             CLOUD4, "7777"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert flow.stdin is not None and flow.stdout is not None

    def exchange() -> str:
        assert flow.stdin is not None and flow.stdout is not None
        assert enf.nft.settle()  # the old connections are forgotten behind the update
        flow.stdin.write("go\n")
        flow.stdin.flush()
        return flow.stdout.readline().strip()

    try:
        assert exchange() == "echo"
        enf.apply_device(facts(home, 0, LifecycleState.TRUSTED), None)  # wider: kept
        assert exchange() == "echo"
        enf.apply_device(facts(home, 0, LifecycleState.QUARANTINED), None)
        assert exchange() == "silence"  # the same flow, now new again: dropped
        enf.apply_device(facts(home, 0), None)
        assert exchange() == "echo"  # allowed again: it passes afresh
        enf.remove_device(node.mac)
        assert exchange() == "silence"
    finally:
        flow.kill()
        flow.wait(5)
