"""Benchmark (c): extra latency a DNS answer gets from the nft set insertion.

A virtual home (``mudguard.vhome``) with real dnsmasq upstream in the internet
namespace and the guard (``python -m mudguard.dns.server``) in the gateway
namespace. One device asks, one query at a time, for names its profile allows;
the guard's cache is off so every answer goes upstream and every answer fills
(new elements on the first round, refreshes after). Latency is measured at the
device, from send to answer.

Same run, same resolver, five modes:

- ``no insert``: the guard resolves only (the baseline);
- ``netlink``: fills sent as one nfnetlink batch (``dns/netlink.py``, the default);
- ``libnftables``: fills through libnftables' JSON API (``enforce.nft``);

each applied either by the server's worker thread (the default) or inline on the
event loop. The five guards run side by side on different ports and the device
asks them in turn, so every mode shares the machine's noise equally. All of it
with the DNS-name table alone, and with 1,000 devices' worth of rules
installed in the gateway (per-device chains of 10 rules reached through a verdict
map, and two table-wide DNS sets per device).

Run as root: ``.venv/bin/python bench/bench_dns_latency.py [--queries N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mudguard.policy._names import TABLE, dns_set_name
from mudguard.vhome import GW4, GW6, INTERNET_HOSTS, LAN4, LAN6, VirtualHome, run

DNS4 = INTERNET_HOSTS["dns"][0]
N_NAMES = 50
MODES = (("no insert (baseline)", False, False, "netlink"),
         ("netlink, worker thread", True, False, "netlink"),
         ("netlink, inline", True, True, "netlink"),
         ("libnftables, thread", True, False, "libnftables"),
         ("libnftables, inline", True, True, "libnftables"))


def names() -> list[str]:
    return [f"n{i}.bench.example" for i in range(N_NAMES)]


def ruleset(devices: int) -> dict[str, Any]:
    """The guard's sets and, with ``devices``, a home's worth of other rules."""
    fam = {"family": "inet", "table": TABLE}
    cmds: list[dict[str, Any]] = [
        {"add": {"table": {"family": "inet", "name": TABLE}}},
        {"delete": {"table": {"family": "inet", "name": TABLE}}},
        {"add": {"table": {"family": "inet", "name": TABLE}}},
        {"add": {"chain": {**fam, "name": "forward", "type": "filter", "hook": "forward",
                           "prio": 0, "policy": "accept"}}},
        {"add": {"map": {**fam, "name": "devmap", "type": "ether_addr", "map": "verdict"}}},
    ]
    set_names = [dns_set_name(n, f) for n in names() for f in (4, 6)]
    set_names += [dns_set_name(f"d{d}.cloud.example", f) for d in range(devices) for f in (4, 6)]
    for set_name in set_names:
        addr = "ipv4_addr" if set_name.startswith("dns4") else "ipv6_addr"
        cmds.append({"add": {"set": {**fam, "name": set_name, "type": [addr, addr],
                                     "flags": ["timeout"]}}})
    map_elems = []
    for d in range(devices):
        chain = f"dev{d}_out"
        mac = f"02:6d:67:01:{d >> 8:02x}:{d & 0xFF:02x}"
        cmds.append({"add": {"chain": {**fam, "name": chain}}})
        for r in range(8):
            cmds.append({"add": {"rule": {**fam, "chain": chain, "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                           "right": f"198.51.100.{(d + r) % 250 + 1}"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp",
                                                            "field": "dport"}},
                           "right": 1000 + r}}, {"accept": None}]}}})
        for fam_n, proto in ((4, "ip"), (6, "ip6")):
            cmds.append({"add": {"rule": {**fam, "chain": chain, "expr": [
                {"match": {"op": "==", "left": {"concat": [
                    {"payload": {"protocol": proto, "field": "saddr"}},
                    {"payload": {"protocol": proto, "field": "daddr"}}]},
                    "right": "@" + dns_set_name(f"d{d}.cloud.example", fam_n)}},
                {"accept": None}]}}})
        map_elems.append([mac, {"jump": {"target": chain}}])
    if map_elems:
        cmds.append({"add": {"element": {**fam, "name": "devmap", "elem": map_elems}}})
    cmds.append({"add": {"rule": {**fam, "chain": "forward", "expr": [
        {"vmap": {"key": {"payload": {"protocol": "ether", "field": "saddr"}},
                  "data": "@devmap"}}]}}})
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *cmds]}


def start_dnsmasq(vh: VirtualHome) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", vh.inet_ns, "dnsmasq", "--keep-in-foreground",
            "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
            f"--listen-address={DNS4}", "--except-interface=", "--user=root", "--pid-file=",
            "--log-facility=-"]
    for i, name in enumerate(names()):
        argv.append(f"--host-record={name},198.51.100.{100 + i % 100},300")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.5)
    return proc


def start_guard(vh: VirtualHome, workdir: str, port: int, *, insert: bool, inline: bool,
                filler: str) -> subprocess.Popen[str]:
    d0 = vh.nodes[0]
    policy = {"lan_prefixes": [str(LAN4), str(LAN6)], "gateway_addresses": [GW4, GW6],
              "config": {"insert": insert, "cache_size": 0},
              "devices": [{"id": d0.mac, "addresses": [d0.ipv4, d0.ipv6], "names": names(),
                           "table": TABLE}]}
    path = Path(workdir, f"policy{port}.json")
    path.write_text(json.dumps(policy))
    argv = ["ip", "netns", "exec", vh.gw_ns, sys.executable, "-m", "mudguard.dns.server",
            "--listen", GW4, "--port", str(port), "--upstream", DNS4, "--policy", str(path),
            "--lifetime", "900", "--filler", filler]
    argv += ["--fill", "inline" if inline else "thread"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("guard did not start")
    return proc


def query_loop(server: str, ports: list[int], qnames: list[str],
               rounds: int) -> list[list[float]]:
    """Inside the device namespace: one query at a time, the modes' guards in turn.

    Returns the latencies (ms) per port. Interleaving the guards gives every mode the
    same share of the machine's noise.
    """
    import socket

    import dns.message

    out: list[list[float]] = [[] for _ in ports]
    socks = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(2.0)
        sock.connect((server, port))
        socks.append(sock)
    try:
        for _ in range(rounds):
            for name in qnames:
                wire = dns.message.make_query(name, "A").to_wire()
                for i, sock in enumerate(socks):
                    t0 = time.perf_counter()
                    sock.send(wire)
                    while sock.recv(2048)[:2] != wire[:2]:
                        pass
                    out[i].append((time.perf_counter() - t0) * 1000)
    finally:
        for sock in socks:
            sock.close()
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def measure(vh: VirtualHome, workdir: str, rounds: int) -> list[list[float]]:
    """Latencies per mode (``MODES`` order), all guards running side by side."""
    ports = [5300 + i for i in range(len(MODES))]
    guards = []
    try:
        for port, (_label, insert, inline, filler) in zip(ports, MODES, strict=True):
            guards.append(start_guard(vh, workdir, port, insert=insert, inline=inline,
                                      filler=filler))
        vh.call(vh.nodes[0].ns, query_loop, GW4, ports, names()[:5], 2, timeout=60)  # warm up
        return vh.call(vh.nodes[0].ns, query_loop, GW4, ports, names(), rounds, timeout=900)
    finally:
        for guard in guards:
            guard.terminate()
            guard.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=2000, help="per mode and ruleset")
    parser.add_argument("--devices", type=int, default=1000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    rounds = max(1, args.queries // N_NAMES)
    rows = []
    loads = []
    with VirtualHome(prefix=f"mgdB{os.getpid() % 1000}", devices=1) as vh, \
            tempfile.TemporaryDirectory(prefix="mgd-bench-") as workdir:
        dnsmasq = start_dnsmasq(vh)
        try:
            for devices in (0, args.devices):
                t0 = time.perf_counter()
                run(["nft", "-j", "-f", "-"], ns=vh.gw_ns, input_text=json.dumps(ruleset(devices)),
                    timeout=600)
                loads.append((devices, time.perf_counter() - t0))
                per_mode = measure(vh, workdir, rounds)
                base = per_mode[0]
                for (label, *_), lat in zip(MODES, per_mode, strict=True):
                    rows.append((devices, label, len(lat), pct(lat, 50), pct(lat, 99),
                                 pct(lat, 50) - pct(base, 50), pct(lat, 99) - pct(base, 99),
                                 statistics.fmean(lat)))
        finally:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=5)
    print(f"{'other devices':>13} | {'mode':<24} | {'n':>5} | {'p50 ms':>7} | {'p99 ms':>7} | "
          f"{'+p50 ms':>7} | {'+p99 ms':>7} | {'mean ms':>7}")
    print("-" * 98)
    for devices, label, n, p50, p99, d50, d99, mean in rows:
        print(f"{devices:>13} | {label:<24} | {n:>5} | {p50:7.3f} | {p99:7.3f} | "
              f"{d50:+7.3f} | {d99:+7.3f} | {mean:7.3f}")
    print("ruleset load: " + ", ".join(f"{d} devices {s:.2f} s" for d, s in loads))


if __name__ == "__main__":
    main()
