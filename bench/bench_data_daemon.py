"""The daemon's enforcer on policy as data (``DataGatewayEnforcer``, ``[gateway] ruleset =
"data"``) against the bare ``DataEnforcer`` it wraps, in the same run: one device's
update (decide + element changes; the daemon's path also rebuilds the home context its
peers resolve from, checks its DNS templates and re-indexes addresses and log marks),
and a restart's ``close_lan`` + ``reconcile`` of an intact home (compile caches emptied
first, as in a new process).

Run: ``sudo .venv/bin/python bench/bench_data_daemon.py [--sizes 1 1000 5000]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import statistics
import sys
import time

from bench_enforce_update import CTX, NOW, corpus, device

from mudguard.enforce import Nft
from mudguard.enforce.data import DataEnforcer
from mudguard.enforce.data_gateway import DataGatewayEnforcer
from mudguard.mud import MudFile
from mudguard.policy import LifecycleState, _data, decide
from mudguard.vhome import _netns


def measure(n: int, files: list[MudFile], updates: int, *, daemon: bool) -> dict[str, float]:
    """Install ``n`` devices, time ``updates`` updates of device 0, then a restart."""
    ns = f"mgdD{os.getpid() % 10000}"
    _netns.delete(ns)
    _netns.add(ns)
    try:
        nft = Nft.in_namespace(ns)
        facts = [device(i, files[i % len(files)], LifecycleState.PROFILED) for i in range(n)]

        home = dataclasses.replace(CTX, devices=tuple(facts))
        policies = [decide(f, files[i % len(files)], (), home, now=NOW)
                    for i, f in enumerate(facts)]
        enforcer: DataGatewayEnforcer | DataEnforcer = (
            DataGatewayEnforcer(nft, CTX, clock=lambda: NOW) if daemon
            else DataEnforcer(nft, CTX))
        enforcer.install_home(policies)
        mud0 = files[0]
        times: list[float] = []
        for k in range(updates):
            state = LifecycleState.DEFAULT if k % 2 == 0 else LifecycleState.PROFILED
            f0 = device(0, mud0, state)
            t0 = time.perf_counter()
            if isinstance(enforcer, DataGatewayEnforcer):
                enforcer.apply_device(f0, mud0, ())
            else:
                enforcer.apply_policy(decide(f0, mud0, (), home, now=NOW))
            times.append((time.perf_counter() - t0) * 1000)
            nft.settle()
        final = device(0, mud0, LifecycleState.DEFAULT if updates % 2 else
                       LifecycleState.PROFILED)
        policies[0] = decide(final, mud0, (), home, now=NOW)
        _data._BUNDLES.clear()  # a restart starts with no compiled device in memory
        _data._ROWS.clear()
        gc.collect()
        t1 = time.perf_counter()
        if daemon:
            again = DataGatewayEnforcer(Nft.in_namespace(ns), CTX, clock=lambda: NOW)
            assert again.close_lan() is False
            again.reconcile(policies)
        else:
            DataEnforcer(Nft.in_namespace(ns), CTX).reconcile(policies)
        restart = time.perf_counter() - t1
        return {"update_ms": statistics.median(times),
                "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))], "restart_s": restart}
    finally:
        _netns.delete(ns)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 1000])
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    files = corpus()
    print(f"{'devices':>8} {'enforcer':>20} {'update p50':>11} {'p90':>9} {'restart':>9} "
          f"{'vs bare':>8}")
    for n in args.sizes:
        bare = 0.0
        for daemon in (False, True):
            gc.collect()
            r = measure(n, files, args.updates, daemon=daemon)
            bare = bare or r["update_ms"]
            name = "DataGatewayEnforcer" if daemon else "DataEnforcer"
            print(f"{n:>8} {name:>20} {r['update_ms']:>9.2f}ms {r['p90_ms']:>7.2f}ms "
                  f"{r['restart_s']:>8.2f}s {r['update_ms'] / bare:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
