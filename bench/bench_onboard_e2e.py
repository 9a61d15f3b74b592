"""Benchmark: a device boots and asks for its cloud; how long until it gets there, through
the whole gateway (``mudguard run``) with N devices booting at the same moment.

Every part is real: the virtual home (``mudguard.vhome``), the demo's fake Internet (DNS,
HTTPS manufacturer server with a test CA, cloud servers), ``mudguard run`` (dnsmasq and
its hook, MUD fetch + CMS signature check, decide, compile, one nft batch per device,
the DNS guard's set fills). Each device, in its own namespace: DHCP with option 161 (the
signed bulb's MUD URL), then "resolve its cloud through the gateway, connect" every
20 ms (0.1 s connect timeout) until a connection succeeds.

Per device:
- ``dhcp``: DISCOVER → ACK as the device sees it: the same-run baseline, what a device
  waits for on any network;
- ``lease → cloud``: ACK → first successful connection to its cloud: what mudguard adds
  before a new device works (sighting, fetch, signature, rules, DNS fill);
- ``blocked``: a host the profile does not name, tried once after: must stay blocked.

Run as root: ``.venv/bin/python bench/bench_onboard_e2e.py [--devices N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from mudguard.demo import dhcp, scenario
from mudguard.demo.runner import gateway_config
from mudguard.vhome import VirtualHome

CLOUD, CLOUD_PORT = "v2.broker.lifx.co", 56700


def boot(interface: str, mac: str, url: str) -> tuple[float, float, bool]:
    """Inside a device namespace: DHCP, then reach the cloud; (dhcp s, lease→cloud s, leak)."""
    import dns.message
    import dns.query

    from mudguard.demo.devices import configure
    from mudguard.vhome.probe import tcp_connect

    start = time.monotonic()
    lease = dhcp.obtain(interface, mac, hostname="bulb", mud_url=url, timeout=30.0)
    leased = time.monotonic()
    configure(interface, lease)
    deadline = leased + 60
    while time.monotonic() < deadline:
        try:
            answer = dns.query.udp(dns.message.make_query(CLOUD, "A"), lease.router or "",
                                   timeout=0.2)
            addresses = [r.address for rrset in answer.answer for r in rrset]
        except Exception:  # not answered yet: try again
            addresses = []
        if addresses and tcp_connect(addresses[0], CLOUD_PORT, 0.1):
            reached = time.monotonic()
            leak = tcp_connect(scenario.ELSEWHERE, 443, 0.5)
            return leased - start, reached - leased, leak
        time.sleep(0.02)
    raise RuntimeError("the cloud was never reached")


def _row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (f"{name:<16} {statistics.median(ordered) * 1000:9.1f} {p95 * 1000:9.1f} "
            f"{ordered[-1] * 1000:9.1f}")


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--hook-only", action="store_true",
                        help="leases by dnsmasq's hook only (discovery.dhcp_sniff = false)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    with VirtualHome(prefix="mghb", devices=args.devices) as home, \
            tempfile.TemporaryDirectory(prefix="mghb-") as tmp:
        root = Path(tmp)
        run = scenario.prepare(root, datetime.now(UTC))
        for address in scenario.internet_addresses():
            home.run(home.inet_ns, ["ip", "addr", "replace", f"{address}/32", "dev", "lo"])
        internet = subprocess.Popen(["ip", "netns", "exec", home.inet_ns, sys.executable, "-m",
                                     "mudguard.demo.internet", str(run.internet_config)],
                                    stdout=subprocess.PIPE, text=True)
        assert internet.stdout is not None and internet.stdout.readline().strip() == "ready"
        (root / "state").mkdir()
        config = root / "gateway.toml"
        sniff = "false" if args.hook_only else "true"
        config.write_text(gateway_config(
            lan_interface=home.lan_if, wan_interface=home.wan_if, lan_prefix="192.0.2.0/24",
            gateway="192.0.2.1", state_dir=root / "state", ca_file=run.ca_file)
            .replace("[discovery]\n", f"[discovery]\ndhcp_sniff = {sniff}\n"))
        daemon = subprocess.Popen(["ip", "netns", "exec", home.gw_ns, sys.executable, "-m",
                                   "mudguard", "run", "--config", str(config),
                                   "--log-format", "json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert daemon.stdout is not None
            for line in daemon.stdout:
                if json.loads(line).get("event") == "ready":
                    break
            for node in home.nodes:
                home.run(node.ns, ["ip", "addr", "flush", "dev", node.iface])
                home.run(node.ns, ["ip", "route", "flush", "table", "main"])
            url = scenario.device("bulb").mud_url
            with ThreadPoolExecutor(max_workers=args.devices) as pool:
                results = list(pool.map(
                    lambda n: home.call(n.ns, boot, n.iface, n.mac, url, timeout=90),
                    home.nodes))
        finally:
            daemon.terminate()
            daemon.wait(10)
            internet.terminate()
            internet.wait(10)
    leaks = sum(1 for _, _, leak in results if leak)
    print(f"{args.devices} devices booting together through `mudguard run` "
          f"(same signed MUD URL; the first fetch fills the cache; leases by "
          f"{'the hook only' if args.hook_only else 'the sniffer and the hook'})")
    print(f"{'stage':<16} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    print(_row("dhcp (baseline)", [d for d, _, _ in results]))
    print(_row("lease → cloud", [c for _, c, _ in results]))
    print(f"blocked host reached: {leaks} of {len(results)} devices (must be 0)")
    return 0 if leaks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
