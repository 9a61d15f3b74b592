"""Start-up restore on the data design: ``Gateway.restore()`` with N stored devices
(issues #17 and #19).

For each size, a fresh network namespace and a fresh Python process (cold caches, as a
daemon starting): N PROFILED devices written into a store through the store API (each
with a real corpus MUD file, round-robin, cached with its hash, as after a fetch:
``bench_daemon_budget.fill_store``), then the daemon's own objects (``DeviceService``,
``DataGatewayEnforcer`` under a ``GuardedEnforcer`` with the DNS guard, ``Gateway``)
built over it with the demo home's context, and ``Gateway.restore()`` timed: closing
the LAN (the fixed ruleset), reading the store, deciding every device, compiling its
elements, the one kernel transaction, feeding the DNS guard.

``--baseline REV`` runs the same measurement, in the same run and alternating with this
tree, against the ``src/`` of git revision ``REV`` (exported with ``git archive``): the
ratio column is this tree over that revision. ``--profile N`` prints cProfile's top
functions (cumulative and own time) of one restore at N devices instead.

Run as root: ``.venv/bin/python bench/bench_restore.py [--sizes 50 1000 5000]
[--repeat 2] [--baseline ae64d2d] [--profile 5000]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NS_PREFIX = "mgS5r"


def child(n: int, profile: bool) -> None:
    """In the namespace: fill a store, build the daemon's objects, time one restore;
    print a JSON line (or the profile)."""
    sys.path.insert(0, str(BENCH))
    from bench_daemon_budget import fill_store

    from mudguard.daemon.events import EventLog
    from mudguard.daemon.gateway import Gateway, GuardedEnforcer
    from mudguard.devices.service import DeviceService
    from mudguard.discovery.dhcp import DhcpHookListener
    from mudguard.discovery.sighting import Intake
    from mudguard.dns.core import DnsGuard, GuardConfig
    from mudguard.enforce.data_gateway import DataGatewayEnforcer
    from mudguard.enforce.nft import Nft
    from mudguard.policy import HomeContext

    lan = ("192.0.2.0/24", "2001:db8:1::/64")
    gateway_ips = ("192.0.2.1",)
    context = HomeContext(lan_prefixes=lan, gateway_addresses=gateway_ips,
                          lan_interface="br-lan", wan_interface="wan0",
                          portal_ports=(443,), log_group=100, tls_log_group=101)
    with tempfile.TemporaryDirectory(prefix="mgS5restore-") as tmp:
        root = Path(tmp)
        fill_store(root / "mudguard.db", n, datetime.now(UTC))
        from mudguard.store import Store

        store = Store(root / "mudguard.db")
        service = DeviceService(store=store, lan_prefixes=lan, gateway_ips=gateway_ips)
        enforcer = DataGatewayEnforcer(Nft(), context, home_default="lan")
        events = EventLog(json_lines=True, stream=io.StringIO())
        guarded = GuardedEnforcer(enforcer, DnsGuard(GuardConfig(
            lan_prefixes=lan, gateway_addresses=gateway_ips)), events)
        gateway = Gateway(service=service, enforcer=guarded, intake=Intake(service),
                          events=events, hook_listener=DhcpHookListener(root / "hook.sock"))
        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            gateway.restore()
            profiler.disable()
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats("cumulative").print_stats(40)
            stats.sort_stats("tottime").print_stats(25)
            return
        spent = timed_phases()
        started = time.monotonic()
        gateway.restore()
        seconds = time.monotonic() - started
        restored = [json.loads(line) for line in events.stream.getvalue().splitlines()
                    if '"restored"' in line]
        installed = len(enforcer.installed())
        profiles = len({r.profile for r in enforcer.installed().values() if r.profile})
        store.close()
    print(json.dumps({"devices": n, "seconds": seconds, "installed": installed,
                      "profiles": profiles, "reported": restored[-1]["seconds"],
                      **{f"phase_{k}": v for k, v in spent.items()}}))


PHASES = {  # phase -> (module, attribute holding a class or None, function name)
    "store": [("mudguard.store.sqlite", "Store", m) for m in
              ("list_devices", "list_grants", "get_mud", "get_settings")],
    "decide": [("mudguard.daemon.gateway", None, "decide")],
    "compile": [("mudguard.enforce.data", None, "device_elements")],
    "kernel": [("mudguard.enforce.nft", "Nft", m) for m in
               ("apply", "send_messages", "read_rules", "read_elements")],
    "guard": [("mudguard.daemon.gateway", "GuardedEnforcer", "_feed_guard")],
}


def timed_phases() -> dict[str, float]:
    """Wrap the functions of each phase so that their time adds up (outermost call only:
    a kernel call inside another kernel call counts once); the totals, filled as they run."""
    import functools
    import importlib

    spent = dict.fromkeys(PHASES, 0.0)
    depth = dict.fromkeys(PHASES, 0)
    for phase, targets in PHASES.items():
        for module_name, owner_name, name in targets:
            module = importlib.import_module(module_name)
            owner = getattr(module, owner_name) if owner_name else module
            original = getattr(owner, name, None)
            if original is None:
                continue

            def wrapped(*args: object, __fn=original, __phase=phase, **kwargs: object) -> object:
                depth[__phase] += 1
                started = time.perf_counter()
                try:
                    return __fn(*args, **kwargs)
                finally:
                    depth[__phase] -= 1
                    if not depth[__phase]:
                        spent[__phase] += time.perf_counter() - started
            setattr(owner, name, functools.wraps(original)(wrapped))
    return spent


def run_child(n: int, src: Path, *, profile: bool = False) -> str:
    """One child process in a fresh namespace with ``src`` first on the path."""
    ns = f"{NS_PREFIX}{os.getpid() % 1000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(BENCH)])}
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).resolve()),
             "--child", str(n), *(["--profile", str(n)] if profile else [])],
            env=env, capture_output=True, text=True, timeout=1800, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"child failed ({src}, {n}): {out.stderr[-3000:]}")
        return out.stdout
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def export(rev: str, into: Path) -> Path:
    """``src/`` of git revision ``rev`` under ``into``; the path to put on sys.path."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> None:
    """Print the table (or the profile)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[50, 1000, 5000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", help="git revision to compare with (same run)")
    parser.add_argument("--profile", type=int, help="print cProfile of one restore at N")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.profile is not None)
        return
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    if args.profile:
        print(run_child(args.profile, REPO / "src", profile=True))
        return
    with tempfile.TemporaryDirectory(prefix="mgS5base-") as tmp:
        trees = {"this tree": REPO / "src"}
        if args.baseline:
            trees[args.baseline] = export(args.baseline, Path(tmp))
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for n in args.sizes:
            for _ in range(args.repeat):
                for name, src in trees.items():  # alternating: same conditions
                    line = run_child(n, src).strip().splitlines()[-1]
                    results.setdefault((name, n), []).append(json.loads(line))
                    print(f"  {name} {n}: {line}", file=sys.stderr, flush=True)
    print(f"Gateway.restore() on the data design, N PROFILED devices (corpus MUD files), "
          f"fresh process and namespace each; median of {args.repeat}")
    print(f"{'devices':>8} {'tree':>12} {'restore':>9} {'profiles':>9} {'vs base':>8}  "
          "seconds in: store, decide, compile, kernel, guard")
    for n in args.sizes:
        base = statistics.median(r["seconds"] for r in results[(args.baseline, n)]) \
            if args.baseline else None
        for name in trees:
            rows = results[(name, n)]
            seconds = statistics.median(r["seconds"] for r in rows)
            ratio = f"{seconds / base:.2f}x" if base else "-"
            phases = " ".join(f"{k} {statistics.median(r.get('phase_' + k, 0) for r in rows):.2f}"
                              for k in PHASES)
            print(f"{n:>8} {name:>12} {seconds:>8.2f}s {int(rows[0]['profiles']):>9} "
                  f"{ratio:>8}  {phases}")


if __name__ == "__main__":
    main()
