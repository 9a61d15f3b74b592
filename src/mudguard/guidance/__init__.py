"""Consumer guidance: what a device means for its owner, by aspect and moment (EN, FR).

The content lives in ``data/<language>.json`` so translators edit data, not code.
``load_guidance(language)`` checks that every aspect × moment cell is present, so
a translation with a hole fails loudly in the tests rather than showing a blank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

ASPECTS = ("privacy", "security", "functionality")
MOMENTS = ("before_purchase", "after_purchase", "at_problem", "end_of_use")
LANGUAGES = ("en", "fr")


class GuidanceError(Exception):
    """A guidance data file is missing a cell or malformed (a packaging bug)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    """An organisation to contact about one aspect (its public name and home page)."""

    topic: str
    name: str
    url: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Guidance:
    """The matrix in one language: ``advice[aspect][moment]`` plus the contacts."""

    language: str
    title: str
    aspects: dict[str, str]
    moments: dict[str, str]
    advice: dict[str, dict[str, str]]
    contacts: tuple[Contact, ...]


@cache
def load_guidance(language: str) -> Guidance:
    """The guidance in ``language`` (``en`` or ``fr``; anything else falls back to ``en``)."""
    if language not in LANGUAGES:
        language = "en"
    raw = json.loads(resources.files(__package__).joinpath("data", f"{language}.json")
                     .read_text(encoding="utf-8"))
    try:
        advice = {a: {m: str(raw["advice"][a][m]) for m in MOMENTS} for a in ASPECTS}
        guidance = Guidance(
            language=language, title=str(raw["title"]),
            aspects={a: str(raw["aspects"][a]) for a in ASPECTS},
            moments={m: str(raw["moments"][m]) for m in MOMENTS},
            advice=advice,
            contacts=tuple(Contact(topic=c["topic"], name=c["name"], url=c.get("url"))
                           for c in raw["contacts"]),
        )
    except (KeyError, TypeError) as exc:
        raise GuidanceError(f"guidance/{language}.json is incomplete: {exc}") from exc
    if any(not text.strip() for row in advice.values() for text in row.values()):
        raise GuidanceError(f"guidance/{language}.json has an empty cell")
    return guidance


__all__ = ["ASPECTS", "LANGUAGES", "MOMENTS", "Contact", "Guidance", "GuidanceError",
           "load_guidance"]
