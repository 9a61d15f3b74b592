"""``mudguard run`` serving DHCPv6 (RFC 8520 §10, option 112) to an IPv6-only device.

The daemon's dnsmasq sends router advertisements (managed flag) and leases IPv6 addresses;
the device runs ISC ``dhclient -6`` (a real DHCPv6 client) told to send its MUD URL in
option 112, has no IPv4 address at all, and gets its MUD file (the printer's, which has
IPv6 ACLs) fetched and enforced on its leased IPv6 address: real IPv6 packets reach the
update server its profile names (looked up through the DNS guard over IPv6) and nothing
else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mudguard.demo import scenario
from mudguard.demo.runner import gateway_config
from tests.e2e.test_daemon import TEST_RULESET, Daemon

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
    pytest.mark.skipif(shutil.which("dhclient") is None,
                       reason="needs ISC dhclient (isc-dhcp-client, scripts/setup.sh)"),
]

CLOUD6 = "2001:db8:ff:1::24"  # update.brother.co.jp's IPv6 address in the fake Internet
ELSEWHERE6 = "2001:db8:ff:1::30"  # no profile names it
GATEWAY6 = "2001:db8:1::1"
RANGE6 = ("2001:db8:1::100", "2001:db8:1::1ff")

# Only sets the leased address: dhclient's own script would rewrite /etc/resolv.conf,
# which inside ``ip netns exec`` is the host's file.
ADDRESS_SCRIPT = """#!/bin/sh
case "$reason" in
  BOUND6|RENEW6|REBIND6)
    [ -n "$new_ip6_address" ] && ip -6 addr replace "$new_ip6_address/128" \\
        dev "$interface" valid_lft "$new_max_life" preferred_lft "$new_preferred_life";;
esac
exit 0
"""


@contextlib.contextmanager
def dual_stack_home(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A virtual home whose fake Internet also answers the printer's cloud over IPv6, and the
    daemon's configuration with an IPv6 LAN prefix and a DHCPv6 range."""
    from mudguard.vhome import VirtualHome

    with VirtualHome(prefix="mgv6", devices=1) as vhome:
        run = scenario.prepare(tmp_path, datetime.now(UTC))
        internet_config = json.loads(run.internet_config.read_text())
        internet_config["records"]["update.brother.co.jp"].append(CLOUD6)
        internet_config["tcp"] += [[CLOUD6, 80], [ELSEWHERE6, 443], [ELSEWHERE6, 80]]
        run.internet_config.write_text(json.dumps(internet_config))
        for address in scenario.internet_addresses():
            vhome.run(vhome.inet_ns, ["ip", "addr", "replace", f"{address}/32", "dev", "lo"])
        vhome.run(vhome.inet_ns, ["ip", "addr", "replace", f"{CLOUD6}/128", "dev", "lo",
                                  "nodad"])
        internet = subprocess.Popen(
            ["ip", "netns", "exec", vhome.inet_ns, sys.executable, "-m",
             "mudguard.demo.internet", str(run.internet_config), "--lifetime", "300"],
            stdout=subprocess.PIPE, text=True)
        try:
            assert internet.stdout is not None and internet.stdout.readline().strip() == "ready"
            (tmp_path / "state").mkdir()
            text = gateway_config(
                lan_interface=vhome.lan_if, wan_interface=vhome.wan_if,
                lan_prefix="192.0.2.0/24", gateway="192.0.2.1", state_dir=tmp_path / "state",
                ca_file=run.ca_file)
            text = (text.replace('lan_prefixes = ["192.0.2.0/24"]',
                                 'lan_prefixes = ["192.0.2.0/24", "2001:db8:1::/64"]')
                    .replace('addresses = ["192.0.2.1"]', f'addresses = ["192.0.2.1", '
                                                         f'"{GATEWAY6}"]')
                    .replace("[dhcp]\n", f'[dhcp]\nrange6 = ["{RANGE6[0]}", "{RANGE6[1]}"]\n'))
            if TEST_RULESET:  # MUDGUARD_TEST_RULESET=data: policy as data
                text = text.replace("[gateway]\n", f'[gateway]\nruleset = "{TEST_RULESET}"\n')
            config = tmp_path / "gateway.toml"
            config.write_text(text)
            yield vhome, config
        finally:
            internet.terminate()
            internet.wait(5)


def _ipv6_only(vhome: Any, node: Any) -> None:
    """Take every IPv4 address and route and the preset IPv6 address off the device; keep
    its link-local address and let it follow router advertisements."""
    vhome.run(node.ns, ["ip", "-4", "addr", "flush", "dev", node.iface])
    vhome.run(node.ns, ["ip", "-4", "route", "flush", "table", "main"])
    vhome.run(node.ns, ["ip", "-6", "addr", "flush", "dev", node.iface, "scope", "global"])
    vhome.run(node.ns, ["ip", "-6", "route", "flush", "default"])
    vhome.run(node.ns, ["sysctl", "-q", "-w", f"net.ipv6.conf.{node.iface}.accept_ra=1"])


def _dhclient6(vhome: Any, node: Any, url: str, work: Path) -> subprocess.Popen[bytes]:
    """ISC dhclient -6 in the device namespace, sending ``url`` as option 112."""
    conf = work / "dhclient6.conf"
    conf.write_text(f'option dhcp6.mud-url code 112 = string;\nsend dhcp6.mud-url "{url}";\n')
    script = work / "dhclient6-script"
    script.write_text(ADDRESS_SCRIPT)
    script.chmod(0o755)
    return subprocess.Popen(
        ["ip", "netns", "exec", node.ns, "dhclient", "-6", "-d", "-v", "-D", "LL",
         "-cf", str(conf), "-lf", str(work / "dhclient6.leases"),
         "-pf", str(work / "dhclient6.pid"), "-sf", str(script), node.iface],
        stdout=subprocess.DEVNULL, stderr=(work / "dhclient6.log").open("w"))


def _resolve6(name: str) -> list[str]:
    import dns.message
    import dns.query

    answer = dns.query.udp(dns.message.make_query(name, "AAAA"), GATEWAY6, timeout=3)
    return [r.address for rrset in answer.answer for r in rrset]


def _global_ipv6(vhome: Any, node: Any) -> list[str]:
    out = vhome.run(node.ns, ["ip", "-j", "-6", "addr", "show", "dev", node.iface,
                              "scope", "global"]).stdout
    return [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])
            if "local" in a]


def _wait(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    return check()


def test_an_ipv6_only_device_announces_its_mud_url_by_dhcpv6_and_is_enforced(
        tmp_path: Path) -> None:
    with dual_stack_home(tmp_path) as (vhome, config):
        printer = vhome.nodes[0]
        _ipv6_only(vhome, printer)
        daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
        client = None
        try:
            daemon.wait_for({"event": "ready"})
            url = scenario.device("printer").mud_url  # its MUD file has IPv6 ACLs
            assert url is not None
            client = _dhclient6(vhome, printer, url, tmp_path)
            leased = _wait(lambda: _global_ipv6(vhome, printer), 30)
            assert len(leased) == 1 and leased[0].startswith("2001:db8:1::1"), leased
            daemon.wait_for({"event": "sighting", "mac": printer.mac, "mud_url": url})
            profiled = daemon.wait_for({"event": "device", "mac": printer.mac,
                                        "state": "profiled"},
                                       check=lambda e: leased[0] in e["ipv6"])
            assert profiled["ipv4"] == [] and profiled["mud_url"] == url
            # The route out came from the daemon's router advertisement, not from the test.
            routes = vhome.run(printer.ns, ["ip", "-6", "route", "show", "default"]).stdout
            assert "proto ra" in routes, routes
            assert vhome.run(printer.ns, ["ip", "-4", "addr", "show", "dev", printer.iface]
                             ).stdout.strip() == ""
            assert vhome.call(printer.ns, _resolve6, "update.brother.co.jp") == [CLOUD6]
            assert vhome.tcp(printer.ns, CLOUD6, 80)
            assert not vhome.tcp(printer.ns, ELSEWHERE6, 443)
            assert not vhome.tcp(printer.ns, ELSEWHERE6, 80)
        finally:
            if client is not None:
                client.terminate()
                client.wait(5)
            daemon.stop()
