"""Adapter: the identification NFLOG group, read into facts about devices (#16).

The kernel logs, for devices without a MUD file (``policy._data.identify_observed``),
the first payload packet of each new TCP flow to a web port (prefix ``mgic``) and the
server's first flight on TLS ports (prefix ``mgis``), limited per device and for the
whole home (``policy._data._identify_rules``). ``WebWatcher`` is a daemon service
(``start``/``stop`` on the event loop, ``loop.add_reader``: no thread, no polling) that
reads that group, attributes a client packet to the device holding its source address
(``device_of``: the MAC, from what the gateway enforces), and hands what
``identify.observe.WebObserver`` reads of it (SNI, User-Agent, Host, the server
certificate's organisation and name) to ``on_facts(mac, facts)``: the daemon's
``LiveIdentifier.on_web``. A server's packets count only on a flow an attributed
device opened with a ClientHello. Without CAP_NET_ADMIN it logs one line and stays off.

Forgeries are refused here too (the data design's kernel gate drops them first; on the
chains design a device's chains accept an established flow's packets before their own
binding check): a client packet whose Ethernet source (``NFULA_HWADDR``) is not the MAC
of the device holding its source address, and a "server" packet received on the LAN
interface (``lan_interface``: a real server's reply comes from the WAN), are counted in
``forged`` and never read.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence

from mudguard.identify.observe import WebObserver, tcp_segment
from mudguard.identify.parse import Fact
from mudguard.policy._nft import (
    IDENTIFY_CLIENT_PREFIX,
    IDENTIFY_SERVER_PREFIX,
    IDENTIFY_SERVER_SNAPLEN,
)
from mudguard.watch.listener import NflogSocket, WatchError
from mudguard.watch.nflog import NflogPacket
from mudguard.watch.tls_listener import sent_by

log = logging.getLogger(__name__)

FactsCallback = Callable[[str, Sequence[Fact]], None]


class WebWatcher:
    """The daemon service: identification NFLOG group → facts → callback."""

    def __init__(self, on_facts: FactsCallback, *, group: int,
                 device_of: Callable[[str], str | None], netns: str | None = None,
                 observer: WebObserver | None = None,
                 lan_interface: str | None = None) -> None:
        """Read NFLOG ``group``; ``device_of`` maps a LAN address to a device's MAC;
        server packets received on ``lan_interface`` are forgeries (see the module)."""
        self.on_facts = on_facts
        self.group = group
        self.device_of = device_of
        self.netns = netns
        self.observer = observer or WebObserver()
        self.lan_interface = lan_interface
        self.lan_index: int | None = None
        self.nflog: NflogSocket | None = None
        self.read = 0
        self.unattributed = 0
        self.forged = 0

    async def start(self) -> None:
        """Bind the group and start reading (degrades to off without privilege)."""
        try:
            self.nflog = NflogSocket(self.group, netns=self.netns,
                                     copy_range=IDENTIFY_SERVER_SNAPLEN)
        except WatchError as exc:
            log.error("identification from web flows off: %s", exc)
            return
        if self.lan_interface is not None and self.netns is None:
            try:
                self.lan_index = socket.if_nametoindex(self.lan_interface)
            except OSError:  # no such interface yet: server packets are told by MAC only
                log.warning("identification: no interface %s", self.lan_interface)
        asyncio.get_running_loop().add_reader(self.nflog.fileno(), self._readable)

    async def stop(self) -> None:
        """Stop reading and release the group."""
        if self.nflog is not None:
            asyncio.get_running_loop().remove_reader(self.nflog.fileno())
            self.nflog.close()
            self.nflog = None

    def _readable(self) -> None:
        if self.nflog is None:
            return
        for packet in self.nflog.receive(block=False):
            self.handle(packet)

    def handle(self, packet: NflogPacket) -> tuple[str, list[Fact]] | None:
        """Read one logged packet; ``(mac, facts)`` handed on, if any."""
        try:
            found = self._read(packet)
        except Exception:  # a parser bug must not stop the reader
            log.exception("reading an identification log failed")
            return None
        if found is None or not found[1]:
            return None
        try:
            self.on_facts(*found)
        except Exception:
            log.exception("identification callback failed")
        return found

    def _read(self, packet: NflogPacket) -> tuple[str, list[Fact]] | None:
        prefix = packet.prefix.strip()
        if prefix not in (IDENTIFY_CLIENT_PREFIX, IDENTIFY_SERVER_PREFIX):
            return None
        segment = tcp_segment(packet.payload)
        if segment is None:
            return None
        self.read += 1
        if prefix == IDENTIFY_SERVER_PREFIX:
            if self.lan_index is not None and packet.indev == self.lan_index:
                self.forged += 1  # a "server" on the LAN: another device's forgery
                return None
            return self.observer.server(segment)
        device = self.device_of(segment.src)
        if device is None:
            self.unattributed += 1
            return None
        if not sent_by(packet, device):
            self.forged += 1  # another device's frame with this device's address
            return None
        return device, self.observer.client(device, segment)
