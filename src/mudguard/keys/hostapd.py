"""Adapter: hostapd's control interface and its key files.

The control interface is the one ``hostapd_cli`` speaks: an AF_UNIX datagram
socket at ``<ctrl_interface>/<ifname>``; the client binds a socket of its own
(hostapd replies to that address), sends one command per datagram and reads one
reply. ``ATTACH`` makes hostapd send events (``<level>TEXT``) to that socket, so
events get a socket of their own (:class:`HostapdEvents`), as hostapd_cli does.

Key files are written atomically: a temporary file in the same directory, fsync,
rename over the old one, fsync the directory. A crash at any point leaves either
the old file or the new one, never a mix, so no other device's key is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from mudguard.errors import MudguardError
from mudguard.keys.core import (
    CtrlEvent,
    StationInfo,
    normalise_mac,
    parse_ctrl_event,
    parse_sta_reply,
)

__all__ = [
    "HostapdControl",
    "HostapdError",
    "HostapdEvents",
    "HostapdNotRunning",
    "file_lock",
    "write_atomic",
]

_REPLY_MAX = 65536
_MAX_STATIONS = 10_000
_counter = itertools.count()


class HostapdError(MudguardError):
    """hostapd did not answer, or answered FAIL."""

    key = "hostapd_failed"


class HostapdNotRunning(HostapdError):
    """Nothing listens on the control socket (hostapd stopped): it will read the key
    file when it starts, so there is nothing to tell it now."""

    key = "hostapd_not_running"


# --- atomic key files -----------------------------------------------------------------


def write_atomic(path: Path, data: str | bytes, *, mode: int = 0o600,
                 before_rename: Callable[[Path], None] | None = None) -> None:
    """Replace ``path`` with ``data`` atomically, created with ``mode`` (0600: secrets).

    ``before_rename`` runs after the temporary file is complete and synced; the
    crash test uses it to kill the writer at the worst moment.
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("ascii") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` so two mudguard processes never
    interleave their read-modify-write of the same key file."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# --- control interface ----------------------------------------------------------------


class _CtrlSocket:
    """A bound, connected datagram socket to one hostapd control socket."""

    def __init__(self, ctrl_path: Path, timeout: float) -> None:
        self.ctrl_path = ctrl_path
        self.timeout = timeout
        self.local = Path(tempfile.gettempdir()) / f"mudguard_ctrl_{os.getpid()}-{next(_counter)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.local.unlink(missing_ok=True)
            self.sock.bind(str(self.local))
            self.sock.connect(str(ctrl_path))
        except OSError as exc:
            self.close()
            message = f"cannot reach hostapd at {ctrl_path}: {exc.strerror}"
            if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
                raise HostapdNotRunning(message) from exc
            raise HostapdError(message) from exc
        self.sock.settimeout(timeout)

    def send(self, command: str) -> None:
        try:
            self.sock.send(command.encode("ascii"))
        except OSError as exc:
            raise HostapdError(f"hostapd at {self.ctrl_path}: {exc.strerror}") from exc

    def recv(self, timeout: float | None = None) -> str | None:
        """One datagram, or None when nothing arrives within the timeout."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(_REPLY_MAX)
        except TimeoutError:
            return None
        except OSError as exc:
            raise HostapdError(f"hostapd at {self.ctrl_path}: {exc.strerror}") from exc
        return data.decode("utf-8", errors="replace")

    def close(self) -> None:
        self.sock.close()
        self.local.unlink(missing_ok=True)


class HostapdControl:
    """Commands to one hostapd interface's control socket (``<ctrl_interface>/<ifname>``)."""

    def __init__(self, ctrl_path: Path, *, timeout: float = 2.0) -> None:
        """Connect to ``ctrl_path``; each request waits at most ``timeout`` seconds.
        Raises HostapdNotRunning if nothing listens there."""
        self._sock = _CtrlSocket(Path(ctrl_path), timeout)

    def __enter__(self) -> HostapdControl:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket and remove its local address."""
        self._sock.close()

    def request(self, command: str) -> str:
        """Send one command and return hostapd's reply text (events in between are skipped)."""
        if "\n" in command or len(command) > 4000:
            raise HostapdError("a control command is one short line")
        self._sock.send(command)
        deadline = time.monotonic() + self._sock.timeout
        while (left := deadline - time.monotonic()) > 0:
            reply = self._sock.recv(left)
            if reply is None:
                break
            if not reply.startswith("<"):  # "<N>..." are events, not our reply
                return reply
        raise HostapdError(f"hostapd did not answer {command.split(' ')[0]} "
                           f"within {self._sock.timeout} s")

    def _ok(self, command: str) -> None:
        reply = self.request(command)
        if reply.strip() != "OK":
            raise HostapdError(f"hostapd answered {reply.strip()[:40]!r} to "
                               f"{command.split(' ')[0]}")

    def ping(self) -> bool:
        """True if hostapd answers PONG."""
        return self.request("PING").strip() == "PONG"

    def status(self) -> dict[str, str]:
        """``STATUS`` as a dict (state, ssid[0], num_sta[0], ...)."""
        reply = self.request("STATUS")
        return dict(ln.partition("=")[::2] for ln in reply.splitlines() if "=" in ln)

    def reload_wpa_psk(self) -> None:
        """Make hostapd re-read its wpa_psk_file; HostapdError if it rejects the file
        (it then keeps using the keys it had)."""
        self._ok("RELOAD_WPA_PSK")

    def deauthenticate(self, mac: str) -> None:
        """Disconnect one station."""
        self._ok(f"DEAUTHENTICATE {normalise_mac(mac)}")

    def sta(self, mac: str) -> StationInfo | None:
        """One station's state, or None if hostapd does not know it."""
        return parse_sta_reply(self.request(f"STA {normalise_mac(mac)}"))

    def all_sta(self) -> list[StationInfo]:
        """Every associated station (``STA-FIRST`` then ``STA-NEXT`` until empty)."""
        stations: list[StationInfo] = []
        info = parse_sta_reply(self.request("STA-FIRST"))
        while info is not None and len(stations) < _MAX_STATIONS:
            stations.append(info)
            info = parse_sta_reply(self.request(f"STA-NEXT {info.mac}"))
        return stations


class HostapdEvents:
    """hostapd's event stream: ``ATTACH`` on a socket of its own, then ``<level>TEXT``."""

    def __init__(self, ctrl_path: Path, *, timeout: float = 2.0) -> None:
        """Connect to ``ctrl_path`` and ATTACH; HostapdError if hostapd refuses."""
        self._sock = _CtrlSocket(Path(ctrl_path), timeout)
        self._pending: list[str] = []
        self._sock.send("ATTACH")
        reply = self._sock.recv()
        if reply is None or reply.strip() != "OK":
            self._sock.close()
            raise HostapdError("hostapd refused ATTACH")

    def __enter__(self) -> HostapdEvents:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def next_event(self, timeout: float) -> CtrlEvent | None:
        """The next event, or None if none arrives within ``timeout`` seconds.
        Malformed datagrams are skipped (they count against the same timeout)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            text = self._pending.pop(0) if self._pending else self._sock.recv(left)
            if text is None:
                return None
            if text.startswith("<"):
                with contextlib.suppress(MudguardError):
                    return parse_ctrl_event(text)
        return None

    def ping(self) -> bool:
        """PING on the event socket (events arriving meanwhile are kept for later)."""
        self._sock.send("PING")
        deadline = time.monotonic() + self._sock.timeout
        while (left := deadline - time.monotonic()) > 0:
            reply = self._sock.recv(left)
            if reply is None:
                return False
            if reply.startswith("<"):
                self._pending.append(reply)
            else:
                return reply.strip() == "PONG"
        return False

    def close(self) -> None:
        """``DETACH`` and wait briefly for its reply (events still in flight are
        dropped), then close; best effort, hostapd forgets dead monitors anyway."""
        with contextlib.suppress(HostapdError, OSError):
            self._sock.send("DETACH")
            deadline = time.monotonic() + 1.0
            while (left := deadline - time.monotonic()) > 0:
                reply = self._sock.recv(left)
                if reply is None or not reply.startswith("<"):
                    break
        self._sock.close()
