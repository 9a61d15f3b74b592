"""The daemon's enforcer on policy as data (``DataGatewayEnforcer``), whatever
``MUDGUARD_TEST_RULESET`` says: a device's DNS answers are elements carrying its rules'
protocols and ports, so they must go when its rules change or its address leaves it
(real nftables, real packets in a virtual home)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import pytest

from mudguard.enforce import Nft
from mudguard.enforce.data_gateway import DataGatewayEnforcer, dns_answer_sets
from mudguard.mud import MudFile
from mudguard.policy import TABLE, LifecycleState
from mudguard.vhome import VirtualHome
from tests.netns.test_enforce import CLOUD4, MFG4, NOW, PORTAL, Gateway

pytestmark = pytest.mark.root


@pytest.fixture
def gw() -> Iterator[Gateway]:
    with VirtualHome(prefix=f"h17cD{os.getpid() % 1000}", devices=2) as home:
        home.serve(home.inet_ns, tcp=[443], udp=[123])
        nft = Nft.in_namespace(home.gw_ns)
        enforcer = DataGatewayEnforcer(nft, home.context(portal_ports=(PORTAL,)),
                                       clock=lambda: NOW)
        enforcer.install_home()
        yield Gateway(home=home, nft=nft, enforcer=enforcer)  # type: ignore[arg-type]


def _answers_under(gw: Gateway, address: str) -> int:
    found = gw.nft.read_elements(TABLE, dns_answer_sets())
    import ipaddress

    packed = ipaddress.ip_address(address).packed
    return sum(1 for elements in found.values() for e in elements if e[0].startswith(packed))


def test_a_quarantine_takes_back_the_ports_of_names_resolved_before(
        gw: Gateway, corpus_mud: Callable[[str], MudFile]) -> None:
    h, d0 = gw.home, gw.d[0]
    mud = corpus_mud("unsw/SmartThingsMud.json")  # NTP (UDP 123) and its maker (TCP 443)
    gw.enforcer.apply_device(gw.facts(d0, mud), mud, ())
    gw.fill("pool.ntp.org", d0, CLOUD4)
    gw.fill("dc.connect.smartthings.com", d0, MFG4)
    assert h.udp(d0.ns, CLOUD4, 123) and h.tcp(d0.ns, MFG4, 443)
    gw.enforcer.apply_device(gw.facts(d0, mud, LifecycleState.QUARANTINED), mud, ())
    assert gw.enforcer.take_dns_reset(d0.mac)  # the DNS guard re-grants what it still may
    assert not h.udp(d0.ns, CLOUD4, 123, 0.5)  # before the fix: still open
    gw.fill("dc.connect.smartthings.com", d0, MFG4)
    assert h.tcp(d0.ns, MFG4, 443)
    assert not h.udp(d0.ns, CLOUD4, 123, 0.5)


def test_a_lease_end_takes_the_answers_granted_under_the_address(
        gw: Gateway, corpus_mud: Callable[[str], MudFile]) -> None:
    h, d0 = gw.home, gw.d[0]
    mud = corpus_mud("rfc/mudmaker-cloud-service.json")
    facts = gw.facts(d0, mud)
    gw.enforcer.apply_device(facts, mud, ())
    gw.fill("cloud-service.example.com", d0, CLOUD4)
    assert h.tcp(d0.ns, CLOUD4, 443) and _answers_under(gw, d0.ipv4) > 0
    gw.enforcer.apply_device(dataclasses.replace(facts, ipv4=()), mud, ())  # lease ended
    assert _answers_under(gw, d0.ipv4) == 0
    gw.enforcer.apply_device(facts, mud, ())  # the address again: it must ask again
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)
    gw.fill("cloud-service.example.com", d0, CLOUD4)
    assert h.tcp(d0.ns, CLOUD4, 443)
