"""Boot: how long the LAN takes to close, and how long until every device has its policy.

A fresh network namespace with an empty ruleset stands for a gateway just booted. For
each home size (real corpus MUD profiles, round-robin, as ``bench_enforce_update.py``)
the start-up the daemon does is timed:

- ``close_lan``: the base alone (main and shard tables, no device), one transaction.
  From then on nothing is forwarded from or to a LAN device without its policy. The
  same base loaded the way an early-boot unit does (``nft -j -f`` of ``mudguard base``'s
  file, a process of its own) is timed beside it.
- the home's policies decided (``decide``, as ``Gateway.restore`` does), then
  ``reconcile`` onto that base: the devices go in ``DEVICES_PER_BATCH`` per
  transaction. "first device" is when the first batch was in, "every device" when the
  last was, both from the start.
- for comparison, the old cold install: base and every device in ONE transaction,
  during which the LAN had no firewall at all (its whole duration).

Run as root: ``.venv/bin/python bench/bench_boot.py [--sizes 1000 5000] [--per-batch 100]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mudguard.enforce import Enforcer, Nft
from mudguard.enforce import enforcer as enforcer_module
from mudguard.mud import MudFile, parse_mud
from mudguard.policy import (
    DeviceFacts,
    DevicePolicy,
    HomeContext,
    LifecycleState,
    compile_base,
    compile_home,
    decide,
)
from mudguard.vhome import _netns

ROOT = Path(__file__).resolve().parents[1]
CORPORA = (ROOT / "tests" / "data" / "corpus" / "mud", ROOT.parent / "shared" / "corpus" / "mud")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
CTX = HomeContext(lan_prefixes=("192.0.2.0/24", "2001:db8:1::/64"),
                  gateway_addresses=("192.0.2.1", "2001:db8:1::1"), lan_interface="mgebr")
LAN6 = ipaddress.ip_network("2001:db8:1::/64")


def corpus() -> list[MudFile]:
    """Every valid corpus MUD file."""
    folder = next(c for c in CORPORA if c.is_dir())
    files = []
    for path in sorted(folder.rglob("*.json")):
        result = parse_mud(path.read_bytes())
        if result.ok and result.mud is not None:
            files.append(result.mud)
    return files


def device(i: int, mud: MudFile) -> DeviceFacts:
    """Device ``i``: IPv4 for the first 240 (the LAN /24 is small), IPv6 for all."""
    ipv4 = (f"192.0.2.{10 + i}",) if i < 240 else ()
    return DeviceFacts(mac=f"02:6d:67:01:{i >> 8:02x}:{i & 0xFF:02x}", ipv4=ipv4,
                       ipv6=(str(LAN6[0x1000 + i]),), mud_url=mud.mud_url,
                       state=LifecycleState.PROFILED)


def decide_all(n: int, files: list[MudFile]) -> list[DevicePolicy]:
    """Every device's policy, decided in one home context (as the daemon's restore)."""
    facts = [device(i, files[i % len(files)]) for i in range(n)]
    context = HomeContext(lan_prefixes=CTX.lan_prefixes,
                          gateway_addresses=CTX.gateway_addresses,
                          lan_interface=CTX.lan_interface, devices=tuple(facts))
    return [decide(f, files[i % len(files)], (), context, now=NOW)
            for i, f in enumerate(facts)]


def fresh(ns: str) -> None:
    """An empty namespace (a gateway just booted)."""
    _netns.delete(ns)
    _netns.add(ns)


def boot(ns: str, n: int, files: list[MudFile]) -> dict[str, float]:
    """The daemon's start-up from an empty ruleset: base, decide, reconcile in batches."""
    fresh(ns)
    nft = Nft.in_namespace(ns)
    enforcer = Enforcer(nft, CTX, clock=lambda: NOW)
    batches: list[float] = []
    t0 = time.perf_counter()
    enforcer.close_lan()
    base = time.perf_counter() - t0
    policies = decide_all(n, files)
    decided = time.perf_counter() - t0
    enforcer.reconcile(policies, on_batch=lambda _macs: batches.append(time.perf_counter() - t0))
    done = time.perf_counter() - t0
    assert len(enforcer.installed()) == n
    return {"base_ms": base * 1000, "decided_s": decided, "first_s": batches[0],
            "median_device_s": statistics.median(batches), "done_s": done,
            "batches": len(batches)}


def static_base_ms(ns: str) -> float:
    """``nft -j -f`` of the base file in an empty namespace, as the boot unit loads it."""
    fresh(ns)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump({"nftables": [{"metainfo": {"json_schema_version": 1}},
                                *compile_base(CTX)]}, out)
    try:
        t0 = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "-f", out.name], check=True)
        return (time.perf_counter() - t0) * 1000
    finally:
        os.unlink(out.name)


def one_transaction_s(ns: str, n: int, files: list[MudFile]) -> float:
    """The old cold install: base and every device in one libnftables transaction."""
    fresh(ns)
    nft = Nft.in_namespace(ns)
    policies = decide_all(n, files)
    cmds = compile_home(policies, CTX)
    t0 = time.perf_counter()
    nft.apply(cmds)
    return time.perf_counter() - t0


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000])
    parser.add_argument("--per-batch", type=int, default=enforcer_module.DEVICES_PER_BATCH,
                        help="devices per transaction (default: the Enforcer's)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the old one-transaction install")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    enforcer_module.DEVICES_PER_BATCH = args.per_batch
    files = corpus()
    ns = f"mgeBoot{os.getpid() % 10000}"
    print(f"{len(files)} corpus profiles, {args.per_batch} devices per transaction")
    print(f"{'devices':>8} {'LAN closed':>11} {'by nft -f':>10} {'decided':>8} "
          f"{'first device':>13} {'median device':>14} {'every device':>13} {'batches':>8} "
          f"{'one transaction (open)':>23}")
    try:
        for n in args.sizes:
            r = boot(ns, n, files)
            static = static_base_ms(ns)
            old = "-" if args.no_compare else f"{one_transaction_s(ns, n, files):.2f}s"
            print(f"{n:>8} {r['base_ms']:>9.1f}ms {static:>8.1f}ms {r['decided_s']:>7.2f}s "
                  f"{r['first_s']:>12.2f}s {r['median_device_s']:>13.2f}s "
                  f"{r['done_s']:>12.2f}s {r['batches']:>8.0f} {old:>23}", flush=True)
    finally:
        _netns.delete(ns)


if __name__ == "__main__":
    main()
