"""LanIsolation on a plain bridge: without it two devices talk at layer 2 and no rule sees
them; with it every LAN-to-LAN packet is routed by the gateway and meets the devices' chains."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mudguard.enforce import Enforcer, LanIsolation, Nft
from mudguard.policy import DeviceFacts, LifecycleState
from mudguard.vhome import INTERNET_HOSTS, VDevice, VirtualHome, run

pytestmark = pytest.mark.root

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLOUD4, CLOUD6 = INTERNET_HOSTS["cloud"]


@pytest.fixture
def plain_home() -> Iterator[VirtualHome]:
    """A virtual home whose bridge is made plain again: no isolation, no proxies.

    This kernel has br_netfilter built in (bridged frames then meet the inet hooks with
    the bridge *port* as iifname, so only the receiver's chain would apply); the fixture
    turns that off in the gateway namespace, like most routers, to show the plain hole.
    """
    with VirtualHome(prefix=f"mgeI{os.getpid() % 1000}", devices=2) as home:
        gw, br = home.gw_ns, home.lan_if
        for port in LanIsolation(br, netns=gw).ports():
            run(["bridge", "link", "set", "dev", port, "isolated", "off"], ns=gw)
        run(["sysctl", "-q", "-w", f"net.ipv4.conf.{br}.proxy_arp=0",
             f"net.ipv4.conf.{br}.proxy_arp_pvlan=0",
             # As on a router without br_netfilter: bridged frames skip the inet hooks.
             "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0",
             f"net.ipv6.conf.{br}.proxy_ndp=0"], ns=gw)
        for node in home.nodes:
            run(["ip", "-6", "neigh", "del", "proxy", node.ipv6, "dev", br], ns=gw)
            home.serve(node.ns, tcp=[80])
        home.serve(home.inet_ns, tcp=[443])
        yield home


def _forget_neighbours(home: VirtualHome) -> None:
    for node in home.nodes:
        run(["ip", "neigh", "flush", "all"], ns=node.ns)


def _facts(node: VDevice, state: LifecycleState) -> DeviceFacts:
    return DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,), state=state)


def test_isolation_puts_lateral_traffic_under_the_rules(plain_home: VirtualHome) -> None:
    home = plain_home
    d0, d1 = home.nodes
    lan = LanIsolation(home.lan_if, netns=home.gw_ns)
    assert not any(lan.isolated().values())
    nft = Nft.in_namespace(home.gw_ns)
    enforcer = Enforcer(nft, home.context(), clock=lambda: NOW)  # no LanIsolation yet
    enforcer.install_home()
    for node in (d0, d1):  # home default: Internet only, no lateral LAN
        enforcer.apply_device(_facts(node, LifecycleState.DEFAULT), None)
    _forget_neighbours(home)
    # The hole: on a plain bridge the devices reach each other directly, unseen.
    assert home.tcp(d0.ns, d1.ipv4, 80)
    assert d1.mac in run(["ip", "neigh", "show", d1.ipv4], ns=d0.ns).stdout

    # The daemon's start-up: an Enforcer given the LAN isolates it when it installs.
    policies = [enforcer.policy(d0.mac), enforcer.policy(d1.mac)]
    enforcer = Enforcer(nft, home.context(), clock=lambda: NOW, lan=lan)
    enforcer.install_home([p for p in policies if p is not None])
    assert len(lan.isolated()) == 2 and all(lan.isolated().values())
    _forget_neighbours(home)
    assert not home.tcp(d0.ns, d1.ipv4, 80, 0.5) and not home.tcp(d0.ns, d1.ipv6, 80, 0.5)
    assert home.tcp(d0.ns, CLOUD4, 443) and home.tcp(d0.ns, CLOUD6, 443)
    # LAN allowed: now reachable, through the gateway (ARP and ND answered by it).
    for node in (d0, d1):
        enforcer.apply_device(_facts(node, LifecycleState.OUT_OF_SUPPORT), None)
    assert home.tcp(d0.ns, d1.ipv4, 80) and home.tcp(d0.ns, d1.ipv6, 80)
    gw_mac = run(["cat", f"/sys/class/net/{home.lan_if}/address"], ns=home.gw_ns).stdout.strip()
    assert gw_mac in run(["ip", "neigh", "show", d1.ipv6], ns=d0.ns).stdout
    # The Enforcer keeps the proxy-ND entries: a removed device's address is unproxied.
    enforcer.remove_device(d1.mac)
    proxies = run(["ip", "-6", "neigh", "show", "proxy"], ns=home.gw_ns).stdout
    assert d0.ipv6 in proxies and d1.ipv6 not in proxies


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError):
        LanIsolation("br0; reboot")


def _watch_a_port_join(bridge: str, prefix: str) -> dict[str, object]:
    """Inside the gateway: follow link announcements, add a port (and later turn its
    isolation off), and isolate what the watcher names; bounded in count and time."""
    import select
    import subprocess
    import time

    from mudguard.enforce import LanPortWatcher

    lan = LanIsolation(bridge)
    watcher = LanPortWatcher(lan)
    port = f"{prefix}qa"

    def until_isolated(started: float) -> tuple[list[str] | None, float]:
        named: list[str] | None = []
        while time.monotonic() - started < 2.0 and not lan.isolated().get(port):
            if select.select([watcher.fileno()], [], [], 0.2)[0]:
                named = watcher.pending()
                watcher.isolate(named)
        return named, time.monotonic() - started

    try:
        subprocess.run(["ip", "link", "add", port, "type", "veth", "peer", "name",
                        f"{prefix}qb"], check=True)
        started = time.monotonic()
        subprocess.run(["ip", "link", "set", port, "master", bridge, "up"], check=True)
        named, joined = until_isolated(started)
        # Its own change is announced with the flag set: nothing more to do.
        quiet = not select.select([watcher.fileno()], [], [], 0.3)[0] or \
            watcher.pending() == []
        started = time.monotonic()
        subprocess.run(["bridge", "link", "set", "dev", port, "isolated", "off"], check=True)
        _renamed, turned_off = until_isolated(started)
        return {"named": named, "joined": joined, "quiet": quiet, "turned_off": turned_off,
                "isolated": lan.isolated()}
    finally:
        watcher.close()


def test_a_port_joining_the_bridge_is_isolated_as_the_kernel_announces_it(
        plain_home: VirtualHome) -> None:
    home = plain_home
    found = home.call(home.gw_ns, _watch_a_port_join, home.lan_if, home.prefix, timeout=30)
    port = f"{home.prefix}qa"
    assert found["named"] == [port]
    assert found["isolated"][port] is True  # type: ignore[index]
    assert found["joined"] < 0.5 and found["turned_off"] < 0.5, found
    assert found["quiet"], "the watcher chased its own change"



def test_the_bridge_guard_closes_a_port_that_is_not_isolated_yet(
        plain_home: VirtualHome) -> None:
    """A port whose isolation is off (one that just joined, before the watcher's ≈20 ms,
    or one someone turned off) still bridges nothing to its neighbours: the bridge-family
    guard drops port-to-port frames, while the gateway keeps serving both devices."""
    home = plain_home
    d0, d1 = home.nodes
    lan = LanIsolation(home.lan_if, netns=home.gw_ns)
    nft = Nft.in_namespace(home.gw_ns)
    enforcer = Enforcer(nft, home.context(), clock=lambda: NOW, lan=lan)
    enforcer.install_home()
    for node in (d0, d1):  # LAN allowed, so only the layer-2 path is in question
        enforcer.apply_device(_facts(node, LifecycleState.OUT_OF_SUPPORT), None)
    assert lan.bridge_guarded()
    for port in lan.ports():  # the race: ports not isolated
        run(["bridge", "link", "set", "dev", port, "isolated", "off"], ns=home.gw_ns)
    assert not any(lan.isolated().values())
    # Each is told the other's real MAC (as devices that skipped proxy ARP would learn
    # it): their frames must cross the bridge port to port, where the guard drops them.
    _forget_neighbours(home)
    for me, peer in ((d0, d1), (d1, d0)):
        route = run(["ip", "-j", "route", "get", peer.ipv4], ns=me.ns).stdout
        out_if = json.loads(route)[0]["dev"]
        run(["ip", "neigh", "replace", peer.ipv4, "lladdr", peer.mac, "dev", out_if, "nud",
             "permanent"], ns=me.ns)
    assert not home.tcp(d0.ns, d1.ipv4, 80, 0.5)
    # Without the guard the same frames are bridged straight through (the hole it closes).
    run(["nft", "delete", "table", "bridge", "mudguard_lan"], ns=home.gw_ns)
    assert home.tcp(d0.ns, d1.ipv4, 80, 1.0)
    # The gateway's own path is unaffected: told the gateway's MAC again (proxy ARP),
    # d0 reaches d1 routed through it, under both devices' rules (LAN allowed).
    lan.guard_bridge()
    for me, peer in ((d0, d1), (d1, d0)):  # permanent entries: a flush keeps them
        route = run(["ip", "-j", "route", "get", peer.ipv4], ns=me.ns).stdout
        run(["ip", "neigh", "del", peer.ipv4, "dev", json.loads(route)[0]["dev"]], ns=me.ns)
    assert home.tcp(d0.ns, d1.ipv4, 80, 1.0)
    assert json.loads(run(["nft", "-j", "list", "table", "bridge", "mudguard_lan"],
                          ns=home.gw_ns).stdout)


def test_proxy_entries_follow_the_installed_addresses_in_one_batch() -> None:
    """``sync_proxies`` adds and deletes thousands of proxy-ND entries with one ``ip``
    each way (start-up: one ``ip`` per address took 1.5 ms, 7.5 s at 5,000 devices);
    adding again is harmless, deleting an absent entry does not stop the others,
    IPv4 and link-local addresses get none, a bad address changes nothing."""
    with VirtualHome(prefix=f"mgS5px{os.getpid() % 100}", devices=1) as home:
        lan = LanIsolation(home.lan_if, netns=home.gw_ns)

        def proxied() -> set[str]:
            out = run(["ip", "-6", "neigh", "show", "proxy", "dev", home.lan_if],
                      ns=home.gw_ns).stdout
            return {line.split()[0] for line in out.splitlines() if line.strip()}

        before = proxied()
        many = [f"2001:db8:1::7:{i:x}" for i in range(1500)]
        lan.sync_proxies([*many, "192.0.2.77", "fe80::77"], [])
        assert proxied() - before == set(many)
        lan.sync_proxies(many[:10], [])  # again: idempotent
        assert proxied() - before == set(many)
        lan.sync_proxies([], ["2001:db8:1::6:1", *many[:1000]])  # the first is absent
        assert proxied() - before == set(many[1000:])
        with pytest.raises(ValueError):
            lan.sync_proxies(["2001:db8:1::7:1", "not an address"], [])
        assert proxied() - before == set(many[1000:])
