"""The deviation tracker: dropped-packet events in, quarantine alerts out (pure).

Theory of operation: ``DeviationTracker.observe(event, now)`` is called for each
``FlowEvent`` (a packet a device's policy dropped) with the current time in
seconds (monotonic). It keeps, per device, the recent events in bounded
windows and returns an ``Alert`` the first time one of these holds:

- **scan** (Mirai-like): within ``scan_window`` seconds the device tried
  ``scan_hosts`` distinct addresses, or ``lan_scan_hosts`` distinct addresses on
  the home LAN, or ``scan_ports`` distinct ports of one address;
- **flood**: ``flood_events`` drops logged within ``flood_window`` seconds. The
  kernel logs at most ``LOG_RATE``/s plus a burst per device (``policy._nft``),
  so this means "dropping continuously at close to the log cap"; keep
  ``flood_events`` below ``LOG_RATE × flood_window + LOG_BURST``. The kernel's
  per-device new-connection cap limits the damage before the alert;
- **connection flood**: ``flood_connections`` new connections (conntrack NEW
  events, ``observe_connection``) within ``connection_window`` seconds, allowed or
  not: a flood of destinations the profile allows leaves no drop log;
- **deviation**: ``deviation_flows`` distinct deviating flows (address,
  protocol, port) within ``deviation_window`` seconds: a device repeatedly doing
  what its profile does not allow (reported as a scan when they all fall within
  ``scan_window``). Flows to a device's first few other DNS resolvers
  (``watch.resolvers``) are told to the owner once per server instead and do not
  count here (RFC 9726 §6.5 makes the network's resolver a SHOULD): they still count
  toward scan and flood.

Only packets the device *sent* count (``out``): a device does not deserve
quarantine because something on the Internet knocked on its door. After an
alert the device is left alone (no second alert) until ``release()``, which the
owner's release of the device triggers. Memory is bounded: at most
``max_devices`` devices (the least recently seen is forgotten) and
``max_events`` events per device.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mudguard.devices.reasons import Reason
from mudguard.mud import Direction
from mudguard.policy._names import device_id
from mudguard.watch.nflog import FlowEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """When repeated deviation becomes quarantine (defaults suit a home)."""

    scan_window: float = 10.0
    scan_hosts: int = 32
    lan_scan_hosts: int = 8
    scan_ports: int = 16
    flood_window: float = 10.0
    flood_events: int = 45
    deviation_window: float = 600.0
    deviation_flows: int = 8
    # New connections (conntrack), allowed or not: the nft cap is 50/s per device.
    connection_window: float = 10.0
    flood_connections: int = 300
    # RFC 9761: ClientHellos that do not fit the device's (D)TLS profile, within
    # ``deviation_window`` (a changed TLS stack keeps its ports: a strong sign).
    tls_deviations: int = 3
    max_events: int = 4096
    max_devices: int = 4096
    evidence: int = 20  # events kept in an alert

    def __post_init__(self) -> None:
        for name in ("scan_window", "flood_window", "deviation_window", "connection_window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("scan_hosts", "lan_scan_hosts", "scan_ports", "flood_events",
                     "deviation_flows", "max_events", "max_devices", "evidence",
                     "flood_connections", "tls_deviations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


# Why an alert was raised: its key (the portal's catalogue has ``reason.<key>`` in each
# language) and its English sentence, filled from the same fields: ``count``, ``seconds``
# and ``sample`` (the examples, ``tcp 192.0.2.7 port 23, …``).
REASONS: dict[str, str] = {
    "watch.lan_scan": "scanned the home network: {count} addresses in {seconds} s ({sample})",
    "watch.scan": "scanned {count} addresses in {seconds} s ({sample})",
    "watch.ports": "probed {count} ports of one address in {seconds} s ({sample})",
    "watch.flood": "{count} blocked packets in {seconds} s, the most the gateway logs "
                   "({sample})",
    "watch.tried": "tried {count} different blocked connections in {seconds} s ({sample})",
    "watch.deviation": "{count} different connections its profile does not allow within "
                       "{seconds} s ({sample})",
    "watch.connections": "opened {count} connections in {seconds} s (e.g. {sample})",
    "watch.connections.plain": "opened {count} connections in {seconds} s",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """A device should be quarantined: why, and the evidence.

    ``reason`` is the English sentence (logs, CLI, API); ``reason_key`` and
    ``reason_fields`` say the same as data (a key of ``REASONS``; ``count``, ``seconds``,
    ``examples``: up to three ``{"protocol", "remote", "port", "icmp_type"}``, and ``more``)
    so that the portal words it in the owner's language."""

    device_id: str
    kind: str  # "scan", "flood", "deviation" or "tls"
    reason: str  # for the owner, in words
    at: float
    evidence: tuple[FlowEvent, ...]
    mac: str | None = None
    reason_key: str = ""
    reason_fields: Mapping[str, object] = field(default_factory=dict)

    def why(self) -> str:
        """The reason a quarantine keeps on the device: the sentence with its key and
        fields (``devices.reasons.Reason``), the plain sentence when it has no key."""
        if not self.reason_key:
            return self.reason
        return Reason(self.reason_key, self.reason, **self.reason_fields)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {"device_id": self.device_id, "mac": self.mac, "kind": self.kind,
                "reason": self.reason, "reason_key": self.reason_key,
                "reason_fields": dict(self.reason_fields),
                "evidence": [e.as_dict() for e in self.evidence]}


@dataclass(slots=True)
class _Device:
    events: deque[tuple[float, FlowEvent]] = field(default_factory=deque)
    flows: dict[tuple[str, int, int | None], float] = field(default_factory=dict)
    mac: str | None = None
    alerted: bool = False
    connections: deque[float] = field(default_factory=deque)
    tls: deque[tuple[float, FlowEvent, str]] = field(default_factory=deque)


class DeviationTracker:
    """Turns dropped-packet events into quarantine alerts (see the module docstring)."""

    def __init__(self, thresholds: Thresholds | None = None, *,
                 lan_prefixes: Iterable[str] = ()) -> None:
        self.thresholds = thresholds or Thresholds()
        self._lan = tuple(ipaddress.ip_network(p, strict=False) for p in lan_prefixes)
        self._devices: dict[str, _Device] = {}
        # The watcher observes on the event loop while the device service releases
        # devices from its worker thread.
        self._lock = threading.Lock()

    def observe(self, event: FlowEvent, now: float, *,
                deviation: bool = True) -> list[Alert]:
        """Record one event at ``now`` (seconds); return the alerts it triggers (0 or 1).

        ``deviation=False``: the event counts toward scan and flood only, not toward
        the distinct deviating flows (a device resolving with another DNS server,
        ``watch.resolvers``: misconfigured, not compromised).
        """
        if event.direction is not Direction.FROM_DEVICE:
            return []
        with self._lock:
            return self._observe(event, now, deviation)

    def _observe(self, event: FlowEvent, now: float, deviation: bool) -> list[Alert]:
        state = self._device(event.device_id)
        if event.mac and state.mac is None and device_id(event.mac) == event.device_id:
            state.mac = event.mac  # only a MAC that is this device's (the id is its hash)
        if state.alerted:
            return []
        t = self.thresholds
        state.events.append((now, event))
        if len(state.events) > t.max_events:
            state.events.popleft()
        if deviation:
            key = (event.dst, event.protocol, event.dst_port)
            state.flows.pop(key, None)  # re-inserted: dict order is recency order
            state.flows[key] = now
        self._prune(state, now)
        alert = self._judge(event.device_id, state, now)
        if alert is None:
            return []
        state.alerted = True
        state.events.clear()
        state.flows.clear()
        return [alert]

    def observe_connection(self, device_id: str, now: float,
                           sample: FlowEvent | None = None) -> list[Alert]:
        """Count one new connection the device opened (a conntrack NEW event).

        A device opening ``flood_connections`` connections within
        ``connection_window`` seconds floods, whatever its profile allows.
        """
        with self._lock:
            return self._observe_connection(device_id, now, sample)

    def _observe_connection(self, device_id: str, now: float,
                            sample: FlowEvent | None) -> list[Alert]:
        state = self._device(device_id)
        if state.alerted:
            return []
        t = self.thresholds
        state.connections.append(now)
        while state.connections and (state.connections[0] < now - t.connection_window
                                     or len(state.connections) > t.max_events):
            state.connections.popleft()
        if len(state.connections) < t.flood_connections:
            return []
        state.alerted = True
        count = len(state.connections)
        state.connections.clear()
        samples = [sample] if sample is not None else []
        key = "watch.connections" if samples else "watch.connections.plain"
        reason, fields = _reason(key, count, t.connection_window, samples)
        return [Alert(device_id=device_id, kind="flood", at=now, mac=state.mac, reason=reason,
                      reason_key=key, reason_fields=fields, evidence=tuple(samples))]

    def observe_tls(self, event: FlowEvent, reason: str, now: float) -> list[Alert]:
        """Count one ClientHello (of the flow ``event``) that does not fit the device's
        RFC 9761 profile, for ``reason``: ``tls_deviations`` of them within
        ``deviation_window`` seconds make a ``tls`` alert (quarantine)."""
        with self._lock:
            state = self._device(event.device_id)
            if state.alerted:
                return []
            t = self.thresholds
            state.tls.append((now, event, reason))
            while state.tls and (state.tls[0][0] < now - t.deviation_window
                                 or len(state.tls) > t.max_events):
                state.tls.popleft()
            if len(state.tls) < t.tls_deviations:
                return []
            state.alerted = True
            seen = list(state.tls)
            state.tls.clear()
        reasons = list(dict.fromkeys(r for _, _, r in seen))
        sample = "; ".join(reasons[:3]) + ("; …" if len(reasons) > 3 else "")
        return [Alert(device_id=event.device_id, kind="tls", at=now, mac=state.mac,
                      reason=f"{len(seen)} TLS ClientHellos that do not fit its MUD profile "
                             f"within {t.deviation_window:g} s ({sample})",
                      evidence=tuple(e for _, e, _ in seen[-t.evidence:]))]

    def release(self, device_id: str) -> None:
        """The owner released the device: watch it afresh."""
        with self._lock:
            self._devices.pop(device_id, None)

    def alerted(self, device_id: str) -> bool:
        """True if the device has had its alert and not been released since."""
        with self._lock:
            state = self._devices.get(device_id)
        return state is not None and state.alerted

    def _device(self, device_id: str) -> _Device:
        state = self._devices.pop(device_id, None)
        if state is None:
            state = _Device()
            if len(self._devices) >= self.thresholds.max_devices:
                del self._devices[next(iter(self._devices))]  # least recently seen
        self._devices[device_id] = state  # re-inserted: dict order is recency order
        return state

    def _prune(self, state: _Device, now: float) -> None:
        t = self.thresholds
        keep = max(t.scan_window, t.flood_window)
        while state.events and state.events[0][0] < now - keep:
            state.events.popleft()
        cutoff = now - t.deviation_window
        while state.flows:
            oldest = next(iter(state.flows))
            if state.flows[oldest] >= cutoff and len(state.flows) <= t.max_events:
                break
            del state.flows[oldest]

    def _judge(self, device_id: str, state: _Device, now: float) -> Alert | None:
        t = self.thresholds
        scan = [e for at, e in state.events if at >= now - t.scan_window]
        hosts = {e.dst for e in scan}
        lan_hosts = {h for h in hosts if self._is_lan(h)}
        by_host: dict[str, set[int]] = {}
        for e in scan:
            if e.dst_port is not None:
                by_host.setdefault(e.dst, set()).add(e.dst_port)
        ports = max((len(p) for p in by_host.values()), default=0)
        flood = [e for at, e in state.events if at >= now - t.flood_window]

        def alert(kind: str, key: str, count: int, seconds: float,
                  evidence: list[FlowEvent]) -> Alert:
            reason, fields = _reason(key, count, seconds, evidence)
            return Alert(device_id=device_id, kind=kind, reason=reason, at=now, mac=state.mac,
                         reason_key=key, reason_fields=fields,
                         evidence=tuple(evidence[-t.evidence:]))

        if len(lan_hosts) >= t.lan_scan_hosts:
            return alert("scan", "watch.lan_scan", len(lan_hosts), t.scan_window, scan)
        if len(hosts) >= t.scan_hosts:
            return alert("scan", "watch.scan", len(hosts), t.scan_window, scan)
        if ports >= t.scan_ports:
            return alert("scan", "watch.ports", ports, t.scan_window, scan)
        if len(flood) >= t.flood_events:
            return alert("flood", "watch.flood", len(flood), t.flood_window, flood)
        if len(state.flows) >= t.deviation_flows:
            fast = {k for k, at in state.flows.items() if at >= now - t.scan_window}
            if len(fast) >= t.deviation_flows:  # all within seconds: a scan, say so
                return alert("scan", "watch.tried", len(fast), t.scan_window, scan)
            recent = [e for _, e in state.events]
            return alert("deviation", "watch.deviation", len(state.flows),
                         t.deviation_window, recent)
        return None

    def _is_lan(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in self._lan)


def _reason(key: str, count: int, seconds: float, events: list[FlowEvent]
            ) -> tuple[str, dict[str, object]]:
    """The English sentence of ``REASONS[key]`` and the same as fields."""
    examples: list[FlowEvent] = []
    seen: set[str] = set()
    more = False
    for event in events:
        text = event.describe()
        if text in seen:
            continue
        if len(examples) == 3:
            more = True
            break
        seen.add(text)
        examples.append(event)
    fields: dict[str, object] = {
        "count": count, "seconds": f"{seconds:g}", "more": more,
        "examples": [{"protocol": e.protocol, "remote": e.remote_name or e.remote,
                      "port": e.dst_port if e.direction is Direction.FROM_DEVICE else None,
                      "icmp_type": e.icmp_type} for e in examples]}
    english = REASONS[key].format(count=count, seconds=f"{seconds:g}",
                                  sample=_sample(events))
    return english, fields


def _sample(events: list[FlowEvent], count: int = 3) -> str:
    """A few distinct examples, e.g. ``tcp 192.0.2.7 port 23, tcp 192.0.2.8 port 23, …``."""
    seen: list[str] = []
    for event in events:
        text = event.describe()
        if text not in seen:
            seen.append(text)
        if len(seen) > count:
            break
    more = ", …" if len(seen) > count else ""
    return ", ".join(seen[:count]) + more
