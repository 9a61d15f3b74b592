"""The virtual home itself: routing, isolation through the gateway, teardown."""

from __future__ import annotations

import os

import pytest

from mudguard.vhome import INTERNET_HOSTS, VirtualHome, run

pytestmark = pytest.mark.root

CLOUD4, CLOUD6 = INTERNET_HOSTS["cloud"]


def test_devices_reach_internet_and_each_other_through_the_gateway(vhome: VirtualHome) -> None:
    d0, d1 = vhome.nodes[0], vhome.nodes[1]
    vhome.serve(vhome.inet_ns, tcp=[443], udp=[123])
    vhome.serve(d1.ns, tcp=[80])
    assert vhome.tcp(d0.ns, CLOUD4, 443) and vhome.tcp(d0.ns, CLOUD6, 443)
    assert vhome.udp(d0.ns, CLOUD4, 123) and vhome.udp(d0.ns, CLOUD6, 123)
    assert vhome.ping(d0.ns, CLOUD4) and vhome.ping(d0.ns, CLOUD6)
    assert not vhome.tcp(d0.ns, CLOUD4, 444)  # nothing listens there: refused
    assert vhome.tcp(d0.ns, d1.ipv4, 80) and vhome.tcp(d0.ns, d1.ipv6, 80)
    # Lateral traffic is routed by the gateway: d0 resolved d1 to the gateway's MAC.
    gw_mac = run(["cat", f"/sys/class/net/{vhome.lan_if}/address"], ns=vhome.gw_ns).stdout
    neigh = run(["ip", "neigh", "show", d1.ipv4], ns=d0.ns).stdout
    assert gw_mac.strip() in neigh


def test_bridge_ports_are_isolated(vhome: VirtualHome) -> None:
    out = run(["bridge", "-d", "link", "show"], ns=vhome.gw_ns).stdout
    ports = [line for line in out.splitlines() if "master" in line]
    assert len(ports) == len(vhome.nodes)
    assert "isolated on" in out


def test_teardown_removes_every_namespace() -> None:
    prefix = f"mgeX{os.getpid() % 10000}"
    with VirtualHome(prefix=prefix, devices=1) as home:
        names = home.namespaces()
        assert all(os.path.exists(f"/run/netns/{n}") for n in names)
    assert not any(os.path.exists(f"/run/netns/{n}") for n in names)


def test_no_route_leaves_the_home(vhome: VirtualHome) -> None:
    # 233.252.0.0/24 is MCAST-TEST-NET (documentation); the internet namespace has no route.
    routes = run(["ip", "route", "show"], ns=vhome.inet_ns).stdout
    assert "default" not in routes


def test_rejects_bad_prefix() -> None:
    with pytest.raises(ValueError):
        VirtualHome(prefix="bad prefix!")
