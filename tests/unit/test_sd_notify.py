"""``notify``: one datagram to systemd's notification socket, nothing without one."""

from __future__ import annotations

import socket
from pathlib import Path

from mudguard.daemon.sd_notify import notify


def test_ready_reaches_the_socket_named_by_notify_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        systemd.settimeout(5)
        assert notify("READY=1", environ={"NOTIFY_SOCKET": path})
        assert systemd.recv(4096) == b"READY=1"


def test_an_abstract_socket_is_named_with_an_at_sign() -> None:
    name = f"mudguard-h19-notify-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(5)
        assert notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert systemd.recv(4096) == b"STOPPING=1"


def test_without_systemd_nothing_is_sent(tmp_path: Path) -> None:
    assert not notify("READY=1", environ={})
    assert not notify("READY=1", environ={"NOTIFY_SOCKET": "relative"})
    assert not notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "nobody")})
