"""``mudguard run`` wires every part the other issues built: each test here fails if the
daemon leaves its part unwired (real dnsmasq, hostapd, nftables, conntrack, sockets)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mudguard.demo import scenario
from tests.e2e.test_daemon import CLOUD, Daemon, _join, _resolve, daemon_home

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]


@pytest.fixture()
def home(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    with daemon_home(tmp_path, "mgiw") as found:
        yield found


def _fresh(home: Any, node: Any) -> None:
    """Take the vhome's static address away: the device gets its own by DHCP."""
    home.run(node.ns, ["ip", "addr", "flush", "dev", node.iface])
    home.run(node.ns, ["ip", "route", "flush", "table", "main"])


def _flood(address: str, port: int) -> int:
    """Inside the device: open (and drop) new TCP connections to an allowed peer for up
    to 8 s; return how many were attempted."""
    import socket
    import time

    start = time.monotonic()
    count = 0
    for i in range(200_000):  # bounded by time: 8 s under the 50/s cap
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((address, port))
        s.close()
        count += 1
        if time.monotonic() - start > 8:
            break
        if i % 100 == 99:
            time.sleep(0.01)
    return count


def test_a_flood_of_allowed_connections_quarantines_the_device(home: tuple[Any, Path]) -> None:
    # Every connection goes to the bulb's own cloud (allowed: no drop, no NFLOG record);
    # only conntrack's new-connection events, counted per device, can tell.
    vhome, config = home
    bulb = vhome.nodes[0]
    _fresh(vhome, bulb)
    daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
    try:
        daemon.wait_for({"event": "ready"})
        vhome.call(bulb.ns, _join, bulb.iface, bulb.mac, scenario.device("bulb").mud_url)
        daemon.wait_for({"event": "device", "mac": bulb.mac, "state": "profiled"})
        assert vhome.call(bulb.ns, _resolve, "v2.broker.lifx.co") == [CLOUD[0]]
        assert vhome.tcp(bulb.ns, *CLOUD)
        vhome.call(bulb.ns, _flood, *CLOUD, timeout=20)
        alert = daemon.wait_for({"event": "alert", "mac": bulb.mac}, timeout=10)
        assert alert["kind"] == "flood" and "connections" in alert["message"], alert
        daemon.wait_for({"event": "device", "mac": bulb.mac, "state": "quarantined"})
        assert not vhome.tcp(bulb.ns, *CLOUD)
    finally:
        daemon.stop()
