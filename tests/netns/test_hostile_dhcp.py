"""A LAN device takes another device's MAC and sends DHCP option 161 (real busybox
udhcpc, real dnsmasq running the real ``mudguard-dhcp-hook``, the real listener, intake
and device service): the victim, settled on the home default for an hour, must not
take the attacker's MUD URL; it waits for the owner as a URL change."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from mudguard.devices import EventKind, MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.dhcp import SOCKET_ENV, DhcpHookListener
from mudguard.discovery.sighting import Intake
from mudguard.policy import LifecycleState
from mudguard.store import Store
from mudguard.vhome import VirtualHome, run
from tests.netns.test_dhcp_onboard import HOOK, DhcpHome, udhcpc

pytestmark = pytest.mark.root

EVIL = "https://mud.example.com/local-networks-everything.json"


@pytest.fixture
def dhcp_home(tmp_path: Path) -> Iterator[DhcpHome]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    for binary in ("dnsmasq", "busybox"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (scripts/setup.sh installs it)")
    if not HOOK.is_file():
        pytest.skip(f"{HOOK} missing: run pip install -e . to create the entry point")
    with VirtualHome(prefix=f"mgr{os.getpid() % 10000}", devices=2) as home, \
            Store(tmp_path / "m.db") as store, \
            DhcpHookListener(tmp_path / "dhcp.sock") as listener:
        for node in home.nodes:
            home.run(node.ns, ["ip", "-4", "addr", "flush", "dev", node.iface])
        log = tmp_path / "dnsmasq.log"
        argv = ["ip", "netns", "exec", home.gw_ns, shutil.which("dnsmasq") or "dnsmasq",
                "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                f"--interface={home.lan_if}", "--bind-interfaces",
                "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
                f"--dhcp-script={HOOK}", f"--dhcp-leasefile={tmp_path / 'leases'}",
                f"--pid-file={tmp_path / 'dnsmasq.pid'}", f"--log-facility={log}",
                "--log-dhcp", "--no-ping", "--user=root", "--group=root"]
        proc = subprocess.Popen(argv, env={**os.environ, SOCKET_ENV: str(listener.path)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield DhcpHome(home, listener, Intake(DeviceService(store=store)), proc, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


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
