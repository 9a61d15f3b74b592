"""Schema migrations: a database made by an earlier release opens with this code, upgraded,
with its data intact."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mudguard.policy import LifecycleState
from mudguard.store import SCHEMA_VERSION, Store, StoreError
from mudguard.store._schema import MIGRATIONS

DATA = Path(__file__).resolve().parents[1] / "data" / "store"
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def _load_dump(dump: Path, into: Path) -> None:
    with sqlite3.connect(into) as db:
        db.executescript(dump.read_text(encoding="utf-8"))


def test_database_of_schema_1_release_opens_upgraded_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "mudguard.db"
    _load_dump(DATA / "schema-v1.sql", path)
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        devices = {d.mac: d for d in store.list_devices()}
        assert sorted(devices) == ["02:00:5e:00:53:01", "02:00:5e:00:53:02"]
        plug = devices["02:00:5e:00:53:01"]
        assert (plug.state, plug.name, plug.ipv4, plug.signer) == (
            LifecycleState.PROFILED, "kitchen plug", ("192.0.2.10",), "CN=Example")
        assert devices["02:00:5e:00:53:02"].state is LifecycleState.QUARANTINED
        assert [g.mac for g in store.list_grants()] == ["02:00:5e:00:53:01"]
        assert [e.details for e in store.list_events("02:00:5e:00:53:02")] == [{"count": 3}]
        cached = store.get_mud("https://mud.example.com/plug.json")
        assert cached is not None and cached.data == b'{"ietf-mud:mud": {}}'


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_every_older_schema_migrates_to_the_current_one(tmp_path: Path, version: int) -> None:
    """A database built from the migration history up to ``version`` (each release's
    schema) is brought to the current version at open."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS[:version]:
            db.executescript(migration)
        db.execute(f"PRAGMA user_version = {version}")
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.list_devices() == []


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "mudguard.db"
    _load_dump(DATA / "schema-v1.sql", path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer than this mudguard"):
        Store(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert db.execute("SELECT COUNT(*) FROM devices").fetchone()[0] == 2
    assert len(path.read_bytes()) == len(before)


@pytest.mark.parametrize("dump", sorted(DATA.glob("schema-v*.sql")), ids=lambda p: p.stem)
def test_every_release_dump_opens_at_the_current_schema(tmp_path: Path, dump: Path) -> None:
    """Each release's dump (tests/data/store/make_dump.py) is upgraded when opened and
    keeps every device."""
    path = tmp_path / "mudguard.db"
    _load_dump(dump, path)
    with sqlite3.connect(path) as db:
        devices = db.execute("SELECT COUNT(*) FROM devices").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
    assert f"schema-v{version}" == dump.stem
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert len(store.list_devices()) == devices > 0


def test_database_of_schema_6_opens_with_every_later_column_kept(tmp_path: Path) -> None:
    path = tmp_path / "mudguard.db"
    _load_dump(DATA / "schema-v6.sql", path)
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        devices = {d.mac: d for d in store.list_devices()}
        plug = devices["02:00:5e:00:53:01"]
        assert (plug.pinned_signer, plug.root_mud_url, plug.past_root_urls) == (
            "CN=Example", "https://mud.example.com/plug.json",
            ("https://mud.example.com/plug-v1.json",))
        assert devices["02:00:5e:00:53:02"].quarantine_exceptions == ("cl0-frdev",)
        assert devices["02:00:5e:00:53:03"].state is LifecycleState.LEARNING
        grants = {g.grant.kind.value: g.grant for g in store.list_grants()}
        assert grants["pause"].schedule == "21:30-07:00 UTC"
        assert (grants["service"].host, grants["service"].port) == ("ntp.example.com", 123)
        assert grants["deny"].host == "198.51.100.0/24"
        activity = store.list_activity("02:00:5e:00:53:01", NOW.replace(day=1, month=12))
        assert {a.destination: (a.allowed, a.blocked) for a in activity} == {
            "mud.example.com": (12, 0), "198.51.100.30": (0, 4)}
        learning = store.get_learning("02:00:5e:00:53:03")
        assert learning is not None and learning.proposal is not None
        assert len(learning.flows) == 1
        settings = store.get_settings()
        assert (settings.home_default.value, settings.allow_unsigned, settings.learning_days,
                settings.lock_automatically) == ("lan", False, 7.0, True)
        cached = store.get_mud("https://mud.example.com/plug-v2.json")
        assert cached is not None and cached.signature == b"\x30\x00"
