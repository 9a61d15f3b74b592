"""What a device did, as the owner reads it: connections per destination, counted.

Theory of operation. The daemon never writes a row per packet or per connection: it
counts a device's allowed connections (conntrack NEW events, one per connection the
kernel accepted) and its blocked packets (the drop log) per destination in memory and,
every period, adds the counts to one row per device, hour and destination
(``ActivityCount``, the store's ``activity`` table). The portal reads those rows back:
the allowed/blocked chart (``activity_buckets``) and the "Recent" list grouped by
destination (``group_by_destination``). Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_DESTINATION = 255
OTHER = "other"  # the destinations past a device's bound, counted together


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityCount:
    """A device's connections to one destination in one hour (``hour`` = its start)."""

    hour: datetime
    destination: str  # the DNS name the device looked up, else the address
    allowed: int = 0
    blocked: int = 0
    last_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationActivity:
    """One line of "Recent": a destination, how often, and when last."""

    destination: str
    allowed: int
    blocked: int
    last_at: datetime
    gateway: bool = False  # the gateway itself (its DNS, DHCP, time services)

    def as_dict(self) -> dict[str, object]:
        """The JSON form (API)."""
        return {"destination": self.destination, "allowed": self.allowed,
                "blocked": self.blocked, "last": self.last_at.isoformat(),
                "gateway": self.gateway}


def hour_of(at: datetime) -> datetime:
    """The start of the hour ``at`` falls in (the store's slot)."""
    return at.replace(minute=0, second=0, microsecond=0)


def clean_destination(value: object) -> str:
    """A destination as stored and shown: a bounded printable string (``other`` else)."""
    text = str(value or "").strip().rstrip(".").lower()[:MAX_DESTINATION]
    return text if text and text.isprintable() else OTHER


def group_by_destination(counts: Iterable[ActivityCount], *, since: datetime,
                         limit: int = 20) -> list[DestinationActivity]:
    """The destinations seen since ``since``, their totals and last time, the most
    recent first (then the busiest), at most ``limit``."""
    totals: dict[str, list[int]] = {}
    last: dict[str, datetime] = {}
    for count in counts:
        if count.last_at < since:
            continue
        total = totals.setdefault(count.destination, [0, 0])
        total[0] += count.allowed
        total[1] += count.blocked
        seen = last.get(count.destination)
        if seen is None or count.last_at > seen:
            last[count.destination] = count.last_at
    lines = [DestinationActivity(destination=name, allowed=a, blocked=b, last_at=last[name])
             for name, (a, b) in totals.items()]
    lines.sort(key=lambda line: (line.last_at, line.allowed + line.blocked,
                                 line.destination), reverse=True)
    return lines[:max(0, limit)]


def activity_buckets(counts: Iterable[ActivityCount], *, start: datetime, span: timedelta,
                     buckets: int) -> tuple[list[int], list[int]]:
    """(allowed, blocked) per time slot of ``span`` from ``start``: each hourly row
    counts in the slot its hour starts in (the first slot for an hour that started
    before ``start`` but was still active after it)."""
    allowed = [0] * buckets
    blocked = [0] * buckets
    end = start + span * buckets
    for count in counts:
        if count.last_at < start or count.hour >= end:
            continue
        index = min(buckets - 1, max(0, int((count.hour - start) / span)))
        allowed[index] += count.allowed
        blocked[index] += count.blocked
    return allowed, blocked
