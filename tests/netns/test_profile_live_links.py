"""``profile learn-live`` on an interface without Ethernet headers: a TUN device (raw
IP, ARPHRD_NONE) inside a namespace; packets written into it are read through the raw-IP
link decoder and learned as from any capture."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

from mudguard.profile.live import LiveCaptureError, decoder_for_hardware
from mudguard.watch.listener import in_netns

pytestmark = pytest.mark.root

MUDGUARD = str(Path(sys.executable).with_name("mudguard"))
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
DEVICE, CLOUD = "192.0.2.10", "203.0.113.80"


@pytest.fixture
def tun() -> Iterator[tuple[str, int]]:
    """A namespace holding a TUN interface ``mgtun0``, and the TUN's file descriptor."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and a TUN device")
    ns = f"mgtun{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    fd = -1
    try:
        with in_netns(ns):
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"mgtun0", IFF_TUN | IFF_NO_PI))
        for args in (["addr", "add", "192.0.2.1/24", "dev", "mgtun0"],
                     ["link", "set", "mgtun0", "up"]):
            subprocess.run(["ip", "-n", ns, *args], check=True, timeout=30)
        yield ns, fd
    finally:
        if fd >= 0:
            os.close(fd)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def syn(port: int) -> bytes:
    segment = dpkt.tcp.TCP(sport=50000 + port, dport=port, flags=dpkt.tcp.TH_SYN, off=5)
    packet = dpkt.ip.IP(src=bytes(map(int, DEVICE.split("."))),
                        dst=bytes(map(int, CLOUD.split("."))), p=6, ttl=64, data=segment)
    packet.len = len(bytes(packet))
    return bytes(packet)


def test_learn_live_on_a_tun_interface(tun: tuple[str, int], tmp_path: Path) -> None:
    ns, fd = tun
    out = tmp_path / "tun.json"
    proc = subprocess.Popen([MUDGUARD, "profile", "learn-live", "mgtun0", "--netns", ns,
                             "--device", DEVICE, "--seconds", "2", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        assert "watching" in proc.stdout.readline()  # the capture socket is open
        time.sleep(0.1)
        for port in (443, 8883):
            os.write(fd, syn(port))
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    document = json.loads(out.read_text())
    ports = sorted(ace["matches"]["tcp"]["destination-port"]["port"]
                   for acl in document["ietf-access-control-list:acls"]["acl"]
                   for ace in acl["aces"]["ace"]
                   if "destination-port" in ace["matches"].get("tcp", {}))
    assert ports == [443, 8883]


def test_hardware_types() -> None:
    assert decoder_for_hardware(1) is None  # Ethernet: frames as they are
    raw = decoder_for_hardware(65534)
    assert raw is not None and raw.ethernet(syn(443)) is not None
    with pytest.raises(LiveCaptureError, match="hardware type 32"):
        decoder_for_hardware(32)  # InfiniBand
