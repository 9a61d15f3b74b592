"""The daemon's resource budget: RSS, idle CPU and start-up time of the real ``mudguard
run`` with N devices in its database (issues #17 and #19).

For each size, a virtual home (namespaces) and the demo's gateway configuration
(dnsmasq, hostapd with no radio, the portal, the DNS guard; ``lldp`` off); before the
daemon starts, N devices are written into its store through the store API, each
PROFILED with a real corpus MUD file (round-robin over every valid file, the file in the
MUD cache with its hash, as after a fetch): a gateway rebooting with N devices. Then
``mudguard run --log-format json`` starts in the gateway namespace and the bench reads
its JSON events:

* start-up: seconds from starting the process to ``lan-closed`` (base in the kernel: the
  LAN is closed), to ``restored`` (every device's rules in the kernel) and to ``ready``;
* RSS (``VmRSS`` of the daemon's process, and of its children: dnsmasq, hostapd) at
  ``ready`` and after the idle window, and the daemon's peak (``VmHWM``);
* idle CPU: the daemon's user+system time (``/proc/PID/stat``) over ``--idle-seconds``
  (default 60: one pass of the default 60 s maintenance falls inside), after
  ``--settle`` seconds past ``ready``, as a percentage of one CPU (children apart).

Budget (#19): < 100 MB and < 2 s to enforcement with 50 devices.
Run as root: ``.venv/bin/python bench/bench_daemon_budget.py [--sizes 50 1000 5000]
[--idle-seconds 60] [--prefix NAME]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_data import SMALL_CORPUS

from mudguard.demo import scenario
from mudguard.demo.runner import gateway_config
from mudguard.devices import CachedMud, Device
from mudguard.mud import parse_mud
from mudguard.policy import LifecycleState
from mudguard.store import Store
from mudguard.vhome import LAN6, VirtualHome

CLK_TCK = os.sysconf("SC_CLK_TCK")


def corpus_files() -> list[tuple[str, bytes]]:
    """(MUD URL, bytes) of every valid corpus MUD file."""
    out = []
    for path in sorted((SMALL_CORPUS / "mud").rglob("*.json")):
        data = path.read_bytes()
        result = parse_mud(data)
        if result.ok and result.mud is not None:
            out.append((result.mud.mud_url, data))
    return out


def fill_store(database: Path, n: int, now: datetime) -> None:
    """N PROFILED devices with cached corpus MUD files (IPv4 for the first 200, IPv6
    for all: the documentation /24 is small)."""
    files = corpus_files()
    with Store(database) as store:
        for url, data in files:
            store.put_mud(CachedMud(url=url, data=data, fetched_at=now,
                                    cache_validity_hours=24 * 365))
        with store.transaction():
            for i in range(n):
                url, data = files[i % len(files)]
                store.save_device(Device(
                    mac=f"02:6d:67:02:{i >> 8:02x}:{i & 0xFF:02x}",
                    state=LifecycleState.PROFILED,
                    ipv4=(f"192.0.2.{30 + i}",) if i < 200 else (),
                    ipv6=(str(LAN6[0x2000 + i]),), mud_url=url,
                    profile_hash=hashlib.sha256(data).hexdigest(),
                    first_seen=now, last_seen=now))


class Daemon:
    """``mudguard run`` in the gateway namespace, its JSON events read as they come."""

    def __init__(self, ns: str, config: Path, log: Path) -> None:
        self.started = time.monotonic()
        self._log = log.open("a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "mudguard", "run",
             "--config", str(config), "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.seen: dict[str, float] = {}  # event -> seconds after start
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, event: str, timeout: float) -> float:
        """Seconds from start to the first ``event``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while event not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event!r} within {timeout} s: {self.events[-5:]}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the daemon exited before {event!r}: {self.events[-5:]}")
            try:
                record = json.loads(line)
            except ValueError:
                continue
            self.events.append(record)
            name = record.get("event")
            if isinstance(name, str):
                self.seen.setdefault(name, time.monotonic() - self.started)
        return self.seen[event]

    def stop(self) -> None:
        """SIGTERM and wait (bounded)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def status_kib(pid: int, field: str) -> int:
    """A /proc/PID/status field in KiB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def children(pid: int) -> list[int]:
    """The direct children of a process (started by any of its threads)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def python_pid(pid: int) -> int:
    """The daemon's own process: ``ip netns exec`` execs it, or (older iproute2) forks it."""
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    if comm != "ip":
        return pid
    kids = children(pid)
    return kids[0] if kids else pid


@dataclass
class Figures:
    """One home size's figures."""

    devices: int
    lan_closed_s: float
    restored_s: float
    ready_s: float
    restore_reported_s: float
    rss_ready_mib: float
    rss_idle_mib: float
    peak_mib: float
    children_mib: float
    idle_cpu_pct: float


def measure(n: int, idle_seconds: float, settle: float, keep: bool,
            prefix: str) -> Figures:
    """Start the daemon over a store of ``n`` devices and measure it."""
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="mgh17bd-") as tmp, \
            VirtualHome(prefix=prefix, devices=1) as home:
        root = Path(tmp)
        run = scenario.prepare(root, now)
        (root / "state").mkdir()
        text = gateway_config(lan_interface=home.lan_if, wan_interface=home.wan_if,
                              lan_prefix="192.0.2.0/24", gateway="192.0.2.1",
                              state_dir=root / "state", ca_file=run.ca_file)
        config = root / "gateway.toml"
        config.write_text(text.replace('lan_prefixes = ["192.0.2.0/24"]',
                                       'lan_prefixes = ["192.0.2.0/24", "2001:db8:1::/64"]')
                          .replace("lldp = true", "lldp = false"))
        fill_store(root / "state" / "mudguard.db", n, now)
        daemon = Daemon(home.gw_ns, config, root / "daemon.log")
        try:
            lan_closed = daemon.wait_for("lan-closed", 120)
            restored = daemon.wait_for("restored", 900)
            ready = daemon.wait_for("ready", 120)
            reported = next(float(e.get("seconds", 0)) for e in daemon.events
                            if e.get("event") == "restored")
            pid = python_pid(daemon.proc.pid)
            rss_ready = status_kib(pid, "VmRSS")
            time.sleep(settle)
            t0, c0 = time.monotonic(), cpu_ticks(pid)
            end = t0 + idle_seconds
            while time.monotonic() < end and daemon.proc.poll() is None:
                time.sleep(min(1.0, end - time.monotonic()))
            busy = (cpu_ticks(pid) - c0) / CLK_TCK / (time.monotonic() - t0)
            kids = sum(status_kib(k, "VmRSS") for k in children(pid))
            figures = Figures(
                devices=n, lan_closed_s=lan_closed, restored_s=restored, ready_s=ready,
                restore_reported_s=reported, rss_ready_mib=rss_ready / 1024,
                rss_idle_mib=status_kib(pid, "VmRSS") / 1024,
                peak_mib=status_kib(pid, "VmHWM") / 1024, children_mib=kids / 1024,
                idle_cpu_pct=busy * 100)
        finally:
            daemon.stop()
            if keep:
                print((root / "daemon.log").read_text()[-3000:], file=sys.stderr)
        return figures


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[50, 1000, 5000])
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--show-log", action="store_true", help="the daemon's log tail")
    parser.add_argument("--prefix", default=f"mgh17d{os.getpid() % 100}",
                        help="the virtual home's namespace prefix (<= 8 letters or digits)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    # A SIGTERM unwinds like an error: the namespaces and children go with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    rows = []
    for n in args.sizes:
        rows.append(measure(n, args.idle_seconds, args.settle, args.show_log, args.prefix))
        print(f"  measured {n} devices", file=sys.stderr, flush=True)
    print(f"mudguard run, N PROFILED devices in the store (corpus MUD files), demo "
          f"configuration; idle CPU over {args.idle_seconds:.0f} s after ready + "
          f"{args.settle:.0f} s")
    print(f"{'devices':>8} {'lan closed':>11} {'restored':>9} {'ready':>7} "
          f"{'(restore)':>10} {'RSS ready':>10} {'RSS idle':>9} {'peak':>7} "
          f"{'children':>9} {'idle CPU':>9}")
    for r in rows:
        print(f"{r.devices:>8} {r.lan_closed_s:>10.2f}s {r.restored_s:>8.2f}s "
              f"{r.ready_s:>6.2f}s {r.restore_reported_s:>9.2f}s {r.rss_ready_mib:>9.0f}M "
              f"{r.rss_idle_mib:>8.0f}M {r.peak_mib:>6.0f}M {r.children_mib:>8.0f}M "
              f"{r.idle_cpu_pct:>8.2f}%")
    print("budget (#19): < 100 MB RSS and < 2 s from start to 'restored' with 50 devices")


if __name__ == "__main__":
    main()
