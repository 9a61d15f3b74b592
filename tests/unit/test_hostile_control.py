"""The daemon's control socket under hostile local input (``daemon/control.py``).

Served for real on a unix socket by ``ControlServer`` on an asyncio loop, over a real
store and device service. What holds: the socket is owner-only; malformed JSON,
non-objects, oversize lines, wrong types and unknown operations get an
``{"ok": false}`` reply and the server keeps serving, including a line of nested
brackets under the size cap (``RecursionError`` from ``json.loads``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mudguard.daemon.control import MAX_REQUEST, ControlServer
from mudguard.devices.service import DeviceService
from mudguard.store import Store

MAC = "02:00:00:00:00:01"


async def _direct(call: Callable[[], Any]) -> Any:
    return call()


def _exchange(path: Path, line: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.connect(str(path))
        sock.sendall(line)
        chunks = []
        for _ in range(64):
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mgr-control-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _serve(folder: Path, lines: list[bytes]) -> tuple[list[bytes], int]:
    """Start the server, send each line on its own connection; the replies and the
    socket's mode."""
    store = Store(folder / "mudguard.db")
    service = DeviceService(store=store)
    service.observe(mac=MAC, ip="192.0.2.10")
    path = folder / "control.sock"

    async def main() -> tuple[list[bytes], int]:
        server = ControlServer(path, service, _direct)
        await server.start()
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            replies = [await asyncio.to_thread(_exchange, path, line) for line in lines]
            return replies, mode
        finally:
            await server.stop()

    try:
        return asyncio.run(main())
    finally:
        store.close()


HOSTILE = [
    b"not json\n",
    b"[1, 2]\n",
    b'{"op": "grant", "mac": "' + MAC.encode() + b'", "kind": ["internet"]}\n',
    b'{"op": "events", "limit": 1180591620717411303424}\n',
    b'{"op": "add", "mac": "02:00:00:00:00:02", "model": "\\ud800"}\n',
    b'{"op": "shell", "cmd": "id"}\n',
    b'{"op": "device", "mac": "' + MAC.encode() + b'"}' + b" " * 100 + b"\n",
]


def test_hostile_lines_get_an_error_reply_and_the_server_keeps_serving(folder: Path) -> None:
    replies, mode = _serve(folder, [*HOSTILE, b'{"op": "devices"}\n'])
    assert mode == 0o600
    answers = [json.loads(r) for r in replies]
    assert [a["ok"] for a in answers] == [False] * (len(HOSTILE) - 1) + [True, True]
    assert all(a["error"] in ("bad_request", "bad_mac") for a in answers[:-2]), answers
    assert answers[-1]["devices"][0]["mac"] == MAC


def test_oversize_line_is_dropped_without_a_reply(folder: Path) -> None:
    replies, _ = _serve(folder, [b"{" + b" " * (MAX_REQUEST + 10) + b"}\n",
                                 b'{"op": "devices"}\n'])
    assert replies[0] == b""
    assert json.loads(replies[1])["ok"] is True


def test_deeply_nested_line_gets_an_error_reply(folder: Path) -> None:
    replies, _ = _serve(folder, [b"[" * 5000 + b"\n", b'{"op": "devices"}\n'])
    assert json.loads(replies[1])["ok"] is True  # the server survives in any case
    assert json.loads(replies[0])["ok"] is False
