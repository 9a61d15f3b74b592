"""The SQLite store: round trips, migrations, WAL, thread safety, hostile text as data."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mudguard.devices import MacError, normalise_mac
from mudguard.policy import Grant, GrantKind, LifecycleState
from mudguard.store import (
    SCHEMA_VERSION,
    CachedMud,
    Device,
    EventKind,
    HomeDefault,
    MudSource,
    Settings,
    SignatureStatus,
    Store,
    StoreError,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MAC = "02:00:5e:00:53:01"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "db" / "mudguard.db") as s:
        yield s


def full_device() -> Device:
    return Device(
        mac=MAC, state=LifecycleState.PROFILED, reasons=("profile enforced",),
        ipv4=("192.0.2.10",), ipv6=("2001:db8::10",), name="kitchen plug", hostname="plug-1",
        mud_url="https://mud.example.com/plug.json", mud_source=MudSource.DHCP4,
        pending_mud_url="https://mud.example.com/plug2.json", pending_source=MudSource.LLDP,
        manufacturer="mud.example.com", model="Plug 1", profile_hash="ab" * 32,
        signature_status=SignatureStatus.SIGNED_VALID, signer="CN=Example",
        end_of_support=NOW + timedelta(days=365), key_id="k1", first_seen=NOW, last_seen=NOW,
    )


def test_device_round_trip_and_upsert(store: Store) -> None:
    device = full_device()
    store.save_device(device)
    assert store.get_device(MAC.upper().replace(":", "-")) == device
    changed = Device(mac=MAC, state=LifecycleState.DEFAULT, first_seen=NOW)
    store.save_device(changed)
    assert store.get_device(MAC) == changed
    assert store.list_devices() == [changed]


def test_empty_home(store: Store) -> None:
    assert store.list_devices() == []
    assert store.list_events() == []
    assert store.get_device(MAC) is None
    assert store.get_settings() == Settings()


def test_wal_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    Store(path).close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()
    with Store(path) as again:  # reopening runs no migration twice
        assert again.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store(path)


def test_grants(store: Store) -> None:
    store.save_device(Device(mac=MAC))
    g1 = store.add_grant(MAC, Grant(kind=GrantKind.LAN), NOW)
    g2 = store.add_grant(MAC, Grant(kind=GrantKind.SERVICE, host="time.example.com", port=123,
                                    protocol=17, expires=NOW + timedelta(hours=1)), NOW)
    assert [g.id for g in store.list_grants(MAC)] == [g1.id, g2.id]
    assert store.list_grants(MAC)[1] == g2
    assert store.delete_grant(MAC, g1.id)
    assert not store.delete_grant(MAC, g1.id)
    assert not store.delete_grant("02:00:5e:00:53:99", g2.id)  # another device's id
    assert store.list_grants() == [g2]


def test_grant_for_unknown_device_is_refused(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.add_grant(MAC, Grant(kind=GrantKind.LAN), NOW)


def test_events_filter_and_delete(store: Store) -> None:
    other = "02:00:5e:00:53:02"
    e1 = store.add_event(EventKind.JOINED, NOW, MAC, {"source": "dhcp4"})
    store.add_event(EventKind.JOINED, NOW, other)
    store.add_event(EventKind.NO_MUD, NOW, None, {"why": "home-wide"})
    assert [e.kind for e in store.list_events()] == [EventKind.JOINED] * 2 + [EventKind.NO_MUD]
    assert store.list_events(MAC) == [e1]
    assert len(store.list_events(after_id=e1.id)) == 2
    assert len(store.list_events(limit=1)) == 1
    assert [e.kind for e in store.list_events(limit=2, newest=True)] == [EventKind.JOINED,
                                                                           EventKind.NO_MUD]
    assert store.delete_events(MAC) == 1
    assert store.list_events(MAC) == []


def test_delete_device_removes_grants_and_events(store: Store) -> None:
    store.save_device(full_device())
    store.add_grant(MAC, Grant(kind=GrantKind.INTERNET), NOW)
    store.add_event(EventKind.GRANTED, NOW, MAC)
    assert store.delete_device(MAC)
    assert store.get_device(MAC) is None
    assert store.list_grants(MAC) == []
    assert store.list_events(MAC) == []
    assert not store.delete_device(MAC)


def test_transaction_rolls_back_everything(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.save_device(Device(mac=MAC))
        store.add_event(EventKind.JOINED, NOW, MAC)
        raise RuntimeError("boom")
    assert store.get_device(MAC) is None
    assert store.list_events() == []


def test_mud_cache(store: Store) -> None:
    url = "https://mud.example.com/plug.json"
    cached = CachedMud(url=url, data=b'{"x": 1}\x00\xff', fetched_at=NOW,
                       cache_validity_hours=2, signature=b"\x30\x82")
    store.put_mud(cached)
    assert store.get_mud(url) == cached
    assert cached.fresh(NOW + timedelta(hours=1))
    assert not cached.fresh(NOW + timedelta(hours=2))
    assert store.delete_mud(url)
    assert store.get_mud(url) is None


def test_settings(store: Store) -> None:
    store.save_settings(Settings(home_default=HomeDefault.LAN, allow_unsigned=False))
    assert store.get_settings() == Settings(home_default=HomeDefault.LAN, allow_unsigned=False)


HOSTILE = ["'); DROP TABLE devices; --", "\x00nul", "x" * 10_000, "名前", "\"", "a;b|c`d`$(e)"]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_only_data(store: Store, text: str) -> None:
    store.save_device(Device(mac=MAC, hostname=text, name=text))
    store.add_event(EventKind.SEEN, NOW, MAC, {"hostname": text})
    device = store.get_device(MAC)
    assert device is not None and device.hostname == text
    assert store.list_events(MAC)[0].details == {"hostname": text}
    assert len(store.list_devices()) == 1


@pytest.mark.parametrize("bad", ["", "zz:zz:zz:zz:zz:zz", "02:00:5e:00:53", "' OR 1=1 --",
                                 "02:00:5e:00:53:01:02"])
def test_bad_mac_is_refused(store: Store, bad: str) -> None:
    with pytest.raises(MacError):
        store.get_device(bad)


def test_normalise_mac_notations() -> None:
    for text in ("02:00:5E:00:53:01", "02-00-5e-00-53-01", "0200.5e00.5301", "02005e005301"):
        assert normalise_mac(text) == MAC


def test_threads_share_one_store(store: Store) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(50):
                mac = f"02:00:5e:00:{n:02x}:{i:02x}"
                with store.transaction():
                    store.save_device(Device(mac=mac))
                    store.add_event(EventKind.JOINED, NOW, mac)
                store.list_devices()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(store.list_devices()) == 400
    assert len(store.list_events(limit=10_000)) == 400


def test_second_connection_sees_committed_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with Store(path) as a, Store(path) as b:
        a.save_device(Device(mac=MAC))
        assert b.get_device(MAC) is not None


def test_devices_holding_an_address(store: Store) -> None:
    store.save_device(Device(mac=MAC, ipv4=("192.0.2.10",), ipv6=("2001:db8::10",)))
    store.save_device(Device(mac="02:00:5e:00:53:02", ipv4=("192.0.2.100",)))
    assert [d.mac for d in store.devices_holding("192.0.2.10")] == [MAC]
    assert [d.mac for d in store.devices_holding("2001:db8::10")] == [MAC]
    assert store.devices_holding("192.0.2.1") == []
    assert store.devices_holding("%") == []


def test_prune_events(store: Store) -> None:
    old = store.add_event(EventKind.JOINED, NOW - timedelta(days=200), MAC)
    new = store.add_event(EventKind.SEEN, NOW, MAC)
    assert store.prune_events(NOW - timedelta(days=180)) == 1
    assert store.list_events() == [new] and old not in store.list_events()


def test_database_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "m.db"
    with Store(path) as s:
        s.save_device(Device(mac=MAC))
        for f in (path, path.with_name("m.db-wal")):
            assert f.stat().st_mode & 0o077 == 0, f
    assert path.parent.stat().st_mode & 0o077 == 0


def test_a_failing_migration_changes_nothing(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from mudguard.store import _schema
    from mudguard.store import sqlite as store_sqlite

    path = tmp_path / "m.db"
    with Store(path) as s:
        s.save_device(Device(mac=MAC))
    broken = (*_schema.MIGRATIONS, "ALTER TABLE devices ADD COLUMN colour TEXT;\nNOT SQL")
    monkeypatch.setattr(store_sqlite, "MIGRATIONS", broken)
    monkeypatch.setattr(store_sqlite, "SCHEMA_VERSION", len(broken))
    with pytest.raises(StoreError):
        Store(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    columns = [row[1] for row in raw.execute("PRAGMA table_info(devices)")]
    raw.close()
    assert "colour" not in columns  # the half-applied migration was rolled back
    monkeypatch.undo()
    with Store(path) as s:  # and the database still opens with the real schema
        assert s.get_device(MAC) is not None


def test_an_added_migration_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mudguard.store import _schema
    from mudguard.store import sqlite as store_sqlite

    path = tmp_path / "m.db"
    Store(path).close()
    extended = (*_schema.MIGRATIONS, "ALTER TABLE devices ADD COLUMN colour TEXT")
    monkeypatch.setattr(store_sqlite, "MIGRATIONS", extended)
    monkeypatch.setattr(store_sqlite, "SCHEMA_VERSION", len(extended))
    with Store(path) as s:
        assert s.schema_version() == len(extended)
        s.save_device(Device(mac=MAC))
    with Store(path) as s:  # nothing to run the second time
        assert s.get_device(MAC) is not None


def test_a_version_6_database_gains_the_kind_and_keeps_its_devices(tmp_path: Path) -> None:
    from mudguard.store import _schema

    path = tmp_path / "m.db"
    raw = sqlite3.connect(path)
    for migration in _schema.MIGRATIONS[:6]:  # the schema an older gateway left
        raw.executescript(migration)
    raw.execute("PRAGMA user_version = 6")
    raw.execute("INSERT INTO devices (mac, state) VALUES (?, 'default')", (MAC,))
    raw.commit()
    raw.close()
    with Store(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        device = s.get_device(MAC)
        assert device is not None and device.kind is None
        s.save_device(replace(device, kind="plug"))
    with Store(path) as s:
        assert s.get_device(MAC).kind == "plug"
