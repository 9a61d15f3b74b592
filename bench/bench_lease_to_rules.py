"""Benchmark: a DHCP lease → the device's rules in the kernel, through ``mudguard run``,
by the hook only (dnsmasq starts ``mudguard-dhcp-hook`` per lease) vs the sniffer (the
daemon reads dnsmasq's ACK off the LAN interface; the hook still runs, as second path).

Every part is real: the virtual home, ``mudguard run`` with its dnsmasq, a real DHCP
client (busybox udhcpc) in each device namespace. The probe is independent of the
daemon: ``tcpdump -tt`` on the gateway's LAN bridge stamps each ACK as it leaves
dnsmasq (kernel time), and ``nft monitor`` stamps the first ruleset change naming the
device's MAC (the device's element in the dispatch map: its rules in force). A lease
counts from the ACK to that change. Each lease is a new device (the client's MAC is
changed before each), with no MUD URL (home default, no fetch: discovery alone).
``--devices N`` devices lease at the same moment per round (the hook runs serially).

Run as root: ``.venv/bin/python bench/bench_lease_to_rules.py [--leases 40] [--devices 1]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.test_daemon import Daemon, daemon_home

from mudguard.vhome import run

_STAMP = re.compile(r"^(\d+\.\d+) IP ")
_CHADDR = re.compile(r"Client-Ethernet-Address ([0-9a-f:]{17})")


class Probe:
    """tcpdump (ACK times by client MAC) and nft monitor (first change naming a MAC)."""

    def __init__(self, ns: str, interface: str) -> None:
        self.acks: dict[str, float] = {}
        self.rules: dict[str, float] = {}
        self.pending: set[str] = set()
        self.log: list[str] = []
        self._dump = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpdump", "--immediate-mode", "-tt", "-n", "-l", "-v",
             "-i", interface, "udp src port 67"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._monitor = subprocess.Popen(
            ["ip", "netns", "exec", ns, "stdbuf", "-oL", "nft", "monitor"],
            stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_dump, daemon=True).start()
        threading.Thread(target=self._read_monitor, daemon=True).start()
        time.sleep(1.0)  # both attached before the first lease

    def _read_dump(self) -> None:
        assert self._dump.stdout is not None
        stamp, mac, is_ack = 0.0, "", False
        for line in self._dump.stdout:
            self.log.append(line)
            header = _STAMP.match(line)
            if header:
                if is_ack and mac:
                    self.acks.setdefault(mac, stamp)
                stamp, mac, is_ack = float(header.group(1)), "", False
            elif found := _CHADDR.search(line):
                mac = found.group(1)
            elif "DHCP-Message" in line and line.rstrip().endswith("ACK"):
                is_ack = True
                if mac:
                    self.acks.setdefault(mac, stamp)

    def _read_monitor(self) -> None:
        assert self._monitor.stdout is not None
        for line in self._monitor.stdout:
            now = time.time()
            for mac in [m for m in self.pending if m in line]:
                self.rules[mac] = now
                self.pending.discard(mac)

    def stop(self) -> None:
        for proc in (self._dump, self._monitor):
            proc.terminate()
            proc.wait(5)


def lease(node: Any, mac: str) -> None:
    """The device takes a new MAC and asks for a lease with busybox udhcpc."""
    run(["ip", "link", "set", node.iface, "address", mac], ns=node.ns)
    run(["ip", "addr", "flush", "dev", node.iface], ns=node.ns)
    out = run(["busybox", "udhcpc", "-i", node.iface, "-f", "-q", "-n", "-t", "5", "-T", "1",
               "-s", "/bin/true"], ns=node.ns, timeout=20).stderr
    if "lease of" not in out:
        raise RuntimeError(f"no lease for {mac}: {out}")


def measure(mode: str, leases: int, devices: int) -> list[float]:
    """Lease → rules (s) for ``leases`` new devices with the given discovery path."""
    sniff = "true" if mode == "sniffer" else "false"
    with tempfile.TemporaryDirectory(prefix="mglr-") as tmp, \
            daemon_home(Path(tmp), f"mglr{mode[0]}", devices=devices) as (home, config):
        config.write_text(config.read_text().replace(
            "[discovery]\n", f"[discovery]\ndhcp_sniff = {sniff}\n", 1))
        daemon = Daemon(home.gw_ns, config, Path(tmp) / "gateway.log")
        probe = Probe(home.gw_ns, home.lan_if)
        try:
            daemon.wait_for({"event": "ready"})
            tag = 0x51 if mode == "sniffer" else 0x48
            results: list[float] = []
            for first in range(0, leases, devices):
                macs = [f"02:bb:{tag:02x}:00:{(first + i) >> 8:02x}:{(first + i) & 0xFF:02x}"
                        for i in range(min(devices, leases - first))]
                probe.pending.update(macs)
                with ThreadPoolExecutor(max_workers=len(macs)) as pool:
                    list(pool.map(lease, home.nodes, macs))
                deadline = time.monotonic() + 10
                while (probe.pending or not set(macs) <= probe.acks.keys()) \
                        and time.monotonic() < deadline:
                    time.sleep(0.01)
                for mac in macs:
                    if mac not in probe.rules or mac not in probe.acks:
                        raise RuntimeError(f"{mode}: {mac} never reached the kernel "
                                           f"(ack seen: {mac in probe.acks})"
                                           + "".join(probe.log[-40:]))
                    results.append(probe.rules[mac] - probe.acks[mac])
                time.sleep(0.3)  # the hook's queue drains between rounds
            return results
        finally:
            probe.stop()
            daemon.stop()


def _row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (f"{name:<36} {len(ordered):>6} {statistics.median(ordered) * 1000:8.1f} "
            f"{p99 * 1000:8.1f} {ordered[-1] * 1000:8.1f}")


def main() -> int:
    """Measure both paths and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leases", type=int, default=40)
    parser.add_argument("--devices", type=int, default=1,
                        help="devices leasing at the same moment per round")
    parser.add_argument("--samples", action="store_true", help="print every lease's time")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    hook = measure("hook", args.leases, args.devices)
    sniffer = measure("sniffer", args.leases, args.devices)
    print(f"DHCP ACK leaving dnsmasq → device's element in the kernel (tcpdump → nft "
          f"monitor), `mudguard run`, {args.devices} device(s) leasing together")
    print(f"{'path':<36} {'leases':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(_row("hook only (process per lease)", hook))
    print(_row("sniffer (+ hook as second path)", sniffer))
    if args.samples:
        for name, values in (("hook", hook), ("sniffer", sniffer)):
            print(f"{name} (ms, in lease order):",
                  " ".join(f"{v * 1000:.0f}" for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
