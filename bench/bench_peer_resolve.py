"""Compile time of one device whose MUD file names other devices (same-manufacturer,
manufacturer, model), in homes of 1, 100 and 1,000 devices: resolving those peers by
scanning the home's devices (what a caller without an index gets) against the
``PeerIndex`` the ``Enforcer`` keeps. The indexed compile must stay flat, except for
what the policy itself grows by: in a bigger home more devices really are of the same
manufacturer or model, and their addresses are in the rule.

Pure (no root): ``.venv/bin/python bench/bench_peer_resolve.py [--repeats 50]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from bench_enforce_update import CTX, NOW, corpus, device, policy

from mudguard.policy import (
    DevicePolicy,
    HomeContext,
    LifecycleState,
    PeerIndex,
    PeerKind,
    compile_device,
    decide,
)


def timed(policy: DevicePolicy, context: HomeContext, repeats: int) -> float:
    """Median milliseconds of compiling ``policy`` in ``context``."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        compile_device(policy, context)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    files = corpus()
    naming = [f for f in files if any(
        r.peer in (PeerKind.SAME_MANUFACTURER, PeerKind.MANUFACTURER, PeerKind.MODEL)
        for r in decide(device(9999, f, LifecycleState.PROFILED), f, (), CTX, now=NOW).rules)]
    homes = {n: [policy(i, files[i % len(files)]).device for i in range(n)]
             for n in (1, 100, 1000)}
    print(f"{len(naming)} corpus files name other devices; median of {args.repeats} compiles")
    print(f"{'file':>28} {'devices':>8} {'scan':>9} {'index':>9} {'index vs 1':>11}")
    for mud in naming:
        me = decide(device(9999, mud, LifecycleState.PROFILED), mud, (), CTX, now=NOW)
        base = 0.0
        for n, devices in homes.items():
            scanned = dataclasses.replace(CTX, devices=tuple(devices))
            indexed = dataclasses.replace(scanned, peers=PeerIndex.of(devices))
            scan = timed(me, scanned, args.repeats)
            index = timed(me, indexed, args.repeats)
            base = base or index
            label = mud.mud_url.split("://", 1)[-1][-28:]
            print(f"{label:>28} {n:>8} {scan:>7.2f}ms "
                  f"{index:>7.2f}ms {index / base:>10.2f}x")


if __name__ == "__main__":
    main()
