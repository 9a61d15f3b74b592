"""DHCPv6 option 112 (RFC 8520 §10) through the real dnsmasq: a device namespace runs a
small DHCPv6 client (Solicit → Advertise → Request → Reply, RFC 8415 wire format,
built here because Debian's busybox has no udhcpc6) that carries the MUD URL;
dnsmasq leases an address and its hook reports MAC, address and URL."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudguard.devices import MudSource
from mudguard.discovery.dhcp import SOCKET_ENV, DhcpHookListener
from mudguard.vhome import VirtualHome, run
from mudguard.vhome._netns import call_in

pytestmark = pytest.mark.root

URL = "https://mud.example.com/v6-sensor.json"
HOOK = Path(sys.executable).with_name("mudguard-dhcp-hook")
SOLICIT, ADVERTISE, REQUEST, REPLY = 1, 2, 3, 7
OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR, OPT_ELAPSED, OPT_MUD_URL = 1, 2, 3, 5, 8, 112


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value


def _options(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        code, length = struct.unpack_from("!HH", data, offset)
        found.setdefault(code, data[offset + 4:offset + 4 + length])
        offset += 4 + length
    return found


def dhcpv6_lease(iface: str, mac: str, mud_url: str, timeout: float = 10.0) -> str | None:
    """Inside the device namespace: get one IA_NA address, announcing ``mud_url``."""
    duid = struct.pack("!HH", 3, 1) + bytes.fromhex(mac.replace(":", ""))
    base = (_opt(OPT_CLIENTID, duid) + _opt(OPT_ELAPSED, b"\0\0")
            + _opt(OPT_MUD_URL, mud_url.encode()))
    xid = os.urandom(3)
    server = ("ff02::1:2", 547, 0, socket.if_nametoindex(iface))
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        sock.bind(("::", 546))
        sock.settimeout(1.0)
        ia = _opt(OPT_IA_NA, struct.pack("!III", 1, 0, 0))
        want, message = ADVERTISE, bytes([SOLICIT]) + xid + base + ia
        while time.monotonic() < deadline:
            sock.sendto(message, server)
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            if data[0] != want or data[1:4] != xid:
                continue
            opts = _options(data[4:])
            if want == ADVERTISE:
                want = REPLY
                message = (bytes([REQUEST]) + xid + base + _opt(OPT_SERVERID, opts[OPT_SERVERID])
                           + _opt(OPT_IA_NA, opts[OPT_IA_NA]))
                continue
            iaaddr = _options(opts[OPT_IA_NA][12:]).get(OPT_IAADDR)
            return socket.inet_ntop(socket.AF_INET6, iaaddr[:16]) if iaaddr else None
    return None


@pytest.fixture
def v6_home(tmp_path: Path) -> Iterator[tuple[VirtualHome, DhcpHookListener]]:
    if shutil.which("dnsmasq") is None or not HOOK.is_file():
        pytest.skip("dnsmasq or mudguard-dhcp-hook missing (scripts/setup.sh, pip install -e .)")
    with VirtualHome(prefix=f"mgl{os.getpid() % 10000}", devices=1) as home, \
            DhcpHookListener(tmp_path / "dhcp.sock") as listener:
        argv = ["ip", "netns", "exec", home.gw_ns, shutil.which("dnsmasq") or "dnsmasq",
                "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                f"--interface={home.lan_if}", "--bind-interfaces",
                "--dhcp-range=2001:db8:1::100,2001:db8:1::1ff,64,1h",
                f"--dhcp-script={HOOK}", f"--dhcp-leasefile={tmp_path / 'leases'}",
                f"--pid-file={tmp_path / 'pid'}", "--user=root", "--group=root"]
        proc = subprocess.Popen(argv, env={**os.environ, SOCKET_ENV: str(listener.path)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:  # the client resends every second until dnsmasq listens
            yield home, listener
        finally:
            proc.terminate()
            proc.wait(timeout=5)


def test_dhcpv6_option_112_reaches_the_hook(v6_home: tuple[VirtualHome, DhcpHookListener]
                                            ) -> None:
    home, listener = v6_home
    node = home.nodes[0]
    run(["ip", "-6", "addr", "flush", "dev", node.iface, "scope", "global"], ns=node.ns)
    leased = call_in(node.ns, dhcpv6_lease, node.iface, node.mac, URL, timeout=20)
    assert leased is not None and leased.startswith("2001:db8:1::")
    sighting = listener.receive(timeout=10)
    assert sighting is not None
    assert (sighting.source, sighting.mud_url, sighting.mac, sighting.ip) == (
        MudSource.DHCP6, URL, node.mac, leased)
