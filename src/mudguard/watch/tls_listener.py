"""Adapter: the ClientHello NFLOG group, read into ``TlsObservation``s (RFC 9761).

The kernel logs, for devices whose MUD file has (D)TLS profiles only, the first
payload packet of each new TLS flow and the first datagram of each DTLS flow to the
ports concerned (``policy._nft.tls_watch_rules``: prefix ``mgt``, snap length
``SNAPLEN``, at most ``TLS_LOG_RATE`` per second). ``TlsWatcher`` is a daemon service
(``start``/``stop`` on the event loop, ``loop.add_reader``: no thread, no polling) that
reads that group, attributes each packet to the device holding its source address
(``device_of``, the watcher's ``AddressBook``), parses the ClientHello
(``watch.clienthello``) and hands a ``TlsObservation`` to ``on_observation``; judging
it against the device's MUD file is the caller's (``daemon.gateway.on_tls``), on its
worker. Without CAP_NET_ADMIN it logs one line and stays off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mudguard.watch.clienthello import (
    SNAPLEN,
    ClientHelloError,
    parse_client_hello,
    transport_payload,
)
from mudguard.watch.listener import DeviceLookup, NflogSocket, WatchError
from mudguard.watch.nflog import NflogPacket
from mudguard.watch.tls import TlsObservation

log = logging.getLogger(__name__)

TLS_PREFIX = "mgt"


def observation_of(packet: NflogPacket, device_of: DeviceLookup) -> TlsObservation | None:
    """The observation of one logged packet; None if it is not one of mudguard's ``mgt``
    logs, not TCP/UDP, or from an address no managed device holds."""
    if packet.prefix.strip() != TLS_PREFIX:
        return None
    decoded = transport_payload(packet.payload)
    if decoded is None:
        return None
    family, src, dst, protocol, sport, dport, payload = decoded
    device = device_of(src)
    if device is None:
        return None
    try:
        hello, problem = parse_client_hello(payload), ""
    except ClientHelloError as exc:
        hello, problem = None, str(exc)
    return TlsObservation(device_id=device, family=family, src=src, dst=dst,
                          protocol=protocol, src_port=sport, dst_port=dport, hello=hello,
                          problem=problem)


def sent_by(packet: NflogPacket, mac: str | None) -> bool:
    """Whether ``packet``'s Ethernet source (``NFULA_HWADDR``) is ``mac``; a packet
    without one (not received on an Ethernet port) is taken as sent by it."""
    if packet.hwaddr is None or len(packet.hwaddr) != 6:
        return True
    return mac is not None and packet.hwaddr.hex() == mac.replace(":", "").replace("-", "").lower()


class TlsWatcher:
    """The daemon service: ClientHello NFLOG group → ``TlsObservation`` → callback."""

    def __init__(self, on_observation: Callable[[TlsObservation], None], *,
                 group: int, device_of: DeviceLookup, netns: str | None = None,
                 mac_of: Callable[[str], str | None] | None = None) -> None:
        """Read NFLOG ``group``; ``device_of`` maps a LAN address to a device's id and
        ``mac_of`` (when given) to its MAC: a packet whose Ethernet source is not that
        MAC is another device's forgery (it matched the flow in conntrack before the
        binding check) and is dropped, counted in ``forged``."""
        self.on_observation = on_observation
        self.group = group
        self.device_of = device_of
        self.mac_of = mac_of
        self.netns = netns
        self.nflog: NflogSocket | None = None
        self.seen = 0
        self.forged = 0

    async def start(self) -> None:
        """Bind the group and start reading (degrades to off without privilege)."""
        try:
            self.nflog = NflogSocket(self.group, netns=self.netns, copy_range=SNAPLEN)
        except WatchError as exc:
            log.error("TLS profile watch off: %s", exc)
            return
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

    def handle(self, packet: NflogPacket) -> TlsObservation | None:
        """Turn one logged packet into an observation and hand it on."""
        try:
            observation = observation_of(packet, self.device_of)
        except Exception:
            log.exception("TLS observation failed")
            return None
        if observation is None:
            return None
        if self.mac_of is not None and not sent_by(packet, self.mac_of(observation.src)):
            self.forged += 1
            return None
        self.seen += 1
        try:
            self.on_observation(observation)
        except Exception:
            log.exception("TLS observation callback failed")
        return observation
