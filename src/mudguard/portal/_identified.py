"""How the gateway recognised a device, as the owner reads it.

``identified_view`` is pure: from the daemon's stored identification
(``identify.record.IdentityRecord``) it gives the decision with how sure it is, and
each clue as a catalogue key (which packet field it came from), the value the device
sent (shown as sent, never translated) and what it supports (maker, kind, model), the
kind as a catalogue key too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mudguard.identify.decide import LABELS
from mudguard.identify.record import IdentityRecord

KINDS: Final = frozenset({
    "camera", "doorbell", "plug", "bulb", "hub", "lock", "scale", "speaker", "tv",
    "thermostat", "sprinkler", "vacuum", "smoke_alarm", "printer", "appliance", "sensor",
    "phone", "computer", "router", "iot", "nas"})
SUPPORTS_SHOWN: Final = ("manufacturer", "model", "kind")
# Clues mudguard inferred itself (its knowledge of a maker's range, the traffic's
# shape) rather than read from what the device sent: not listed as the device's.
INFERRED: Final = frozenset({"maker_range", "traffic"})


@dataclass(frozen=True, slots=True)
class ClueView:
    """One clue: its field's catalogue key, the value sent, and what it supports as
    (catalogue key, argument) pairs."""

    field_key: str
    value: str
    supports: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class IdentifiedView:
    """The decision (maker, kind as a catalogue key or None) with percentages, and the
    clues behind it, strongest first."""

    maker: str | None
    maker_percent: int
    kind_key: str | None
    kind_percent: int
    clues: tuple[ClueView, ...]


def identified_view(record: IdentityRecord | None) -> IdentifiedView | None:
    """The owner's view of ``record``; None when nothing was recognised."""
    if record is None or not record.clues:
        return None
    clues = tuple(ClueView(field_key=_field_key(c.field), value=c.value,
                           supports=tuple(_support(k, dict(c.supports)[k])
                                          for k in SUPPORTS_SHOWN if k in dict(c.supports)))
                  for c in record.clues if c.field not in INFERRED)
    return IdentifiedView(
        maker=record.manufacturer, maker_percent=round(record.manufacturer_confidence * 100),
        kind_key=_kind_key(record.kind), kind_percent=round(record.kind_confidence * 100),
        clues=tuple(c for c in clues if c.supports))


TRUSTED_KINDS: Final = frozenset({"phone", "computer"})
SURE: Final = 0.5  # the confidence at which the daemon stores a kind
MIN_TRUST_FIELDS: Final = 2  # distinct kinds of clue naming a phone/computer


def suggests_trust(record: IdentityRecord | None) -> bool:
    """Whether the device looks like the owner's phone or computer, so trust is proposed:
    identification names that kind at ``SURE`` or above and at least two different kinds
    of clue say so (e.g. a randomised MAC and an iPhone host name; a Windows DHCP vendor
    class and its connectivity check). One clue is never enough: every clue is something
    the device itself sent, and a single forged User-Agent must not earn the proposal of
    full access (the owner still decides)."""
    if record is None or record.kind not in TRUSTED_KINDS or record.kind_confidence < SURE:
        return False
    fields = {c.field for c in record.clues if dict(c.supports).get("kind") in TRUSTED_KINDS}
    return len(fields) >= MIN_TRUST_FIELDS


def _field_key(field: str) -> str:
    return f"identify.field.{field}" if field in LABELS else "identify.field.other"


def _kind_key(kind: str | None) -> str | None:
    return f"kind.{kind}" if kind in KINDS else ("kind.iot" if kind else None)


def _support(attribute: str, value: str) -> tuple[str, str]:
    if attribute == "kind":
        return "identify.supports.kind", _kind_key(value) or "kind.iot"
    return f"identify.supports.{attribute}", value
