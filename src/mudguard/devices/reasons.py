"""Why a device is in its state: an English sentence that also carries its key.

The lifecycle and the device service write a device's reasons and their events'
``reason`` as English sentences (logs, the CLI and the API show them as they are).
A ``Reason`` is such a sentence (a ``str``, so everything that reads reasons keeps
working) that also carries a catalogue key (``profiled`` for the portal's
``reason.profiled``) and its fields (``url``; a field may itself be a ``Reason``,
as in ``"{why}; no MUD profile"``). The store keeps the key and the fields beside
the sentence (``reason_json``) and gives them back (``reason_from_json``); the
portal words a reason from its key, and an old reason stored without one through
its patterns. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 3
"""How deep reasons may nest (a reason's field that is a reason, …) when read back."""


class Reason(str):
    """An English sentence with its catalogue key and fields (see the module)."""

    key: str
    fields: Mapping[str, object]

    def __new__(cls, key: str, english: str, **fields: object) -> Reason:
        """The sentence ``english``, said as ``key`` with ``fields`` (str, int or Reason)."""
        made = super().__new__(cls, english)
        made.key = key
        made.fields = dict(fields)
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        """Copied and pickled with its key and fields (``str`` would drop them)."""
        return (_rebuilt, (self.key, str(self), dict(self.fields)))


def _rebuilt(key: str, english: str, fields: dict[str, object]) -> Reason:
    return Reason(key, english, **fields)


def reason_json(reason: str) -> dict[str, Any] | None:
    """The key and fields of ``reason`` as JSON-ready data (a nested reason as the
    same shape); None for a plain sentence."""
    if not isinstance(reason, Reason):
        return None
    return {"key": reason.key,
            "fields": {name: {**(reason_json(value) or {}), "text": str(value)}
                       if isinstance(value, Reason) else value
                       for name, value in reason.fields.items()}}


def reason_from_json(english: str, stored: object, depth: int = 0) -> str:
    """``english`` as a ``Reason`` with the key and fields ``stored`` (``reason_json``
    data; a nested reason's own sentence is its ``text``); the plain sentence when
    ``stored`` is absent or not of that shape (the portal then reads it through its
    patterns)."""
    if not isinstance(stored, dict) or depth > MAX_DEPTH:
        return english
    key, fields = stored.get("key"), stored.get("fields")
    if not isinstance(key, str) or not key or not isinstance(fields, dict):
        return english
    values: dict[str, object] = {}
    for name, value in fields.items():
        if isinstance(value, dict):
            nested = reason_from_json(str(value.get("text") or ""), value, depth + 1)
            if not isinstance(nested, Reason):
                return english
            values[str(name)] = nested
        else:
            values[str(name)] = value
    return Reason(key, english, **values)


def reason_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """An event's ``details`` with the key and fields of its ``reason`` (when it is a
    ``Reason`` and none are there yet: the watcher stores its own) and of its
    ``reasons`` (a state change: ``reason_keys``, one per reason, None for a plain one)."""
    told = dict(details)
    reason = told.get("reason")
    keyed = reason_json(reason) if isinstance(reason, str) else None
    if keyed is not None and "reason_key" not in told:
        told["reason_key"], told["reason_fields"] = keyed["key"], keyed["fields"]
    reasons = told.get("reasons")
    if isinstance(reasons, list | tuple) and any(isinstance(r, Reason) for r in reasons):
        told["reason_keys"] = [reason_json(r) if isinstance(r, str) else None
                               for r in reasons]
    return told
