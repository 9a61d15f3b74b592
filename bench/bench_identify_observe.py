"""Identification from web flows (#16): cost on new connections, observed or not.

A virtual home (namespaces) on policy as data (the daemon's default) with one device
on the home default (no MUD file, so the kernel observes its web flows). Measured in
the same run, alternating:

- **bare**: the fixed ruleset without the two identification rules (the ``forward``
  jump to ``identify_log`` and the jump to ``identify_new``): no identification at all;
- **not observed**: the rules in, the device's MAC out of ``identify_macs`` (what a
  device with a MUD file, or a trusted one, pays: one ct-mark test per forwarded
  packet, one set lookup per new TCP flow);
- **observed**: the device in ``identify_macs``: its new flows to 443 are marked, the
  first payload packet is logged to NFLOG and read by a listener in the gateway
  namespace as the daemon's ``WebWatcher`` does (``WebObserver``: SNI parsed, the
  flow's server stream opened).

Two workloads: ``--connects`` connections that each send a real TLS 1.2 ClientHello
(Python's ssl, generated once) to a TCP server that never answers it, then reset (the
kernel's per-device limit, 20/s burst 40, logs the first few; the rest pay the rules
only); and ``--handshakes`` full TLS 1.2 handshakes at 8/s with a real server whose
certificate's organisation the listener reads (port 8443) (every ClientHello and the server's
first flight logged). Best of several runs (a shared machine only slows runs down).

Run as root: ``.venv/bin/python bench/bench_identify_observe.py [--connects 1500]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import select
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mudguard.enforce import Nft
from mudguard.enforce.data_gateway import DataGatewayEnforcer
from mudguard.policy import DeviceFacts, LifecycleState
from mudguard.vhome import INTERNET_HOSTS, VirtualHome, enter, run

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CLOUD4 = INTERNET_HOSTS["cloud"][0]
WEB4 = INTERNET_HOSTS["mfg"][0]  # the real TLS server
GROUP = 102
ORG = "TP-Link Corporation Limited"

LISTENER = """
import select, sys, time
from mudguard.watch.identify_listener import WebWatcher
from mudguard.watch.listener import NflogSocket
from mudguard.policy._nft import IDENTIFY_SERVER_SNAPLEN
facts = []
watcher = WebWatcher(lambda mac, f: facts.extend(f), group={group},
                     device_of=lambda address: "device")
sock = NflogSocket({group}, copy_range=IDENTIFY_SERVER_SNAPLEN, timeout=0.2)
print("ready", flush=True)
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    for packet in sock.receive():
        watcher.handle(packet)
    if sys.stdin in select.select([sys.stdin], [], [], 0)[0]:
        break
sock.close()
orgs = sum(1 for name, _ in facts if name == "cert_org")
print(watcher.read, sum(1 for name, _ in facts if name == "sni"), orgs, flush=True)
"""


def client_hello() -> bytes:
    """A real TLS 1.2 ClientHello (Python's ssl)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="cloud.example.com")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def certificate(path: Path) -> None:
    """A self-signed EC certificate with subject O=``ORG`` (key and certificate PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloud.example.com"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


@contextlib.contextmanager
def tls_server(ns: str, cert_file: Path) -> Iterator[None]:
    """TLS 1.2 on WEB4:8443 in ``ns``: handshake, echo 16 bytes, close."""
    stop, ready = threading.Event(), threading.Event()

    def serve() -> None:
        enter(ns)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_file)
        with socket.create_server((WEB4, 8443), backlog=256) as listener:
            ready.set()
            deadline = time.monotonic() + 600
            while not stop.is_set() and time.monotonic() < deadline:
                if not select.select([listener], [], [], 0.1)[0]:
                    continue
                conn, _ = listener.accept()
                conn.settimeout(2)
                with contextlib.suppress(OSError, ssl.SSLError), conn, \
                        ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(tls.recv(16))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def connect_loop(address: str, count: int, hello: bytes) -> list[float]:
    """``count`` connections to ``address``:443 that each send ``hello`` then reset: the
    latency of each connect+send in ms."""
    out: list[float] = []
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t0 = time.perf_counter()
            sock.connect((address, 443))
            sock.sendall(hello)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def handshake_loop(address: str, count: int, pace: float) -> list[float]:
    """``count`` full TLS 1.2 handshakes + one exchange, ``pace`` seconds apart: ms each."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    out: list[float] = []
    for _ in range(count):
        time.sleep(pace)
        t0 = time.perf_counter()
        with socket.create_connection((address, 8443), timeout=3) as raw, \
                ctx.wrap_socket(raw, server_hostname="cloud.example.com") as tls:
            tls.sendall(b"hello")
            tls.recv(16)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(lat: list[float]) -> tuple[float, float, float]:
    """(connections per second over the fastest 99 %, p50 ms, p99 ms)."""
    lat = sorted(lat)
    kept = lat[:max(1, int(len(lat) * 0.99))]
    return len(kept) / (sum(kept) / 1000), statistics.median(lat), kept[-1]


class Listener:
    """The identification group read in the gateway namespace, as by the daemon."""

    def __init__(self, home: VirtualHome) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", home.gw_ns, sys.executable, "-c",
             textwrap.dedent(LISTENER.format(group=GROUP))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> tuple[int, int, int]:
        """(packets read, SNIs, certificate organisations)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        time.sleep(0.3)
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        read, snis, orgs = map(int, self.proc.stdout.readline().split())
        self.proc.wait(10)
        return read, snis, orgs


def drop_identify_rules(home: VirtualHome) -> None:
    """Delete the two identification jumps from ``forward``: a home without #16's rules."""
    listing = run(["nft", "-a", "list", "chain", "inet", "mudguard", "forward"],
                  ns=home.gw_ns).stdout
    handles = [line.rsplit("# handle ", 1)[1].strip() for line in listing.splitlines()
               if "jump identify_" in line]
    assert len(handles) == 2, listing
    for handle in handles:
        run(["nft", "delete", "rule", "inet", "mudguard", "forward", "handle", handle],
            ns=home.gw_ns)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--connects", type=int, default=1500)
    parser.add_argument("--handshakes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces and nftables)")
    hello = client_hello()
    with VirtualHome(prefix=f"mgT5b{os.getpid() % 100}", devices=1) as home, \
            tempfile.TemporaryDirectory(prefix="mgT5-") as tmp:
        home.serve(home.inet_ns, tcp=[443])
        cert_file = Path(tmp) / "web.pem"
        certificate(cert_file)
        node = home.nodes[0]
        # Lift the per-device new-connection cap (50/s): measure the rules, not the cap.
        context = home.context(new_conn_rate=1_000_000, new_conn_burst=1_000_000,
                               identify_log_group=GROUP)
        enforcer = DataGatewayEnforcer(Nft.in_namespace(home.gw_ns), context,
                                       clock=lambda: NOW)
        me = DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                         state=LifecycleState.DEFAULT)

        def install(observed: bool, rules: bool = True) -> None:
            enforcer.install_home()
            enforcer.apply_device(me, None, ())
            if not rules:
                drop_identify_rules(home)
            if not observed:
                run(["nft", "delete", "element", "inet", "mudguard", "identify_macs",
                     f"{{ {node.mac} }}"], ns=home.gw_ns)
            run(["conntrack", "-F"], ns=home.gw_ns, check=False)

        def connects() -> tuple[float, float, float]:
            return summary(home.call(node.ns, connect_loop, CLOUD4, args.connects, hello,
                                     timeout=300))

        def handshakes() -> tuple[float, float, float]:
            return summary(home.call(node.ns, handshake_loop, WEB4, args.handshakes, 1 / 8,
                                     timeout=300))

        keys = ("bare", "not observed", "observed", "hs bare", "hs not observed",
                "hs observed")
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in keys}
        logged: list[tuple[str, int, int, int, int]] = []
        with tls_server(home.inet_ns, cert_file):
            install(True)
            connects()  # warm-up
            for repeat in range(args.repeats):
                for step in range(6):  # the order turns each repeat: no variant always first
                    which = (repeat + step) % 3
                    workload = step // 3
                    prefix = "hs " if workload else ""
                    measure = handshakes if workload else connects
                    install(which == 2, rules=which > 0)
                    listener = Listener(home) if which == 2 else None
                    key = prefix + ("bare", "not observed", "observed")[which]
                    results[key].append(measure())
                    if listener is not None:
                        logged.append(("handshakes 8/s" if workload else "full speed",
                                       args.handshakes if workload else args.connects,
                                       *listener.stop()))

    def best(key: str) -> tuple[float, float, float]:
        runs = results[key]
        return (max(r[0] for r in runs), min(r[1] for r in runs), min(r[2] for r in runs))

    print(f"best of {args.repeats} alternating runs (rate: connections per second of the "
          "measured time, fastest 99 %)")
    print(f"{'workload / ruleset':>48} {'conn/s':>8} {'rate':>7} {'p50':>9} {'p50':>7} "
          f"{'p99':>9}")
    for label, key, base in (
            (f"{args.connects} connect+ClientHello: no #16 rule", "bare", "bare"),
            ("rules in, device not observed", "not observed", "bare"),
            ("device observed (mark, NFLOG, listener)", "observed", "bare"),
            (f"{args.handshakes} TLS 1.2 handshakes at 8/s: no rule", "hs bare", "hs bare"),
            ("rules in, device not observed", "hs not observed", "hs bare"),
            ("observed: hello + server flight logged", "hs observed", "hs bare")):
        rate, p50, p99 = best(key)
        base_rate, base_p50, _ = best(base)
        print(f"{label:>48} {rate:>8.0f} {rate / base_rate:>6.2f}x {p50 * 1000:>7.0f}us "
              f"{p50 / base_p50:>6.2f}x {p99 * 1000:>7.0f}us")
    for what, connects, read, snis, orgs in logged:
        print(f"  {what}: {connects} connections, {read} packets logged and read, "
              f"{snis} SNIs, {orgs} certificate organisations")


if __name__ == "__main__":
    main()
