"""What the daemon keeps of an identification: the decision, its confidence and the
clues behind it, small enough to store per device and to show the owner.

Pure: ``IdentityRecord.from_identification`` summarises a decision; ``to_json`` /
``from_json`` are the stored form. ``from_json`` reads a stored record defensively (a
damaged row reads as None, never as a different identity).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from mudguard.identify.decide import LABELS, Identification
from mudguard.identify.parse import clean_text

MAX_CLUES: Final = 12  # the strongest clues kept per device
MAX_TEXT: Final = 160  # characters kept of a clue's value or a supported name
SUPPORTED: Final = ("manufacturer", "kind", "model", "platform", "trusted")


@dataclass(frozen=True, slots=True)
class RecordedClue:
    """One clue that counted: its field (``identify.decide.LABELS``' key), what it
    said, what it supports (``manufacturer``/``kind``/…: value) and its weight."""

    field: str
    value: str
    supports: tuple[tuple[str, str], ...]
    weight: float


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """A device's identification as decided from its evidence so far."""

    manufacturer: str | None
    manufacturer_confidence: float
    kind: str | None
    kind_confidence: float
    model: str | None
    platform: str | None
    clues: tuple[RecordedClue, ...]
    trusted_candidate: bool = False  # looks like a phone or computer (``identify``)

    @classmethod
    def from_identification(cls, result: Identification,
                            limit: int = MAX_CLUES) -> IdentityRecord:
        """The record of ``result``: its decision and its ``limit`` strongest clues."""
        ranked = sorted(result.evidence, key=lambda e: -e.weight)
        clues = tuple(
            RecordedClue(field=e.field or e.source, value=_cut(e.value or e.says),
                         supports=tuple((k, _cut(v)) for k, v in sorted(e.supports.items())
                                        if k in SUPPORTED),
                         weight=round(e.weight, 2))
            for e in ranked if e.supports)[:limit]
        return cls(manufacturer=_text_or_none(result.manufacturer),
                   manufacturer_confidence=round(result.manufacturer_confidence, 2),
                   kind=result.kind, kind_confidence=round(result.kind_confidence, 2),
                   model=_text_or_none(result.model),
                   platform=_text_or_none(result.platform), clues=clues,
                   trusted_candidate=result.trusted_candidate)

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (stored, and shown by the CLI and the API)."""
        return {"manufacturer": self.manufacturer,
                "manufacturer_confidence": self.manufacturer_confidence,
                "kind": self.kind, "kind_confidence": self.kind_confidence,
                "model": self.model, "platform": self.platform,
                "trusted_candidate": self.trusted_candidate,
                "evidence": [{"field": c.field, "label": LABELS.get(c.field, c.field),
                              "value": c.value, "supports": dict(c.supports),
                              "weight": c.weight} for c in self.clues]}

    def dumps(self) -> str:
        """The stored text."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: object) -> IdentityRecord | None:
        """A record read back from ``to_json``'s form; None for anything malformed."""
        if not isinstance(data, dict):
            return None
        try:
            clues = tuple(_clue(item) for item in data.get("evidence", [])[:MAX_CLUES])
            return cls(manufacturer=_text_or_none(data.get("manufacturer")),
                       manufacturer_confidence=_share(data.get("manufacturer_confidence")),
                       kind=_text_or_none(data.get("kind")),
                       kind_confidence=_share(data.get("kind_confidence")),
                       model=_text_or_none(data.get("model")),
                       platform=_text_or_none(data.get("platform")), clues=clues,
                       trusted_candidate=data.get("trusted_candidate") is True)
        except (TypeError, ValueError, AttributeError):
            return None

    @classmethod
    def loads(cls, text: str | None) -> IdentityRecord | None:
        """The record stored as ``text`` (None when absent or unreadable)."""
        if not text:
            return None
        try:
            return cls.from_json(json.loads(text))
        except ValueError:
            return None


def _cut(text: str) -> str:
    """At most ``MAX_TEXT`` characters, control and format characters written out
    (``clean_text``: a device's string never reorders or hides what the owner reads)."""
    return clean_text(text, MAX_TEXT)


def _text_or_none(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("text expected")
    return _cut(value)


def _share(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError("a confidence is a number from 0 to 1")
    return float(value)


def _clue(item: object) -> RecordedClue:
    if not isinstance(item, dict):
        raise TypeError("a clue is an object")
    supports = item.get("supports", {})
    if not isinstance(supports, dict):
        raise TypeError("supports is an object")
    field, value = item.get("field"), item.get("value")
    if not isinstance(field, str) or not isinstance(value, str):
        raise TypeError("a clue has a field and a value")
    return RecordedClue(
        field=_cut(field), value=_cut(value),
        supports=tuple((str(k), _cut(str(v))) for k, v in sorted(supports.items())
                       if k in SUPPORTED and isinstance(v, str)),
        weight=_share(item.get("weight", 0.0)))
