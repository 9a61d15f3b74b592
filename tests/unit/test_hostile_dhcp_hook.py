"""Forged datagrams at the DHCP hook's socket, and hostile lease data through the real hook.

The daemon's socket must refuse an unprivileged local user outright (only root, i.e.
dnsmasq's hook, may write), and whatever arrives on it, however malformed, is dropped
with a log line: the listener never raises (it runs as an event-loop reader).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudguard.devices._model import MudSource
from mudguard.discovery.dhcp import DhcpHookListener, parse_hook_message
from mudguard.discovery.sighting import SightingError, normalise

HOOK = Path(sys.executable).with_name("mudguard-dhcp-hook")
NOBODY = 65534


@pytest.fixture
def listener() -> Iterator[DhcpHookListener]:
    # A world-traversable folder, so only the socket's own mode keeps others out.
    folder = Path(tempfile.mkdtemp(prefix="mgr-hook-"))
    folder.chmod(0o755)
    with DhcpHookListener(folder / "dhcp.sock") as opened:
        yield opened
    shutil.rmtree(folder, ignore_errors=True)


def send(listener: DhcpHookListener, payload: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, str(listener.path))


@pytest.mark.parametrize("payload", [
    b"[" * 3000,                                   # nesting past the recursion limit
    b'{"v": 1, "x": ' * 300 + b"1" + b"}" * 300,    # nested objects, under the size cap
    b"\xff\xfe\x00",
    b'{"v": 1, "action": "add", "family": 4, "mac": ["aa:bb:cc:dd:ee:01"]}',
    b'{"v": 1, "action": "add", "family": 4, "mac": "aa:bb:cc:dd:ee:01", "ip": 7}',
    b'{"v": 1, "action": "del", "family": 4, "mac": "aa:bb:cc:dd:ee:01"}',
    b'{"v": 1, "action": "add", "family": 5, "mac": "aa:bb:cc:dd:ee:01"}',
    b"1e999999",
    b"",
])
def test_forged_datagram_is_dropped_without_raising(listener: DhcpHookListener,
                                                    payload: bytes) -> None:
    send(listener, payload)
    assert listener.receive(timeout=1.0) is None


def test_nesting_is_a_sighting_error() -> None:
    with pytest.raises(SightingError):
        parse_hook_message(b"[" * 3000)


def test_socket_is_owner_only(listener: DhcpHookListener) -> None:
    assert stat.S_IMODE(listener.path.stat().st_mode) == 0o600


@pytest.mark.root
def test_unprivileged_user_cannot_send(listener: DhcpHookListener) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a sender as nobody")
    pid = os.fork()
    if pid == 0:  # the child drops to nobody and tries to send
        code = 2
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(b'{"v": 1}', str(listener.path))
            code = 0
        except PermissionError:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert listener.receive(timeout=0.2) is None


def test_hostile_lease_through_the_real_hook(listener: DhcpHookListener) -> None:
    """Shell and JSON metacharacters in the MUD URL and hostname stay data; control
    characters never reach the device record; nothing the hook builds is run."""
    env = {"PATH": "/usr/bin:/bin", "MUDGUARD_DHCP_SOCKET": str(listener.path),
           "DNSMASQ_MUD_URL": 'https://mud.example.com/a";$(touch /tmp/mgr-pwned)`id`.json',
           "DNSMASQ_INTERFACE": "mgr-lan"}
    hostname = "cam\x1b[2J\n;rm -rf ~\x07"
    done = subprocess.run([str(HOOK), "add", "aa:bb:cc:dd:ee:01", "192.0.2.50", hostname],
                          env=env, capture_output=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr
    sighting = listener.receive(timeout=2.0)
    assert sighting is not None and sighting.source is MudSource.DHCP4
    assert sighting.mud_url == env["DNSMASQ_MUD_URL"]
    clean = normalise(sighting)
    assert clean.hostname is not None and clean.hostname.isprintable()
    assert "\x1b" not in clean.hostname and "\n" not in clean.hostname
    assert not Path("/tmp/mgr-pwned").exists()


def test_non_utf8_environment_reaches_the_listener_as_a_rejectable_url(
        listener: DhcpHookListener) -> None:
    """dnsmasq passes option 161's raw octets; invalid UTF-8 must not crash the hook and
    must not become a usable MUD URL."""
    env = {b"PATH": b"/usr/bin:/bin", b"MUDGUARD_DHCP_SOCKET": os.fsencode(listener.path),
           b"DNSMASQ_MUD_URL": b"https://mud.example.com/\xff\xfe.json"}
    done = subprocess.run([os.fsencode(HOOK), b"add", b"aa:bb:cc:dd:ee:02", b"192.0.2.51"],
                          env=env, capture_output=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr
    sighting = listener.receive(timeout=2.0)
    assert sighting is not None and sighting.mud_url is not None
    assert not sighting.mud_url.isprintable()  # lone surrogates: check_mud_url refuses it
