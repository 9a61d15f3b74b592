"""The daemon's identifier: the same decision as ``mudguard identify``, fed live.

Evidence, all passive, gathered per device and bounded (``LiveEvidence``):

- the DHCP request (dnsmasq's hook or the sniffer hands each lease's hostname,
  option 12, vendor class, 60, and parameter request list, 55) and the MAC's OUI;
- mDNS (UDP 5353) and SSDP (UDP 1900) announcements, read off the LAN bridge by
  ``discovery.announce_sniff`` (a packet socket whose BPF filter lets only those
  through: no Python for any other packet) and parsed by the very function the
  offline command reads a capture with (``identify.capture.scan_frame``);
- the DNS names the device asks the gateway's DNS guard for (as it answers them);
- the system name of its LLDP frames (the daemon's LLDP listener);
- for devices without a MUD file, its web flows as the kernel logs them
  (``watch.identify_listener``, read by ``identify.observe``): the TLS server names
  (SNI) it asks for, the organisation and name of TLS 1.2 server certificates it
  receives in clear, the User-Agent and Host of its clear-text HTTP requests;
- the ports of its makers' local protocols (``connection_port_clues``): from the
  conntrack NEW events of connections between two devices of the home (with
  ``isolate_lan`` every such connection crosses the gateway), a device opening one
  from such a port (answering a broadcast) or being asked on one.

The event loop (frames, names, updates) and the service worker (leases, the end of
learning) both call ``LiveIdentifier``: its methods hold one lock.

Each device's clues are decided by ``identify.capture.identify_device``, the same
function ``mudguard identify`` calls, with the traffic summary the daemon can know
(the number of names asked; it sees no per-packet traffic), so live and offline
cannot diverge on the same evidence. ``LiveIdentifier.updates`` names the devices
whose maker or kind became more certain since last stored; the device service then
fills or improves only what identification itself stored (``DeviceService.
identified``): a MUD file's or an owner's label's maker is never replaced.

Bounds (a hostile LAN can flood multicast from forged MACs): in the daemon, frames are
read only from MACs the gateway enforces rules for (``LiveEvidence.known``); at most
``max_devices`` devices (the oldest forgotten first), ``max_clues`` distinct clues
and ``max_names`` names each, every value ≤ 128 characters (``identify.parse``);
``frames_per_minute`` frames per sending MAC (a token bucket), and the sniffer's own
budget of frames per second overall. Nothing here decides access: maker and kind are
shown to the owner, never used to pick a profile.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Concatenate, ParamSpec, TypeVar

from mudguard.devices._model import Device, MudSource
from mudguard.discovery.sighting import Sighting
from mudguard.identify.capture import (
    CaptureScan,
    DeviceScan,
    identify_device,
    load_knowledge,
    load_oui_registry,
    scan_frame,
)
from mudguard.identify.decide import Identification, TrafficSummary
from mudguard.identify.knowledge import KnowledgeBase, OuiRegistry
from mudguard.identify.record import IdentityRecord
from mudguard.profile.core import mac_bytes, mac_text

log = logging.getLogger(__name__)

DHCP_SOURCES = frozenset({MudSource.DHCP4, MudSource.DHCP6})
MAX_DEVICES = 512
MAX_CLUES = 96
MAX_NAMES = 64
FRAMES_PER_MINUTE = 60  # per sending MAC, after a burst of ``FRAME_BURST``
FRAME_BURST = 30
MAX_UPDATES = 64  # devices decided again per call of ``updates``
WEB_FIELDS = frozenset({"sni", "user_agent", "http_host", "cert_org", "cert_cn"})


@dataclass(frozen=True, slots=True)
class IdentityUpdate:
    """A device's maker and/or kind became more certain: what to store, and what
    identification stored before (which alone it may replace)."""

    mac: str
    maker: str | None
    kind: str | None
    replaces_maker: str | None
    replaces_kind: str | None
    confidence: float


def live_traffic(device: DeviceScan) -> TrafficSummary:
    """The traffic summary the daemon knows of a device: the names it asked for."""
    return TrafficSummary(dns_names=len(device.names))


class LiveEvidence:
    """Each device's clues as the daemon gathers them (bounded; see the module)."""

    def __init__(self, *, max_devices: int = MAX_DEVICES, max_clues: int = MAX_CLUES,
                 max_names: int = MAX_NAMES, frames_per_minute: float = FRAMES_PER_MINUTE,
                 burst: float = FRAME_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Keep at most ``max_devices`` devices, each ``max_clues`` clues and
        ``max_names`` names; read ``frames_per_minute`` frames per MAC after ``burst``."""
        self.scan = CaptureScan(max_devices=max_devices, max_clues=max_clues,
                                max_names=max_names)
        self.max_devices = max_devices
        self.rate = frames_per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self._buckets: dict[bytes, tuple[float, float]] = {}
        self.dirty: dict[bytes, None] = {}  # devices with new clues, in arrival order
        self.frames = 0
        self.limited = 0
        self.unknown = 0
        # Frames are read only from MACs this says the gateway knows (None: any): in the
        # daemon, devices it enforces, so forged source MACs cost one lookup, no memory.
        self.known: Callable[[bytes], bool] | None = None

    def device(self, mac: bytes) -> DeviceScan:
        """The device's clues, made on first sight (forgetting the oldest when full)."""
        found = self.scan.devices.get(mac)
        if found is None:
            while len(self.scan.devices) >= self.max_devices:
                self._forget(next(iter(self.scan.devices)))
            found = self.scan.device(mac)
            assert found is not None
        return found

    def _forget(self, mac: bytes) -> None:
        self.scan.devices.pop(mac, None)
        self._buckets.pop(mac, None)
        self.dirty.pop(mac, None)

    def allowed(self, mac: bytes) -> bool:
        """Whether one more frame of ``mac`` may be read now (token bucket)."""
        now = self.clock()
        tokens, last = self._buckets.get(mac, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[mac] = (tokens, now)
            self.limited += 1
            return False
        if mac not in self._buckets and len(self._buckets) >= self.max_devices:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[mac] = (tokens - 1.0, now)
        return True

    def add_frame(self, frame: bytes) -> bool:
        """Read one Ethernet frame sent by a device (mDNS, SSDP: the sniffer's filter);
        True when it told something new. Frames of a MAC not ``known`` or beyond its
        rate are not read."""
        if len(frame) < 14 or frame[6] & 1:
            return False
        src = bytes(frame[6:12])
        if self.known is not None and not self.known(src):
            self.unknown += 1
            return False
        if not self.allowed(src):
            return False
        device = self.device(src)
        before = len(device.clues)
        self.frames += 1
        scan_frame(self.scan, self.frames, self.clock(), frame, len(frame))
        if len(device.clues) != before:
            self.dirty[src] = None
            return True
        return False

    def add_port(self, mac: bytes, field_name: str, port: str) -> bool:
        """A service-port clue (bounded per device like the offline scan's); True if new."""
        device = self.device(mac)
        before = len(device.clues)
        device.add_port(field_name, port, 0)
        if len(device.clues) != before:
            self.dirty[mac] = None
            return True
        return False

    def add_facts(self, mac: bytes, facts: Sequence[tuple[str, str]]) -> bool:
        """Clues told by something else (a DHCP request, a DNS query); True if new."""
        device = self.device(mac)
        names = len(device.names)
        if device.add(facts, 0) or len(device.names) != names:
            self.dirty[mac] = None
            return True
        return False


@dataclass(frozen=True, slots=True)
class PortClue:
    """The device at ``mac`` answered from (``served_port``) or was talked to on
    (``peer_port``) a service port (``tcp/N``, ``udp/N``)."""

    mac: str
    field: str
    port: str


PROTOCOL_NAMES = {6: "tcp", 17: "udp"}


def connection_port_clues(protocol: int, src_port: int | None, dst_port: int | None,
                          src_mac: str | None, dst_mac: str | None,
                          ports: Collection[str]) -> list[PortClue]:
    """What one new connection between two devices of the home says (the daemon's
    conntrack NEW events: the original direction). The opener sending *from* a port the
    knowledge names answers there (a reply to a broadcast it received, e.g. Kasa's
    discovery); the other end being asked *on* such a port is a peer's word only.
    Connections with the gateway or the Internet say nothing here."""
    name = PROTOCOL_NAMES.get(protocol)
    if name is None or src_mac is None or dst_mac is None or src_mac == dst_mac:
        return []
    out = []
    if src_port is not None and f"{name}/{src_port}" in ports:
        out.append(PortClue(src_mac, "served_port", f"{name}/{src_port}"))
    if dst_port is not None and f"{name}/{dst_port}" in ports:
        out.append(PortClue(dst_mac, "peer_port", f"{name}/{dst_port}"))
    return out


P = ParamSpec("P")
R = TypeVar("R")


def _locked(method: Callable[Concatenate[LiveIdentifier, P], R]) -> Callable[
        Concatenate[LiveIdentifier, P], R]:
    """Run the method under the identifier's lock: the event loop (frames, names,
    updates) and the service worker (leases, the end of learning) both call it."""
    @functools.wraps(method)
    def locked(self: LiveIdentifier, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class LiveIdentifier:
    """Identify devices from DHCP, mDNS, SSDP and DNS names as the daemon sees them."""

    def __init__(self, kb: KnowledgeBase, oui: OuiRegistry | None, *,
                 min_confidence: float = 0.5, evidence: LiveEvidence | None = None) -> None:
        """Use ``kb`` and ``oui``; store a maker or kind only at ``min_confidence``."""
        self.kb = kb
        self.oui = oui
        self.min_confidence = min_confidence
        self.evidence = evidence or LiveEvidence()
        # mac -> (maker, its confidence, kind, its confidence) as last stored by us
        self._stored: dict[bytes, tuple[str | None, float, str | None, float]] = {}
        # mac -> the last record handed out by ``decisions``, and those still to hand out
        self._recorded: dict[bytes, IdentityRecord] = {}
        self._to_record: dict[bytes, IdentityRecord] = {}
        self._lock = threading.RLock()

    @classmethod
    def load(cls) -> LiveIdentifier:
        """The identifier with the shipped knowledge and the installed OUI registry."""
        oui = load_oui_registry()
        if oui is None:
            log.warning("no OUI registry installed (libwireshark-data): makers are "
                        "inferred from what devices say only")
        return cls(load_knowledge(), oui)

    # -- evidence ------------------------------------------------------------------------

    @_locked
    def on_frame(self, frame: bytes) -> None:
        """An mDNS or SSDP frame off the LAN (the announcement sniffer)."""
        self.evidence.add_frame(frame)

    @_locked
    def on_name(self, mac: str, name: str) -> None:
        """The device at ``mac`` asked the DNS guard for ``name``."""
        clean = name.rstrip(".").lower()[:253]
        if clean:
            self.evidence.add_facts(mac_bytes(mac), [("dns_name", clean)])

    @_locked
    def on_lldp(self, mac: str, system_name: str | None) -> None:
        """The device at ``mac`` sent LLDP naming itself ``system_name``."""
        if system_name:
            self.evidence.add_facts(mac_bytes(mac), [("lldp_name", system_name[:128])])

    @_locked
    def on_web(self, mac: str, facts: Sequence[tuple[str, str]]) -> None:
        """What the device at ``mac`` said or was sent on a web flow (``sni``,
        ``user_agent``, ``http_host``, ``cert_org``, ``cert_cn``)."""
        kept = [(name, value[:253]) for name, value in facts if name in WEB_FIELDS and value]
        if kept:
            self.evidence.add_facts(mac_bytes(mac), kept)

    @_locked
    def on_ports(self, clues: Sequence[PortClue]) -> None:
        """Service-port clues from a connection the kernel started tracking
        (``connection_port_clues``)."""
        for clue in clues:
            if clue.port in self.kb.service_ports:
                self.evidence.add_port(mac_bytes(clue.mac), clue.field, clue.port)

    @_locked
    def identify(self, sighting: Sighting) -> Identification:
        """What the device is, with the sighting's DHCP clues added to its evidence."""
        mac = mac_bytes(sighting.mac)
        facts = [(name, value) for name, value in (
            ("hostname", sighting.hostname), ("vendor_class", sighting.vendor_class),
            ("prl", sighting.prl)) if value]
        self.evidence.add_facts(mac, facts)
        return self.identification(mac)

    @_locked
    def identification(self, mac: bytes) -> Identification:
        """The decision on a device's evidence so far (``identify_device``)."""
        device = self.evidence.device(mac)
        return identify_device(mac, device, self.kb, self.oui, live_traffic(device))

    # -- what to store -------------------------------------------------------------------

    @_locked
    def enrich(self, sighting: Sighting) -> Sighting:
        """The sighting with the inferred maker and kind, for a DHCP sighting that names
        none (each kept only at ``min_confidence`` or above)."""
        if sighting.source not in DHCP_SOURCES or (sighting.manufacturer and sighting.kind):
            return sighting
        result = self.identify(sighting)
        log.info("identified %s: maker %s (%.2f), kind %s (%.2f)", sighting.mac,
                 result.manufacturer, result.manufacturer_confidence, result.kind,
                 result.kind_confidence)
        maker = sighting.manufacturer
        if maker is None and result.manufacturer_confidence >= self.min_confidence:
            maker = result.manufacturer
        kind = sighting.kind
        if kind is None and result.kind_confidence >= self.min_confidence:
            kind = result.kind
        self._remember(mac_bytes(sighting.mac), result)
        return replace(sighting, manufacturer=maker, kind=kind)

    def _remember(self, mac: bytes, result: Identification) -> tuple[str | None, str | None]:
        """Note what is kept of ``result`` (where more certain than before); the maker
        and kind kept before it."""
        maker, maker_conf, kind, kind_conf = self._stored.get(mac, (None, 0.0, None, 0.0))
        new_maker, new_kind = maker, kind
        if result.manufacturer_confidence >= self.min_confidence and \
                result.manufacturer_confidence > maker_conf:
            new_maker, maker_conf = result.manufacturer, result.manufacturer_confidence
        if result.kind_confidence >= self.min_confidence and result.kind_confidence > kind_conf:
            new_kind, kind_conf = result.kind, result.kind_confidence
        if len(self._stored) >= self.evidence.max_devices and mac not in self._stored:
            self._stored.pop(next(iter(self._stored)))
        self._stored[mac] = (new_maker, maker_conf, new_kind, kind_conf)
        self._note_record(mac, IdentityRecord.from_identification(result))
        return maker, kind

    def _note_record(self, mac: bytes, record: IdentityRecord) -> None:
        """Queue ``record`` for ``decisions`` unless it is the one handed out last."""
        if self._recorded.get(mac) == record:
            self._to_record.pop(mac, None)
            return
        for table in (self._recorded, self._to_record):
            if len(table) >= self.evidence.max_devices and mac not in table:
                table.pop(next(iter(table)))
        self._to_record[mac] = record

    @_locked
    def decisions(self, limit: int = MAX_UPDATES) -> list[tuple[str, IdentityRecord]]:
        """The devices whose identification (decision, confidence or clues) changed
        since last handed out, with their record to store (at most ``limit``)."""
        out: list[tuple[str, IdentityRecord]] = []
        for mac in list(self._to_record)[:limit]:
            record = self._to_record.pop(mac)
            self._recorded[mac] = record
            out.append((mac_text(mac), record))
        return out

    @_locked
    def updates(self, limit: int = MAX_UPDATES) -> list[IdentityUpdate]:
        """The devices whose maker or kind became more certain with their new clues
        (at most ``limit`` decided per call; the rest wait for the next)."""
        out: list[IdentityUpdate] = []
        dirty = self.evidence.dirty
        for mac in list(dirty)[:limit]:
            del dirty[mac]
            result = self.identification(mac)
            old_maker, old_kind = self._remember(mac, result)
            maker, _, kind, _ = self._stored[mac]
            if (maker, kind) != (old_maker, old_kind):
                out.append(IdentityUpdate(
                    mac=result.mac, maker=maker if maker != old_maker else None,
                    kind=kind if kind != old_kind else None, replaces_maker=old_maker,
                    replaces_kind=old_kind, confidence=result.confidence))
                log.info("identified %s live: maker %s (%.2f), kind %s (%.2f)", result.mac,
                         result.manufacturer, result.manufacturer_confidence, result.kind,
                         result.kind_confidence)
        return out

    @_locked
    def from_learning(self, device: Device, names: Sequence[str]) -> tuple[str | None,
                                                                           str | None]:
        """(maker, kind) of a device at the end of its learning: everything gathered
        live plus its DHCP hostname and the DNS names its connections went to (each
        kept at ``min_confidence``)."""
        mac = mac_bytes(device.mac)
        facts = [("hostname", device.hostname)] if device.hostname else []
        facts += [("dns_name", name) for name in names]
        self.evidence.add_facts(mac, facts)
        result = self.identification(mac)
        log.info("identified %s from its learned traffic: maker %s (%.2f), kind %s (%.2f)",
                 device.mac, result.manufacturer, result.manufacturer_confidence,
                 result.kind, result.kind_confidence)
        self._remember(mac, result)
        maker = result.manufacturer \
            if result.manufacturer_confidence >= self.min_confidence else None
        kind = result.kind if result.kind_confidence >= self.min_confidence else None
        return maker, kind


DhcpIdentifier = LiveIdentifier  # the name it had while it read DHCP only
