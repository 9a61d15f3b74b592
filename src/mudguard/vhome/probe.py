"""Connectivity probes that run *inside* a namespace (pass them to ``call_in``).

Each one makes one real attempt with a short timeout and returns a boolean:
a TCP connection completed, a UDP datagram echoed back, an ICMP echo answered.
They open their sockets in the calling namespace, so they never reach the host's
network.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def tcp_connect(address: str, port: int, timeout: float = 1.0, *,
                source: str | None = None, source_port: int = 0) -> bool:
    """True if a TCP connection to ``address``:``port`` completes within ``timeout``."""
    with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if source or source_port:
            sock.bind((source or ("::" if _family(address) == socket.AF_INET6 else "0.0.0.0"),  # noqa: S104 - inside a test namespace
                       source_port))
        try:
            sock.connect((address, port))
        except OSError:
            return False
        return True


def udp_exchange(address: str, port: int, timeout: float = 1.0, *,
                 payload: bytes = b"mudguard-probe", source_port: int = 0) -> bool:
    """True if a datagram sent to ``address``:``port`` is echoed back within ``timeout``."""
    family = _family(address)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        if source_port:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0",  # noqa: S104
                       source_port))
        try:
            sock.sendto(payload, (address, port))
            data, _ = sock.recvfrom(2048)
        except OSError:
            return False
        return data == payload


def ping(address: str, timeout: float = 1.0) -> bool:
    """True if one ICMP/ICMPv6 echo to ``address`` is answered within ``timeout``."""
    wait = max(1, round(timeout))
    argv = ["ping", "-n", "-q", "-c", "1", "-W", str(wait), address]
    if _family(address) == socket.AF_INET6:
        argv.insert(1, "-6")
    proc = subprocess.run(argv, capture_output=True, timeout=timeout + 5, check=False)
    return proc.returncode == 0


def udp_port_bound(address: str, port: int) -> bool:
    """True if something in this namespace already listens on UDP ``address``:``port``."""
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return True
        return False


def tcp_probe_loop(address: str, port: int, *, stop_file: Path, interval: float = 0.003,
                   connect_timeout: float = 0.05, max_seconds: float = 60.0,
                   max_probes: int = 30000,
                   ready_file: Path | None = None) -> list[tuple[float, bool]]:
    """Start a TCP connection to ``address``:``port`` every ``interval`` seconds until
    ``stop_file`` exists (or the bounds); return each attempt as (wall-clock time it
    started, completed within ``connect_timeout``). Non-blocking: attempts overlap, so
    a dropped SYN does not slow the loop down. ``ready_file`` is created at the first
    completed connection (a test waits for it instead of guessing the start-up time)."""
    family = _family(address)
    results: list[tuple[float, bool]] = []
    pending: dict[socket.socket, tuple[int, float]] = {}  # -> (index, monotonic start)
    selector = selectors.DefaultSelector()
    deadline = time.monotonic() + max_seconds
    next_start = time.monotonic()

    def finish(sock: socket.socket, ok: bool) -> None:
        index, _ = pending.pop(sock)
        results[index] = (results[index][0], ok)
        if ok and ready_file is not None and not ready_file.exists():
            ready_file.touch()
        selector.unregister(sock)
        sock.close()

    try:
        while time.monotonic() < deadline and (pending or len(results) < max_probes):
            now = time.monotonic()
            stopping = stop_file.exists() or len(results) >= max_probes
            if not stopping and now >= next_start:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                results.append((time.time(), False))
                code = sock.connect_ex((address, port))
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                else:
                    pending[sock] = (len(results) - 1, now)
                    selector.register(sock, selectors.EVENT_WRITE)
                next_start = now + interval
            elif stopping and not pending:
                break
            for key, _ in selector.select(timeout=interval / 3):
                sock = key.fileobj  # type: ignore[assignment]
                finish(sock, sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
            now = time.monotonic()
            for sock, (_, started) in list(pending.items()):
                if now - started > connect_timeout:
                    finish(sock, False)
    finally:
        for sock in list(pending):
            finish(sock, False)
        selector.close()
    return results


def probe_loop_main(argv: list[str] | None = None) -> None:
    """``ADDRESS PORT STOP_FILE SECONDS [READY_FILE]``: run ``tcp_probe_loop`` in this
    namespace and print its attempts as one JSON list (for a test that runs it as a
    process)."""
    args = argv if argv is not None else sys.argv[1:]
    address, port, stop, seconds = args[:4]
    ready = Path(args[4]) if len(args) > 4 else None
    print(json.dumps(tcp_probe_loop(address, int(port), stop_file=Path(stop),
                                    max_seconds=float(seconds), ready_file=ready)))
