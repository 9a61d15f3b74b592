"""A small TCP/UDP server process for the virtual home: ``python -m mudguard.vhome.serve``.

It accepts TCP connections on every ``--tcp PORT`` (closing them after a short
greeting) and echoes datagrams on every ``--udp PORT``, on all addresses of its
namespace (IPv4 and IPv6), until ``--lifetime`` seconds have passed or it is
terminated. It prints ``ready`` once every socket listens.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time


def _bind(kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    else:
        # Reply from the address the datagram came to, not the route's preferred
        # source: a firewall's conntrack matches replies by both addresses.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    sock.setblocking(False)
    return sock


def _echo(sock: socket.socket) -> None:
    data, ancdata, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(20))
    cmsgs = [(level, kind, info[:16] + b"\0\0\0\0") for level, kind, info in ancdata
             if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO]
    sock.sendmsg([data], cmsgs, 0, peer)


def serve(tcp_ports: list[int], udp_ports: list[int], lifetime: float) -> None:
    """Serve until ``lifetime`` seconds have passed."""
    sel = selectors.DefaultSelector()
    for port in tcp_ports:
        sel.register(_bind(socket.SOCK_STREAM, port), selectors.EVENT_READ, "tcp")
    for port in udp_ports:
        sel.register(_bind(socket.SOCK_DGRAM, port), selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    end = time.monotonic() + lifetime
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=min(1.0, max(0.0, end - time.monotonic()))):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                if key.data == "tcp":
                    conn, _ = sock.accept()
                    conn.close()
                else:
                    _echo(sock)
            except OSError:
                continue


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(prog="mudguard.vhome.serve")
    parser.add_argument("--tcp", type=int, action="append", default=[])
    parser.add_argument("--udp", type=int, action="append", default=[])
    parser.add_argument("--lifetime", type=float, default=600.0)
    args = parser.parse_args(argv)
    serve(args.tcp, args.udp, args.lifetime)


if __name__ == "__main__":
    main(sys.argv[1:])
