"""Packets per second of ``mudguard profile learn`` and ``profile check`` on a large capture,
against tcpdump, tshark and per-packet parsing (scapy, dpkt) of the same file, same run.

The input is the MADEA smart-home night (16 pcapng files, 320,000 packets, 48.5 MB; not
in the repository: ``$MUDGUARD_BIG_CORPUS`` or ``../shared/corpus``, see ``bench_data.py``,
which says how to get it when it is missing) joined in capture order with ``mergecap -a``,
then appended to itself ``--repeat`` times (default 10: 3.2 M
packets, 485 MB). The profiled device is the Nest camera (84% of the packets: the
worst case for the flow tables). Peak memory of ``profile learn`` on 1× and on the
repeated file shows that memory does not grow with the capture.

Run: ``.venv/bin/python bench/bench_profile.py [--repeat N] [--sample N] [--keep DIR]``.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_data import madea_night

DEVICE = "64:16:66:49:3e:cb"  # Nest camera
MUDGUARD = str(Path(sys.executable).with_name("mudguard"))


def build_inputs(night: list[Path], folder: Path, repeat: int) -> tuple[Path, Path]:
    """The night joined in capture order (320k packets), and that appended ``repeat`` times."""
    one = folder / "madea-320k.pcapng"
    subprocess.run(["mergecap", "-a", "-w", str(one), *map(str, night)], check=True)
    many = folder / f"madea-{repeat}x.pcapng"
    subprocess.run(["mergecap", "-a", "-w", str(many), *[str(one)] * repeat], check=True)
    return one, many


def count_packets(path: Path) -> int:
    out = subprocess.run(["capinfos", "-M", "-c", str(path)], check=True, capture_output=True,
                         text=True).stdout
    return int(re.search(r"Number of packets:\s+(\d+)", out).group(1))  # type: ignore[union-attr]


ROUNDS = 2


def timed(cmd: list[str]) -> tuple[float, int]:
    """Best wall time of ``ROUNDS`` runs of a command (output discarded), peak RSS in KiB.

    Best-of because the machine may be shared: the fastest run is the least disturbed.
    """
    runs = [_timed_once(cmd) for _ in range(ROUNDS)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def _timed_once(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # profile check exits 1 when flows deviate
        raise SystemExit(f"{cmd[0]} failed with {proc.returncode}: {' '.join(cmd)}")
    return elapsed, usage.ru_maxrss


def scapy_rate(path: Path, sample: int) -> float:
    """Packets/s of scapy reading and dissecting the first ``sample`` packets."""
    from scapy.utils import PcapNgReader

    start = time.perf_counter()
    with PcapNgReader(str(path)) as reader:
        for n, packet in enumerate(reader):
            packet.summary()  # forces the full dissection a per-packet tool does
            if n + 1 >= sample:
                break
    return sample / (time.perf_counter() - start)


def dpkt_rate(path: Path, sample: int) -> float:
    """Packets/s of dpkt's pcapng reader plus a full Ethernet/IP/L4 parse per packet."""
    import dpkt

    start = time.perf_counter()
    n = 0
    with path.open("rb") as fh:
        for _ts, buf in dpkt.pcapng.Reader(fh):
            dpkt.ethernet.Ethernet(buf)
            n += 1
            if n >= sample:
                break
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="copies of the 320k file")
    parser.add_argument("--sample", type=int, default=50_000, help="packets for scapy/dpkt")
    parser.add_argument("--keep", type=Path, help="keep the inputs in this folder")
    parser.add_argument("--rounds", type=int, default=2, help="runs per tool (best is kept)")
    args = parser.parse_args()
    night = madea_night()  # before any work: says how to get the captures if missing
    global ROUNDS
    ROUNDS = max(1, args.rounds)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="mgwbench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        run(night, folder, args.repeat, args.sample)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def run(night: list[Path], folder: Path, repeat: int, sample: int) -> None:
    one, big = build_inputs(night, folder, repeat)
    packets = count_packets(big)
    size_mb = big.stat().st_size / 1e6
    mud = folder / "nest.json"
    rows: list[tuple[str, float, int | None]] = []

    learn = [MUDGUARD, "profile", "learn", str(big), "--device", DEVICE, "-o", str(mud), "-q"]
    t, rss = timed(learn)
    rows.append(("mudguard profile learn", packets / t, rss))
    t, rss = timed([MUDGUARD, "profile", "check", str(big), "--device", DEVICE, "--mud",
                    str(mud), "--json", "-q"])
    rows.append(("mudguard profile check", packets / t, rss))
    _t, rss_one = timed([MUDGUARD, "profile", "learn", str(one), "--device", DEVICE, "-o",
                         str(folder / "one.json"), "-q"])
    if shutil.which("tcpdump"):
        t, rss = timed(["tcpdump", "-nn", "-r", str(big)])
        rows.append(("tcpdump -nn -r (text to /dev/null)", packets / t, rss))
    else:
        print("tcpdump not installed: no tcpdump row", file=sys.stderr)
    t, rss = timed(["tshark", "-r", str(big), "-T", "fields", "-e", "frame.len"])
    rows.append(("tshark -r -T fields -e frame.len", packets / t, rss))
    rows.append((f"dpkt per-packet parse ({sample:,} pkts)", dpkt_rate(big, sample), None))
    try:
        rows.append((f"scapy per-packet parse ({sample // 10:,} pkts)",
                     scapy_rate(big, sample // 10), None))
    except ImportError:
        print("scapy not installed: no scapy row", file=sys.stderr)

    learn_rate = rows[0][1]
    print(f"\ninput: {packets:,} packets, {size_mb:,.0f} MB (MADEA night ×{repeat}); "
          f"device {DEVICE}; {os.cpu_count()} CPUs; best of {ROUNDS}; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'tool':44} {'packets/s':>12} {'learn ÷ tool':>13} {'peak RSS':>10}")
    for name, rate, rss_kib in rows:
        memory = f"{rss_kib / 1024:,.0f} MB" if rss_kib else ""
        print(f"{name:44} {rate:>12,.0f} {learn_rate / rate:>12.2f}× {memory:>10}")
    print(f"\nprofile learn peak RSS: {rss_one / 1024:,.0f} MB on 320k packets, "
          f"{rows[0][2] / 1024:,.0f} MB on {packets:,} (bounded: streaming reader, "  # type: ignore[operator]
          "bounded flow tables)")
    print(f"ru_maxrss of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KiB")


if __name__ == "__main__":
    main()
