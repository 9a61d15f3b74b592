"""Identification (#16) under hostile floods: memory and time stay bounded (pure, no
namespace).

- **forged flows**: a ``WebObserver`` (the daemon's bounds) fed ``--flows`` forged
  ClientHellos (each a new flow; from 1 device, then spread over 64) and as many
  forged server segments out of order (4 KiB each, random sequence numbers), against
  a baseline of 1,000 flows: RSS growth (ru_maxrss), Python heap (tracemalloc), flows
  held, µs per packet. The budget (200 packets/s) is lifted here (``packets_per_second``
  huge) to measure the worst case the kernel's limits already prevent.
- **registry matcher**: Home Assistant's discovery matchers against a device sending
  64 adversarial host names (128 characters, all ``a`` then ``!``: the worst case of
  the one-star backtracking walk) and 64 mDNS TXT/service values, vs a device with a
  few ordinary clues: ms per ``registry_matches`` call.
- **live evidence**: ``LiveIdentifier.on_web`` fed 512 devices × 200 distinct
  128-character facts: the evidence kept and the heap it takes.

Run: ``.venv/bin/python bench/bench_hostile_identify.py [--flows 100000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import resource
import ssl
import time
import tracemalloc

from mudguard.identify.capture import load_knowledge
from mudguard.identify.live import LiveIdentifier
from mudguard.identify.observe import Segment, WebObserver
from mudguard.identify.registry import registry_matches


def client_hello(sni: str) -> bytes:
    """A real TLS ClientHello (Python's ssl)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def rss_kib() -> int:
    """Peak resident set size of this process (KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def flood(flows: int, devices: int) -> dict[str, float]:
    """Forged flows through one observer: heap, RSS growth, flows held, µs/packet."""
    hello = client_hello("flood.example.com")
    rng = random.Random(7)
    observer = WebObserver(packets_per_second=1e12, burst=1e12)
    tracemalloc.start()
    rss0 = rss_kib()
    started = time.perf_counter()
    for i in range(flows):
        device = f"02:00:00:00:{i % devices >> 8:02x}:{i % devices & 0xFF:02x}"
        src = f"192.0.2.{10 + i % devices % 200}"
        dst, sport = f"198.51.{100 + (i >> 16) % 2}.{(i >> 8) & 0xFF}", 1024 + i % 60000
        observer.client(device, Segment(4, src, dst, sport, 443, 0, hello))
        head = b"\x16\x03\x03\x40\x00" if rng.random() < 0.5 else b""
        observer.server(Segment(4, dst, src, 443, sport, rng.getrandbits(32),
                                head + bytes(4096 - len(head))))
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held = sum(len(f.stream) + sum(map(len, f.pending.values()))
               for f in observer.flows.values())
    return {"flows": flows, "devices": devices, "held_flows": len(observer.flows),
            "held_kib": held / 1024, "heap_peak_kib": peak / 1024,
            "rss_growth_kib": rss_kib() - rss0, "us_per_packet": seconds / (2 * flows) * 1e6}


def registry_cost(repeat: int) -> tuple[float, float]:
    """ms per registry match: an ordinary device, then the adversarial one."""
    registry = load_knowledge().discovery
    assert registry is not None
    mac = bytes.fromhex("a4c138000001")
    ordinary = [("hostname", "shelly1-A4C138", 1), ("mdns_service", "_http._tcp.local.", 2),
                ("mdns_txt", "md=Shelly 1", 3)]
    worst = [("hostname", "a" * (127 - i % 8) + "!", i) for i in range(64)]
    worst += [("mdns_host", "a" * 127 + "!", 100 + i) for i in range(64)]
    worst += [("mdns_txt", f"k{i}=" + "a" * 120 + "!", 200 + i) for i in range(64)]
    worst += [("mdns_service", f"_{'a' * 60}{i}._tcp.local.", 300 + i) for i in range(64)]
    out = []
    for clues in (ordinary, worst):
        started = time.perf_counter()
        for _ in range(repeat):
            registry_matches(registry, mac, clues)
        out.append((time.perf_counter() - started) / repeat * 1000)
    return out[0], out[1]


def evidence(devices: int, facts: int) -> tuple[int, float]:
    """Clues kept and heap (KiB) after ``devices`` × ``facts`` distinct web facts."""
    identifier = LiveIdentifier(load_knowledge(), None)
    tracemalloc.start()
    for d in range(devices):
        mac = f"02:00:00:01:{d >> 8:02x}:{d & 0xFF:02x}"
        for f in range(facts):
            identifier.on_web(mac, [("sni", f"{f:05d}" + "x" * 123)])
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    kept = sum(len(dev.clues) for dev in identifier.evidence.scan.devices.values())
    return kept, current / 1024


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print("| forged flows | devices | flows held | bytes held KiB | heap peak KiB "
          "| RSS growth KiB | µs/packet |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for flows, devices in ((1000, 1), (args.flows, 1), (args.flows, 64)):
        r = flood(flows, devices)
        print(f"| {flows:,} | {devices} | {r['held_flows']:.0f} | {r['held_kib']:.0f} "
              f"| {r['heap_peak_kib']:.0f} | {r['rss_growth_kib']:.0f} "
              f"| {r['us_per_packet']:.1f} |")
    ordinary, worst = registry_cost(args.repeat)
    print(f"\nregistry match: ordinary device {ordinary:.2f} ms, adversarial (256 clues "
          f"of worst-case text) {worst:.2f} ms (×{worst / ordinary:.0f})")
    kept, heap = evidence(512, 200)
    print(f"live evidence: 512 devices × 200 distinct facts → {kept:,} clues kept, "
          f"{heap:.0f} KiB heap")


if __name__ == "__main__":
    main()
