"""The daemon's control socket: owner actions from local tools, one JSON object per line.

A unix stream socket in the state directory, mode 0600 (root only). Each request names
one operation of the same ``DeviceService`` the portal and the CLI use; there is no
free-form command (unlike older MUD controllers' control sockets)::

    {"op": "devices"}
    {"op": "grant", "mac": "02:..", "kind": "internet"}        (kind: lan, internet,
    {"op": "grant", "mac": "02:..", "kind": "service",          service, deny)
     "host": "cloud.example.com", "port": 443, "protocol": 6}
    {"op": "quarantine", "mac": "02:..", "reason": "..."}
    {"op": "release", "mac": "02:.."}

The reply is ``{"ok": true, ...}`` or ``{"ok": false, "error": KEY, "message": TEXT}``.
Requests are bounded in size; a malformed one gets an error, never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mudguard.devices.service import DeviceService
from mudguard.errors import MudguardError
from mudguard.policy import GrantKind

log = logging.getLogger(__name__)

MAX_REQUEST = 16 * 1024
Runner = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a blocking service call off the event loop (the daemon's service worker)."""


class ControlError(MudguardError):
    """A control request that is malformed or names no known operation."""

    key = "bad_request"


def _text(request: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = request.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 512:
        raise ControlError(f"'{key}' must be a non-empty string")
    return value


def _int(request: dict[str, Any], key: str) -> int | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(f"'{key}' must be an integer")
    return value


def handle(service: DeviceService, request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one request (blocking: run it in the service worker)."""
    op = request.get("op")
    if op == "devices":
        return {"devices": [d.as_dict() for d in service.store.list_devices()]}
    mac = _text(request, "mac")
    assert mac is not None
    if op == "grant":
        try:
            kind = GrantKind(str(request.get("kind")))
        except ValueError:
            raise ControlError("'kind' must be lan, internet, service or deny") from None
        record = service.grant(mac, kind, host=_text(request, "host", required=False),
                               port=_int(request, "port"), protocol=_int(request, "protocol"))
        return {"grant": record.as_dict()}
    if op == "quarantine":
        reason = _text(request, "reason", required=False) or "quarantined by the owner"
        return {"device": service.quarantine(mac, reason).as_dict()}
    if op == "release":
        return {"device": service.release(mac).as_dict()}
    raise ControlError(f"unknown operation {str(op)[:40]!r}")


class ControlServer:
    """Serves the control socket on the running event loop."""

    def __init__(self, path: Path, service: DeviceService, run: Runner) -> None:
        self.path = path
        self.service = service
        self.run = run
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind the socket (replacing a stale one), mode 0600."""
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old)

    async def stop(self) -> None:
        """Close the socket and remove it."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            reply = await self._answer(line)
            writer.write(json.dumps(reply, default=str).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "bad_request", "message": "not JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "bad_request", "message": "send one JSON object"}
        try:
            result = await self.run(lambda: handle(self.service, request))
        except MudguardError as exc:
            return {"ok": False, "error": exc.key, "message": str(exc)[:500]}
        except Exception as exc:  # a bug of ours: tell the caller, keep serving
            log.exception("control request failed")
            return {"ok": False, "error": "bug", "message": type(exc).__name__}
        return {"ok": True, **result}
