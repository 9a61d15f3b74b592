"""Issue #13 with real packets: MUD fragments that used to open more than they name,
compiled and installed in the gateway namespace of a virtual home, then probed.

Each probe passed before the fix (the rule was wider than the file) and must be
refused now, while what the file does name still passes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from mudguard.mud import MudFile, parse_mud
from mudguard.policy import LifecycleState
from mudguard.vhome import GW4, GW6
from tests.netns.test_enforce import CLOUD4, CLOUD6, MFG4, Gateway, _gateway

pytestmark = pytest.mark.root

GW_SERVICE = 2222  # a service of the gateway the device's file does not name


@pytest.fixture
def gw() -> Iterator[Gateway]:
    for gateway in _gateway(f"mgeF{os.getpid() % 1000}", 2,
                            controllers={"urn:ietf:params:mud:gateway": (MFG4,)}):
        gateway.home.serve(gateway.home.gw_ns, tcp=[GW_SERVICE])
        yield gateway


def fragment(from_aces: list[dict[str, Any]], to_aces: list[dict[str, Any]] | None = None,
             family: int = 4) -> str:
    """A MUD file around these ACEs (each ``{"matches": ..., "forwarding": ...}``)."""
    def acl(name: str, aces: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": name, "type": f"ipv{family}-acl-type", "aces": {"ace": [
            {"name": f"{name}{i}", "matches": a["matches"],
             "actions": {"forwarding": a.get("forwarding", "accept")}}
            for i, a in enumerate(aces)]}}
    return json.dumps({
        "ietf-mud:mud": {
            "mud-version": 1, "mud-url": "https://maker.example.com/thing.json",
            "last-update": "2026-01-01T00:00:00Z", "is-supported": True,
            "from-device-policy": {"access-lists": {"access-list": [{"name": "fr"}]}},
            "to-device-policy": {"access-lists": {"access-list": [{"name": "to"}]}}},
        "ietf-access-control-list:acls": {"acl": [acl("fr", from_aces),
                                                  acl("to", to_aces or [])]}})


def load(text: str) -> MudFile | None:
    return parse_mud(text).mud


def tcp_to(port: int, **ip: Any) -> dict[str, Any]:
    return {"matches": {"ipv4": {"protocol": 6, **ip},
                        "tcp": {"destination-port": {"operator": "eq", "port": port}}}}


def test_class1_a_name_on_the_devices_own_side_is_not_any_peer(gw: Gateway) -> None:
    """src-dnsname in a from-device ACL, dst-dnsname in a to-device one: both used to
    compile to "any host" on the port."""
    h, d0 = gw.home, gw.d[0]
    mud = load(fragment(
        [tcp_to(443, **{"ietf-acldns:src-dnsname": "cloud.example.com"}),
         tcp_to(800, **{"destination-ipv4-network": f"{CLOUD4}/32"})],
        [{"matches": {"ipv4": {"protocol": 6, "ietf-acldns:dst-dnsname": "cloud.example.com"},
                      "tcp": {"destination-port": {"operator": "eq", "port": 80}}}}]))
    assert mud is not None
    gw.apply(d0, mud)
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)  # was: any host on 443
    assert not h.tcp(h.inet_ns, d0.ipv4, 80, 0.5, source=CLOUD4)  # was: any host may open
    assert h.tcp(d0.ns, CLOUD4, 800)  # the peer side still works


def test_class1_a_network_on_the_devices_own_side_is_not_any_peer(gw: Gateway) -> None:
    h, d0 = gw.home, gw.d[0]
    mud = load(fragment([], [{"matches": {
        "ipv6": {"protocol": 6, "destination-ipv6-network": "2001:db8:1::/64"},
        "tcp": {"destination-port": {"operator": "eq", "port": 80}}}}], family=6))
    assert mud is not None
    gw.apply(d0, mud)
    assert not h.tcp(h.inet_ns, d0.ipv6, 80, 0.5, source=CLOUD6)


def test_class2_a_well_known_class_opens_one_service_not_the_gateway(gw: Gateway) -> None:
    h, d0, d1 = gw.home, gw.d[0], gw.d[1]
    dns = load(fragment([{"matches": {"ietf-mud:mud": {"controller": "urn:ietf:params:mud:dns"}}}]))
    assert dns is not None
    gw.apply(d0, dns)
    assert not h.tcp(d0.ns, GW4, GW_SERVICE, 0.5)  # was: every service of the gateway
    assert not h.tcp(d0.ns, GW6, GW_SERVICE, 0.5)
    assert h.tcp(d0.ns, GW4, 53) and h.udp(d0.ns, GW6, 53)  # its DNS, as named
    whole = load(fragment([{"matches": {
        "ietf-mud:mud": {"controller": "urn:ietf:params:mud:gateway"}}}]))
    assert whole is not None
    gw.apply(d1, whole)
    assert not h.tcp(d1.ns, GW4, GW_SERVICE, 0.5)  # was: the gateway as a whole
    assert h.tcp(d1.ns, MFG4, 443)  # the owner's controller of that class


def test_class3_an_unenforced_field_never_widens(gw: Gateway) -> None:
    h, d0, d1 = gw.home, gw.d[0], gw.d[1]
    cloud = {"destination-ipv4-network": f"{CLOUD4}/32"}
    ttl = load(fragment([tcp_to(443, ttl=1, **cloud)]))
    assert ttl is not None
    gw.apply(d0, ttl)
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)  # was: the TTL test dropped, any TTL passed
    flags = load(fragment([{"matches": {"ipv4": {"protocol": 6, **cloud},
                                        "tcp": {"flags": "fin",
                                                "destination-port": {"port": 443}}}}]))
    assert flags is not None
    gw.apply(d1, flags)
    assert not h.tcp(d1.ns, CLOUD4, 443, 0.5)  # was: a SYN passed a "fin" rule
    plain = load(fragment([tcp_to(443, **cloud)]))
    assert plain is not None
    gw.apply(d1, plain)
    assert h.tcp(d1.ns, CLOUD4, 443)


def test_class4_duplicate_member_names_are_refused(gw: Gateway) -> None:
    """``"forwarding": "drop", "forwarding": "accept"`` used to become accept: the LAN
    could open the device's port 80. Refused, the device falls back to the home default
    (Internet only: nothing from the LAN)."""
    h, d0, d1 = gw.home, gw.d[0], gw.d[1]
    text = fragment([], [{"matches": {"ietf-mud:mud": {"local-networks": [None]},
                                      "ipv4": {"protocol": 6},
                                      "tcp": {"destination-port": {"port": 80}}},
                          "forwarding": "drop"}])
    duplicate = text.replace('"forwarding": "drop"', '"forwarding": "drop", "forwarding": "accept"')
    assert duplicate != text
    gw.trust(d1)
    gw.apply(d0, load(duplicate), LifecycleState.PROFILED)
    assert not h.tcp(d1.ns, d0.ipv4, 80, 0.5)
