"""A LAN device takes another device's MAC and sends DHCP option 161 (real busybox
udhcpc, real dnsmasq running the real ``mudguard-dhcp-hook``, the real listener, intake
and device service): the victim, settled on the home default for an hour, must not
take the attacker's MUD URL; it waits for the owner as a URL change."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from mudguard.devices import EventKind, MudSource
from mudguard.policy import LifecycleState
from mudguard.vhome import run
from tests.netns.test_dhcp_onboard import DhcpHome, dnsmasq_home, udhcpc

pytestmark = pytest.mark.root

EVIL = "https://mud.example.com/local-networks-everything.json"


@pytest.fixture
def dhcp_home(tmp_path: Path) -> Iterator[DhcpHome]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    with dnsmasq_home(f"mgr{os.getpid() % 10000}", tmp_path) as home:
        yield home


def test_option_161_under_a_borrowed_mac_waits_for_the_owner(dhcp_home: DhcpHome) -> None:
    home, service = dhcp_home.home, dhcp_home.intake.service
    victim, attacker = home.nodes
    printer = service.observe(mac=victim.mac, ip="192.0.2.20", hostname="printer")
    assert printer.state is LifecycleState.DEFAULT and printer.mud_url is None
    service.store.save_device(replace(printer, first_seen=printer.first_seen
                                      - timedelta(hours=1)))  # on the home default for an hour
    run(["ip", "link", "set", attacker.iface, "address", victim.mac], ns=attacker.ns)
    out = udhcpc(home, 1, "-x", f'0xa1:"{EVIL}"')
    assert "lease of 192.0.2." in out
    sighting = dhcp_home.listener.receive(timeout=10)
    assert sighting is not None and sighting.mac == victim.mac and sighting.mud_url == EVIL
    dhcp_home.intake.on_sighting(sighting)
    printer = service.device(victim.mac)
    assert printer.mud_url is None and printer.state is LifecycleState.DEFAULT
    assert printer.pending_mud_url == EVIL and printer.pending_source is MudSource.DHCP4
    assert EventKind.URL_CHANGED in [e.kind for e in service.store.list_events(victim.mac)]
