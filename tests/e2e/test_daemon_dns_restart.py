"""The DNS guard's grants outlive a restart of the daemon and a reboot of the gateway
(issue #17; ``daemon/dns_grants.py``), under whichever ruleset ``MUDGUARD_TEST_RULESET``
says (the daemon's default otherwise): two bulbs resolve their cloud's name; the daemon
stops; one bulb is quarantined meanwhile; after the start the other still reaches its
cloud without asking the name again and the quarantined one does not; then the kernel's
tables go (what a reboot does) and a start gives the first bulb its answer back from
the store; its rules then change before it asks again (a grant: under data its answers
are deleted with its old rules) and the guard's restored record gives them back (real
daemon, dnsmasq, nftables, packets in namespaces)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mudguard.demo import scenario
from mudguard.devices.service import DeviceService
from mudguard.store import Store
from tests.e2e.test_daemon import CLOUD, Daemon, _join, _resolve, daemon_home

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]

NAME = "v2.broker.lifx.co"  # the bulb's cloud, a DNS name in its MUD file


@pytest.fixture()
def home(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    with daemon_home(tmp_path, "mgD5dr", devices=2) as found:
        yield found


def _reboot(vhome: Any, base: Path) -> None:
    """What a reboot does to the kernel: every mudguard table gone, then the early-boot
    unit loads the base ruleset the daemon wrote (``nft -j -f base.json``)."""
    listing = str(vhome.run(vhome.gw_ns, ["nft", "list", "tables"]).stdout)
    for line in listing.splitlines():
        family, _sep, name = line.removeprefix("table ").partition(" ")
        if name.startswith("mudguard"):
            vhome.run(vhome.gw_ns, ["nft", "delete", "table", family, name])
    vhome.run(vhome.gw_ns, ["nft", "-j", "-f", str(base)])


def test_dns_grants_survive_a_restart_and_a_reboot_but_never_a_quarantine(
        home: tuple[Any, Path]) -> None:
    vhome, config = home
    kept, quarantined = vhome.nodes
    for node in vhome.nodes:
        vhome.run(node.ns, ["ip", "addr", "flush", "dev", node.iface])
        vhome.run(node.ns, ["ip", "route", "flush", "table", "main"])
    log = config.parent / "gateway.log"
    database = config.parent / "state" / "mudguard.db"
    url = scenario.device("bulb").mud_url
    daemon = Daemon(vhome.gw_ns, config, log)
    try:
        daemon.wait_for({"event": "ready"})
        for node in vhome.nodes:
            vhome.call(node.ns, _join, node.iface, node.mac, url)
            daemon.wait_for({"event": "device", "mac": node.mac, "state": "profiled"})
            assert not vhome.tcp(node.ns, *CLOUD)  # closed until the guard answers
            assert vhome.call(node.ns, _resolve, NAME) == [CLOUD[0]]
            assert vhome.tcp(node.ns, *CLOUD)
        assert daemon.stop() == 0

        # Down: the second bulb is quarantined (as the CLI does on the database when no
        # daemon runs); the kernel still holds its answer, granted under its old rules.
        assert vhome.tcp(quarantined.ns, *CLOUD)
        with Store(database) as store:
            assert len(store.list_dns_grants(0)) == 2
            DeviceService(store=store).quarantine(quarantined.mac, "test: quarantined")

        # A restart: nobody asks the name again.
        daemon = Daemon(vhome.gw_ns, config, log)
        restored = daemon.wait_for({"event": "restored"})
        assert restored["dns_grants"] == 1
        daemon.wait_for({"event": "ready"})
        assert vhome.tcp(kept.ns, *CLOUD)
        assert not vhome.tcp(quarantined.ns, *CLOUD)
        assert daemon.stop() == 0

        # A reboot: the kernel's tables are gone, the base is loaded at boot (the LAN
        # closed); the grant comes back from the store.
        _reboot(vhome, config.parent / "state" / "base.json")
        assert not vhome.tcp(kept.ns, *CLOUD)
        daemon = Daemon(vhome.gw_ns, config, log)
        assert daemon.wait_for({"event": "restored"})["dns_grants"] == 1
        daemon.wait_for({"event": "ready"})
        assert vhome.tcp(kept.ns, *CLOUD)
        assert not vhome.tcp(quarantined.ns, *CLOUD)
        assert not vhome.tcp(kept.ns, scenario.ELSEWHERE, 443)  # only what it resolved

        # Its rules change before it asks again (the owner allows one more named host):
        # under data its answers go with its old rules; the guard's restored record
        # gives them back under the new ones.
        granted = subprocess.run(
            [sys.executable, "-m", "mudguard", "device", "grant", kept.mac, "--service",
             "extra.example.com:443", "--db", str(database)],
            capture_output=True, text=True, timeout=60)
        assert granted.returncode == 0 and "not running" not in granted.stderr, granted.stderr
        assert vhome.tcp(kept.ns, *CLOUD)  # the daemon answered once it was applied
    finally:
        daemon.stop()


def test_the_standalone_dns_guard_fills_what_the_configured_ruleset_reads(
        home: tuple[Any, Path]) -> None:
    """``mudguard dns serve --config`` (the daemon stopped, its rules in force): the
    daemon's devices and ruleset (data by default, chains with
    MUDGUARD_TEST_RULESET=chains); its answer opens the bulb's cloud, only on the port
    its MUD file names; the daemon's next start restores that grant."""
    vhome, config = home
    bulb, other = vhome.nodes
    vhome.run(bulb.ns, ["ip", "addr", "flush", "dev", bulb.iface])
    vhome.run(bulb.ns, ["ip", "route", "flush", "table", "main"])
    log = config.parent / "gateway.log"
    daemon = Daemon(vhome.gw_ns, config, log)
    guard: subprocess.Popen[str] | None = None
    try:
        daemon.wait_for({"event": "ready"})
        vhome.call(bulb.ns, _join, bulb.iface, bulb.mac, scenario.device("bulb").mud_url)
        daemon.wait_for({"event": "device", "mac": bulb.mac, "state": "profiled"})
        assert daemon.stop() == 0
        assert not vhome.tcp(bulb.ns, *CLOUD)
        guard = subprocess.Popen(
            ["ip", "netns", "exec", vhome.gw_ns, sys.executable, "-m", "mudguard", "dns",
             "serve", "--config", str(config), "--lifetime", "120"],
            stdout=subprocess.PIPE, stderr=log.open("a"), text=True)
        assert guard.stdout is not None and guard.stdout.readline().strip() == "ready"
        assert vhome.call(bulb.ns, _resolve, NAME) == [CLOUD[0]]
        assert vhome.tcp(bulb.ns, *CLOUD)
        assert not vhome.tcp(bulb.ns, CLOUD[0], 443)  # the answer carries the rule's port
        assert not vhome.tcp(other.ns, *CLOUD)  # never onboarded: nothing
        guard.terminate()
        assert guard.wait(10) == 0
        daemon = Daemon(vhome.gw_ns, config, log)
        assert daemon.wait_for({"event": "restored"})["dns_grants"] == 1
        daemon.wait_for({"event": "ready"})
        assert vhome.tcp(bulb.ns, *CLOUD)
    finally:
        if guard is not None and guard.poll() is None:
            guard.terminate()
            guard.wait(10)
        daemon.stop()
