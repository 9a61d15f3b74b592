"""What the device tables cost every packet: established small-packet rate through the
gateway with no table, and with the home's rules spread over 1, 4, 8 and 16 tables.

Every table has its own base chain on the forward hook, and a packet passes each one
(their first rule accepts established traffic). 16 tables keep a device's update flat
(``bench_enforce_update.py``); this figure is their price. One device (trusted, so
every flow is allowed) sends 64-byte UDP datagrams on an established flow (the sink
answered its first one) to the fake Internet for 3 s; the sink counts what arrives.
Best of 3 runs; the no-table baseline is taken before and after.

Run as root: ``.venv/bin/python bench/bench_enforce_tables.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

from mudguard.enforce import Enforcer, Nft
from mudguard.policy import DeviceFacts, LifecycleState, set_shard_count, shard_count
from mudguard.vhome import INTERNET_HOSTS, VirtualHome, run

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLOUD4 = INTERNET_HOSTS["cloud"][0]
PORT = 9000
SINK = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {PORT}))
s.settimeout(1)
print("ready", flush=True)
n, start, last = 0, None, None
for _ in range(10_000_000):
    try:
        data, peer = s.recvfrom(2048)
    except TimeoutError:
        if start is not None:
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
BLAST = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("{CLOUD4}", {PORT}))
s.settimeout(0.3)
for _ in range(30):  # the sink's answer makes the flow established
    s.send(b"hello")
    try:
        s.recv(10)
        break
    except (TimeoutError, ConnectionRefusedError):
        time.sleep(0.1)
payload = b"x" * 64
end = time.perf_counter() + 3
while time.perf_counter() < end:
    for _ in range(200):
        try:
            s.send(payload)
        except ConnectionRefusedError:
            pass
"""


def rate(home: VirtualHome, device_ns: str) -> float:
    """Datagrams per second the sink received, best of 3 runs."""
    best = 0.0
    for _ in range(3):
        sink = subprocess.Popen(["ip", "netns", "exec", home.inet_ns, sys.executable, "-c",
                                 SINK], stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "netns", "exec", device_ns, sys.executable, "-c", BLAST],
                       check=True, timeout=30)
        best = max(best, float(sink.stdout.readline() or 0))
        sink.wait(timeout=10)
    return best


def main() -> None:
    """Print the table."""
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    shipped = shard_count()
    rows: list[tuple[str, float]] = []
    with VirtualHome(prefix=f"mgtb{os.getpid() % 1000}", devices=1) as home:
        node = home.nodes[0]
        context = home.context(new_conn_rate=1_000_000, new_conn_burst=1_000_000)
        for label, shards in (("no table", None), ("1 table", 1), ("4 tables", 4),
                              ("8 tables", 8), ("16 tables", 16), ("no table (again)", None)):
            run(["nft", "flush", "ruleset"], ns=home.gw_ns)
            run(["conntrack", "-F"], ns=home.gw_ns, check=False)
            if shards is not None:
                set_shard_count(shards)  # what the tables are, for this row only
                enforcer = Enforcer(Nft.in_namespace(home.gw_ns), context, clock=lambda: NOW)
                enforcer.install_home()
                enforcer.apply_device(DeviceFacts(
                    mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                    state=LifecycleState.TRUSTED), None)
            rows.append((label, rate(home, node.ns)))
    set_shard_count(shipped)
    one = next(r for label, r in rows if label == "1 table")
    print(f"64-byte UDP datagrams on an established flow, best of 3 runs of 3 s "
          f"(mudguard ships {shipped} device tables)")
    print(f"{'ruleset':>18} {'datagrams/s':>12} {'vs 1 table':>11}")
    for label, value in rows:
        print(f"{label:>18} {value:>12.0f} {value / one:>10.2f}x")


if __name__ == "__main__":
    main()
