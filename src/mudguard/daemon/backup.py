"""Backup and restore of the gateway's state: the device database, the WiFi key ring
and the owner's account, in one tar archive.

Theory of operation. ``make_backup`` copies each SQLite database with SQLite's online
backup API (a consistent snapshot even while the daemon writes: WAL readers never
block the writer), adds the owner account file and a ``manifest.json`` naming the
schema version, and writes the archive owner-only (mode 0600: it holds WiFi
passphrases and the owner's password hash) through a temporary file renamed into
place, so a failed backup never leaves half an archive under the wanted name.

``restore_backup`` checks everything before it writes anything: only the known member
names, regular files, a manifest, a database whose ``PRAGMA user_version`` is not
newer than this mudguard (an older one is migrated at the daemon's next start), and
no daemon answering on the control socket (a running daemon would keep its own open
database and overwrite the restored one). Each file then replaces the old one
atomically (written beside it, mode 0600, then renamed); the old database's ``-wal``
and ``-shm`` files go first, since SQLite would otherwise replay a journal that
belongs to another database. hostapd's key file is not kept: the daemon rewrites it
from the key ring at start.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mudguard.errors import MudguardError
from mudguard.store import SCHEMA_VERSION

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "mudguard.db"
KEY_RING = "keys.db"
OWNER = "owner.json"
MEMBERS = (DATABASE, KEY_RING, OWNER)
MAX_MEMBER_BYTES = 1 << 30  # 1 GiB: far above a home's database, bounds a hostile archive


class BackupError(MudguardError):
    """A backup cannot be made or restored; the message says why and what to do."""

    key = "backup_failed"


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What an archive holds (made or about to be restored)."""

    path: Path
    schema_version: int
    files: tuple[str, ...]
    created_at: str


def make_backup(state_dir: Path, out: Path, *, now: datetime | None = None) -> BackupSummary:
    """Write an archive of ``state_dir``'s database, key ring and owner account to ``out``.

    Safe while the daemon runs. Raises ``BackupError`` if there is no database.
    """
    database = state_dir / DATABASE
    if not database.is_file():
        raise BackupError(f"no database at {database}: is --state-dir right?")
    created = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="mudguard-backup-") as scratch:
        copies: dict[str, Path] = {}
        for name in (DATABASE, KEY_RING):
            if (state_dir / name).is_file():
                copies[name] = Path(scratch) / name
                _copy_database(state_dir / name, copies[name])
        if (state_dir / OWNER).is_file():
            copies[OWNER] = state_dir / OWNER
        version = _schema_version(copies[DATABASE])
        manifest = {"format": FORMAT, "schema_version": version, "created_at": created,
                    "files": sorted(copies)}
        _write_archive(out, manifest, copies)
    return BackupSummary(path=out, schema_version=version, files=tuple(sorted(copies)),
                         created_at=created)


def restore_backup(archive: Path, state_dir: Path) -> BackupSummary:
    """Replace ``state_dir``'s database, key ring and owner account with the archive's.

    Raises ``BackupError`` (and changes nothing) if the archive is not a mudguard backup,
    holds a newer schema than this mudguard, or the daemon is running.
    """
    if daemon_running(state_dir):
        raise BackupError("the daemon is running (its control socket answers): stop it "
                          "first (systemctl stop mudguard), then restore")
    with tempfile.TemporaryDirectory(prefix="mudguard-restore-") as scratch:
        manifest, files = _extract(archive, Path(scratch))
        if DATABASE not in files:
            raise BackupError(f"{archive}: the archive holds no {DATABASE}")
        version = _schema_version(files[DATABASE])
        if version > SCHEMA_VERSION:
            raise BackupError(
                f"{archive}: its database has schema {version}, newer than this mudguard's "
                f"({SCHEMA_VERSION}); restore it with that newer mudguard (or upgrade)")
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, source in sorted(files.items()):
            _replace(source, state_dir / name)
    return BackupSummary(path=archive, schema_version=version, files=tuple(sorted(files)),
                         created_at=str(manifest.get("created_at", "")))


def daemon_running(state_dir: Path) -> bool:
    """True if something answers on the daemon's control socket in ``state_dir``."""
    path = state_dir / "control.sock"
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


# -- helpers -------------------------------------------------------------------------------


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API)."""
    try:
        with contextlib.closing(sqlite3.connect(source)) as src, \
                contextlib.closing(sqlite3.connect(target)) as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot copy {source}: {exc}") from exc


def _schema_version(database: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(database)) as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{database.name} is not a readable SQLite database: {exc}") from exc


def _write_archive(out: Path, manifest: dict[str, object], files: dict[str, Path]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
            for name, path in sorted(files.items()):
                info = tar.gettarinfo(str(path), arcname=name)
                info.mode, info.uid, info.gid, info.uname, info.gname = 0o600, 0, 0, "", ""
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _extract(archive: Path, into: Path) -> tuple[dict[str, object], dict[str, Path]]:
    """The manifest and the known files of ``archive``, extracted into ``into``."""
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            if MANIFEST not in names:
                raise BackupError(f"{archive}: not a mudguard backup (no {MANIFEST})")
            files: dict[str, Path] = {}
            manifest: dict[str, object] = {}
            for member in members:
                if member.name not in (MANIFEST, *MEMBERS) or not member.isreg() \
                        or names.count(member.name) > 1:
                    raise BackupError(f"{archive}: unexpected member {member.name[:80]!r}")
                if member.size > MAX_MEMBER_BYTES:
                    raise BackupError(f"{archive}: {member.name} is too large")
                data = _read_member(tar, member)
                if member.name == MANIFEST:
                    manifest = _manifest(archive, data)
                    continue
                target = into / member.name
                target.write_bytes(data)
                files[member.name] = target
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"{archive}: cannot read the archive: {exc}") from exc
    return manifest, files


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise BackupError(f"unreadable member {member.name}")
    with fh:
        return fh.read()


def _manifest(archive: Path, data: bytes) -> dict[str, object]:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise BackupError(f"{archive}: {MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: unknown backup format "
                          f"{manifest.get('format') if isinstance(manifest, dict) else '?'!r}")
    return manifest


def _replace(source: Path, target: Path) -> None:
    """Put ``source``'s bytes at ``target`` atomically, mode 0600."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if target.suffix == ".db":
            for journal in _journals(target):
                journal.unlink(missing_ok=True)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _journals(database: Path) -> Iterator[Path]:
    for suffix in ("-wal", "-shm", "-journal"):
        yield database.with_name(database.name + suffix)
