"""Figure (a): compile + apply time of ONE device update with 1, 100 and 1,000 devices installed.

Real corpus MUD profiles (round-robin over every valid file) are installed for N devices
in the ``inet mudguard`` table of a fresh network namespace; then one device is updated
repeatedly (its policy alternates between its profile and the home default, so the
chain really changes). Then a fresh Enforcer reconciles the same policies against the
kernel (a daemon restart: one read-back, nothing to repair).

After each update the old policy's tracked connections are forgotten behind it (a
worker thread; the kernel walks its whole conntrack table): the bench waits for that
outside the timed update and shows it as "then forget".

Each home size runs twice in the same run: ``libnftables`` sends every batch through
libnftables (which fetches the table's chains and sets first), ``netlink`` is what the
gateway does (device batches translated by ``enforce/bytecode.py`` and sent over
nfnetlink). The per-update time must stay flat as the home grows: "vs 1" compares
against the 1-device home of the same mode, "vs libnft" against libnftables at the
same size.

``--design`` (#17): ``chains`` is the design above (per-device chains), ``data`` the
fixed ruleset whose devices are set elements (``policy/_data.py``,
``enforce/data.py``): cold install is the fixed ruleset then every device's elements
in one transaction, an update is the device's element changes, reconcile reads every
element set back once. ``both`` (default) prints both designs' rows, the chains
design on its netlink path (``--libnftables`` adds its libnftables path too). The
data design forgets connections the same way. Its update
alternates between two profiles that stay installed (a map change); the line below
each data row times the worst case, an update to a profile no device has yet.

Run as root: ``.venv/bin/python bench/bench_enforce_update.py [--updates 30]
[--sizes 1 1000 5000] [--design both]``.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import statistics
import sys
import time
from datetime import UTC, datetime

from bench_data import SMALL_CORPUS

from mudguard.enforce import Enforcer, Nft
from mudguard.enforce.data import DataEnforcer
from mudguard.mud import MudFile, parse_mud
from mudguard.policy import (
    DeviceFacts,
    DevicePolicy,
    Grant,
    GrantKind,
    HomeContext,
    LifecycleState,
    compile_device,
    decide,
)
from mudguard.vhome import _netns

CORPUS = SMALL_CORPUS / "mud"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
CTX = HomeContext(lan_prefixes=("192.0.2.0/24", "2001:db8:1::/64"),
                  gateway_addresses=("192.0.2.1", "2001:db8:1::1"), lan_interface="mgebr")
LAN6 = ipaddress.ip_network("2001:db8:1::/64")


def corpus() -> list[MudFile]:
    """Every valid corpus MUD file."""
    files = []
    for path in sorted(CORPUS.rglob("*.json")):
        result = parse_mud(path.read_bytes())
        if result.ok and result.mud is not None:
            files.append(result.mud)
    return files


def device(i: int, mud: MudFile, state: LifecycleState) -> DeviceFacts:
    """Device ``i``: IPv4 for the first 240 (the LAN /24 is small), IPv6 for all."""
    ipv4 = (f"192.0.2.{10 + i}",) if i < 240 else ()
    return DeviceFacts(mac=f"02:6d:67:01:{i >> 8:02x}:{i & 0xFF:02x}", ipv4=ipv4,
                       ipv6=(str(LAN6[0x1000 + i]),), mud_url=mud.mud_url, state=state)


def policy(i: int, mud: MudFile, state: LifecycleState = LifecycleState.PROFILED,
           ) -> DevicePolicy:
    """The decided policy of device ``i``."""
    return decide(device(i, mud, state), mud, (), CTX, now=NOW)


def measure(n: int, files: list[MudFile], updates: int, *, netlink: bool) -> dict[str, float]:
    """Install ``n`` devices, then time ``updates`` updates of device 0."""
    ns = f"mgeB{os.getpid() % 10000}"
    _netns.delete(ns)
    _netns.add(ns)
    try:
        nft = Nft.in_namespace(ns, netlink=netlink)
        enforcer = Enforcer(nft, CTX, clock=lambda: NOW)
        policies = [policy(i, files[i % len(files)]) for i in range(n)]
        rules = sum(len(compile_device(p, CTX)) for p in policies[:50]) / min(n, 50)
        t0 = time.perf_counter()
        enforcer.install_home(policies)
        cold = time.perf_counter() - t0
        mud0 = files[0]
        compile_ms: list[float] = []
        apply_ms: list[float] = []
        forget_ms: list[float] = []
        for k in range(updates):
            state = LifecycleState.DEFAULT if k % 2 == 0 else LifecycleState.PROFILED
            t1 = time.perf_counter()
            p0 = policy(0, mud0, state)
            compile_device(p0, CTX)  # compile alone, for the split
            t2 = time.perf_counter()
            enforcer.apply_policy(p0)  # compile + apply, one batch
            t3 = time.perf_counter()
            nft.settle()  # the old policy's connections, forgotten behind the update
            compile_ms.append((t2 - t1) * 1000)
            apply_ms.append((t3 - t2) * 1000)
            forget_ms.append((time.perf_counter() - t3) * 1000)
        policies[0] = policy(0, mud0, LifecycleState.DEFAULT if updates % 2 else
                             LifecycleState.PROFILED)
        t4 = time.perf_counter()
        report = Enforcer(Nft.in_namespace(ns, netlink=netlink), CTX,
                          clock=lambda: NOW).reconcile(policies)
        reconcile = time.perf_counter() - t4
        assert not report.repaired and not report.reinstalled_table, report
        assert nft.netlink_batches >= (updates if netlink else 0)
        return {"cold_s": cold, "reconcile_s": reconcile,
                "compile_ms": statistics.median(compile_ms),
                "update_ms": statistics.median(apply_ms),
                "update_p90_ms": sorted(apply_ms)[int(0.9 * (len(apply_ms) - 1))],
                "forget_ms": statistics.median(forget_ms),
                "cmds_per_device": rules}
    finally:
        _netns.delete(ns)


def measure_data(n: int, files: list[MudFile], updates: int) -> dict[str, float]:
    """The same figures for policy as data."""
    ns = f"mgeD{os.getpid() % 10000}"
    _netns.delete(ns)
    _netns.add(ns)
    try:
        nft = Nft.in_namespace(ns)
        enforcer = DataEnforcer(nft, CTX)
        policies = [policy(i, files[i % len(files)]) for i in range(n)]
        t0 = time.perf_counter()
        enforcer.install_home(policies)
        cold = time.perf_counter() - t0
        elements = sum(len(v) for r in enforcer.installed.values()
                       for v in r.elements.values()) / max(n, 1)
        mud0 = files[0]
        apply_ms: list[float] = []
        forget_ms: list[float] = []
        for k in range(updates):
            state = LifecycleState.DEFAULT if k % 2 == 0 else LifecycleState.PROFILED
            p0 = policy(0, mud0, state)
            t1 = time.perf_counter()
            enforcer.apply_policy(p0)  # compile + apply, one transaction
            t2 = time.perf_counter()
            nft.settle()  # the old policy's connections, forgotten behind the update
            apply_ms.append((t2 - t1) * 1000)
            forget_ms.append((time.perf_counter() - t2) * 1000)
        policies[0] = policy(0, mud0, LifecycleState.DEFAULT if updates % 2 else
                             LifecycleState.PROFILED)
        enforcer.apply_policy(policies[0])
        t4 = time.perf_counter()
        report = DataEnforcer(Nft.in_namespace(ns), CTX).reconcile(policies)
        reconcile = time.perf_counter() - t4
        idle = sum(len(v) for pid in enforcer._idle
                   for v in enforcer._profiles[pid].profile_elements.values())
        # Nothing missing; the only strays are the idle profile's (a restart drops them).
        assert report == {"missing": 0, "stray": idle, "reinstalled": 0}, (report, idle)
        # The worst case: each update needs a profile no device has (a new service
        # grant each time): its interval elements go in, the oldest idle ones out.
        new_ms: list[float] = []
        for k in range(updates):
            grant = Grant(kind=GrantKind.SERVICE, host="198.51.100.7", protocol=6,
                          port=20000 + k)
            fresh = decide(device(0, mud0, LifecycleState.PROFILED), mud0, (grant,), CTX,
                           now=NOW)
            t5 = time.perf_counter()
            enforcer.apply_policy(fresh)
            new_ms.append((time.perf_counter() - t5) * 1000)
            nft.settle()
        return {"cold_s": cold, "reconcile_s": reconcile, "compile_ms": float("nan"),
                "new_profile_ms": statistics.median(new_ms),
                "update_ms": statistics.median(apply_ms),
                "update_p90_ms": sorted(apply_ms)[int(0.9 * (len(apply_ms) - 1))],
                "forget_ms": statistics.median(forget_ms), "cmds_per_device": elements}
    finally:
        _netns.delete(ns)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 100, 1000])
    parser.add_argument("--design", choices=["chains", "data", "both"], default="both")
    parser.add_argument("--libnftables", action="store_true",
                        help="also the chains design through libnftables (slow at 5,000)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    files = corpus()
    print(f"{len(files)} corpus profiles, {args.updates} updates of one device per home size")
    print("cmds/dev: commands per device (chains) or elements per device (data)")
    print(f"{'devices':>8} {'design':>7} {'path':>12} {'cmds/dev':>9} {'cold install':>13} "
          f"{'reconcile':>10} {'compile p50':>12} {'compile+apply p50':>18} {'p90':>8} "
          f"{'vs 1':>6} {'vs data':>10} {'then forget':>12}")
    runs = []
    if args.design in ("data", "both"):  # first: the chains run leaves a large heap
        runs += [("data", True)]
    if args.design in ("chains", "both"):
        runs += [("chains", False)] if args.libnftables else []
        runs += [("chains", True)]
    base: dict[tuple[str, bool], float] = {}
    for n in args.sizes:
        reference = 0.0
        for design, netlink in runs:
            gc.collect()  # each run starts from the same heap, not the last run's garbage
            if design == "data":
                r = measure_data(n, files, args.updates)
            else:
                r = measure(n, files, args.updates, netlink=netlink)
            base.setdefault((design, netlink), r["update_ms"])
            if design == "data":
                reference = r["update_ms"]
            versus = f"{r['update_ms'] / reference:>9.2f}x" if reference else f"{'':>10}"
            print(f"{n:>8} {design:>7} {'netlink' if netlink else 'libnftables':>12} "
                  f"{r['cmds_per_device']:>9.0f} {r['cold_s']:>12.2f}s "
                  f"{r['reconcile_s']:>9.2f}s "
                  f"{r['compile_ms']:>10.2f}ms {r['update_ms']:>16.2f}ms "
                  f"{r['update_p90_ms']:>6.2f}ms "
                  f"{r['update_ms'] / base[(design, netlink)]:>5.2f}x "
                  f"{versus} {r['forget_ms']:>10.2f}ms", flush=True)
            if "new_profile_ms" in r:
                print(f"{'':>8} {'':>7} {'':>12} one device's update to a profile no device "
                      f"has yet (interval elements): p50 {r['new_profile_ms']:.2f}ms",
                      flush=True)

if __name__ == "__main__":
    main()
