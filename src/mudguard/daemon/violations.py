"""Dropped packets as the owner sees them: per device, counted and summarised.

The watcher reports every packet a device's policy dropped (NFLOG). Writing one database
row per packet would let a misbehaving device fill the disk, so ``ViolationLog`` counts
them per device and keeps a few distinct flows as evidence; the daemon records one
``violation`` event per device per period (what the portal's flow history and "recent
peers" read). Bounded: at most ``max_devices`` devices and ``max_evidence`` flows each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mudguard.devices.activity import OTHER, clean_destination
from mudguard.watch import FlowEvent

MAX_DESTINATIONS = 64  # per device between drains; the rest count as "other"


@dataclass(slots=True)
class Tally:
    """Drops of one device since the last drain."""

    count: int = 0
    evidence: list[FlowEvent] = field(default_factory=list)
    by_destination: dict[str, int] = field(default_factory=dict)  # name (or address) -> drops
    _seen: set[tuple[object, ...]] = field(default_factory=set)


@dataclass(slots=True)
class ViolationLog:
    """Counts drops per device id between drains (used from the event loop only)."""

    max_evidence: int = 10
    max_devices: int = 4096
    _tallies: dict[str, Tally] = field(default_factory=dict)

    def add(self, event: FlowEvent) -> None:
        """Count one dropped packet; keep it as evidence if its flow is new."""
        tally = self._tallies.get(event.device_id)
        if tally is None:
            if len(self._tallies) >= self.max_devices:
                return
            tally = self._tallies[event.device_id] = Tally()
        tally.count += 1
        destination = clean_destination(event.remote_name or event.remote)
        if destination not in tally.by_destination and \
                len(tally.by_destination) >= MAX_DESTINATIONS:
            destination = OTHER
        tally.by_destination[destination] = tally.by_destination.get(destination, 0) + 1
        key = (event.direction, event.protocol, event.remote, event.dst_port, event.icmp_type)
        if key not in tally._seen and len(tally.evidence) < self.max_evidence:
            tally._seen.add(key)
            tally.evidence.append(event)

    def drain(self) -> dict[str, Tally]:
        """Everything counted since the last drain, by device id (and start afresh)."""
        tallies, self._tallies = self._tallies, {}
        return tallies
