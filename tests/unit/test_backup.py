"""``mudguard backup`` / ``restore``: a consistent, owner-only archive of the database, key
ring and owner account; restore refuses what it must not overwrite."""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import stat
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.daemon.backup import BackupError, make_backup, restore_backup
from mudguard.keys.core import KeyRecord, PskEntry
from mudguard.keys.ring import KeyRing
from mudguard.policy import LifecycleState
from mudguard.portal._auth import OwnerAccount
from mudguard.store import SCHEMA_VERSION, Device, Store

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MAC = "02:00:5e:00:53:01"
runner = CliRunner()


def _home(state: Path) -> Store:
    """A state folder like the daemon's, with its database left open (WAL not merged)."""
    store = Store(state / "mudguard.db")
    store.save_device(Device(mac=MAC, state=LifecycleState.PROFILED, name="plug",
                             first_seen=NOW))
    with KeyRing(state / "keys.db") as ring:
        ring.add(KeyRecord(entry=PskEntry(keyid="k1", mac=MAC, passphrase="correct horse 1",
                                          vlan=0), device=MAC, created_at=1.0))
    OwnerAccount(state / "owner.json").create("owner", "a long passphrase")
    return store


def test_backup_while_the_database_is_open_restores_everything(tmp_path: Path) -> None:
    live = _home(tmp_path / "live")
    try:
        archive = tmp_path / "out" / "home.tar.gz"
        summary = make_backup(tmp_path / "live", archive)
        live.save_device(Device(mac="02:00:5e:00:53:09", first_seen=NOW))  # after the backup
    finally:
        live.close()
    assert summary.files == ("keys.db", "mudguard.db", "owner.json")
    assert summary.schema_version == SCHEMA_VERSION
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    target = tmp_path / "restored"
    restore_backup(archive, target)
    with Store(target / "mudguard.db") as store:
        assert [(d.mac, d.name) for d in store.list_devices()] == [(MAC, "plug")]
    with KeyRing(target / "keys.db") as ring:
        assert [r.entry.passphrase for r in ring.records()] == ["correct horse 1"]
    assert OwnerAccount(target / "owner.json").verify("owner", "a long passphrase")
    for name in ("mudguard.db", "keys.db", "owner.json"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600


def test_restore_replaces_a_database_and_drops_its_stale_journal(tmp_path: Path) -> None:
    _home(tmp_path / "a").close()
    archive = tmp_path / "a.tar.gz"
    make_backup(tmp_path / "a", archive)
    other = Store(tmp_path / "b" / "mudguard.db")  # another home, its WAL left behind
    other.save_device(Device(mac="02:00:5e:00:53:77", first_seen=NOW))
    wal = (tmp_path / "b" / "mudguard.db-wal").read_bytes()
    other._db.close()  # as a killed daemon would: no checkpoint
    (tmp_path / "b" / "mudguard.db-wal").write_bytes(wal)
    restore_backup(archive, tmp_path / "b")
    assert not (tmp_path / "b" / "mudguard.db-wal").exists()
    with Store(tmp_path / "b" / "mudguard.db") as store:
        assert [d.mac for d in store.list_devices()] == [MAC]


def _tamper(archive: Path, out: Path, *, version: int | None = None,
            extra: str | None = None) -> Path:
    """A copy of ``archive`` whose database says schema ``version``, or with one more member."""
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    if version is not None:
        db_path = out.with_suffix(".db")
        db_path.write_bytes(members["mudguard.db"])
        with sqlite3.connect(db_path) as db:
            db.execute(f"PRAGMA user_version = {version}")
        members["mudguard.db"] = db_path.read_bytes()
    if extra is not None:
        members[extra] = b"x"
    with tarfile.open(out, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_restore_refuses_a_newer_schema_and_changes_nothing(tmp_path: Path) -> None:
    _home(tmp_path / "a").close()
    make_backup(tmp_path / "a", tmp_path / "a.tar.gz")
    newer = _tamper(tmp_path / "a.tar.gz", tmp_path / "newer.tar.gz",
                    version=SCHEMA_VERSION + 1)
    target = tmp_path / "target"
    target.mkdir()
    (target / "owner.json").write_text("keep me")
    with pytest.raises(BackupError, match=f"schema {SCHEMA_VERSION + 1}, newer"):
        restore_backup(newer, target)
    assert sorted(p.name for p in target.iterdir()) == ["owner.json"]
    assert (target / "owner.json").read_text() == "keep me"


@pytest.mark.parametrize("name", ["../escape.db", "/etc/passwd", "hostapd.wpa_psk"])
def test_restore_refuses_unknown_members(tmp_path: Path, name: str) -> None:
    _home(tmp_path / "a").close()
    make_backup(tmp_path / "a", tmp_path / "a.tar.gz")
    bad = _tamper(tmp_path / "a.tar.gz", tmp_path / "bad.tar.gz", extra=name)
    with pytest.raises(BackupError, match="unexpected member"):
        restore_backup(bad, tmp_path / "target")
    assert not (tmp_path / "target").exists()
    assert not (tmp_path / "escape.db").exists()


def test_restore_refuses_while_the_daemon_answers(tmp_path: Path) -> None:
    _home(tmp_path / "a").close()
    make_backup(tmp_path / "a", tmp_path / "a.tar.gz")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path / "a" / "control.sock"))
        listener.listen(1)
        with pytest.raises(BackupError, match="daemon is running"):
            restore_backup(tmp_path / "a.tar.gz", tmp_path / "a")


def test_restore_refuses_a_file_that_is_no_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(BackupError, match="cannot read the archive"):
        restore_backup(junk, tmp_path / "target")


def test_cli_backup_and_restore(tmp_path: Path) -> None:
    _home(tmp_path / "a").close()
    archive = tmp_path / "home.tar.gz"
    made = runner.invoke(app, ["backup", "-o", str(archive), "--state-dir", str(tmp_path / "a")])
    assert made.exit_code == 0, made.output
    assert "mudguard.db" in made.output
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["schema_version"] == SCHEMA_VERSION
    done = runner.invoke(app, ["restore", str(archive), "--state-dir", str(tmp_path / "b")])
    assert done.exit_code == 0, done.output
    missing = runner.invoke(app, ["backup", "-o", str(archive),
                                  "--state-dir", str(tmp_path / "empty")])
    assert missing.exit_code == 1
    assert "no database" in missing.output
