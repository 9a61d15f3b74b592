"""RFC 9761 observation cost: new-connection rate and latency with and without it.

A virtual home (namespaces) with one device whose MUD file allows TCP 8883 to the cloud
host. Each connection is a new flow that carries a real ClientHello (Python's ssl,
TLS 1.3, generated once) as its first payload, then closes with a reset. Measured in
the same run, alternating:

- **without**: the same ACE without a (D)TLS profile: the device chain sets no mark;
  every forwarded packet still meets the main table's first rule (one conntrack-mark
  test), so this is what every home pays;
- **with**: the ACE with a profile: the SYN marks the flow, the ClientHello packet is
  logged to NFLOG (snap length 2048, at most 10 per second per device and 50 in all:
  the rest pass unlogged)
  and a listener in the gateway namespace reads the group, as the daemon's
  ``TlsWatcher`` does (parsing included).

Best of several runs (a shared machine only slows runs down).

With ``--ruleset data`` the gateway runs policy as data (``DataGatewayEnforcer``) and
two more rows measure the session-4 way, where a profiled device fell back to its own
chains (reached through the fixed ruleset's fallback map), against the profile's rows as
data (``tls_profiles`` gate, ``tls_out`` lookups, ``tls_flow``), in the same run.

Run as root: ``.venv/bin/python bench/bench_tls_observe.py [--connects 1500]
[--ruleset data]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from typing import Any

from mudguard.enforce import Enforcer, Nft
from mudguard.enforce.data_gateway import DataGatewayEnforcer
from mudguard.mud import MudFile, parse_mud
from mudguard.policy import DeviceFacts, LifecycleState, _data
from mudguard.vhome import INTERNET_HOSTS, VirtualHome, run

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLOUD4 = INTERNET_HOSTS["cloud"][0]
PORT = 8883
GROUP = 101

MUD: dict[str, Any] = {
    "ietf-mud:mud": {
        "mud-version": 1, "mud-url": "https://sensor.example.com/bench.json",
        "last-update": "2026-01-01T00:00:00Z", "is-supported": True,
        "from-device-policy": {"access-lists": {"access-list": [{"name": "out"}]}}},
    "ietf-access-control-list:acls": {"acl": [{"name": "out", "type": "ipv4-acl-type",
        "aces": {"ace": [{"name": "mqtts", "matches": {
            "ipv4": {"protocol": 6, "destination-ipv4-network": f"{CLOUD4}/32"},
            "tcp": {"destination-port": {"operator": "eq", "port": PORT}},
            "ietf-acl-tls:client-profiles": {"tls-dtls-profile": [{
                "name": "p", "supported-tls-version": ["tls13"],
                "application-protocol": ["mqtt"]}]}},
            "actions": {"forwarding": "accept"}}]}}]},
}

LISTENER = """
import sys, time
from mudguard.watch.clienthello import SNAPLEN, ClientHelloError, parse_client_hello, \\
    transport_payload
from mudguard.watch.listener import NflogSocket
sock = NflogSocket({group}, copy_range=SNAPLEN, timeout=0.2)
print("ready", flush=True)
seen = parsed = 0
deadline = time.monotonic() + {seconds}
while time.monotonic() < deadline:
    for packet in sock.receive():
        seen += 1
        decoded = transport_payload(packet.payload)
        try:
            if decoded is not None:
                parse_client_hello(decoded[-1])
                parsed += 1
        except ClientHelloError:
            pass
    if sys.stdin in __import__("select").select([sys.stdin], [], [], 0)[0]:
        break
sock.close()
print(seen, parsed, flush=True)
"""


def client_hello() -> bytes:
    """A real TLS 1.3 ClientHello (Python's ssl, ALPN mqtt)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["mqtt"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="cloud.example.com")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def connect_loop(address: str, port: int, count: int, hello: bytes,
                 pace: float = 0.0) -> tuple[list[float], float]:
    """``count`` connections that each send ``hello`` (``pace`` seconds apart): the latency
    of each connect+send in ms, and the loop's seconds without the pauses."""
    out: list[float] = []
    for _ in range(count):
        if pace:
            time.sleep(pace)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t0 = time.perf_counter()
            sock.connect((address, port))
            sock.sendall(hello)
            out.append((time.perf_counter() - t0) * 1000)
    return out, sum(out) / 1000


def measure(home: VirtualHome, count: int, hello: bytes, pace: float = 0.0
            ) -> tuple[float, float, float]:
    """(connections per second of connect+send time over the fastest 99 %, p50 and p99
    latency in ms). The slowest 1 % are left out of the rate: a SYN the server's accept
    backlog dropped costs a 1 s retransmission, which would decide the mean alone."""
    lat, _busy = home.call(home.nodes[0].ns, connect_loop, CLOUD4, PORT, count, hello, pace,
                           timeout=300)
    lat.sort()
    kept = lat[:max(1, int(len(lat) * 0.99))]
    return len(kept) / (sum(kept) / 1000), statistics.median(lat), kept[-1]


def drop_hello_rule(home: VirtualHome) -> None:
    """Delete the main table's ClientHello rule: a home without any RFC 9761 support."""
    listing = run(["nft", "-a", "list", "chain", "inet", "mudguard", "forward"],
                  ns=home.gw_ns).stdout
    handles = [line.rsplit("# handle ", 1)[1].strip() for line in listing.splitlines()
               if 'prefix "mgt"' in line]
    assert len(handles) == 1, listing
    run(["nft", "delete", "rule", "inet", "mudguard", "forward", "handle", handles[0]],
        ns=home.gw_ns)


class Listener:
    """The ClientHello group read (and parsed) in the gateway namespace, as by the daemon."""

    def __init__(self, home: VirtualHome) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", home.gw_ns, sys.executable, "-c",
             textwrap.dedent(LISTENER.format(group=GROUP, seconds=300))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> tuple[int, int]:
        """(packets logged, ClientHellos parsed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        time.sleep(0.3)
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        seen, parsed = map(int, self.proc.stdout.readline().split())
        self.proc.wait(10)
        return seen, parsed


def without_profile() -> MudFile:
    doc = copy.deepcopy(MUD)
    del doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]["matches"][
        "ietf-acl-tls:client-profiles"]
    mud = parse_mud(json.dumps(doc)).mud
    assert mud is not None and not mud.tls_profiled_aces()
    return mud


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--connects", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paced", type=int, default=80,
                        help="connections of the 8/s runs (every ClientHello logged)")
    parser.add_argument("--ruleset", choices=("chains", "data"), default="chains")
    args = parser.parse_args()
    data = args.ruleset == "data"
    shadowed = _data._watch_shadowed

    def as_fallback(on: bool) -> None:
        """Session 4 on data: a TLS-profiled device keeps its chains (the fallback)."""
        _data._watch_shadowed = (  # type: ignore[assignment]
            (lambda rows: any(r.watched for r in rows)) if on else shadowed)
        _data._BUNDLES.clear()
        _data._ROWS.clear()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    hello = client_hello()
    profiled = parse_mud(json.dumps(MUD)).mud
    assert profiled is not None and profiled.tls_profiled_aces()
    plain = without_profile()
    with VirtualHome(prefix=f"h18b{os.getpid() % 1000}", devices=1) as home:
        home.serve(home.inet_ns, tcp=[PORT])
        node = home.nodes[0]
        # Lift the per-device new-connection cap (50/s): measure the rules, not the cap.
        context = home.context(new_conn_rate=1_000_000, new_conn_burst=1_000_000,
                               tls_log_group=GROUP)
        kind = DataGatewayEnforcer if data else Enforcer
        enforcer = kind(Nft.in_namespace(home.gw_ns), context, clock=lambda: NOW)
        enforcer.install_home()
        me = DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                         mud_url=profiled.mud_url, state=LifecycleState.PROFILED)

        def apply(mud: MudFile) -> None:
            enforcer.apply_device(me, mud, ())
            assert home.tcp(node.ns, CLOUD4, PORT), "the allowed flow must pass"
            run(["conntrack", "-F"], ns=home.gw_ns, check=False)

        apply(plain)
        measure(home, args.connects, hello)  # warm-up
        keys = ("bare", "without", "with", "paced-without", "paced-with", "fallback",
                "paced-fallback")
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in keys}
        logged: list[tuple[str, int, int, int]] = []
        def session4() -> None:
            """The profiled device as its session-4 fallback chain (data only)."""
            as_fallback(True)
            apply(profiled)
            assert enforcer.data.installed[node.mac.lower()].fallback, "the fallback"
            listener = Listener(home)
            results["fallback"].append(measure(home, args.connects, hello))
            logged.append(("full speed, fallback chain", args.connects, *listener.stop()))
            listener = Listener(home)
            results["paced-fallback"].append(measure(home, args.paced, hello, 1 / 8))
            logged.append(("8/s, fallback chain", args.paced, *listener.stop()))
            as_fallback(False)
            apply(profiled)
            assert not enforcer.data.installed[node.mac.lower()].fallback

        for repeat in range(args.repeats):
            if data and repeat % 2:  # order rotated: first in odd runs, last in even ones
                session4()
            enforcer.install_home()
            apply(plain)
            drop_hello_rule(home)
            results["bare"].append(measure(home, args.connects, hello))
            enforcer.install_home()
            apply(plain)
            results["without"].append(measure(home, args.connects, hello))
            apply(profiled)
            listener = Listener(home)
            results["with"].append(measure(home, args.connects, hello))
            logged.append(("full speed", args.connects, *listener.stop()))
            apply(plain)
            results["paced-without"].append(measure(home, args.paced, hello, 1 / 8))
            apply(profiled)
            listener = Listener(home)
            results["paced-with"].append(measure(home, args.paced, hello, 1 / 8))
            logged.append(("8/s", args.paced, *listener.stop()))
            if data and not repeat % 2:
                session4()
    def best(key: str) -> tuple[float, float, float]:
        runs = results[key]
        return (max(r[0] for r in runs), min(r[1] for r in runs), min(r[2] for r in runs))

    print(f"ruleset {args.ruleset}; new TCP connections, each sending a {len(hello)}-byte "
          "TLS 1.3 ClientHello; "
          f"best of {args.repeats} alternating runs (rate: connections per second of "
          "connect+send time, fastest 99 %)")
    print(f"{'ruleset':>44} {'conn/s':>8} {'rate':>7} {'p50':>8} {'p50':>7} {'p99':>8}")
    rows = [(f"{args.connects} at full speed: no RFC 9761 rule", "bare", "bare"),
            ("main-table rule only (no profile)", "without", "bare"),
            ("profile: mark + NFLOG + listener", "with", "bare"),
            (f"{args.paced} at 8/s: no profile", "paced-without", "paced-without"),
            ("profile: every ClientHello logged", "paced-with", "paced-without")]
    if data:
        rows += [("full speed, profile as data vs its chain", "with", "fallback"),
                 ("full speed, session 4: its fallback chain", "fallback", "bare"),
                 ("8/s, profile as data vs its chain", "paced-with", "paced-fallback"),
                 ("8/s, session 4: its fallback chain", "paced-fallback", "paced-without")]
    for label, key, base in rows:
        rate, p50, p99 = best(key)
        base_rate, base_p50, _ = best(base)
        print(f"{label:>44} {rate:>8.0f} {rate / base_rate:>6.2f}x {p50 * 1000:>6.0f}us "
              f"{p50 / base_p50:>6.2f}x {p99 * 1000:>6.0f}us")
    for what, connects, seen, parsed in logged:
        print(f"  {what}: {seen} of {connects} ClientHellos logged (cap 10/s per device, "
              f"burst 20; 50/s in all), "
              f"{parsed} parsed")


if __name__ == "__main__":
    main()
