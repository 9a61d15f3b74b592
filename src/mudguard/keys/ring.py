"""Adapter: the key ring, one SQLite table of key records (key, MAC, VLAN, device),
and the events the binding rule raises.

The file holds passphrases, so it is created with mode 0600. The SQL lives only
here; every value is a parameter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mudguard.errors import MudguardError
from mudguard.keys.core import KeyRecord, PskEntry, normalise_mac
from mudguard.store._sqlite import SqliteDatabase

__all__ = ["DEFAULT_KEYS_DB", "KeyRing", "KeyRingError"]

DEFAULT_KEYS_DB = Path("/var/lib/mudguard/keys.db")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wifi_keys (
    keyid TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    passphrase TEXT NOT NULL,
    vlan INTEGER NOT NULL DEFAULT 0,
    device TEXT NOT NULL,
    created_at REAL NOT NULL,
    bound_at REAL
);
CREATE TABLE IF NOT EXISTS wifi_key_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    details TEXT NOT NULL
);
"""
_COLUMNS = "keyid, mac, passphrase, vlan, device, created_at, bound_at"
_ONBOARDING = "00:00:00:00:00:00"


class KeyRingError(MudguardError):
    """The key ring cannot be used, or a record conflicts with another."""

    key = "keyring_failed"


def _record(row: tuple[Any, ...]) -> KeyRecord:
    keyid, mac, passphrase, vlan, device, created_at, bound_at = row
    entry = PskEntry(keyid=keyid, mac=mac, passphrase=passphrase, vlan=int(vlan))
    return KeyRecord(entry=entry, device=device, created_at=float(created_at),
                     bound_at=None if bound_at is None else float(bound_at))


class KeyRing(SqliteDatabase):
    """Key records in SQLite. Thread-safe; ``transaction()`` groups changes."""

    error = KeyRingError
    what = "key ring"

    def _setup(self) -> None:
        self._db.executescript(_SCHEMA)

    def records(self) -> list[KeyRecord]:
        """Every key record, by key id."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM wifi_keys ORDER BY keyid")  # noqa: S608
            return [_record(tuple(r)) for r in rows.fetchall()]

    def get(self, keyid: str) -> KeyRecord | None:
        """The record with this key id, or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM wifi_keys WHERE keyid = ?",  # noqa: S608
                                   (keyid,)).fetchone()
        return _record(tuple(row)) if row else None

    def by_mac(self, mac: str) -> KeyRecord | None:
        """The key bound to this MAC, or None (onboarding keys are bound to no MAC)."""
        key = normalise_mac(mac)
        if key == _ONBOARDING:
            return None
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM wifi_keys WHERE mac = ?",  # noqa: S608
                                   (key,)).fetchone()
        return _record(tuple(row)) if row else None

    def add(self, record: KeyRecord) -> None:
        """Insert a new record; KeyRingError if the key id or the (non-zero) MAC is taken."""
        entry = record.entry
        with self.transaction():
            if self.get(entry.keyid) is not None:
                raise KeyRingError(f"key id {entry.keyid} already exists")
            if not entry.is_onboarding and self.by_mac(entry.mac) is not None:
                raise KeyRingError(f"{entry.mac} already has a key; revoke it first")
            self._db.execute(
                f"INSERT INTO wifi_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (entry.keyid, entry.mac, entry.passphrase, entry.vlan, record.device,
                 record.created_at, record.bound_at))

    def update(self, record: KeyRecord) -> None:
        """Replace an existing record (e.g. an onboarding key now bound to a MAC)."""
        entry = record.entry
        with self.transaction():
            other = None if entry.is_onboarding else self.by_mac(entry.mac)
            if other is not None and other.keyid != entry.keyid:
                raise KeyRingError(f"{entry.mac} already has key {other.keyid}")
            cursor = self._db.execute(
                "UPDATE wifi_keys SET mac = ?, passphrase = ?, vlan = ?, device = ?, "
                "bound_at = ? WHERE keyid = ?",
                (entry.mac, entry.passphrase, entry.vlan, record.device, record.bound_at,
                 entry.keyid))
            if cursor.rowcount != 1:
                raise KeyRingError(f"no key {entry.keyid}")

    def remove(self, keyid: str) -> KeyRecord | None:
        """Delete one record and return it (None if there was none)."""
        with self.transaction():
            record = self.get(keyid)
            self._db.execute("DELETE FROM wifi_keys WHERE keyid = ?", (keyid,))
        return record

    def log_event(self, details: dict[str, str], now: float) -> None:
        """Keep one binding-rule event (never contains a passphrase)."""
        with self.transaction():
            self._db.execute("INSERT INTO wifi_key_events (at, details) VALUES (?, ?)",
                             (now, json.dumps(details, sort_keys=True)))

    def events(self) -> list[tuple[float, dict[str, str]]]:
        """Every event, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT at, details FROM wifi_key_events ORDER BY id")
            return [(float(at), json.loads(details)) for at, details in rows.fetchall()]
