"""Connectivity probes that run *inside* a namespace (pass them to ``call_in``).

Each one makes one real attempt with a short timeout and returns a boolean:
a TCP connection completed, a UDP datagram echoed back, an ICMP echo answered.
They open their sockets in the calling namespace, so they never reach the host's
network.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess


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
