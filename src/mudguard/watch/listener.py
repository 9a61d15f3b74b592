"""Adapter: the NFLOG socket, and the watcher service that feeds the deviation tracker.

``NflogSocket`` is a ``NETLINK_NETFILTER`` socket bound to one NFLOG group (the
kernel allows one listener per group and namespace). It can be opened inside
another network namespace (``netns=``): the calling thread enters the namespace
only while the socket is created, and the socket keeps talking to that
namespace's kernel afterwards.

``Watcher`` is a daemon service (``start``/``stop`` on the event loop): it reads
the socket with ``loop.add_reader`` (no thread, no polling), turns each logged
packet into a ``FlowEvent``, names the remote address when a ``names`` lookup
is given, feeds ``DeviationTracker.observe`` and hands each ``Alert`` to
``on_alert``. With a ``resolvers`` watch, a flow to another DNS resolver (dropped, or
allowed and seen as a new connection) is told once per device and server to
``on_dns_elsewhere`` (``watch.resolvers``, RFC 9726). A bug in a callback is logged
and the watcher keeps running (enforcement never depends on it). Without
CAP_NET_ADMIN it logs one clear line and stays off.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from mudguard.errors import MudguardError
from mudguard.policy._names import device_id
from mudguard.watch.nflog import (
    NETLINK_NETFILTER,
    FlowEvent,
    NflogPacket,
    bind_messages,
    flow_event,
    parse_datagram,
    unbind_message,
)
from mudguard.watch.resolvers import ResolverUse, ResolverWatch
from mudguard.watch.tracker import Alert, DeviationTracker

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
RECV_BUFFER = 1 << 20
NETNS_DIR = Path("/run/netns")



def receive_datagram(sock: socket.socket, *, block: bool, what: str) -> bytes | None:
    """One netlink datagram from ``sock``; None on timeout, when nothing waits (``block``
    False), or after a receive-buffer overrun (the kernel dropped messages: logged)."""
    try:
        return sock.recv(RECV_BUFFER, 0 if block else socket.MSG_DONTWAIT)
    except (TimeoutError, BlockingIOError):
        return None
    except OSError as exc:
        if exc.errno == errno.ENOBUFS:
            log.warning("%s: receive buffer overrun, events lost", what)
            return None
        raise

class WatchError(MudguardError):
    """The NFLOG socket could not be opened or bound."""

    key = "watch_failed"


@contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the block with this thread inside network namespace ``name`` (None: stay)."""
    if name is None:
        yield
        return
    if "/" in name or name in (".", ".."):
        raise WatchError(f"bad namespace name {name!r}")
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net", "rb") as home, open(NETNS_DIR / name, "rb") as target:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise WatchError(f"cannot enter namespace {name}: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:  # pragma: no cover
                raise WatchError("cannot return to the original namespace")


class NflogSocket:
    """A netlink socket bound to one NFLOG group."""

    def __init__(self, group: int = 100, *, netns: str | None = None,
                 copy_range: int = 256, timeout: float = 2.0) -> None:
        self.group = group
        try:
            with in_netns(netns):
                self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except PermissionError as exc:
            raise WatchError("opening a netfilter netlink socket needs CAP_NET_ADMIN") from exc
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            self.sock.bind((0, 0))
            self.sock.settimeout(timeout)
            for message in bind_messages(group, copy_range=copy_range):
                self._request(message)
        except BaseException:
            self.sock.close()
            raise

    def _request(self, message: bytes) -> None:
        seq = int.from_bytes(message[8:12], "little")
        self.sock.send(message)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            _packets, acks = parse_datagram(self.sock.recv(RECV_BUFFER))
            for ack in acks:
                if ack.seq == seq:
                    if ack.error:
                        raise WatchError(f"NFLOG group {self.group}: "
                                         f"{os.strerror(-ack.error)}")
                    return
        raise WatchError(f"NFLOG group {self.group}: no answer from the kernel")

    def fileno(self) -> int:
        """The socket's file descriptor (for ``add_reader``)."""
        return self.sock.fileno()

    def receive(self, *, block: bool = True) -> list[NflogPacket]:
        """The packets of one datagram ([] on timeout, or at once when ``block`` is False)."""
        data = receive_datagram(self.sock, block=block, what=f"NFLOG group {self.group}")
        if data is None:
            return []
        packets, _acks = parse_datagram(data)
        return [p for p in packets if p.group == self.group]

    def events(self, *, block: bool = True,
               marks: Mapping[int, str] | None = None) -> list[FlowEvent]:
        """The mudguard flow events of one datagram (other prefixes are skipped)."""
        return [e for e in (flow_event(p, marks) for p in self.receive(block=block))
                if e is not None]

    def close(self) -> None:
        """Release the group and close the socket."""
        with suppress(OSError):
            self.sock.send(unbind_message(self.group))
        self.sock.close()


NameLookup = Callable[[str, str], str | None]  # (device_id, remote address) -> DNS name
DeviceLookup = Callable[[str], str | None]  # a LAN address -> the device id that holds it


class AddressBook:
    """``device_of`` for the ``Watcher``: a LAN address -> the id of the device holding it.

    Built from the enforcer's installed records (``Enforcer.installed``: MAC ->
    record with ``ipv4``/``ipv6``), re-indexed every ``max_age`` seconds, and on a miss
    when the index is older than ``miss_age`` (a device enforced a moment ago is found
    from its first connection), so a lookup per new connection stays a dict lookup::

        Watcher(on_alert, device_of=AddressBook(lambda: enforcer.installed))
    """

    def __init__(self, records: Callable[[], Mapping[str, Any]], *, max_age: float = 1.0,
                 miss_age: float = 0.1,
                 clock: Callable[[], float] = time.monotonic,
                 key: Callable[[str], str] = device_id) -> None:
        self.records = records
        self.key = key  # what a lookup returns for a MAC (the device id, or the MAC)
        self.max_age = max_age
        self.miss_age = miss_age
        self.clock = clock
        self._index: dict[str, str] = {}
        self._built: float | None = None

    def __call__(self, address: str) -> str | None:
        now = self.clock()
        if self._built is None or now - self._built >= self.max_age:
            self._rebuild(now)
        try:
            key = str(ipaddress.ip_address(address))
        except ValueError:
            return None
        found = self._index.get(key)
        if found is None and self._built is not None and now - self._built >= self.miss_age:
            self._rebuild(now)
            found = self._index.get(key)
        return found

    def invalidate(self, _device: object = None) -> None:
        """Rules were just installed (any thread): the next lookup re-indexes, so the
        device's first connections are counted for it."""
        self._built = None

    def _rebuild(self, now: float) -> None:
        index: dict[str, str] = {}
        try:
            for mac, record in list(self.records().items()):
                for address in (*record.ipv4, *record.ipv6):
                    index[str(ipaddress.ip_address(address))] = self.key(mac)
        except (RuntimeError, ValueError, AttributeError):
            log.exception("address book: keeping the previous index")
            return
        self._index = index
        self._built = now


class Watcher:
    """The daemon service: NFLOG group → flow events → tracker → ``on_alert``."""

    def __init__(self, on_alert: Callable[[Alert], None], *, group: int = 100,
                 tracker: DeviationTracker | None = None, netns: str | None = None,
                 names: NameLookup | None = None,
                 on_event: Callable[[FlowEvent], None] | None = None,
                 device_of: DeviceLookup | None = None,
                 on_connection: Callable[[Any], None] | None = None,
                 resolvers: ResolverWatch | None = None,
                 on_dns_elsewhere: Callable[[ResolverUse], None] | None = None,
                 marks: Callable[[], Mapping[int, str]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``marks``: log mark -> device id (policy as data: an inbound drop names its
        device by the packet mark, ``watch.nflog.flow_event``)."""
        self.marks = marks
        self.on_alert = on_alert
        self.on_connection = on_connection  # every accepted connection (learning)
        self.resolvers = resolvers
        self.on_dns_elsewhere = on_dns_elsewhere
        self.on_event = on_event
        self.group = group
        self.tracker = tracker or DeviationTracker()
        self.netns = netns
        self.names = names
        self.clock = clock
        self.device_of = device_of
        self.nflog: NflogSocket | None = None
        self.conntrack: Any = None  # ConntrackSocket when ``device_of`` is given
        self.events_seen = 0

    async def start(self) -> None:
        """Bind the group and start reading (degrades to off without privilege)."""
        try:
            self.nflog = NflogSocket(self.group, netns=self.netns)
        except WatchError as exc:
            log.error("watcher off: %s", exc)
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(self.nflog.fileno(), self._readable)
        if self.device_of is not None:
            from mudguard.watch.conntrack import ConntrackSocket

            try:
                self.conntrack = ConntrackSocket(netns=self.netns)
            except WatchError as exc:
                log.error("connection counting off: %s", exc)
                return
            loop.add_reader(self.conntrack.fileno(), self._connections)

    async def stop(self) -> None:
        """Stop reading and release the group."""
        loop = asyncio.get_running_loop()
        if self.nflog is not None:
            loop.remove_reader(self.nflog.fileno())
            self.nflog.close()
            self.nflog = None
        if self.conntrack is not None:
            loop.remove_reader(self.conntrack.fileno())
            self.conntrack.close()
            self.conntrack = None

    def _connections(self) -> None:
        if self.conntrack is None or self.device_of is None:
            return
        for conn in self.conntrack.events(block=False):
            self._safe(self.on_connection, conn)
            self.handle_connection(conn)

    def handle_connection(self, conn: Any) -> list[Alert]:
        """Count one new connection (a ``ConnEvent``) for the device that opened it."""
        assert self.device_of is not None
        try:
            device = self.device_of(conn.src)
        except Exception:
            log.exception("device lookup failed for %s", conn.src)
            return []
        if device is None:
            return []
        from mudguard.mud import Direction

        sample = FlowEvent(device_id=device, direction=Direction.FROM_DEVICE,
                           family=conn.family, src=conn.src, dst=conn.dst,
                           protocol=conn.protocol, src_port=conn.src_port,
                           dst_port=conn.dst_port)
        self._resolver_use(sample, allowed=True)
        alerts = self.tracker.observe_connection(device, self.clock(), sample)
        for alert in alerts:
            self._safe(self.on_alert, alert)
        return alerts

    def _readable(self) -> None:
        if self.nflog is None:
            return
        marks = self.marks() if self.marks is not None else None
        for event in self.nflog.events(block=False, marks=marks):
            self.handle(event)

    def handle(self, event: FlowEvent) -> list[Alert]:
        """Feed one event through naming, the tracker and the callbacks."""
        self.events_seen += 1
        if self.names is not None:
            try:
                name = self.names(event.device_id, event.remote)
            except Exception:
                log.exception("name lookup failed for %s", event.remote)
                name = None
            if name:
                from dataclasses import replace

                event = replace(event, remote_name=name)
        self._safe(self.on_event, event)
        use = self._resolver_use(event, allowed=False)
        exempt = use is not None and self.resolvers is not None and self.resolvers.exempt(use)
        alerts = self.tracker.observe(event, self.clock(), deviation=not exempt)
        for alert in alerts:
            self._safe(self.on_alert, alert)
        return alerts

    def _resolver_use(self, event: FlowEvent, *, allowed: bool) -> ResolverUse | None:
        """Classify a flow as resolving elsewhere (RFC 9726); tell the first per
        device and server to ``on_dns_elsewhere``."""
        if self.resolvers is None:
            return None
        try:
            use = self.resolvers.classify(event, allowed=allowed)
            if use is not None and self.resolvers.first(use):
                self._safe(self.on_dns_elsewhere, use)
        except Exception:
            log.exception("resolver classification failed for %s", event.describe())
            return None
        return use

    @staticmethod
    def _safe(callback: Callable[..., None] | None, value: object) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception:
            log.exception("watcher callback failed")
