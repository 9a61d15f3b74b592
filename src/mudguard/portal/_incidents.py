"""Alerts as incidents: the device events an owner must know about, grouped so that one
thing that lasts is one alert.

Theory of operation: ``build_incidents(events, devices)`` is pure (data in, data out). It
walks the events oldest first and keeps at most ONE open incident per device and kind:

==============  ==================================  =====================================
kind            opened by                           closed by
==============  ==================================  =====================================
violation       ``violation`` (blocked traffic)     dismissed; a quarantine decision
                                                    (released, kept); forgotten
quarantine      ``quarantined``; a watcher alert    released; kept quarantined;
                (a ``violation`` with a reason)     forgotten; the device not quarantined
new-device      ``joined`` (not by the owner's      dismissed; renamed, trusted,
                own onboarding)                     forgotten
url-changed     ``url-changed``                     URL approved; dismissed; forgotten
signature       ``signature-invalid``               dismissed; a profile applied; forgotten
==============  ==================================  =====================================

While an incident is open, later events of its kind update it (count, last time,
destinations) instead of adding another alert. While a device is quarantined, its blocked
traffic is evidence of the quarantine, so it counts on the quarantine incident, and an
open violation incident of the device is folded into the quarantine when it starts.
Closed incidents stay (history) with when and how they ended. Forgetting a device deletes
it and its events: its incidents go with it (none is shown for a device the store lacks).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mudguard.devices import Device, DeviceEvent, EventKind
from mudguard.devices.reasons import reason_details
from mudguard.policy import LifecycleState

MAX_DESTINATIONS = 5  # named in an incident's summary; the rest are counted
MAX_REASONS = 5
MAX_SAMPLES = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AlertKind(StrEnum):
    """What an incident is about (one open incident per device and kind)."""

    VIOLATION = "violation"
    QUARANTINE = "quarantine"
    NEW_DEVICE = "new-device"
    URL_CHANGED = "url-changed"
    SIGNATURE = "signature"


# The decisions each kind offers, the safe one first (the page's primary button).
ACTIONS: Mapping[AlertKind, tuple[str, ...]] = {
    AlertKind.QUARANTINE: ("keep", "release"),
    AlertKind.VIOLATION: ("dismiss",),
    AlertKind.NEW_DEVICE: ("dismiss",),
    AlertKind.URL_CHANGED: ("dismiss", "review"),
    AlertKind.SIGNATURE: ("dismiss",),
}
DISMISSABLE = frozenset(k for k, actions in ACTIONS.items() if "dismiss" in actions)

_OPENERS = {EventKind.QUARANTINED: AlertKind.QUARANTINE,
            EventKind.URL_CHANGED: AlertKind.URL_CHANGED,
            EventKind.SIGNATURE_INVALID: AlertKind.SIGNATURE}
# Events that end incidents of the device: event kind -> (kinds closed, how).
_CLOSERS: Mapping[EventKind, tuple[frozenset[AlertKind], str]] = {
    EventKind.RELEASED: (frozenset({AlertKind.QUARANTINE, AlertKind.VIOLATION}), "released"),
    EventKind.FORGOTTEN: (frozenset(AlertKind), "forgotten"),
    EventKind.TRANSFERRED: (frozenset(AlertKind), "forgotten"),
    EventKind.URL_APPROVED: (frozenset({AlertKind.URL_CHANGED, AlertKind.SIGNATURE}),
                             "approved"),
    EventKind.PROFILE_APPLIED: (frozenset({AlertKind.SIGNATURE}), "resolved"),
    EventKind.RENAMED: (frozenset({AlertKind.NEW_DEVICE}), "named"),
}
_OWNER_SOURCES = frozenset({"qr", "manual"})  # joined through the owner's own onboarding


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """One far side of an incident's blocked traffic, with what was tried and how often."""

    name: str  # a DNS name, a home device's name, or an address
    services: tuple[Service, ...]
    flows: int
    outgoing: bool  # the device tried to reach it (False: it tried to reach the device)
    home_device: bool = False  # ``name`` is one of the home's devices
    gateway: bool = False  # ``name`` is an address of the gateway itself


@dataclass(frozen=True, slots=True, order=True)
class Service:
    """A protocol and port as a person names it: ``name`` when well known, else
    ``protocol`` and ``port`` ("UDP", 5683)."""

    protocol: str
    port: int | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """One alert: a thing that happened to one device, updated while it lasts."""

    kind: AlertKind
    mac: str | None
    device: Device | None
    open: bool
    first_at: datetime
    last_at: datetime
    count: int  # blocked packets (violation, quarantine) or events (the others)
    events: int  # how many events it groups
    reason: str | None  # the latest reason given
    reasons: tuple[str, ...]  # every distinct reason, oldest first (at most MAX_REASONS)
    destinations: tuple[Destination, ...]  # the most frequent ones, at most MAX_DESTINATIONS
    destination_count: int  # all distinct destinations
    latest: DeviceEvent  # the newest event it groups
    samples: tuple[DeviceEvent, ...]  # the newest few events (their details: raw evidence)
    details: Mapping[str, Any]  # the latest details of the opening kind (reason, old/new URL)
    # reason -> the event details that stored it as a key (``reason_key``, ``reason_fields``)
    reason_keys: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    closed_at: datetime | None = None
    closed_by: str | None = None  # released, kept, dismissed, forgotten, approved, ...

    @property
    def actions(self) -> tuple[str, ...]:
        """The decisions it offers (empty once closed), the safe one first."""
        return ACTIONS[self.kind] if self.open else ()

    @property
    def event(self) -> DeviceEvent:
        """The newest event it groups (what an alert was before incidents)."""
        return self.latest

    @property
    def key(self) -> str:
        """A stable id for the page: ``<kind>-<mac>-<first event id>``."""
        return f"{self.kind.value}-{self.mac or 'home'}-{self._first_id}"

    _first_id: int = 0


@dataclass(slots=True)
class _Builder:
    kind: AlertKind
    mac: str | None
    first: DeviceEvent
    latest: DeviceEvent
    count: int = 0
    events: int = 0
    reason: str | None = None
    reasons: list[str] = field(default_factory=list)
    reason_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[DeviceEvent] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    flows: dict[tuple[str, bool], list[Any]] = field(default_factory=dict)
    closed_at: datetime | None = None
    closed_by: str | None = None

    def add(self, event: DeviceEvent, names: Mapping[str, str],
            gateways: frozenset[str] = frozenset()) -> None:
        self.latest = event
        self.events += 1
        if event.details:
            self.samples = [*self.samples[-(MAX_SAMPLES - 1):], event]
        reason = event.details.get("reason")
        if isinstance(reason, str) and reason:
            self.reason = reason[:500]
            if self.reason not in self.reasons and len(self.reasons) < MAX_REASONS:
                self.reasons.append(self.reason)
            if "reason_key" in event.details and self.reason in self.reasons:
                self.reason_keys.setdefault(self.reason, {
                    "reason_key": event.details.get("reason_key"),
                    "reason_fields": event.details.get("reason_fields")})
        if event.kind in (EventKind.VIOLATION, EventKind.QUARANTINED):
            evidence = evidence_flows(event)
            if event.kind is EventKind.VIOLATION:
                self.count += max(_count(event.details.get("count"), default=1), len(evidence))
            for flow in evidence:
                self._flow(flow, names, gateways)
            peer = event.details.get("peer") or event.details.get("dst") or \
                event.details.get("host")
            if peer is not None and not evidence:
                port = event.details.get("port")
                self._flow({"direction": "out", "dst": str(peer)[:255],
                            "dst_port": port if isinstance(port, int) else None,
                            "protocol": event.details.get("protocol")}, names, gateways)
        else:
            self.count += 1
            self.details = {k: v for k, v in event.details.items() if k != "evidence"}
        if event.kind is EventKind.QUARANTINED:
            self.details = {k: v for k, v in event.details.items() if k != "evidence"}

    def _flow(self, flow: Mapping[str, Any], names: Mapping[str, str],
              gateways: frozenset[str]) -> None:
        outgoing = flow.get("direction") != "in"
        address = str(flow.get("dst" if outgoing else "src") or "")[:255]
        name = flow.get("remote_name")
        home = address in names
        label = str(name)[:255] if isinstance(name, str) and name else \
            names.get(address, address)
        entry = self.flows.setdefault((label, outgoing), [0, set(), home,
                                                          address in gateways])
        entry[0] += 1
        service = _service_of_flow(flow.get("protocol"),
                                   flow.get("dst_port") if outgoing else flow.get("src_port"),
                                   flow.get("icmp_type"))
        if service is not None and len(entry[1]) < 8:
            entry[1].add(service)

    def absorb(self, other: _Builder) -> None:
        """Fold another incident's blocked traffic into this one (violation -> quarantine)."""
        self.count += other.count
        self.events += other.events
        self.first = min(self.first, other.first, key=lambda e: e.id)
        self.samples = sorted([*other.samples, *self.samples], key=lambda e: e.id
                              )[-MAX_SAMPLES:]
        for reason in other.reasons:
            if reason not in self.reasons and len(self.reasons) < MAX_REASONS:
                self.reasons.append(reason)
        for reason, keyed in other.reason_keys.items():
            if reason in self.reasons:
                self.reason_keys.setdefault(reason, keyed)
        for key, (flows, services, home, gateway) in other.flows.items():
            entry = self.flows.setdefault(key, [0, set(), home, gateway])
            entry[0] += flows
            entry[1] |= services

    def freeze(self, device: Device | None) -> Incident:
        ranked = sorted(self.flows.items(), key=lambda item: (-item[1][0], item[0][0]))
        destinations = tuple(
            Destination(name=label, outgoing=outgoing, flows=flows,
                        services=tuple(sorted(services)), home_device=home, gateway=gateway)
            for (label, outgoing), (flows, services, home, gateway)
            in ranked[:MAX_DESTINATIONS])
        is_open = self.closed_by is None and _still_open(self.kind, device)
        return Incident(kind=self.kind, mac=self.mac, device=device, open=is_open,
                        first_at=self.first.at, last_at=self.latest.at, count=self.count,
                        events=self.events, reason=self.reason,
                        reasons=tuple(self.reasons), destinations=destinations,
                        destination_count=len(self.flows), latest=self.latest,
                        samples=tuple(reversed(self.samples)),
                        details=dict(self.details), reason_keys=dict(self.reason_keys),
                        closed_at=self.closed_at,
                        closed_by=self.closed_by if self.closed_by or is_open else "ended",
                        _first_id=self.first.id)


def _still_open(kind: AlertKind, device: Device | None) -> bool:
    """An incident of a device that is gone, forgotten, or (quarantine) no longer
    quarantined needs no decision any more."""
    if device is None or device.state is LifecycleState.FORGOTTEN:
        return False
    return kind is not AlertKind.QUARANTINE or device.state is LifecycleState.QUARANTINED


def build_incidents(events: Iterable[DeviceEvent], devices: Mapping[str, Device]
                    ) -> list[Incident]:
    """Every incident the events tell, open ones first (quarantines first, then the
    newest), then the closed ones newest first (pure).

    Args:
        events: device events, oldest first (ids increasing).
        devices: the home's devices by MAC (names and addresses label the evidence; the
            state decides whether a quarantine is still open).
    """
    book = IncidentBook()
    book.feed(events, devices)
    return book.incidents(devices)


@dataclass(slots=True)
class IncidentBook:
    """The incidents, kept up to date event by event: what the portal holds between
    pages so that each page reads only the events that came since (``last_id``).

    The first ``feed`` may start in the middle of history: a quarantined device whose
    quarantine began earlier gets a stand-in ``quarantined`` event, so it is never lost.
    At most ``max_closed`` decided incidents are kept (the newest).
    """

    max_closed: int = 500
    gateways: frozenset[str] = frozenset()  # the gateway's own addresses (named so)
    last_id: int = 0
    _open: dict[tuple[str, AlertKind], _Builder] = field(default_factory=dict)
    _closed: list[_Builder] = field(default_factory=list)
    _fed: bool = False

    def feed(self, events: Iterable[DeviceEvent], devices: Mapping[str, Device]) -> None:
        """Apply ``events`` (oldest first, ids above ``last_id``); the first feed is
        the whole window of history read (it decides which quarantines began before)."""
        batch = list(events)
        if not self._fed:
            batch = _with_lost_quarantines(batch, devices)
            self._fed = True
        names = _address_names(devices.values())
        for event in batch:
            self.last_id = max(self.last_id, event.id)
            self._apply(event, names)
        if len(self._closed) > self.max_closed:
            del self._closed[:len(self._closed) - self.max_closed]

    def incidents(self, devices: Mapping[str, Device]) -> list[Incident]:
        """Every incident now: open ones first, then the decided ones, newest first.

        A device the store no longer has was forgotten: its incidents (and their
        evidence) are dropped, as the store dropped its events."""
        self._open = {k: b for k, b in self._open.items() if b.mac in devices}
        self._closed = [b for b in self._closed if b.mac in devices]
        builders = (*self._open.values(), *self._closed)
        return sorted((b.freeze(devices.get(b.mac or "")) for b in builders), key=_order)

    def _apply(self, event: DeviceEvent, names: Mapping[str, str]) -> None:
        mac = event.mac
        if mac is None:
            return
        closing = _closing(event)
        if closing is not None:
            for ended in closing[0]:
                done = self._open.pop((mac, ended), None)
                if done is not None:
                    done.closed_at, done.closed_by = event.at, closing[1]
                    self._closed.append(done)
            return
        kind = _opens(event)
        if kind is None:
            return
        if kind is AlertKind.VIOLATION and (mac, AlertKind.QUARANTINE) in self._open:
            kind = AlertKind.QUARANTINE  # evidence of the quarantine under way
        builder = self._open.get((mac, kind))
        if builder is None:
            builder = self._open[(mac, kind)] = _Builder(kind=kind, mac=mac, first=event,
                                                         latest=event)
        if kind is AlertKind.QUARANTINE:
            folded = self._open.pop((mac, AlertKind.VIOLATION), None)
            if folded is not None:
                builder.absorb(folded)
        builder.add(event, names, self.gateways)


def _with_lost_quarantines(events: list[DeviceEvent], devices: Mapping[str, Device]
                           ) -> list[DeviceEvent]:
    """``events`` preceded by a stand-in ``quarantined`` event for every quarantined device
    whose quarantine began before the oldest event read (a long flood of blocked traffic
    can push it out): its quarantine stays an open alert, never silently lost."""
    told = {e.mac for e in events if e.kind in (
        EventKind.QUARANTINED, EventKind.RELEASED, EventKind.FORGOTTEN, EventKind.TRANSFERRED)
        or e.details.get("decision") == "kept"}
    start = events[0].at if events else None
    lost = [DeviceEvent(id=0, at=start or d.last_seen or d.first_seen or _EPOCH,
                        kind=EventKind.QUARANTINED, mac=d.mac,
                        details=reason_details({"reason": d.reasons[0]}) if len(d.reasons) == 1
                        else {"reason": "; ".join(d.reasons)[:500]} if d.reasons else {})
            for d in devices.values()
            if d.state is LifecycleState.QUARANTINED and d.mac not in told]
    return [*lost, *events]


def _order(incident: Incident) -> tuple[int, int, float]:
    urgent = 0 if incident.kind is AlertKind.QUARANTINE else 1
    if incident.open:
        return (0, urgent, -incident.last_at.timestamp())
    return (1, 0, -(incident.closed_at or incident.last_at).timestamp())


def _closing(event: DeviceEvent) -> tuple[frozenset[AlertKind], str] | None:
    """The incidents ``event`` ends, and how; None if it ends none."""
    details = event.details
    if details.get("decision") == "kept":
        return frozenset({AlertKind.QUARANTINE, AlertKind.VIOLATION}), "kept"
    if event.kind is EventKind.ALERT_DISMISSED:
        try:
            return frozenset({AlertKind(str(details.get("alert")))}), "dismissed"
        except ValueError:
            return frozenset(), "dismissed"
    if event.kind is EventKind.STATE_CHANGED and details.get("to") == \
            LifecycleState.TRUSTED.value:
        return frozenset({AlertKind.NEW_DEVICE}), "trusted"
    return _CLOSERS.get(event.kind)


def _opens(event: DeviceEvent) -> AlertKind | None:
    """The kind of incident ``event`` opens or updates; None if it is no alert."""
    if event.details.get("decision"):
        return None
    if event.kind is EventKind.VIOLATION:
        # A watcher alert (a reason) is what quarantines the device: its evidence.
        return AlertKind.QUARANTINE if event.details.get("reason") else AlertKind.VIOLATION
    if event.kind is EventKind.JOINED:
        return None if event.details.get("source") in _OWNER_SOURCES else \
            AlertKind.NEW_DEVICE
    return _OPENERS.get(event.kind)


def _address_names(devices: Iterable[Device]) -> dict[str, str]:
    """The home's device addresses -> the names the owner knows them by."""
    names: dict[str, str] = {}
    for device in devices:
        label = device.name or device.model or device.hostname or device.mac
        for address in (*device.ipv4, *device.ipv6):
            names[address] = label
    return names


def open_incidents(incidents: Iterable[Incident]) -> list[Incident]:
    """The incidents that await the owner (what the badge counts)."""
    return [i for i in incidents if i.open]


_WELL_KNOWN = {
    (6, 443): "HTTPS", (6, 80): "HTTP", (17, 53): "DNS", (6, 53): "DNS", (17, 123): "NTP",
    (17, 67): "DHCP", (17, 68): "DHCP", (6, 8883): "MQTT", (6, 1883): "MQTT",
    (17, 1900): "SSDP", (17, 5353): "mDNS", (6, 22): "SSH", (6, 23): "Telnet",
    (6, 2323): "Telnet", (6, 25): "SMTP", (6, 445): "SMB", (6, 3389): "RDP",
    (6, 8080): "HTTP", (17, 443): "QUIC", (17, 3478): "STUN", (6, 554): "RTSP",
    (17, 56700): "LIFX", (6, 8009): "Cast", (6, 8008): "Cast",
}
_PROTOCOL_NAMES = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}


def _service_of_flow(protocol: object, port: object, icmp_type: object) -> Service | None:
    """``service_of``, remembered for plain values (the same few services recur)."""
    key = (protocol, port, icmp_type)
    if all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in key):
        return _cached_service(protocol, port, icmp_type)
    return service_of(protocol, port, icmp_type)


@functools.lru_cache(maxsize=4096)
def _cached_service(protocol: object, port: object, icmp_type: object) -> Service | None:
    return service_of(protocol, port, icmp_type)


def service_of(protocol: object, port: object, icmp_type: object = None) -> Service | None:
    """The service a flow used, as a person names it (None when the protocol is unknown)."""
    if isinstance(port, bool) or not isinstance(port, int):
        port = None
    if isinstance(protocol, bool) or not isinstance(protocol, int):
        if port is None:
            return None
        name = _WELL_KNOWN.get((6, port)) or _WELL_KNOWN.get((17, port))
        return Service(protocol="TCP/UDP", port=port, name=name)
    name = _PROTOCOL_NAMES.get(protocol, f"IP {protocol}")
    if protocol in (6, 17) and port is not None:
        return Service(protocol=name, port=port, name=_WELL_KNOWN.get((protocol, port)))
    if protocol in (1, 58) and icmp_type in (0, 8, 128, 129):
        return Service(protocol=name, name="ping")
    return Service(protocol=name)


def service_text(service: Service, t: Callable[..., str]) -> str:
    """A service in words ("Telnet", "UDP port 5683"); ``t`` is the page's translator."""
    if service.name:
        return service.name
    if service.port is not None:
        return t("svc.port", protocol=service.protocol, port=service.port)
    return service.protocol


def evidence_flows(event: DeviceEvent) -> list[dict[str, Any]]:
    """The flows an event carries as evidence (``details["evidence"]``), well-formed only."""
    evidence = event.details.get("evidence")
    if not isinstance(evidence, list):
        return []
    return [flow for flow in evidence[:1000]
            if isinstance(flow, dict) and (flow.get("dst") or flow.get("src"))]


def _count(value: object, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return max(0, min(value, 1_000_000))
