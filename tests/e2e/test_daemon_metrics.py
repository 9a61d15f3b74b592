"""``mudguard run`` with ``[metrics]``: the real daemon in a virtual home is scraped on the
gateway's loopback and its answer read back with prometheus-client's parser: devices by
state, rules installed, kernel update latency, DNS fills, drops by device (real dnsmasq,
nftables, NFLOG, DNS guard)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mudguard.demo import scenario
from tests.e2e.test_daemon import CLOUD, DAEMON_RULESET, Daemon, _join, _resolve, daemon_home

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]

PORT = 9469


def _scrape(port: int) -> str:
    """Inside the gateway namespace: GET /metrics on loopback."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_daemon_serves_metrics_a_prometheus_parser_reads(tmp_path: Path) -> None:
    extra = f'\n[metrics]\nlisten = "127.0.0.1:{PORT}"\n'
    with daemon_home(tmp_path, "mgmx", devices=1, extra=extra) as (vhome, config):
        bulb = vhome.nodes[0]
        vhome.run(bulb.ns, ["ip", "addr", "flush", "dev", bulb.iface])
        vhome.run(bulb.ns, ["ip", "route", "flush", "table", "main"])
        daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
        try:
            daemon.wait_for({"event": "ready"})
            vhome.call(bulb.ns, _join, bulb.iface, bulb.mac, scenario.device("bulb").mud_url)
            daemon.wait_for({"event": "device", "mac": bulb.mac, "state": "profiled"})
            assert vhome.call(bulb.ns, _resolve, "v2.broker.lifx.co") == [CLOUD[0]]
            assert not vhome.tcp(bulb.ns, scenario.ELSEWHERE, 443)  # dropped, NFLOG
            drops = ("mudguard_dropped_packets_total", (("device", bulb.mac),))
            deadline = time.monotonic() + 10
            got: dict[Any, float] = {}
            while time.monotonic() < deadline and not got.get(drops):
                got = _samples(vhome.call(vhome.gw_ns, _scrape, PORT))
                time.sleep(0.2)
        finally:
            daemon.stop()
    assert got[drops] >= 1
    assert got[("mudguard_devices", (("state", "profiled"),))] == 1
    assert got[("mudguard_devices_enforced", ())] == 1
    assert got[("mudguard_rules_installed", ())] > 0
    assert got[("mudguard_dns_sets_installed", ())] >= 1
    if DAEMON_RULESET == "data":  # the fixed ruleset and the bulb's (and profile's) elements
        assert got[("mudguard_elements_installed", ())] >= 5
    assert got[("mudguard_kernel_update_seconds_count", ())] >= 1  # the home, the bulb
    assert got[("mudguard_dns_queries_total", ())] >= 1
    assert got[("mudguard_dns_set_fills_total", ())] >= 1
    assert got[("mudguard_dns_set_elements_inserted_total", ())] >= 1
    assert got[("mudguard_dns_set_fill_seconds_count", ())] >= 1
    print(f"\nscraped: kernel updates {got[('mudguard_kernel_update_seconds_count', ())]:.0f} "
          f"in {got[('mudguard_kernel_update_seconds_sum', ())] * 1000:.1f} ms, "
          f"rules {got[('mudguard_rules_installed', ())]:.0f}, drops {got[drops]:.0f}")
