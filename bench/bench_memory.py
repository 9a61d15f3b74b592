"""Where the gateway's memory goes: RSS and the top Python allocation sites of an
``Enforcer`` that installed a home of 1, 1,000 and 5,000 devices, as the daemon does.

For each size, in a fresh child process (so one size's heap never inflates the next):
a network namespace, ``Nft.in_namespace`` (the daemon's netlink path), an ``Enforcer``,
the home's policies decided from real corpus MUD files (round-robin over every valid
file, shared ``MudFile`` objects as the daemon's parse cache gives), ``install_home``,
then a fresh Enforcer's ``reconcile`` of the same policies (a restart: one read-back).
Printed per size: RSS after import, after deciding, after the install, after the
reconcile (``VmRSS``; ``VmHWM`` is the peak), after glibc's ``malloc_trim`` (what is
left is live; the difference was freed but held), Python's own heap (tracemalloc's
current/peak, when ``--trace``) and the ``--top`` allocation sites (file:line) of what
is still alive at the end, with the held objects grouped by type (``gc`` walk).

tracemalloc roughly doubles the run time; without ``--trace`` only the RSS columns are
measured. ``--libnftables`` sends every batch and read-back through libnftables instead,
whose context keeps its own cache of the ruleset in C memory (what
``bench_enforce_update.py``'s libnftables rows pay). Run as root:
``.venv/bin/python bench/bench_memory.py [--sizes 1 1000 5000] [--trace] [--top 12]
[--libnftables]``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

KIB = 1024


def rss_kib(field: str = "VmRSS") -> int:
    """The process's ``VmRSS`` (or another /proc/self/status field), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def held_by_type(limit: int) -> list[tuple[str, int]]:
    """The most numerous live object types the collector tracks (a rough census)."""
    counts: Counter[str] = Counter(type(o).__name__ for o in gc.get_objects())
    return counts.most_common(limit)


def measure(n: int, trace: bool, top: int, netlink: bool = True) -> dict[str, Any]:
    """One home size, in this process: the figures as a JSON-able dict."""
    from bench_enforce_update import CTX, corpus, policy

    from mudguard.enforce import Enforcer, Nft
    from mudguard.vhome import _netns

    out: dict[str, Any] = {"devices": n, "rss_import_kib": rss_kib()}
    if trace:
        tracemalloc.start(1)
    files = corpus()
    ns = f"mgh17bm{os.getpid() % 10000}"
    _netns.delete(ns)
    _netns.add(ns)
    try:
        t0 = time.perf_counter()
        policies = [policy(i, files[i % len(files)]) for i in range(n)]
        out["decide_s"] = time.perf_counter() - t0
        out["rss_decided_kib"] = rss_kib()
        enforcer = Enforcer(Nft.in_namespace(ns, netlink=netlink), CTX)
        t0 = time.perf_counter()
        enforcer.install_home(policies)
        out["install_s"] = time.perf_counter() - t0
        gc.collect()
        out["rss_installed_kib"] = rss_kib()
        t0 = time.perf_counter()
        restarted = Enforcer(Nft.in_namespace(ns, netlink=netlink), CTX)
        report = restarted.reconcile(policies)
        out["reconcile_s"] = time.perf_counter() - t0
        assert not report.repaired and not report.reinstalled_table, report
        del enforcer  # the daemon holds one Enforcer: the restarted one
        gc.collect()
        out["rss_reconciled_kib"] = rss_kib()
        out["hwm_kib"] = rss_kib("VmHWM")
        # What the C allocator holds freed but not returned: RSS after malloc_trim.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        out["rss_trimmed_kib"] = rss_kib()
        if trace:
            current, peak = tracemalloc.get_traced_memory()
            out["py_current_kib"], out["py_peak_kib"] = current // KIB, peak // KIB
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            stats = snapshot.statistics("lineno")
            out["top"] = [(f"{s.traceback[0].filename.split('site-packages/')[-1]}"
                           f":{s.traceback[0].lineno}", s.size // KIB, s.count)
                          for s in stats[:top]]
            tracemalloc.stop()
        out["types"] = held_by_type(top)
        out["policies"] = len(policies)  # keep them alive until here, as the daemon does
        return out
    finally:
        _netns.delete(ns)


def main() -> None:
    """Print the tables (each size measured in its own child process)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 1000, 5000])
    parser.add_argument("--trace", action="store_true", help="tracemalloc allocation sites")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--libnftables", action="store_true",
                        help="every batch and read-back through libnftables (its C cache)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.trace, args.top, not args.libnftables)))
        return
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    rows = []
    for n in args.sizes:
        argv = [sys.executable, __file__, "--child", str(n), "--top", str(args.top)]
        argv += ["--trace"] if args.trace else []
        argv += ["--libnftables"] if args.libnftables else []
        done = subprocess.run(argv, check=True,
                              capture_output=True, text=True, timeout=1800)
        rows.append(json.loads(done.stdout.splitlines()[-1]))
    mib = 1024
    path = "libnftables" if args.libnftables else "netlink"
    print(f"RSS of one process holding an Enforcer ({path} path) with N devices installed")
    print(f"{'devices':>8} {'import':>8} {'decided':>8} {'installed':>10} {'reconciled':>11} "
          f"{'peak':>8} {'trimmed':>8} {'per dev':>8} {'install':>8} {'reconcile':>10}"
          + (f" {'py heap':>8} {'py peak':>8}" if args.trace else ""))
    base = rows[0]
    for r in rows:
        per = ((r["rss_reconciled_kib"] - base["rss_reconciled_kib"])
               / max(1, r["devices"] - base["devices"]))
        print(f"{r['devices']:>8} {r['rss_import_kib'] / mib:>7.0f}M "
              f"{r['rss_decided_kib'] / mib:>7.0f}M {r['rss_installed_kib'] / mib:>9.0f}M "
              f"{r['rss_reconciled_kib'] / mib:>10.0f}M {r['hwm_kib'] / mib:>7.0f}M "
              f"{r['rss_trimmed_kib'] / mib:>7.0f}M "
              f"{per:>6.1f}K {r['install_s']:>7.1f}s {r['reconcile_s']:>9.1f}s"
              + (f" {r['py_current_kib'] / mib:>7.0f}M {r['py_peak_kib'] / mib:>7.0f}M"
                 if args.trace else ""))
    for r in rows:
        if "top" in r:
            print(f"\n{r['devices']} devices: top allocation sites still alive "
                  "(KiB, blocks)")
            for site, kib, count in r["top"]:
                print(f"  {kib:>9} KiB {count:>9}  {site}")
        print(f"{r['devices']} devices: most numerous live objects: "
              + ", ".join(f"{name} {count}" for name, count in r["types"]))


if __name__ == "__main__":
    main()
