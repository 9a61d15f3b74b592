"""The DNS guard's grants across a restart (``daemon/dns_grants.py``, policy as data):
what keeping them costs and what a start pays to restore them, against the start's own
``close_lan`` + ``reconcile`` of the same home in the same run.

N corpus devices with DNS names (PROFILED), G grants each (names of its policy, answers
from the documentation ranges). Timed: the journal writing every grant (one
transaction); a start after a process restart (the kernel holds the elements: read back,
re-added) and after a reboot (the kernel holds none: all added), each ``list`` +
``DnsGuard.restore_grants`` + ``replace_dns_answers`` + the store rewritten.

Run: ``sudo .venv/bin/python bench/bench_dns_restore.py [--sizes 50 1000] [--grants 8]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_enforce_update import CTX, NOW, corpus, device

from mudguard.daemon.dns_grants import GrantJournal
from mudguard.devices._model import DnsGrant
from mudguard.dns.core import AddSetElements, DnsGuard, GuardConfig
from mudguard.enforce import Nft
from mudguard.enforce.data_gateway import DataGatewayEnforcer
from mudguard.policy import LifecycleState, decide
from mudguard.store import Device, Store
from mudguard.vhome import _netns

REMOTE4 = ipaddress.ip_network("198.51.100.0/24")
REMOTE6 = ipaddress.ip_network("2001:db8:ff::/64")


class Target:
    """``GuardedEnforcer.restore_dns`` for the data design (what the daemon calls)."""

    def __init__(self, enforcer: DataGatewayEnforcer) -> None:
        self.enforcer = enforcer
        self.counts = (0, 0)

    def restore_dns(self, commands: list[AddSetElements]) -> None:
        self.counts = self.enforcer.replace_dns_answers(commands)


def measure(n: int, per_device: int) -> dict[str, float]:
    """One home of ``n`` devices, ``per_device`` grants each: the timings in ms."""
    files = [m for m in corpus() if decide(device(0, m, LifecycleState.PROFILED), m, (), CTX,
                                           now=NOW).dns_names()]
    ns = f"mgD5b{os.getpid() % 1000}"
    _netns.delete(ns)
    _netns.add(ns)
    try:
        nft = Nft.in_namespace(ns)
        facts = [device(i, files[i % len(files)], LifecycleState.PROFILED) for i in range(n)]
        home = dataclasses.replace(CTX, devices=tuple(facts))
        policies = [decide(f, files[i % len(files)], (), home, now=NOW)
                    for i, f in enumerate(facts)]
        enforcer = DataGatewayEnforcer(nft, CTX, clock=lambda: NOW)
        enforcer.install_home(policies)
        t0 = time.perf_counter()
        enforcer.close_lan()
        enforcer.reconcile(policies)
        start_ms = (time.perf_counter() - t0) * 1000

        guard = DnsGuard(GuardConfig(lan_prefixes=CTX.lan_prefixes,
                                     gateway_addresses=CTX.gateway_addresses))
        for policy in policies:
            guard.apply_policy(policy)
        wall = time.time()
        grants: list[DnsGrant] = []
        for i, policy in enumerate(policies):
            names = sorted(policy.dns_names())
            mine = policy.device.ipv4[0] if policy.device.ipv4 else policy.device.ipv6[0]
            pool = REMOTE4 if ":" not in mine else REMOTE6
            for k in range(per_device):
                remote = str(pool[1 + (i * per_device + k) % 250])
                grants.append(DnsGrant(policy.device.mac, mine, names[k % len(names)], remote,
                                       wall + 3000, 3000))
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "db") as store:
            for p in policies:
                store.save_device(Device(mac=p.device.mac, state=LifecycleState.PROFILED))
            t0 = time.perf_counter()
            store.save_dns_grants({g.address for g in grants}, grants)
            write_ms = (time.perf_counter() - t0) * 1000
            target = Target(enforcer)
            t0 = time.perf_counter()
            restored = GrantJournal(store, guard).restore(target)
            empty_ms = (time.perf_counter() - t0) * 1000  # the kernel held none
            added = target.counts[0]
            t0 = time.perf_counter()
            GrantJournal(store, guard).restore(target)
            held_ms = (time.perf_counter() - t0) * 1000  # the kernel holds them all
        return {"devices": n, "grants": len(grants), "restored": restored, "elements": added,
                "write": write_ms, "reboot": empty_ms, "restart": held_ms, "start": start_ms}
    finally:
        _netns.delete(ns)


def main() -> None:
    """Print one row per home size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 1000])
    parser.add_argument("--grants", type=int, default=8, help="grants per device")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (a network namespace, nftables)")
    print("| devices | grants | restored | elements | journal write | restore, kernel "
          "empty (reboot) | restore, kernel holding them (restart) | start without grants "
          "(close_lan + reconcile) | restore / start |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        r = measure(n, args.grants)
        print(f"| {r['devices']:,} | {r['grants']:,} | {r['restored']:,} | {r['elements']:,} "
              f"| {r['write']:.1f} ms | {r['reboot']:.1f} ms | {r['restart']:.1f} ms "
              f"| {r['start']:.1f} ms | {r['reboot'] / r['start']:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
