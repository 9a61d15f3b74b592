"""What a gateway's ruleset costs forwarded traffic: established small packets, bulk TCP
and new connections, against the same gateway with no ruleset at all, in one run.

A virtual home (namespaces, ``mudguard.vhome``) with one real device profiled with a
real corpus MUD file that allows the flows (``mudmaker-cloud-service.json``: any
traffic to ``cloud-service.example.com``; its DNS set is filled as the resolver would,
for the cloud host). Around it, N-1 other devices (round-robin real corpus profiles)
are installed, so the ruleset is the size of a real home of N devices. Rows:

* ``none``: no ruleset at all (``nft flush ruleset``): the baseline, taken first and
  again last, so drift in the machine's load shows (ratios "vs none" take the better);
  and for every other row, "vs off": the same ruleset with its tables made dormant
  (``flags dormant``: no hook, no rule; conntrack stays on) in runs alternating with
  the row's own, seconds apart, so a shared machine's load cancels out;
* ``today N``: today's design (``compile_home`` through the ``Enforcer``: a base, 16
  device tables, three chains per device), N = 1, 1,000, 5,000 by default;
* ``data N`` (``--design data``): the new design of issue #17 (one fixed ruleset whose
  per-device content is sets and maps). Its installer is not in this file: the bench
  imports ``bench/forwarding_design_data.py`` (``make(ns, context) -> Design``, see
  ``Design`` below) and stops with a clear message while that module does not exist.

Figures per row (every loop bounded in time):

* 64-byte UDP datagrams per second on an established flow (the sink answered the
  first one), best of ``--repeats`` runs of ``--seconds``; goal ≥ 0.9× of ``none``;
* bulk TCP throughput (iperf3 when installed, else a Python sender of 1 MiB writes),
  best of ``--repeats`` runs; goal ≥ 0.95× of ``none``;
* new TCP connections: connects per second and p50/p99 connect time over up to
  ``--connects`` connections (each a new flow through the forward chain's dispatch),
  best of ``--repeats``; goal flat from 1 to 5,000 devices.

Flowtables (offload of established flows) are probed in the gateway namespace first;
on a kernel without ``nf_flow_table`` the bench says so ("flowtable: unavailable on
this kernel") and measures without.

Run as root: ``.venv/bin/python bench/bench_forwarding.py [--sizes 1 1000 5000]
[--design today data] [--seconds 3] [--repeats 3] [--connects 1500]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bench_enforce_update import corpus, policy

from mudguard.enforce import Enforcer, Nft
from mudguard.mud import MudFile
from mudguard.policy import (
    DeviceFacts,
    DevicePolicy,
    HomeContext,
    LifecycleState,
    decide,
    dns_set_name,
    shard_table,
)
from mudguard.vhome import INTERNET_HOSTS, VirtualHome, run

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLOUD4 = INTERNET_HOSTS["cloud"][0]
OTHER4 = INTERNET_HOSTS["other"][0]
NAME = "cloud-service.example.com"  # what the measured device's MUD file allows
UDP_PORT, CONNECT_PORT, BULK_PORT = 9000, 443, 5201
DATA_DESIGN_MODULE = "forwarding_design_data"


class Design(Protocol):
    """A way of putting a home's policies in the gateway's kernel."""

    def install(self, policies: Sequence[DevicePolicy]) -> None:
        """Replace whatever is installed with exactly these devices' policies."""

    def dns_answer(self, policy: DevicePolicy, name: str, address: str) -> None:
        """Let the device reach ``address`` as ``name`` (what the DNS guard does when
        the resolver answers it), for an hour."""


@dataclass
class TodayDesign:
    """Today's design: the ``Enforcer`` (base, device tables, chains per device)."""

    ns: str
    context: HomeContext

    def install(self, policies: Sequence[DevicePolicy]) -> None:
        """A fresh Enforcer installs the home (cold install, as after a reboot)."""
        enforcer = Enforcer(Nft.in_namespace(self.ns), self.context, clock=lambda: NOW)
        enforcer.install_home(policies)

    def dns_answer(self, policy: DevicePolicy, name: str, address: str) -> None:
        """One (device address . answer) element in the name's set of the device's shard."""
        nft = Nft.in_namespace(self.ns)
        nft.add_set_elements(shard_table(policy.device.mac), dns_set_name(name, 4),
                             [(policy.device.ipv4[0], address)], timeout_s=3600)


def load_design(name: str, ns: str, context: HomeContext) -> Design:
    """The installer of design ``name`` ("today" here; "data" from its own module)."""
    if name == "today":
        return TodayDesign(ns, context)
    if name == "data":
        try:
            module = importlib.import_module(DATA_DESIGN_MODULE)
        except ModuleNotFoundError as exc:
            if exc.name != DATA_DESIGN_MODULE:
                raise
            sys.exit(f"design 'data' (issue #17, policy as data) is not wired yet: write "
                     f"bench/{DATA_DESIGN_MODULE}.py with make(ns: str, context: "
                     f"HomeContext) -> Design (install(policies), dns_answer(policy, "
                     f"name, address); see the Design protocol in {Path(__file__).name})")
        made: Design = module.make(ns, context)
        return made
    sys.exit(f"unknown design {name!r}: today or data")


# -- traffic (children in the namespaces; every loop bounded in count and time) ------------

UDP_SINK = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("{CLOUD4}", {UDP_PORT}))
s.settimeout(1)
print("ready", flush=True)
n, start, last, idle = 0, None, None, 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        data, peer = s.recvfrom(2048)
    except TimeoutError:
        idle += 1
        if start is not None or idle > 20:
            break
        continue
    if data == b"hello":
        s.sendto(b"ok", peer)
        continue
    if start is None:
        start = time.perf_counter()
    n += 1
    last = time.perf_counter()
print(n / (last - start) if start is not None and last > start else 0.0)
"""

UDP_BLAST = f"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("{CLOUD4}", {UDP_PORT}))
s.settimeout(0.3)
for _ in range(30):  # the sink's answer makes the flow established
    s.send(b"hello")
    try:
        s.recv(10)
        break
    except (TimeoutError, ConnectionRefusedError):
        time.sleep(0.1)
else:
    sys.exit("the UDP flow never became established")
payload = b"x" * 64
end = time.perf_counter() + float(sys.argv[1])
while time.perf_counter() < end:
    for _ in range(200):
        try:
            s.send(payload)
        except (ConnectionRefusedError, BlockingIOError):
            pass
"""

BULK_SINK = f"""
import socket, time
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("{CLOUD4}", {BULK_PORT}))
srv.listen(1)
srv.settimeout(30)
print("ready", flush=True)
conn, _ = srv.accept()
conn.settimeout(10)
buf = bytearray(1 << 20)
total, start = 0, time.perf_counter()
deadline = start + 60
while time.perf_counter() < deadline:
    got = conn.recv_into(buf)
    if not got:
        break
    total += got
print(total * 8 / (time.perf_counter() - start))
"""

BULK_SEND = f"""
import socket, sys, time
s = socket.create_connection(("{CLOUD4}", {BULK_PORT}), timeout=5)
chunk = b"x" * (1 << 20)
end = time.perf_counter() + float(sys.argv[1])
while time.perf_counter() < end:
    s.sendall(chunk)
s.close()
"""

ACCEPTOR = f"""
import socket, time
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", {CONNECT_PORT}))
srv.listen(4096)  # a slow accept on a busy machine must not drop SYNs
srv.settimeout(1)
print("ready", flush=True)
deadline = time.monotonic() + 3600
while time.monotonic() < deadline:
    try:
        conn, _ = srv.accept()
    except TimeoutError:
        continue
    conn.close()
"""


def _python(ns: str, code: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args]


def udp_rate(home: VirtualHome, device_ns: str, seconds: float, repeats: int) -> float:
    """64-byte datagrams per second the sink received on an established flow, best of runs."""
    best = 0.0
    for _ in range(repeats):
        sink = subprocess.Popen(_python(home.inet_ns, UDP_SINK), stdout=subprocess.PIPE,
                                text=True)
        try:
            assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
            subprocess.run(_python(device_ns, UDP_BLAST, str(seconds)), check=True,
                           timeout=seconds + 30)
            best = max(best, float(sink.stdout.readline() or 0))
            sink.wait(timeout=10)
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait(5)
    return best


def bulk_rate(home: VirtualHome, device_ns: str, seconds: float, repeats: int) -> float:
    """Bulk TCP throughput in bit/s from the device to the cloud host, best of runs."""
    best = 0.0
    for _ in range(repeats):
        if shutil.which("iperf3"):
            server = subprocess.Popen(["ip", "netns", "exec", home.inet_ns, "iperf3", "-s",
                                       "-1", "-p", str(BULK_PORT)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                report: dict[str, Any] = {}
                for _ in range(50):  # until the server listens (bounded: 50 tries)
                    client = subprocess.run(
                        ["ip", "netns", "exec", device_ns, "iperf3", "-c", CLOUD4, "-p",
                         str(BULK_PORT), "-t", str(max(1, round(seconds))), "-J"],
                        capture_output=True, text=True, timeout=seconds + 30)
                    report = json.loads(client.stdout or "{}")
                    if "sum_received" in report.get("end", {}):
                        break
                    time.sleep(0.1)
                else:
                    raise RuntimeError(f"iperf3 failed: {report.get('error')}")
                best = max(best, float(report["end"]["sum_received"]["bits_per_second"]))
            finally:
                if server.poll() is None:
                    server.kill()
                server.wait(5)
        else:
            sink = subprocess.Popen(_python(home.inet_ns, BULK_SINK), stdout=subprocess.PIPE,
                                    text=True)
            try:
                assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
                subprocess.run(_python(device_ns, BULK_SEND, str(seconds)), check=True,
                               timeout=seconds + 30)
                best = max(best, float(sink.stdout.readline() or 0))
                sink.wait(timeout=10)
            finally:
                if sink.poll() is None:
                    sink.kill()
                    sink.wait(5)
    return best


def connect_loop(address: str, port: int, count: int, seconds: float
                 ) -> tuple[list[float], float]:
    """Open and close up to ``count`` TCP connections within ``seconds``: each connect
    time in ms, and the seconds the whole loop took."""
    out: list[float] = []
    start = time.perf_counter()
    end = start + seconds
    for _ in range(count):
        if time.perf_counter() > end:
            break
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            # Close with a reset: no TIME_WAIT, so thousands of runs never run out of ports.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t0 = time.perf_counter()
            sock.connect((address, port))
            out.append((time.perf_counter() - t0) * 1000)
    return out, time.perf_counter() - start


def connects(home: VirtualHome, device_ns: str, count: int, seconds: float,
             repeats: int) -> tuple[float, float, float]:
    """(connections per second, p50 ms, p99 ms), each the best of ``repeats`` runs."""
    rates, p50s, p99s = [], [], []
    for _ in range(repeats):
        lat, took = home.call(device_ns, connect_loop, CLOUD4, CONNECT_PORT, count, seconds,
                              timeout=seconds + 60)
        rates.append(len(lat) / took)
        p50s.append(statistics.median(lat))
        p99s.append(sorted(lat)[int(0.99 * (len(lat) - 1))])
    return max(rates), min(p50s), min(p99s)


# -- the run ------------------------------------------------------------------------------

def flowtable_status(ns: str) -> str:
    """Whether this kernel offers flowtables (probed in the gateway namespace)."""
    probe = ("table inet mgflowprobe { flowtable f { hook ingress priority 0; "
             "devices = { lo }; } }")
    done = run(["nft", "-f", "-"], ns=ns, check=False, input_text=probe)
    run(["nft", "delete", "table", "inet", "mgflowprobe"], ns=ns, check=False)
    if done.returncode == 0:
        return "flowtable: available (not used by these rows)"
    loaded = Path("/proc/modules").read_text() if Path("/proc/modules").exists() else ""
    why = "nf_flow_table missing" if "nf_flow_table" not in loaded else done.stderr.strip()
    return f"flowtable: unavailable on this kernel ({why.splitlines()[0] if why else 'refused'})"


def list_tables(ns: str) -> list[dict[str, str]]:
    """The namespace's tables (nft's text listing: its JSON listing of a dormant table
    crashes in nft 1.0.6; slow with thousands of devices, so taken once per row)."""
    listed = run(["nft", "list", "tables"], ns=ns, timeout=600).stdout
    return [{"family": words[1], "name": words[2]}
            for words in (line.split() for line in listed.splitlines())
            if len(words) == 3 and words[0] == "table"]


def set_dormant(ns: str, tables: list[dict[str, str]], dormant: bool) -> None:
    """Make these tables dormant (their base chains leave their hooks: packets meet no
    rule, conntrack stays on) or active again, in one transaction."""
    if not tables:
        return
    if dormant:  # nft 1.0.6 reads no table flags from JSON: its own syntax, one batch
        run(["nft", "-f", "-"], ns=ns, timeout=600, input_text="".join(
            f"add table {t['family']} {t['name']} {{ flags dormant; }}\n" for t in tables))
    else:  # an empty flags list clears "dormant"
        batch = {"nftables": [{"add": {"table": {"family": t["family"], "name": t["name"],
                                                  "flags": []}}} for t in tables]}
        run(["nft", "-j", "-f", "-"], ns=ns, timeout=600, input_text=json.dumps(batch))


@dataclass
class Figures:
    """One measurement of the three figures."""

    udp: float = 0.0
    bulk: float = 0.0
    conn_rate: float = 0.0
    p50: float = float("inf")
    p99: float = float("inf")

    def best(self, other: Figures) -> Figures:
        """The better of two runs, figure by figure."""
        return Figures(max(self.udp, other.udp), max(self.bulk, other.bulk),
                       max(self.conn_rate, other.conn_rate), min(self.p50, other.p50),
                       min(self.p99, other.p99))


@dataclass
class Row:
    """One ruleset's figures, and the same gateway's with its tables dormant, measured
    in alternation (a run each, ``repeats`` times): the ratio is taken between runs
    seconds apart, so the load of a shared machine cancels out."""

    label: str
    devices: int
    install_s: float
    on: Figures
    off: Figures


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 1000, 5000])
    parser.add_argument("--design", nargs="*", default=["today"], choices=["today", "data"])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connects", type=int, default=1500)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    # A SIGTERM unwinds like an error: the namespaces and children go with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    files = corpus()
    cloud: MudFile = next(f for f in files if f.mud_url.endswith("/dnsname"))
    rows: list[Row] = []
    with VirtualHome(prefix=f"mgh17f{os.getpid() % 100}", devices=1) as home:
        acceptor = subprocess.Popen(_python(home.inet_ns, ACCEPTOR), stdout=subprocess.PIPE,
                                    text=True)
        home._procs.append(acceptor)  # stopped with the home
        assert acceptor.stdout is not None and acceptor.stdout.readline().strip() == "ready"
        node = home.nodes[0]
        print(flowtable_status(home.gw_ns))
        # The per-device new-connection cap (50/s by default) would be all the connect
        # figure measures; lift it so it is the cost of dispatch and the device's rules.
        context = home.context(new_conn_rate=1_000_000, new_conn_burst=1_000_000)
        me = DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                         mud_url=cloud.mud_url, state=LifecycleState.PROFILED)
        mine = decide(me, cloud, (), context, now=NOW)
        designs = {name: load_design(name, home.gw_ns, context) for name in args.design}
        others = [policy(i, files[i % len(files)]) for i in range(1, max(args.sizes))]

        def once() -> Figures:
            rate, p50, p99 = connects(home, node.ns, args.connects, args.seconds * 2, 1)
            return Figures(udp_rate(home, node.ns, args.seconds, 1),
                           bulk_rate(home, node.ns, args.seconds, 1), rate, p50, p99)

        def measure(label: str, devices: int, install_s: float) -> None:
            on, off = Figures(), Figures()
            tables = list_tables(home.gw_ns) if devices else []
            for k in range(args.repeats):
                run(["conntrack", "-F"], ns=home.gw_ns, check=False)  # same start for each
                if devices:
                    set_dormant(home.gw_ns, tables, True)
                    if k == 0:  # dormant really means no rule; awake, the rules again
                        assert home.tcp(node.ns, OTHER4, CONNECT_PORT), f"{label}: dormant"
                        set_dormant(home.gw_ns, tables, False)
                        assert not home.tcp(node.ns, OTHER4, CONNECT_PORT, 0.3), label
                        set_dormant(home.gw_ns, tables, True)
                    off = off.best(once())
                    set_dormant(home.gw_ns, tables, False)
                    run(["conntrack", "-F"], ns=home.gw_ns, check=False)
                on = on.best(once())
            rows.append(Row(label, devices, install_s, on, off if devices else on))
            print(f"  measured {label}", file=sys.stderr, flush=True)

        def none() -> None:
            run(["nft", "flush", "ruleset"], ns=home.gw_ns)
            assert home.tcp(node.ns, OTHER4, CONNECT_PORT), "no ruleset: everything passes"
            measure("none", 0, 0.0)

        none()
        for name, design in designs.items():
            for n in args.sizes:
                run(["nft", "flush", "ruleset"], ns=home.gw_ns)
                t0 = time.perf_counter()
                design.install([mine, *others[:n - 1]])
                installed = time.perf_counter() - t0
                design.dns_answer(mine, NAME, CLOUD4)
                assert home.tcp(node.ns, CLOUD4, CONNECT_PORT), f"{name} {n}: flow refused"
                assert not home.tcp(node.ns, OTHER4, CONNECT_PORT, 0.3), \
                    f"{name} {n}: a host the profile does not name was reached"
                measure(f"{name} {n}", n, installed)
        none()
    # Against 'none' (no ruleset, first and last row): the better of the two, so these
    # ratios are conservative; 'vs off' compares with the same ruleset made dormant in
    # alternating runs, which cancels the drift of a shared machine.
    nones = [r.on for r in rows if r.label == "none"]
    base = nones[0].best(nones[-1])
    print(f"one device ({Path(cloud.mud_url).name} profile) to the fake Internet; best "
          f"of {args.repeats} runs each; 'none' = no ruleset (first and last row); "
          "'off' = the same tables dormant, runs alternating with the row's own")
    print(f"{'ruleset':>12} {'install':>8} {'64B UDP/s':>10} {'vs none':>8} {'vs off':>7} "
          f"{'bulk Gb/s':>10} {'vs none':>8} {'vs off':>7} {'conn/s':>7} {'vs off':>7} "
          f"{'p50 conn':>9} {'vs off':>7} {'p99 conn':>9}")
    for r in rows:
        on, off = r.on, r.off
        print(f"{r.label:>12} {r.install_s:>7.1f}s {on.udp:>10.0f} {on.udp / base.udp:>7.2f}x "
              f"{on.udp / off.udp:>6.2f}x {on.bulk / 1e9:>10.2f} "
              f"{on.bulk / base.bulk:>7.2f}x {on.bulk / off.bulk:>6.2f}x "
              f"{on.conn_rate:>7.0f} {on.conn_rate / off.conn_rate:>6.2f}x "
              f"{on.p50 * 1000:>7.0f}us {on.p50 / off.p50:>6.2f}x {on.p99 * 1000:>7.0f}us")
    print("goals: 64B UDP >= 0.90x and bulk >= 0.95x of no ruleset; new connections flat "
          f"from {min(args.sizes)} to {max(args.sizes)} devices")
    for name in designs:
        mine_rows = [r for r in rows if r.label.startswith(name + " ")]
        if len(mine_rows) > 1:
            first, last = mine_rows[0], mine_rows[-1]
            p50_off = (last.on.p50 / last.off.p50) / (first.on.p50 / first.off.p50)
            rate_off = ((last.on.conn_rate / last.off.conn_rate)
                        / (first.on.conn_rate / first.off.conn_rate))
            print(f"{name}: {last.devices} vs {first.devices} devices: p50 connect "
                  f"{last.on.p50 / first.on.p50:.2f}x, connect rate "
                  f"{last.on.conn_rate / first.on.conn_rate:.2f}x (each against its own "
                  f"dormant runs: {p50_off:.2f}x, {rate_off:.2f}x)")


if __name__ == "__main__":
    main()
