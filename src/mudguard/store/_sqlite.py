"""Adapter base: one owner-only SQLite file in WAL mode, shared across threads.

``Store`` (devices) and ``KeyRing`` (WiFi keys) both build on it: the file is
created with mode 0600 before SQLite opens it (SQLite gives the -wal and -shm files
the database file's mode), every call takes one lock, and ``transaction()`` groups
calls into one atomic write.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from mudguard.errors import MudguardError


class SqliteDatabase:
    """One SQLite connection with a lock; subclasses set ``error`` and add ``_setup``."""

    error: type[MudguardError] = MudguardError
    what = "database"

    def __init__(self, path: Path | str) -> None:
        """Open (creating, mode 0600) the database at ``path``; ``":memory:"`` for tests.

        Raises ``self.error`` if SQLite cannot open or set it up.
        """
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._setup()
        except sqlite3.DatabaseError as exc:
            raise self.error(f"cannot open the {self.what} {self.path}: {exc}") from exc

    def _setup(self) -> None:
        """Create or migrate the schema (runs inside ``__init__``)."""

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Self]:
        """Group calls into one atomic write; nested use joins the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0
