"""Adapter: the SQLite database, mudguard's single source of truth.

Theory of operation: one ``Store`` wraps one SQLite connection in WAL mode (readers
never block the writer, and a crash loses at most the transaction in flight). The
daemon and the portal share it across threads: every call takes the store's lock,
so a call sees and leaves a consistent database. ``transaction()`` groups several
calls into one atomic write (e.g. forget: grants, events and the device row go
together or not at all).

The SQL lives only here. Every value, above all anything a device sent, is passed
as a parameter, never formatted into SQL text. Rows come back as the dataclasses
of ``mudguard.devices._model``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mudguard.devices._model import (
    CachedMud,
    Device,
    DeviceEvent,
    DnsGrant,
    EventKind,
    GrantRecord,
    HomeDefault,
    Learning,
    MudSource,
    Settings,
    SignatureStatus,
    device_mac,
    normalise_mac,
)
from mudguard.devices.activity import ActivityCount, clean_destination, hour_of
from mudguard.devices.reasons import reason_details, reason_from_json, reason_json
from mudguard.devices.wiring import check_time_zone
from mudguard.errors import MudguardError
from mudguard.policy import Grant, GrantKind, LifecycleState
from mudguard.store._schema import MIGRATIONS, SCHEMA_VERSION
from mudguard.store._sqlite import SqliteDatabase

DEFAULT_DB = Path("/var/lib/mudguard/mudguard.db")

_DEVICE_COLUMNS = (
    "mac", "state", "reasons", "ipv4", "ipv6", "name", "hostname", "mud_url", "mud_source",
    "pending_mud_url", "pending_source", "manufacturer", "model", "profile_hash",
    "signature_status", "signer", "end_of_support", "key_id", "first_seen", "last_seen",
    "pinned_signer", "root_mud_url", "past_root_urls", "quarantine_exceptions", "kind",
    "reason_keys",
)
# Built once from our own constant column names above (never from input), hence noqa.
_SELECT_DEVICES = f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM devices"  # noqa: S608
_SELECT_HOLDING = (
    f"{_SELECT_DEVICES} WHERE EXISTS (SELECT 1 FROM json_each(devices.ipv4) "  # noqa: S608
    "WHERE value = ?1) OR EXISTS (SELECT 1 FROM json_each(devices.ipv6) WHERE value = ?1) "
    "ORDER BY mac")
_UPSERT_DEVICE = (
    f"INSERT INTO devices ({', '.join(_DEVICE_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in _DEVICE_COLUMNS)}) ON CONFLICT(mac) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _DEVICE_COLUMNS[1:])
)


class StoreError(MudguardError):
    """The database cannot be used (newer schema, unreadable file, …)."""

    key = "store_failed"


class Store(SqliteDatabase):
    """The device database. Thread-safe; close it with ``close()`` or ``with``.

    ``Store(path)`` opens (creating if needed) the database and migrates it;
    ``":memory:"`` gives a private in-memory database (tests, dry runs). Raises
    ``StoreError`` if the file's schema is newer than this code.
    """

    error = StoreError

    def _setup(self) -> None:
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def schema_version(self) -> int:
        """The database's ``PRAGMA user_version``."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(f"database schema {version} is newer than this mudguard "
                             f"({SCHEMA_VERSION}); upgrade mudguard")
        if version == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            # PRAGMA takes no parameters; the value is our own int constant.
            self._db.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _write(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self.transaction():
            return self._db.execute(sql, params)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cursor = self._db.execute(sql, params)
            return list(cursor.fetchall())

    # -- devices -----------------------------------------------------------------------

    def get_device(self, mac: str) -> Device | None:
        """The device with this MAC (any notation), or None."""
        rows = self._read(_SELECT_DEVICES + " WHERE mac = ?", (normalise_mac(mac),))
        return _device_from_row(rows[0]) if rows else None

    def count_devices(self) -> int:
        """How many devices the store holds."""
        return int(self._read("SELECT COUNT(*) FROM devices")[0][0])

    def count_by_state(self) -> dict[LifecycleState, int]:
        """How many devices are in each lifecycle state (states with none are left out)."""
        rows = self._read("SELECT state, COUNT(*) FROM devices GROUP BY state")
        return {LifecycleState(state): int(count) for state, count in rows}

    def list_devices(self) -> list[Device]:
        """Every device, ordered by MAC."""
        rows = self._read(_SELECT_DEVICES + " ORDER BY mac")
        return [_device_from_row(row) for row in rows]

    def devices_holding(self, address: str) -> list[Device]:
        """The devices whose stored addresses include ``address`` (canonical text)."""
        rows = self._read(_SELECT_HOLDING, (address,))
        return [_device_from_row(row) for row in rows]

    def save_device(self, device: Device) -> None:
        """Insert or replace the device's row (keeps its grants).

        Raises ``MacError`` for a MAC that cannot name a device (all-zero, broadcast,
        multicast, malformed): the store never holds one, whichever path sent it.
        """
        self._write(_UPSERT_DEVICE, _device_to_row(device))

    def delete_device(self, mac: str) -> bool:
        """Delete the device, its grants and its events; True if it existed."""
        key = normalise_mac(mac)
        with self.transaction():
            self._db.execute("DELETE FROM events WHERE mac = ?", (key,))
            self._db.execute("DELETE FROM grants WHERE mac = ?", (key,))
            self._db.execute("DELETE FROM learning WHERE mac = ?", (key,))
            self._db.execute("DELETE FROM activity WHERE mac = ?", (key,))
            self._db.execute("DELETE FROM identity WHERE mac = ?", (key,))
            self._db.execute("DELETE FROM dns_grants WHERE mac = ?", (key,))
            return self._db.execute("DELETE FROM devices WHERE mac = ?", (key,)).rowcount > 0

    # -- DNS grants (the DNS guard's record across restarts) ---------------------------

    def save_dns_grants(self, addresses: Iterable[str], grants: Iterable[DnsGrant]) -> None:
        """Replace the DNS grants under ``addresses`` with ``grants`` (``expires`` in Unix
        time; ``device`` a MAC), in one transaction."""
        with self.transaction():
            self._db.executemany("DELETE FROM dns_grants WHERE address = ?",
                                 [(a,) for a in addresses])
            self._insert_dns_grants(grants)

    def replace_dns_grants(self, grants: Iterable[DnsGrant]) -> None:
        """Make the DNS grants exactly ``grants`` (what a start restored)."""
        with self.transaction():
            self._db.execute("DELETE FROM dns_grants")
            self._insert_dns_grants(grants)

    def _insert_dns_grants(self, grants: Iterable[DnsGrant]) -> None:
        self._db.executemany(
            "INSERT INTO dns_grants (address, name, remote, mac, expires, lifetime) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(address, name, remote) DO UPDATE SET "
            "mac = excluded.mac, expires = excluded.expires, lifetime = excluded.lifetime",
            [(g.address, g.name, g.remote, normalise_mac(g.device), float(g.expires),
              int(g.lifetime_s)) for g in grants])

    def list_dns_grants(self, after: float) -> list[DnsGrant]:
        """The DNS grants expiring after ``after`` (Unix time)."""
        rows = self._read("SELECT mac, address, name, remote, expires, lifetime FROM "
                          "dns_grants WHERE expires > ? ORDER BY mac, address, name, remote",
                          (float(after),))
        return [DnsGrant(str(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4]), int(r[5]))
                for r in rows]

    def prune_dns_grants(self, before: float) -> int:
        """Delete the DNS grants expired by ``before`` (Unix time); how many went."""
        return self._write("DELETE FROM dns_grants WHERE expires <= ?",
                           (float(before),)).rowcount

    # -- grants ------------------------------------------------------------------------

    def add_grant(self, mac: str, grant: Grant, created_at: datetime) -> GrantRecord:
        """Store an owner grant for an existing device and return it with its id."""
        key = normalise_mac(mac)
        cursor = self._write(
            "INSERT INTO grants (mac, kind, host, protocol, port, expires, created_at, "
            "schedule) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, grant.kind.value, grant.host, grant.protocol, grant.port,
             _ts(grant.expires), _ts(created_at), grant.schedule))
        return GrantRecord(id=int(cursor.lastrowid or 0), mac=key, grant=grant,
                           created_at=created_at)

    def list_grants(self, mac: str | None = None) -> list[GrantRecord]:
        """The grants of one device (or of every device), oldest first."""
        sql = ("SELECT id, mac, kind, host, protocol, port, expires, created_at, schedule "
               "FROM grants")
        if mac is None:
            rows = self._read(sql + " ORDER BY id")
        else:
            rows = self._read(sql + " WHERE mac = ? ORDER BY id", (normalise_mac(mac),))
        return [_grant_from_row(row) for row in rows]

    def set_grant_schedule(self, grant_id: int, schedule: str | None) -> None:
        """Change one grant's daily schedule (the owner moved to another time zone)."""
        self._write("UPDATE grants SET schedule = ? WHERE id = ?", (schedule, int(grant_id)))

    def delete_grant(self, mac: str, grant_id: int) -> bool:
        """Delete one grant of one device; True if it existed."""
        cursor = self._write("DELETE FROM grants WHERE mac = ? AND id = ?",
                             (normalise_mac(mac), int(grant_id)))
        return cursor.rowcount > 0

    # -- events ------------------------------------------------------------------------

    def add_event(self, kind: EventKind, at: datetime, mac: str | None = None,
                  details: dict[str, Any] | None = None) -> DeviceEvent:
        """Append an event and return it with its id."""
        key = normalise_mac(mac) if mac is not None else None
        payload = reason_details(details or {})
        cursor = self._write("INSERT INTO events (at, kind, mac, details) VALUES (?, ?, ?, ?)",
                             (_ts(at), kind.value, key, json.dumps(payload, sort_keys=True)))
        return DeviceEvent(id=int(cursor.lastrowid or 0), at=at, kind=kind, mac=key,
                           details=payload)

    def list_events(self, mac: str | None = None, *, after_id: int = 0,
                    limit: int = 1000, newest: bool = False) -> list[DeviceEvent]:
        """Events oldest first, optionally of one device and only those after ``after_id``.

        ``limit`` keeps the oldest ``limit`` events, or with ``newest`` the latest ones
        (still returned oldest first).
        """
        sql = "SELECT id, at, kind, mac, details FROM events WHERE id > ?"
        params: tuple[Any, ...] = (int(after_id),)
        if mac is not None:
            sql += " AND mac = ?"
            params += (normalise_mac(mac),)
        sql += f" ORDER BY id {'DESC' if newest else 'ASC'} LIMIT ?"
        params += (max(0, int(limit)),)
        events = [_event_from_row(row) for row in self._read(sql, params)]
        return events[::-1] if newest else events

    def prune_events(self, before: datetime) -> int:
        """Delete every event older than ``before``; returns how many."""
        return self._write("DELETE FROM events WHERE at < ?", (_ts(before),)).rowcount

    def delete_events(self, mac: str) -> int:
        """Delete every event of one device; returns how many."""
        return self._write("DELETE FROM events WHERE mac = ?", (normalise_mac(mac),)).rowcount

    # -- activity (connections per device, hour and destination) ------------------------

    def add_activity(self, mac: str, at: datetime,
                     counts: Mapping[str, tuple[int, int]]) -> None:
        """Add (allowed, blocked) counts per destination to the device's row for the hour
        of ``at`` (a device the store does not hold is skipped)."""
        key = normalise_mac(mac)
        hour, stamp = _ts(hour_of(at)), _ts(at)
        rows = [(key, hour, clean_destination(name), max(0, int(a)), max(0, int(b)), stamp)
                for name, (a, b) in counts.items() if a or b]
        if not rows:
            return
        with self.transaction():
            if self._db.execute("SELECT 1 FROM devices WHERE mac = ?", (key,)).fetchone() \
                    is None:
                return
            self._db.executemany(
                "INSERT INTO activity (mac, hour, destination, allowed, blocked, last_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(mac, hour, destination) DO UPDATE SET "
                "allowed = allowed + excluded.allowed, blocked = blocked + excluded.blocked, "
                "last_at = max(last_at, excluded.last_at)", rows)

    def list_activity(self, mac: str, since: datetime) -> list[ActivityCount]:
        """The device's counts of the hours that were still active at ``since`` or later."""
        rows = self._read("SELECT hour, destination, allowed, blocked, last_at FROM activity "
                          "WHERE mac = ? AND last_at >= ? ORDER BY hour",
                          (normalise_mac(mac), _ts(since)))
        return [ActivityCount(hour=_dt_required(r[0]), destination=str(r[1]),
                              allowed=int(r[2]), blocked=int(r[3]),
                              last_at=_dt_required(r[4])) for r in rows]

    def prune_activity(self, before: datetime) -> int:
        """Delete the counts of hours that ended before ``before``; returns how many."""
        return self._write("DELETE FROM activity WHERE last_at < ?", (_ts(before),)).rowcount

    def delete_activity(self, mac: str) -> int:
        """Delete every count of one device; returns how many."""
        return self._write("DELETE FROM activity WHERE mac = ?",
                           (normalise_mac(mac),)).rowcount

    # -- cached MUD files --------------------------------------------------------------

    def put_mud(self, cached: CachedMud) -> None:
        """Store (or replace) the cached copy of one MUD URL."""
        self._write(
            "INSERT INTO mud_cache (url, data, signature, fetched_at, cache_validity_hours) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(url) DO UPDATE SET data = excluded.data, "
            "signature = excluded.signature, fetched_at = excluded.fetched_at, "
            "cache_validity_hours = excluded.cache_validity_hours",
            (cached.url, cached.data, cached.signature, _ts(cached.fetched_at),
             int(cached.cache_validity_hours)))

    def get_mud(self, url: str) -> CachedMud | None:
        """The cached copy of a MUD URL, or None."""
        rows = self._read("SELECT url, data, signature, fetched_at, cache_validity_hours "
                          "FROM mud_cache WHERE url = ?", (url,))
        if not rows:
            return None
        url_, data, signature, fetched_at, hours = rows[0]
        return CachedMud(url=url_, data=bytes(data),
                         signature=bytes(signature) if signature is not None else None,
                         fetched_at=_dt_required(fetched_at), cache_validity_hours=int(hours))

    def delete_mud(self, url: str) -> bool:
        """Drop a cached MUD file; True if it was cached."""
        return self._write("DELETE FROM mud_cache WHERE url = ?", (url,)).rowcount > 0

    # -- learning ----------------------------------------------------------------------

    def start_learning(self, mac: str, started: datetime, until: datetime) -> None:
        """Begin (or restart) recording the device's flows until ``until``."""
        self._write("INSERT INTO learning (mac, started, until) VALUES (?, ?, ?) "
                    "ON CONFLICT(mac) DO UPDATE SET started = excluded.started, "
                    "until = excluded.until, flows = '[]', dropped = 0, proposal = NULL",
                    (normalise_mac(mac), _ts(started), _ts(until)))

    def get_learning(self, mac: str) -> Learning | None:
        """The device's learning record, or None."""
        rows = self._read("SELECT mac, started, until, flows, dropped, proposal FROM learning "
                          "WHERE mac = ?", (normalise_mac(mac),))
        return _learning_from_row(rows[0]) if rows else None

    def list_learning(self) -> list[Learning]:
        """Every learning record, ordered by MAC."""
        rows = self._read("SELECT mac, started, until, flows, dropped, proposal FROM learning "
                          "ORDER BY mac")
        return [_learning_from_row(row) for row in rows]

    def add_learned_flows(self, mac: str, flows: list[list[Any]], limit: int) -> int:
        """Add distinct flows to a learning record, keeping at most ``limit`` (the rest
        are counted as dropped); how many were new. No record: nothing (0)."""
        key = normalise_mac(mac)
        with self.transaction():
            row = self._db.execute("SELECT flows, dropped FROM learning WHERE mac = ? AND "
                                   "proposal IS NULL", (key,)).fetchone()
            if row is None:
                return 0
            known = [list(f) for f in json.loads(row[0])]
            seen = {json.dumps(f) for f in known}
            added = dropped = 0
            for flow in flows:
                text = json.dumps(list(flow))
                if text in seen:
                    continue
                if len(known) >= limit:
                    dropped += 1
                    continue
                seen.add(text)
                known.append(list(flow))
                added += 1
            if added or dropped:
                self._db.execute("UPDATE learning SET flows = ?, dropped = dropped + ? "
                                 "WHERE mac = ?", (json.dumps(known), dropped, key))
            return added

    def set_proposal(self, mac: str, proposal: bytes | None) -> None:
        """Store the learned profile proposed to the owner (None: none could be made)."""
        self._write("UPDATE learning SET proposal = ? WHERE mac = ?",
                    (proposal, normalise_mac(mac)))

    def delete_learning(self, mac: str) -> bool:
        """Drop the device's learning record; True if it had one."""
        return self._write("DELETE FROM learning WHERE mac = ?",
                           (normalise_mac(mac),)).rowcount > 0

    # -- identification ----------------------------------------------------------------

    def set_identity(self, mac: str, decided: datetime, record: str) -> bool:
        """Store the daemon's identification of a known device (``IdentityRecord``'s
        text); False (nothing stored) for a MAC the store does not hold."""
        key = normalise_mac(mac)
        with self.transaction():
            if not self._db.execute("SELECT 1 FROM devices WHERE mac = ?", (key,)).fetchone():
                return False
            self._db.execute("INSERT INTO identity (mac, decided, record) VALUES (?, ?, ?) "
                             "ON CONFLICT(mac) DO UPDATE SET decided = excluded.decided, "
                             "record = excluded.record", (key, _ts(decided), record))
            return True

    def get_identity(self, mac: str) -> tuple[datetime, str] | None:
        """(when decided, the record's text) of the device's identification, or None."""
        rows = self._read("SELECT decided, record FROM identity WHERE mac = ?",
                          (normalise_mac(mac),))
        return (_dt_required(rows[0][0]), str(rows[0][1])) if rows else None

    # -- settings ----------------------------------------------------------------------

    def get_settings(self) -> Settings:
        """The home's settings (defaults for any never set)."""
        values: dict[str, str] = {str(k): str(v) for k, v in
                                  self._read("SELECT key, value FROM settings")}
        defaults = Settings()
        return Settings(
            home_default=HomeDefault(values.get("home_default", defaults.home_default.value)),
            allow_unsigned=values.get("allow_unsigned",
                                      "1" if defaults.allow_unsigned else "0") == "1",
            learning_days=_float(values.get("learning_days"), defaults.learning_days),
            lock_automatically=values.get("lock_automatically",
                                          "1" if defaults.lock_automatically else "0") == "1",
            time_zone=_time_zone(values.get("time_zone")),
        )

    def save_settings(self, settings: Settings) -> None:
        """Store the home's settings."""
        with self.transaction():
            for key, value in (("home_default", settings.home_default.value),
                               ("allow_unsigned", "1" if settings.allow_unsigned else "0"),
                               ("learning_days", repr(float(settings.learning_days))),
                               ("lock_automatically",
                                "1" if settings.lock_automatically else "0"),
                               ("time_zone", settings.time_zone or "")):
                self._db.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                                 (key, value))


# -- row conversion (module-private) ----------------------------------------------------

def _time_zone(text: str | None) -> str | None:
    """A stored time zone when it is one this system knows; None (the system's) else."""
    if not text:
        return None
    try:
        return check_time_zone(text)
    except ValueError:
        return None


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text is not None else default
    except ValueError:
        return default


def _learning_from_row(row: sqlite3.Row) -> Learning:
    return Learning(mac=str(row[0]), started=_dt_required(row[1]), until=_dt_required(row[2]),
                    flows=tuple(tuple(f) for f in json.loads(row[3])), dropped=int(row[4]),
                    proposal=bytes(row[5]) if row[5] is not None else None)


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _dt_required(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _device_to_row(d: Device) -> tuple[Any, ...]:
    return (
        device_mac(d.mac), d.state.value, json.dumps(list(d.reasons)),
        json.dumps(list(d.ipv4)), json.dumps(list(d.ipv6)), d.name, d.hostname, d.mud_url,
        d.mud_source.value if d.mud_source else None, d.pending_mud_url,
        d.pending_source.value if d.pending_source else None, d.manufacturer, d.model,
        d.profile_hash, d.signature_status.value, d.signer, _ts(d.end_of_support), d.key_id,
        _ts(d.first_seen), _ts(d.last_seen), d.pinned_signer, d.root_mud_url,
        json.dumps(list(d.past_root_urls)), json.dumps(list(d.quarantine_exceptions)),
        d.kind, json.dumps([reason_json(r) for r in d.reasons]),
    )


def _device_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Device:
    r = dict(zip(_DEVICE_COLUMNS, row, strict=True))
    return Device(
        mac=r["mac"], state=LifecycleState(r["state"]), reasons=_reasons_from_row(r),
        ipv4=tuple(json.loads(r["ipv4"])), ipv6=tuple(json.loads(r["ipv6"])), name=r["name"],
        hostname=r["hostname"], mud_url=r["mud_url"],
        mud_source=MudSource(r["mud_source"]) if r["mud_source"] else None,
        pending_mud_url=r["pending_mud_url"],
        pending_source=MudSource(r["pending_source"]) if r["pending_source"] else None,
        manufacturer=r["manufacturer"], model=r["model"], profile_hash=r["profile_hash"],
        signature_status=SignatureStatus(r["signature_status"]), signer=r["signer"],
        end_of_support=_dt(r["end_of_support"]), key_id=r["key_id"],
        first_seen=_dt(r["first_seen"]), last_seen=_dt(r["last_seen"]),
        pinned_signer=r["pinned_signer"], root_mud_url=r["root_mud_url"],
        past_root_urls=tuple(json.loads(r["past_root_urls"])),
        quarantine_exceptions=tuple(json.loads(r["quarantine_exceptions"])),
        kind=r["kind"],
    )


def _reasons_from_row(r: Mapping[str, Any]) -> tuple[str, ...]:
    """The row's reasons, each with its key and fields when the row kept them (a key
    list that is not a list, or shorter than the reasons, leaves plain sentences)."""
    texts = [str(text) for text in json.loads(r["reasons"])]
    try:
        keys = json.loads(r["reason_keys"] or "[]")
    except ValueError:
        keys = []
    if not isinstance(keys, list):
        keys = []
    return tuple(reason_from_json(text, keys[i] if i < len(keys) else None)
                 for i, text in enumerate(texts))


def _grant_from_row(row: sqlite3.Row | tuple[Any, ...]) -> GrantRecord:
    id_, mac, kind, host, protocol, port, expires, created_at, schedule = row
    grant = Grant(kind=GrantKind(kind), host=host, protocol=protocol, port=port,
                  expires=_dt(expires), schedule=schedule)
    return GrantRecord(id=int(id_), mac=mac, grant=grant, created_at=_dt_required(created_at))


def _event_from_row(row: sqlite3.Row | tuple[Any, ...]) -> DeviceEvent:
    id_, at, kind, mac, details = row
    return DeviceEvent(id=int(id_), at=_dt_required(at), kind=EventKind(kind), mac=mac,
                       details=json.loads(details))
