"""The resolver's asyncio adapter: sockets, the clock and the nft set fills around DnsGuard.

``DnsServer`` listens on the gateway's LAN addresses (UDP and TCP, port 53),
hands every packet to the sans-IO ``DnsGuard`` (``dns/core.py``) with
``loop.time()`` and carries out the commands it returns:

- ``ForwardUpstream``: a fresh UDP socket per query, connected to the upstream
  resolver, so the kernel picks a random source port and drops datagrams from
  any other address (the core also checks id and question); over TCP when the
  device asked over TCP.
- ``AddSetElements``: every command of one answer goes to the kernel in one
  transaction (``SetFiller``; ``NftSetFiller`` sends it over nfnetlink by default,
  a cost that does not grow with the ruleset, or through libnftables), then
  ``fill_done`` releases (or SERVFAILs) the answer.
  A fast filler (``inline_ok``: the netlink one, ~0.05 ms whatever the ruleset)
  runs on the event loop: a hop to a thread would cost more than the fill
  (+0.05 ms against +0.3 ms p50 under load, ``bench/bench_dns_latency.py``). A
  slow one (libnftables: milliseconds with a large ruleset) runs in a single
  worker thread, so it never stalls other devices' lookups.
- ``SendAnswer``: back through the socket the query came in on.

Why not dnsmasq ``--nftset``: see the module docstring of ``dns/core.py``.

Everything is bounded: queries in flight (the core's ``max_outstanding``), TCP
connections, queries per TCP connection and idle time per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

from mudguard.dns.core import (
    AddSetElements,
    Client,
    Command,
    DnsGuard,
    Drop,
    ForwardUpstream,
    GuardConfig,
    SendAnswer,
)

log = logging.getLogger(__name__)

MAX_TCP_CLIENTS = 64
MAX_TCP_QUERIES = 100
TCP_IDLE_S = 10.0
TIMER_PERIOD_S = 0.25


class SetFiller(Protocol):
    """Puts a batch of set elements into the kernel; raises if it could not."""

    def fill(self, commands: Sequence[AddSetElements]) -> None:
        """Apply all of ``commands`` in one transaction."""


def element_batch(commands: Iterable[AddSetElements]) -> list[dict[str, Any]]:
    """libnftables JSON that adds (or refreshes) the elements of ``commands``.

    ``expires`` is set along with ``timeout``: re-adding an element that exists
    with the same timeout does not restart its expiry on this kernel (measured,
    6.18), while an explicit ``expires`` does; so every served answer refreshes.
    """
    batch: list[dict[str, Any]] = []
    for cmd in commands:
        elems = [{"elem": {"val": {"concat": [device, remote]}, "timeout": cmd.timeout_s,
                           "expires": cmd.timeout_s}} for device, remote in cmd.elements]
        batch.append({"add": {"element": {"family": "inet", "table": cmd.table,
                                          "name": cmd.set_name, "elem": elems}}})
    return batch


class NftSetFiller:
    """``SetFiller`` for the DNS sets of the device shards (each command names its table).

    Args:
        via: ``"netlink"`` (default): one nfnetlink batch per answer
            (``dns.netlink.NetlinkSetFiller``), whose cost does not grow with the
            ruleset; its socket is opened on first use, in the namespace of the thread
            that fills (the server's, like its DNS sockets). ``"libnftables"``:
            through ``enforce.nft.Nft`` (4–5 ms per answer with 1,000 devices installed).
    """

    def __init__(self, via: str = "netlink") -> None:
        if via not in ("netlink", "libnftables"):
            raise ValueError(f"via must be 'netlink' or 'libnftables', got {via!r}")
        self._via = via
        self.inline_ok = via == "netlink"
        """True when a fill is cheap enough to run on the event loop."""
        self._impl: SetFiller | None = None
        if via == "libnftables":
            self._impl = _LibnftablesFiller()

    def fill(self, commands: Sequence[AddSetElements]) -> None:
        """Apply all of ``commands`` in one kernel transaction (raises on refusal)."""
        if self._impl is None:
            from mudguard.dns.netlink import NetlinkSetFiller

            self._impl = NetlinkSetFiller()
        self._impl.fill(commands)


class _LibnftablesFiller:
    def __init__(self) -> None:
        from mudguard.enforce.nft import Nft

        self._nft = Nft(netlink=False)  # the reference path, for comparisons

    def fill(self, commands: Sequence[AddSetElements]) -> None:
        self._nft.apply(element_batch(commands))


@dataclass(frozen=True, slots=True)
class Upstream:
    """The resolver mudguard forwards to."""

    address: str
    port: int = 53


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self.transport is not None
        self.server.udp_query(data, (str(addr[0]), int(addr[1])), self.transport)


class DnsServer:
    """Serves DNS on the LAN addresses and fills nft sets through ``DnsGuard``.

    Args:
        guard: the core, already fed with the devices' policies.
        listen: the gateway's LAN addresses to bind (IPv4 and/or IPv6).
        upstream: where queries are forwarded.
        filler: puts set elements into the kernel (``NftSetFiller``); None only
            when the guard's ``insert`` is off.
        port: 53 in production; tests may use another.
        inline_fill: apply fills on the event loop (True) or in the worker thread
            (False); None (default): inline when the filler's ``inline_ok`` says so.
        on_answer: told the wire of every answer sent to a device (the watcher learns
            the addresses of DNS-over-HTTPS names from it, ``ResolverWatch.learn_answer``);
            its failure is logged, the answer is sent regardless.
    """

    def __init__(self, guard: DnsGuard, *, listen: Sequence[str], upstream: Upstream,
                 filler: SetFiller | None, port: int = 53,
                 inline_fill: bool | None = None,
                 on_answer: Callable[[bytes], None] | None = None) -> None:
        self.guard = guard
        self.on_answer = on_answer
        self.listen = tuple(listen)
        self.upstream = upstream
        self.filler = filler
        self.port = port
        if inline_fill is None:
            inline_fill = bool(getattr(filler, "inline_ok", False))
        self.inline_fill = inline_fill
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._routes: dict[Client, tuple[asyncio.DatagramTransport, int]] = {}
        self._tcp_clients: dict[Client, asyncio.StreamWriter] = {}
        self._upstream_socks: dict[int, socket.socket] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """Bind every listen address (UDP and TCP) and start the timer."""
        self._loop = asyncio.get_running_loop()
        if not self.inline_fill:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dns-fill")
        for address in self.listen:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Listener(self), local_addr=(address, self.port))
            self._udp.append(transport)
            self._tcp.append(await asyncio.start_server(
                self._tcp_client, host=address, port=self.port, reuse_address=True))
        self._timer = asyncio.create_task(self._tick())
        log.info("DNS guard listening on %s port %d, upstream %s",
                 ", ".join(self.listen), self.port, self.upstream.address)

    async def stop(self) -> None:
        """Close every socket and wait for in-flight fills."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        for writer in list(self._tcp_clients.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for query_id in list(self._upstream_socks):
            self._close_upstream(query_id)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._udp.clear()
        self._tcp.clear()

    async def serve_forever(self) -> None:
        """Start, then run until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (set by ``start``)."""
        assert self._loop is not None, "start() first"
        return self._loop

    # ----------------------------------------------------------------- device side

    def udp_query(self, data: bytes, client: Client, transport: asyncio.DatagramTransport) -> None:
        """A datagram from a device."""
        _t, refs = self._routes.get(client, (transport, 0))
        self._routes[client] = (transport, refs + 1)
        self._run(self.guard.handle_query(data, client, self.loop.time()), client)

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client: Client = (str(peer[0]), int(peer[1]))
        if len(self._tcp_clients) >= MAX_TCP_CLIENTS:
            writer.close()
            return
        self._tcp_clients[client] = writer
        try:
            for _ in range(MAX_TCP_QUERIES):
                size = struct.unpack("!H", await asyncio.wait_for(
                    reader.readexactly(2), TCP_IDLE_S))[0]
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_S)
                self._run(self.guard.handle_query(data, client, self.loop.time(), tcp=True))
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            if self._tcp_clients.get(client) is writer:
                del self._tcp_clients[client]
            writer.close()

    def _send(self, cmd: SendAnswer) -> None:
        if self.on_answer is not None:  # before sending: learnt before the device connects
            try:
                self.on_answer(cmd.wire)
            except Exception:
                log.exception("answer observer failed")
        if cmd.tcp:
            writer = self._tcp_clients.get(cmd.client)
            if writer is not None and not writer.is_closing():
                writer.write(struct.pack("!H", len(cmd.wire)) + cmd.wire)
            return
        route = self._routes.get(cmd.client)
        if route is None:
            log.warning("no socket to answer %s on", cmd.client[0])
            return
        transport, refs = route
        transport.sendto(cmd.wire, cmd.client)
        if refs <= 1:
            del self._routes[cmd.client]
        else:
            self._routes[cmd.client] = (transport, refs - 1)

    # ----------------------------------------------------------------- commands

    def _run(self, commands: list[Command], client: Client | None = None) -> None:
        fills: dict[int, list[AddSetElements]] = {}
        for cmd in commands:
            if isinstance(cmd, SendAnswer):
                self._send(cmd)
            elif isinstance(cmd, ForwardUpstream):
                self._forward(cmd)
            elif isinstance(cmd, AddSetElements):
                fills.setdefault(cmd.token, []).append(cmd)
            elif isinstance(cmd, Drop):
                self._forget_route(client)
                log.debug("dropped: %s", cmd.reason)
        for token, batch in fills.items():
            self._fill(token, batch)

    def _forget_route(self, client: Client | None) -> None:
        if client is None or client not in self._routes:
            return
        transport, refs = self._routes[client]
        if refs <= 1:
            del self._routes[client]
        else:
            self._routes[client] = (transport, refs - 1)

    def _fill(self, token: int, batch: list[AddSetElements]) -> None:
        if self.filler is None:
            self._run(self.guard.fill_done(token, False, self.loop.time()))
            return
        if self.inline_fill:
            self._run(self.guard.fill_done(token, self._try_fill(batch), self.loop.time()))
            return
        self._spawn(self._fill_in_thread(token, batch))

    async def _fill_in_thread(self, token: int, batch: list[AddSetElements]) -> None:
        ok = await self.loop.run_in_executor(self._executor, self._try_fill, batch)
        self._run(self.guard.fill_done(token, ok, self.loop.time()))

    def _try_fill(self, batch: list[AddSetElements]) -> bool:
        assert self.filler is not None
        try:
            self.filler.fill(batch)
        except Exception:
            log.exception("set fill failed (%d sets)", len(batch))
            return False
        return True

    # ----------------------------------------------------------------- upstream side

    def _forward(self, cmd: ForwardUpstream) -> None:
        if cmd.tcp:
            self._spawn(self._forward_tcp(cmd))
            return
        family = socket.AF_INET6 if ":" in self.upstream.address else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)  # EMFILE under a flood
        except OSError as exc:
            log.warning("no socket for an upstream query: %s", exc)
            return  # the core's timer answers SERVFAIL
        try:
            sock.setblocking(False)
            sock.connect((self.upstream.address, self.upstream.port))
            sock.send(cmd.wire)
        except OSError as exc:
            sock.close()
            log.warning("upstream send failed: %s", exc)
            return
        self._upstream_socks[cmd.query_id] = sock
        self.loop.add_reader(sock.fileno(), self._upstream_readable, cmd.query_id, sock)

    def _upstream_readable(self, query_id: int, sock: socket.socket) -> None:
        for _ in range(8):  # a bounded burst: forged datagrams cannot starve the loop
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            except OSError:
                self._close_upstream(query_id)  # e.g. ICMP port unreachable
                return
            commands = self.guard.handle_upstream(data, self.loop.time())
            if not all(isinstance(c, Drop) for c in commands):
                self._close_upstream(query_id)
                self._run(commands)
                return

    def _close_upstream(self, query_id: int) -> None:
        sock = self._upstream_socks.pop(query_id, None)
        if sock is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(sock.fileno())
            sock.close()

    async def _forward_tcp(self, cmd: ForwardUpstream) -> None:
        timeout = self.guard.config.upstream_timeout_s
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                self.upstream.address, self.upstream.port), timeout)
            try:
                writer.write(struct.pack("!H", len(cmd.wire)) + cmd.wire)
                size = struct.unpack("!H", await asyncio.wait_for(
                    reader.readexactly(2), timeout))[0]
                data = await asyncio.wait_for(reader.readexactly(size), timeout)
            finally:
                writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.warning("upstream TCP query failed: %s", exc)
            return  # the core's timer answers SERVFAIL
        self._run(self.guard.handle_upstream(data, self.loop.time()))

    # ----------------------------------------------------------------- housekeeping

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TIMER_PERIOD_S)
            self._run(self.guard.handle_timer(self.loop.time()))
            for query_id in [q for q in self._upstream_socks
                             if not self.guard.is_outstanding(q)]:
                self._close_upstream(query_id)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# --------------------------------------------------------------------------- stand-alone


def load_policy_file(path: str) -> tuple[GuardConfig,
                                          list[tuple[str, list[str], list[str], str | None]]]:
    """Read a guard's configuration and devices from a JSON file.

    Format: ``{"lan_prefixes": [...], "gateway_addresses": [...], "config": {GuardConfig
    fields}, "devices": [{"id": "...", "addresses": [...], "names": [...], "table": "..."}]}``;
    ``table`` (optional) is the nft table holding the device's DNS sets, by default the
    shard of ``id`` taken as a MAC (``policy.shard_table``).

    Raises:
        ValueError: the file is not valid JSON of that shape (the message says where).
    """
    import json

    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"policy file: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("policy file: top level must be an object")
    known = set(GuardConfig.__dataclass_fields__)
    extra = dict(data.get("config", {}))
    unknown = set(extra) - known
    if unknown:
        raise ValueError(f"policy file: unknown config keys {sorted(unknown)}")
    config = GuardConfig(lan_prefixes=tuple(data.get("lan_prefixes", ())),
                         gateway_addresses=tuple(data.get("gateway_addresses", ())), **extra)
    devices = []
    for i, dev in enumerate(data.get("devices", [])):
        if not isinstance(dev, dict) or not isinstance(dev.get("id"), str):
            raise ValueError(f"policy file: devices[{i}] needs an 'id' string")
        table = dev.get("table")
        if table is not None and not (isinstance(table, str)
                                      and re.fullmatch(r"[A-Za-z0-9_]{1,64}", table)):
            raise ValueError(f"policy file: devices[{i}].table is not a table name")
        devices.append((dev["id"], [str(a) for a in dev.get("addresses", [])],
                        [str(n) for n in dev.get("names", [])], table))
    return config, devices


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mudguard.dns.server``: run the guard stand-alone in this namespace.

    Prints ``ready`` on stdout once every socket listens; stops on SIGTERM/SIGINT.
    """
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(prog="mudguard.dns.server")
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--upstream-port", type=int, default=53)
    parser.add_argument("--policy", required=True, help="JSON file: config and devices")
    parser.add_argument("--fill", choices=("auto", "inline", "thread"), default="auto",
                        help="where set fills run (auto: inline for netlink)")
    parser.add_argument("--filler", choices=("netlink", "libnftables"), default="netlink",
                        help="how set elements reach the kernel (netlink: flat cost)")
    parser.add_argument("--lifetime", type=float, default=3600.0, help="stop after this long")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config, devices = load_policy_file(args.policy)
        guard = DnsGuard(config)
        for device, addresses, names, table in devices:
            guard.update_device(device, addresses, names, table=table)
    except (OSError, ValueError, TypeError) as exc:
        parser.exit(2, f"mudguard.dns.server: {exc}\n")

    async def run() -> None:
        filler = NftSetFiller(via=args.filler) if config.insert else None
        server = DnsServer(guard, listen=args.listen, port=args.port,
                           upstream=Upstream(args.upstream, args.upstream_port),
                           filler=filler,
                           inline_fill={"auto": None, "inline": True, "thread": False}[args.fill])
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.lifetime)
        await server.stop()
        log.info("stopped: %s", guard.counters)

    asyncio.run(run())


if __name__ == "__main__":
    main()
