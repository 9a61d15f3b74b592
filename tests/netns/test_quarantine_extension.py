"""Quarantine with exceptions (draft-richardson-shg-mud-quarantined-access) proved with
real packets: a quarantined device whose MUD file names the ACEs that stay enabled
reaches exactly those (its firmware server, outside its maker's domain) and nothing else
(not even its maker's own cloud, which the older heuristic would keep); the owner's
per-device exception opens one more ACE of the file."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudguard.mud import MudFile, parse_mud
from mudguard.policy import LifecycleState
from tests.netns.test_enforce import CLOUD4, MFG4, MFG6, OTHER4, OTHER6, Gateway, _gateway

pytestmark = pytest.mark.root

EXAMPLE = Path(__file__).parents[1] / "data" / "mud-extensions" / "quarantine-enabled-aces.json"
FIRMWARE = "firmware.cdn.example.net"  # named by the enabled ACE update0-frdev
CLOUD = "cloud.thermostat.example.com"  # the maker's own domain
NTP = "pool.ntp.org"


@pytest.fixture
def gw() -> Iterator[Gateway]:
    yield from _gateway(f"mgqx{os.getpid() % 1000}", 1)


def _thermostat() -> MudFile:
    result = parse_mud(EXAMPLE.read_bytes())
    assert result.mud is not None and result.mud.quarantine_ace_names == ("update0-frdev",)
    return result.mud


def test_quarantine_keeps_exactly_the_aces_the_mud_file_enables(gw: Gateway) -> None:
    h, d0 = gw.home, gw.d[0]
    mud = _thermostat()
    gw.apply(d0, mud)
    gw.fill(FIRMWARE, d0, MFG4, MFG6)
    gw.fill(CLOUD, d0, CLOUD4)
    gw.fill(NTP, d0, OTHER4)
    assert h.tcp(d0.ns, MFG4, 443) and h.tcp(d0.ns, CLOUD4, 443) and h.udp(d0.ns, OTHER4, 123)

    gw.apply(d0, mud, LifecycleState.QUARANTINED)
    assert h.tcp(d0.ns, MFG4, 443) and h.tcp(d0.ns, MFG6, 443)  # the firmware server
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)  # the maker's cloud: not enabled
    assert not h.udp(d0.ns, OTHER4, 123, 0.5)  # NTP: not enabled
    assert not h.tcp(d0.ns, MFG4, 80, 0.5)  # the firmware server, another port
    assert not h.tcp(d0.ns, OTHER6, 443, 0.5)
    policy = gw.enforcer.policy(d0.mac)
    assert policy is not None and policy.dns_names() == {FIRMWARE}

    # The owner keeps NTP open for this device too (its clock matters for TLS).
    facts = dataclasses.replace(gw.facts(d0, mud, LifecycleState.QUARANTINED),
                                quarantine_exceptions=("ntp0-frdev",))
    gw.apply_facts(facts, mud)
    gw.fill(NTP, d0, OTHER4)
    assert h.udp(d0.ns, OTHER4, 123) and h.tcp(d0.ns, MFG4, 443)
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)
