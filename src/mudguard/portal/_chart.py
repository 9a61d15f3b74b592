"""The flows chart as data for an inline SVG: bar positions computed here, drawn by the
template (so every value is autoescaped and no SVG string is built in Python)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo

from mudguard.portal._services import FlowBucket

WIDTH = 480
HEIGHT = 140
PLOT_TOP = 10
PLOT_BOTTOM = 115  # the x-axis; labels go below


@dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    """One bar: position, size, and what it counts."""

    x: float
    y: float
    width: float
    height: float
    kind: str  # "allowed" or "blocked"
    count: int
    label: str  # the slot's start time, HH:MM


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    """Everything the template needs to draw the chart and its text alternative."""

    width: int
    height: int
    axis_y: int
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, str], ...]
    total_allowed: int
    total_blocked: int
    peak: int


def flow_chart(buckets: list[FlowBucket], zone: tzinfo | None = None) -> Chart:
    """Lay out paired bars (allowed, blocked) per time slot, scaled to the busiest slot;
    the slots labelled in ``zone`` (the owner's; the buckets' own when None)."""
    peak = max([1] + [max(b.allowed, b.blocked) for b in buckets])
    slot = WIDTH / max(1, len(buckets))
    bar_width = slot * 0.38
    plot_height = PLOT_BOTTOM - PLOT_TOP
    bars: list[Bar] = []
    ticks: list[tuple[float, str]] = []
    for index, bucket in enumerate(buckets):
        left = index * slot + slot * 0.1
        start = bucket.start.astimezone(zone) if zone is not None else bucket.start
        label = start.strftime("%H:%M")
        for offset, kind, count in ((0.0, "allowed", bucket.allowed),
                                    (bar_width, "blocked", bucket.blocked)):
            height = plot_height * count / peak
            bars.append(Bar(x=round(left + offset, 1), y=round(PLOT_BOTTOM - height, 1),
                            width=round(bar_width, 1), height=round(height, 1), kind=kind,
                            count=count, label=label))
        if index % 3 == 0:
            ticks.append((round(left, 1), label))
    return Chart(width=WIDTH, height=HEIGHT, axis_y=PLOT_BOTTOM, bars=tuple(bars),
                 ticks=tuple(ticks), total_allowed=sum(b.allowed for b in buckets),
                 total_blocked=sum(b.blocked for b in buckets), peak=peak)
