"""The daemon's control socket: owner actions from local tools, one JSON object per line.

A unix stream socket beside the database (``control.sock``), mode 0600 (root only);
``mudguard device …`` uses it whenever the daemon runs, so an owner action is enforced
at once. Each request is one operation of ``mudguard.devices.requests.handle_request``
on the same ``DeviceService`` the portal uses; there is no free-form command (unlike
older MUD controllers' control sockets)::

    {"op": "devices"}
    {"op": "grant", "mac": "02:..", "kind": "internet"}
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

from mudguard.devices.requests import handle_request
from mudguard.devices.service import DeviceService
from mudguard.errors import MudguardError
from mudguard.mud import MAX_MUD_BYTES

log = logging.getLogger(__name__)

# A request may carry a whole MUD file (apply-profile: up to MAX_MUD_BYTES, which JSON escaping
# can grow); the socket is owner-only, so the bound is about memory, not trust.
MAX_REQUEST = 3 * MAX_MUD_BYTES
Runner = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a blocking service call off the event loop (the daemon's service worker)."""


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
        except (ValueError, RecursionError):  # deep nesting exhausts the parser's stack
            return {"ok": False, "error": "bad_request", "message": "not JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "bad_request", "message": "send one JSON object"}
        try:
            result = await self.run(lambda: handle_request(self.service, request))
        except MudguardError as exc:
            return {"ok": False, "error": exc.key, "message": str(exc)[:500]}
        except Exception as exc:  # a bug of ours: tell the caller, keep serving
            log.exception("control request failed")
            return {"ok": False, "error": "bug", "message": type(exc).__name__}
        return {"ok": True, **result}
