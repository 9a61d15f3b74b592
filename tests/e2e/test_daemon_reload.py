"""``systemctl reload mudguard`` (SIGHUP) on the real daemon in a virtual home: the
configuration file is re-read, a changed setting applies at once (the home default, seen
by a device's real packets), keys that need a restart are named and keep their running
value, every device's rules stay in the kernel throughout, and a broken file is refused
with the running configuration kept (real dnsmasq, nftables, DNS guard)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from mudguard.demo import scenario
from tests.e2e.test_daemon import CLOUD, GADGET_CLOUD, Daemon, _join, _resolve, daemon_home

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]


def _rules(ns: str) -> str:
    """The gateway's ruleset, as nft lists it, without the DNS elements' countdowns."""
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert "table inet mudguard" in out
    return re.sub(r" expires [0-9dhms]+", "", out)


def test_sighup_applies_a_changed_setting_keeps_rules_and_refuses_a_broken_file(
        tmp_path: Path) -> None:
    with daemon_home(tmp_path, "mgh19r", devices=2) as (vhome, config):
        bulb, gadget = vhome.nodes
        for node in (bulb, gadget):
            vhome.run(node.ns, ["ip", "addr", "flush", "dev", node.iface])
            vhome.run(node.ns, ["ip", "route", "flush", "table", "main"])
        original = config.read_text()
        assert 'home_default = "lan"' in original
        daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
        try:
            daemon.wait_for({"event": "ready"})
            vhome.call(bulb.ns, _join, bulb.iface, bulb.mac, scenario.device("bulb").mud_url)
            daemon.wait_for({"event": "device", "mac": bulb.mac, "state": "profiled"})
            vhome.call(gadget.ns, _join, gadget.iface, gadget.mac, None)
            # learning (on by default): on the home default, which the reload must reach
            daemon.wait_for({"event": "device", "mac": gadget.mac, "state": "learning"})
            assert vhome.call(bulb.ns, _resolve, "v2.broker.lifx.co") == [CLOUD[0]]
            assert vhome.tcp(bulb.ns, *CLOUD)
            assert not vhome.tcp(gadget.ns, GADGET_CLOUD, 443)  # home default: LAN only

            # A changed reloadable setting and a key that needs a restart.
            config.write_text(original.replace('home_default = "lan"',
                                               'home_default = "internet"')
                              .replace('lease_time = "1h"', 'lease_time = "2h"'))
            daemon.proc.send_signal(signal.SIGHUP)
            reload = daemon.wait_for({"event": "reload"})
            assert reload["applied"] == ["gateway.home_default"]
            assert reload["needs_restart"] == ["dhcp.lease_time"]
            daemon.wait_for({"event": "home-default", "value": "internet"})
            assert vhome.tcp(gadget.ns, GADGET_CLOUD, 443)  # applied to its packets
            assert vhome.tcp(bulb.ns, *CLOUD)  # the profiled device's rules stayed
            assert not vhome.tcp(bulb.ns, scenario.ELSEWHERE, 443)
            before = _rules(vhome.gw_ns)

            # A broken file: refused, nothing changes, the daemon keeps running.
            config.write_text(original.replace("[gateway]\n", "[gateway]\nno_such_key = 1\n"))
            daemon.proc.send_signal(signal.SIGHUP)
            refused = daemon.wait_for({"event": "reload-refused"})
            assert "no_such_key" in refused["message"]
            assert daemon.proc.poll() is None
            assert _rules(vhome.gw_ns) == before
            assert vhome.tcp(gadget.ns, GADGET_CLOUD, 443)  # still the reloaded setting
            assert vhome.tcp(bulb.ns, *CLOUD)
            assert not vhome.tcp(bulb.ns, scenario.ELSEWHERE, 443)
            assert len([e for e in daemon.events if e["event"] == "reload"]) == 1
        finally:
            assert daemon.stop() == 0
