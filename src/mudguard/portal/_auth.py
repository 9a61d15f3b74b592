"""The owner's account, sessions, CSRF tokens and login rate limiting.

Theory of operation:
- One owner account, created at first start, kept in a small JSON file (mode 0600,
  replaced atomically) beside the device database. The password is hashed with
  argon2id (memory-hard, RFC 9106 parameters from argon2-cffi).
- Sessions are random 256-bit tokens held in memory (a restart logs the owner out,
  which is the safe failure). Each session carries its own CSRF token; every
  state-changing form and API call must present it (synchronizer token pattern).
  Before login, forms use a double-submit token: a random cookie whose value the
  form must echo.
- Login attempts are limited per client address and home-wide, in a sliding
  window; time is a parameter so the limiter is testable without sleeping.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mudguard.errors import RemoteInputError

MIN_PASSWORD = 10
MAX_PASSWORD = 256
MAX_USERNAME = 64
SESSION_IDLE_SECONDS = 8 * 3600
SESSION_MAX_SECONDS = 7 * 24 * 3600
MAX_SESSIONS = 32


class AuthInputError(RemoteInputError):
    """A rejected username or password on setup (``key`` says which rule)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


_hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4 (argon2-cffi defaults)


class OwnerAccount:
    """The one owner account, stored in ``path`` (JSON: username and argon2id hash)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        """True once the owner has been created."""
        return self.path.is_file()

    def create(self, username: str, password: str) -> None:
        """Create the owner (first start only).

        Raises:
            AuthInputError: ``owner_exists``, ``bad_username`` or ``weak_password``.
        """
        if self.exists():
            raise AuthInputError("owner_exists", "the owner account already exists")
        username = check_username(username)
        check_password(password)
        record = {"username": username, "password_hash": _hasher.hash(password)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".owner-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(record, out)
            # link() refuses to replace: two first-start requests cannot both win.
            os.link(tmp, self.path)
        except FileExistsError as exc:
            raise AuthInputError("owner_exists", "the owner account already exists") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def verify(self, username: str, password: str) -> bool:
        """True when the username and password are the owner's (constant-time compare)."""
        if not self.exists() or not isinstance(password, str) or \
                len(password) > MAX_PASSWORD or not isinstance(username, str):
            return False
        record = json.loads(self.path.read_text(encoding="utf-8"))
        same_user = hmac.compare_digest(username.encode(), str(record["username"]).encode())
        good: bool
        try:
            good = _hasher.verify(str(record["password_hash"]), password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            good = False
        return good and same_user

    def change_password(self, current: str, new: str) -> None:
        """Replace the owner's password after checking the current one (atomic rename;
        the file stays owner-only).

        Raises:
            AuthInputError: ``wrong_password`` (not the current one) or ``weak_password``.
        """
        username = self.username()
        if username is None or not self.verify(username, current):
            raise AuthInputError("wrong_password", "the current password is wrong")
        check_password(new)
        record = {"username": username, "password_hash": _hasher.hash(new)}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".owner-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(record, out)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def username(self) -> str | None:
        """The owner's user name, or None before first start."""
        if not self.exists():
            return None
        return str(json.loads(self.path.read_text(encoding="utf-8"))["username"])


def check_username(username: str) -> str:
    """A trimmed, printable user name of 1 to 64 characters."""
    name = username.strip() if isinstance(username, str) else ""
    if not name or len(name) > MAX_USERNAME or not name.isprintable():
        raise AuthInputError("bad_username", "the user name must be 1 to 64 printable "
                             "characters")
    return name


def check_password(password: str) -> None:
    """At least 10 characters (a passphrase is better), at most 256."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthInputError("weak_password", f"the password must be {MIN_PASSWORD} to "
                             f"{MAX_PASSWORD} characters long")


@dataclass(slots=True)
class Session:
    """One logged-in browser or API client."""

    username: str
    csrf: str
    created: float
    last_seen: float


@dataclass(slots=True)
class SessionStore:
    """Sessions in memory, bounded in number and lifetime."""

    sessions: dict[str, Session] = field(default_factory=dict)

    def open(self, username: str, now: float) -> tuple[str, Session]:
        """A new session; the oldest one is dropped when there are too many."""
        self._expire(now)
        while len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions, key=lambda t: self.sessions[t].last_seen)
            del self.sessions[oldest]
        token = secrets.token_urlsafe(32)
        session = Session(username=username, csrf=secrets.token_urlsafe(32), created=now,
                          last_seen=now)
        self.sessions[token] = session
        return token, session

    def close_others(self, token: str | None) -> None:
        """Close every session but ``token``'s (after a password change)."""
        for other in [t for t in self.sessions if t != token]:
            del self.sessions[other]

    def get(self, token: str | None, now: float) -> Session | None:
        """The live session for ``token`` (and touch it), or None."""
        if not token or len(token) > 128:
            return None
        session = self.sessions.get(token)
        if session is None:
            return None
        if now - session.last_seen > SESSION_IDLE_SECONDS or \
                now - session.created > SESSION_MAX_SECONDS:
            del self.sessions[token]
            return None
        session.last_seen = now
        return session

    def close(self, token: str | None) -> None:
        """Log a session out."""
        if token:
            self.sessions.pop(token, None)

    def _expire(self, now: float) -> None:
        for token in [t for t, s in self.sessions.items()
                      if now - s.last_seen > SESSION_IDLE_SECONDS
                      or now - s.created > SESSION_MAX_SECONDS]:
            del self.sessions[token]


def tokens_match(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens; missing is never a match."""
    if not expected or not given or len(given) > 128:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass(slots=True)
class LoginLimiter:
    """Sliding-window limit on failed logins: per client, and for the whole home.

    A client with ``per_client`` failures in ``window`` seconds, or a home with
    ``overall`` failures, must wait until the oldest failure leaves the window.
    """

    per_client: int = 5
    overall: int = 30
    window: float = 300.0
    failures: dict[str, deque[float]] = field(default_factory=dict)
    all_failures: deque[float] = field(default_factory=deque)

    def retry_after(self, client: str, now: float) -> float:
        """Seconds the client must wait before trying again (0 when it may try now)."""
        self._trim(now)
        waits = [0.0]
        mine = self.failures.get(client)
        if mine is not None and len(mine) >= self.per_client:
            waits.append(mine[0] + self.window - now)
        if len(self.all_failures) >= self.overall:
            waits.append(self.all_failures[0] + self.window - now)
        return max(waits)

    def failed(self, client: str, now: float) -> None:
        """Record a failed attempt."""
        self._trim(now)
        if client not in self.failures and len(self.failures) > 10_000:
            self.failures.clear()  # bounded memory; the home-wide limit still holds
        self.failures.setdefault(client, deque()).append(now)
        self.all_failures.append(now)

    def succeeded(self, client: str) -> None:
        """A good login clears that client's failures."""
        self.failures.pop(client, None)

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        while self.all_failures and self.all_failures[0] <= horizon:
            self.all_failures.popleft()
        for client in list(self.failures):
            queue = self.failures[client]
            while queue and queue[0] <= horizon:
                queue.popleft()
            if not queue:
                del self.failures[client]
