"""Policy as data in the kernel (``policy/_data.py``, ``enforce/data.py``).

- The netlink encoding of elements (concatenations with ranges and prefixes, mark
  maps, verdict maps) installs exactly what libnftables installs for the same JSON:
  two namespaces, the same fixed ruleset, every corpus file's elements in several
  states through each path; nft's listings must be equal.
- Reconcile reads the element sets back once and repairs exactly what was tampered.
- Real packets: the same home judged by the chains design and by the data design gives
  the same result for every probe (devices in several states, both directions, IPv4
  and IPv6, the gateway, the portal), and some probes pass.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from mudguard.enforce import Enforcer, Nft, NftError
from mudguard.enforce.data import DataEnforcer
from mudguard.mud import parse_mud
from mudguard.policy import DeviceFacts, HomeContext, LifecycleState, decide
from mudguard.policy._data import (
    compile_fixed_ruleset,
    device_elements,
    home_element_commands,
    remove_commands,
    update_commands,
)
from mudguard.vhome import GW4, GW6, INTERNET_HOSTS, VirtualHome, _netns
from tests.conftest import CORPUS

pytestmark = pytest.mark.root

NOW = datetime(2026, 1, 1, tzinfo=UTC)
VALID = [p for p in sorted((CORPUS / "mud").rglob("*.json")) if parse_mud(p.read_bytes()).ok]
CTX = HomeContext(lan_prefixes=("192.0.2.0/24", "2001:db8:1::/64"),
                  gateway_addresses=("192.0.2.1", "2001:db8:1::1"), lan_interface="mgdlan",
                  portal_ports=(8443,))


@pytest.fixture
def pair() -> Iterator[tuple[Nft, Nft, str, str]]:
    tag = os.getpid() % 10000
    names = (f"mgdA{tag}", f"mgdB{tag}")
    for ns in names:
        _netns.delete(ns)
        _netns.add(ns)
    try:
        yield (Nft.in_namespace(names[0], netlink=False), Nft.in_namespace(names[1]), *names)
    finally:
        for ns in names:
            _netns.delete(ns)


def _listing(ns: str) -> list[Any]:
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"],
                         capture_output=True, text=True, check=True).stdout
    items = [i for i in json.loads(out)["nftables"] if "metainfo" not in i]
    for item in items:
        for body in item.values():
            body.pop("handle", None)
            if "elem" in body:
                body["elem"] = sorted(json.dumps(e, sort_keys=True) for e in body["elem"])
    return items


def _home(states: tuple[LifecycleState, ...]) -> list[Any]:
    policies = []
    for i, path in enumerate(VALID):
        mud = parse_mud(path.read_bytes()).mud
        assert mud is not None
        state = states[i % len(states)]
        facts = DeviceFacts(mac=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}",
                            ipv4=(f"192.0.2.{10 + i}",), ipv6=(f"2001:db8:1::{16 + i:x}",),
                            mud_url=mud.mud_url, state=state)
        policies.append(decide(facts, mud, (), CTX, now=NOW))
    return policies


def test_netlink_elements_equal_libnftables_elements(pair: tuple[Nft, Nft, str, str]) -> None:
    libnft, netlink, ns_a, ns_b = pair
    for handle in (libnft, netlink):
        handle.apply(compile_fixed_ruleset(CTX))
    for states in ((LifecycleState.PROFILED,),
                   (LifecycleState.QUARANTINED, LifecycleState.TRUSTED, LifecycleState.DEFAULT,
                    LifecycleState.OUT_OF_SUPPORT, LifecycleState.NEW)):
        policies = _home(states)
        libnft.apply(compile_fixed_ruleset(CTX))
        data = DataEnforcer(netlink, CTX)
        data.install_home(policies)
        records = [device_elements(p, CTX) for p in policies]
        libnft.apply(home_element_commands(records))
        assert _listing(ns_a) == _listing(ns_b)
        # An update (element changes only) through each path: device 0 takes device 1's
        # rules, so its profile is in already; its own stays (idle) until evicted.
        moved = device_elements(replace(policies[0], rules=policies[1].rules), CTX)
        others = {r.profile for r in records[1:]}
        libnft.apply(update_commands(records[0], moved,
                                     profile_installed=moved.profile in others))
        data.apply_policy(replace(policies[0], rules=policies[1].rules))
        assert _listing(ns_a) == _listing(ns_b)
        # Removal through each path.
        libnft.apply(remove_commands(moved, drop_profile=False))
        data.remove_device(moved.mac)
        assert _listing(ns_a) == _listing(ns_b)
    assert netlink.netlink_batches >= 4


def test_reconcile_repairs_exactly_what_was_tampered(pair: tuple[Nft, Nft, str, str]) -> None:
    _libnft, netlink, _ns_a, ns_b = pair
    policies = _home((LifecycleState.PROFILED, LifecycleState.DEFAULT))
    DataEnforcer(netlink, CTX).install_home(policies)
    fresh = DataEnforcer(Nft.in_namespace(ns_b), CTX)
    assert fresh.reconcile(policies) == {"missing": 0, "stray": 0, "reinstalled": 0}
    mac = policies[3].device.mac
    subprocess.run(["ip", "netns", "exec", ns_b, "nft", "delete", "element", "inet",
                    "mudguard", "known_macs", "{", mac, "}"], check=True)
    subprocess.run(["ip", "netns", "exec", ns_b, "nft", "add", "element", "inet",
                    "mudguard", "known_macs", "{", "02:66:66:66:66:66", "}"], check=True)
    assert fresh.reconcile(policies) == {"missing": 1, "stray": 1, "reinstalled": 0}
    assert fresh.reconcile(policies) == {"missing": 0, "stray": 0, "reinstalled": 0}
    subprocess.run(["ip", "netns", "exec", ns_b, "nft", "delete", "table", "inet", "mudguard"],
                   check=True)
    assert fresh.reconcile(policies)["reinstalled"] == 1
    assert fresh.reconcile(policies) == {"missing": 0, "stray": 0, "reinstalled": 0}


CLOUD4, CLOUD6 = INTERNET_HOSTS["cloud"]


def _probes(home: VirtualHome) -> list[bool]:
    out = []
    d = home.nodes
    for i, node in enumerate(d):
        peer = d[(i + 1) % len(d)]
        out += [home.tcp(node.ns, CLOUD4, 443, 0.4), home.tcp(node.ns, CLOUD6, 443, 0.4),
                home.udp(node.ns, CLOUD4, 123, 0.4), home.ping(node.ns, CLOUD6, 0.4),
                home.tcp(node.ns, peer.ipv4, 80, 0.4), home.tcp(node.ns, peer.ipv6, 80, 0.4),
                home.tcp(home.inet_ns, node.ipv4, 80, 0.4, source=CLOUD4),
                home.tcp(node.ns, GW4, 53, 0.4), home.tcp(node.ns, GW6, 8443, 0.4)]
    return out


def test_real_packets_get_the_same_verdicts_from_both_designs() -> None:
    files = ["rfc/nist-mudfile-local-and-same-mfg-test.json", "unsw/amazonEchoMud.json"]
    with VirtualHome(prefix="mgh17d", devices=4) as home:
        home.serve(home.inet_ns, tcp=[80, 443], udp=[123])
        for node in home.nodes:
            home.serve(node.ns, tcp=[80], udp=[5683])
        home.serve(home.gw_ns, tcp=[53, 8443], udp=[53])
        context = home.context(portal_ports=(8443,))
        states = (LifecycleState.TRUSTED, LifecycleState.DEFAULT, LifecycleState.PROFILED,
                  LifecycleState.PROFILED)
        policies = []
        for i, node in enumerate(home.nodes):
            mud = parse_mud((CORPUS / "mud" / files[i % 2]).read_bytes()).mud
            assert mud is not None
            facts = DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                                mud_url=mud.mud_url, state=states[i])
            policies.append(decide(facts, mud, (), context, now=NOW))
        nft = Nft.in_namespace(home.gw_ns)
        chains = Enforcer(nft, context, clock=lambda: NOW)
        chains.install_home(policies)
        with_chains = _probes(home)
        data = DataEnforcer(nft, context)
        data.install_home(policies)
        with_data = _probes(home)
        assert with_chains == with_data
        assert 3 <= sum(with_data) < len(with_data) - 3, with_data
        # An update is element changes only: the trusted device becomes NEW (baseline).
        data.apply_policy(decide(replace(policies[0].device, state=LifecycleState.NEW),
                                 None, (), context, now=NOW))
        assert not home.tcp(home.nodes[0].ns, CLOUD4, 443, 0.4)
        assert home.tcp(home.nodes[0].ns, GW4, 53, 1.0)


def test_unused_profiles_stay_until_evicted(pair: tuple[Nft, Nft, str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile no device uses stays installed (switching back is a map change only)
    until more than ``MAX_IDLE_PROFILES`` are idle; then the oldest's elements go."""
    import mudguard.enforce.data as data_module

    monkeypatch.setattr(data_module, "MAX_IDLE_PROFILES", 1)
    _libnft, netlink, _ns_a, ns_b = pair
    distinct: dict[int, object] = {}
    for candidate in _home((LifecycleState.PROFILED,)):
        distinct.setdefault(device_elements(candidate, CTX).profile, candidate)
    policies = list(distinct.values())[:3]
    enforcer = DataEnforcer(netlink, CTX)
    enforcer.install_home(policies[:1])
    first = enforcer.installed[policies[0].device.mac]
    profiles = [first.profile]
    for other in policies[1:3]:  # device 0 takes two other profiles in turn
        record = enforcer.apply_policy(replace(policies[0], rules=other.rules))
        profiles.append(record.profile)
    assert len(set(profiles)) == 3
    # Installed: the current profile and one idle one (the second); the first is gone.
    fresh = DataEnforcer(Nft.in_namespace(ns_b), CTX)
    current = [replace(policies[0], rules=policies[2].rules)]
    before = sum(len(v) for v in enforcer._profiles[profiles[1]].profile_elements.values())
    report = fresh.reconcile(current)
    assert report == {"missing": 0, "stray": before, "reinstalled": 0}


def test_dns_answers_as_elements_open_only_the_asking_device_until_they_time_out() -> None:
    """What the DNS guard will do under the data design: each answer's elements, from
    the asking device's templates, with the TTL as timeout (real packets)."""
    import time

    from mudguard.policy._data import dns_answer_elements, element_commands

    with VirtualHome(prefix="mgh17n", devices=2) as home:
        home.serve(home.inet_ns, tcp=[443], udp=[123])
        for node in home.nodes:
            home.serve(node.ns, tcp=[80])
        context = home.context()
        mud = parse_mud((CORPUS / "mud/rfc/mudmaker-cloud-service.json").read_bytes()).mud
        assert mud is not None
        nft = Nft.in_namespace(home.gw_ns)
        data = DataEnforcer(nft, context)
        d0, d1 = home.nodes
        policies = [decide(DeviceFacts(mac=n.mac, ipv4=(n.ipv4,), ipv6=(n.ipv6,),
                                       mud_url=mud.mud_url, state=LifecycleState.PROFILED),
                           mud, (), context, now=NOW) for n in (d0, d1)]
        data.install_home(policies)
        assert not home.tcp(d0.ns, CLOUD4, 443, 0.4)  # nothing resolved yet
        record = data.installed[d0.mac]
        for mine, answer in ((d0.ipv4, CLOUD4), (d0.ipv6, CLOUD6)):
            found = dns_answer_elements(record, "cloud-service.example.com", mine, answer)
            assert found
            nft.apply(element_commands("add", found, timeout=3),
                      set_types=data._layouts)
        assert home.tcp(d0.ns, CLOUD4, 443) and home.tcp(d0.ns, CLOUD6, 443)
        assert home.udp(d0.ns, CLOUD4, 123)
        assert home.tcp(home.inet_ns, d0.ipv4, 80, source=CLOUD4)  # the file allows it
        assert not home.tcp(d1.ns, CLOUD4, 443, 0.4)  # d1 never asked
        assert not home.tcp(home.inet_ns, d1.ipv4, 80, 0.4, source=CLOUD4)
        time.sleep(3.5)
        assert not home.tcp(d0.ns, CLOUD4, 443, 0.4)  # the answer's TTL is over


def test_an_address_moves_between_devices_in_one_transaction(
        pair: tuple[Nft, Nft, str, str]) -> None:
    """Device 1 takes device 0's addresses (a DHCP lease moved): device 0 loses them in
    the same transaction, and the kernel then holds exactly both new policies."""
    _libnft, netlink, _ns_a, ns_b = pair
    policies = _home((LifecycleState.PROFILED, LifecycleState.TRUSTED))[:3]
    enforcer = DataEnforcer(netlink, CTX)
    enforcer.install_home(policies)
    taken = policies[0].device
    mover = replace(policies[1], device=replace(policies[1].device, ipv4=taken.ipv4,
                                                ipv6=policies[1].device.ipv6 + taken.ipv6))
    enforcer.apply_policy(mover)
    left = replace(policies[0], device=replace(taken, ipv4=(), ipv6=()))
    assert enforcer.installed[taken.mac].ipv4 == ()
    fresh = DataEnforcer(Nft.in_namespace(ns_b), CTX)
    assert fresh.reconcile([left, mover, policies[2]]) == {"missing": 0, "stray": 0,
                                                             "reinstalled": 0}
    # Without the taking, the kernel refuses the second owner of an address.
    stale = DataEnforcer(Nft.in_namespace(ns_b), CTX)
    stale.install_home(policies)
    stale._owner.clear()  # forget who holds what: the map element collides
    with pytest.raises(NftError):
        stale.apply_policy(mover)


@pytest.mark.parametrize(("icmp_type", "icmp_code", "passes"),
                         [(8, None, True), (8, 0, True), (8, 1, False), (13, None, False),
                          (None, 0, True), (None, 3, False)])
def test_icmp_type_and_code_are_the_first_transport_bytes(
        icmp_type: int | None, icmp_code: int | None, passes: bool) -> None:
    """``th sport`` of an ICMP packet is its type and code: a type/code rule in the data
    design lets exactly the matching echo request through (real packets)."""
    from mudguard.mud import Direction, Forwarding
    from mudguard.policy import BASELINE_RULES, DevicePolicy, PeerKind, Rule

    with VirtualHome(prefix="mgh17i", devices=1) as home:
        context = home.context()
        node = home.nodes[0]
        rule = Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT, family=4,
                    peer=PeerKind.NETWORK, peer_value=f"{CLOUD4}/32", protocol=1,
                    icmp_type=icmp_type, icmp_code=icmp_code, origin="test/icmp")
        facts = DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                            state=LifecycleState.PROFILED)
        policy = DevicePolicy(device=facts, state=LifecycleState.PROFILED,
                              rules=(*BASELINE_RULES, rule))
        data = DataEnforcer(Nft.in_namespace(home.gw_ns), context)
        data.install_home([policy])
        assert not data.installed[node.mac].fallback
        assert home.ping(node.ns, CLOUD4, 1.0) is passes


def test_a_cold_install_never_accepts_a_device_without_its_policy(tmp_path: Any) -> None:
    """Over a home installed by the chains design where d0 may reach the cloud, the data
    design's cold install (2,000 more devices) is: the fixed ruleset (nothing from the
    LAN passes, held here for 0.5 s), then every device in one transaction. Probes every
    3 ms: d0 (now NEW: baseline only) never reaches the cloud after the switch; d1
    (trusted) is refused until its elements are in, then passes."""
    import sys
    import time

    from mudguard.policy._data import home_element_commands

    with VirtualHome(prefix="mgh17c", devices=2) as home:
        home.serve(home.inet_ns, tcp=[443])
        context = home.context()
        d0, d1 = home.nodes

        def facts(node: Any, state: LifecycleState) -> DeviceFacts:
            return DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                               state=state)

        nft = Nft.in_namespace(home.gw_ns)
        Enforcer(nft, context, clock=lambda: NOW).install_home(
            [decide(facts(d0, LifecycleState.TRUSTED), None, (), context, now=NOW),
             decide(facts(d1, LifecycleState.TRUSTED), None, (), context, now=NOW)])
        mud = parse_mud(VALID[0].read_bytes()).mud
        synthetic = [decide(DeviceFacts(mac=f"02:42:00:00:{i >> 8:02x}:{i & 255:02x}",
                                        ipv6=(f"2001:db8:1::4:{i:x}",), mud_url=mud.mud_url,
                                        state=LifecycleState.PROFILED), mud, (), context,
                            now=NOW) for i in range(2000)] if mud else []
        policies = [decide(facts(d0, LifecycleState.NEW), None, (), context, now=NOW),
                    decide(facts(d1, LifecycleState.TRUSTED), None, (), context, now=NOW),
                    *synthetic]
        records = [device_elements(p, context) for p in policies]
        elements = home_element_commands(records)
        stop = tmp_path / "stop"
        ready = [tmp_path / f"ready-{node.ns}" for node in (d0, d1)]
        probes = [subprocess.Popen(
            ["ip", "netns", "exec", node.ns, sys.executable, "-c",
             "from mudguard.vhome.probe import probe_loop_main; probe_loop_main()",
             CLOUD4, "443", str(stop), "60", str(flag)], stdout=subprocess.PIPE, text=True)
            for node, flag in zip((d0, d1), ready, strict=True)]
        try:
            # Both probes through (trusted under the chains) before the switch: a loaded
            # machine can take seconds to start them.
            deadline = time.monotonic() + 20
            while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.1)
            switch = time.time()
            nft.apply(compile_fixed_ruleset(context))
            closed = time.time()
            time.sleep(0.5)
            data = DataEnforcer(nft, context)
            opening = time.time()
            data._apply(elements)
            opened = time.time()
            time.sleep(0.5)
        finally:
            stop.touch()
            seen = [json.loads(p.communicate(timeout=30)[0]) for p in probes]
        d0_seen, d1_seen = seen
        assert any(ok for t, ok in d0_seen if t < switch)  # trusted under the chains
        assert not [t for t, ok in d0_seen if ok and t > closed]
        assert not [t for t, ok in d1_seen if ok and closed < t < opening]
        assert any(ok for t, ok in d1_seen if t > opened)
        assert len([t for t, _ in d1_seen if closed < t < opening]) > 50
