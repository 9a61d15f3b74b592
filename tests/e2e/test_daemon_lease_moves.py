"""``mudguard run`` with a lease that moves (issue #13, class 6): real dnsmasq, its hook,
the DNS guard and the kernel. A device's DNS-learned destinations never move with its
address to the next device that leases it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from mudguard.demo import dhcp, scenario
from mudguard.policy import shard_table
from tests.e2e.test_daemon import CLOUD, Daemon, _resolve, daemon_home

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]

X_INDEX, Y_INDEX = 1, 6  # two vhome devices whose MACs hash to the same device table


def _lease(interface: str, mac: str, url: str, requested: str | None) -> dhcp.Lease:
    """Inside the device namespace: DHCP (asking for ``requested``), then configure."""
    from mudguard.demo.devices import configure

    lease = dhcp.obtain(interface, mac, hostname="bulb", mud_url=url, timeout=15.0,
                        requested=requested)
    configure(interface, lease)
    return lease


def _give_back(interface: str, lease: dhcp.Lease, mac: str) -> None:
    """Inside the device namespace: release the lease and drop the address."""
    from pyroute2 import IPRoute

    dhcp.release(lease, mac)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=interface)[0]
        ipr.addr("del", index=index, address=lease.address, prefixlen=lease.prefixlen)


def _fresh(home: Any, node: Any) -> None:
    home.run(node.ns, ["ip", "addr", "flush", "dev", node.iface])
    home.run(node.ns, ["ip", "route", "flush", "table", "main"])


def test_the_next_holder_of_an_address_does_not_inherit_what_the_last_one_resolved(
        tmp_path: Path) -> None:
    with daemon_home(tmp_path, "mgiL", devices=Y_INDEX + 1) as (vhome, config):
        x, y = vhome.nodes[X_INDEX], vhome.nodes[Y_INDEX]
        assert shard_table(x.mac) == shard_table(y.mac)  # they share the DNS name's set
        url = scenario.device("bulb").mud_url
        _fresh(vhome, x)
        _fresh(vhome, y)
        daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
        try:
            daemon.wait_for({"event": "ready"})
            lease = vhome.call(x.ns, _lease, x.iface, x.mac, url, None)
            daemon.wait_for({"event": "device", "mac": x.mac, "state": "profiled"})
            assert vhome.call(x.ns, _resolve, "v2.broker.lifx.co") == [CLOUD[0]]
            assert vhome.tcp(x.ns, *CLOUD)  # X's cloud, learned by DNS under its address
            vhome.call(x.ns, _give_back, x.iface, lease, x.mac)  # dnsmasq runs "del"
            daemon.wait_for({"event": "device", "mac": x.mac},
                            check=lambda e: lease.address not in e.get("ipv4", []))
            # Y, the same kind of bulb, is handed the very address X had.
            again = vhome.call(y.ns, _lease, y.iface, y.mac, url, lease.address)
            assert again.address == lease.address
            daemon.wait_for({"event": "device", "mac": y.mac, "state": "profiled"},
                            check=lambda e: lease.address in e.get("ipv4", []))
            assert not vhome.tcp(y.ns, *CLOUD, timeout=0.5)  # Y never asked for the name
            assert vhome.call(y.ns, _resolve, "v2.broker.lifx.co") == [CLOUD[0]]
            assert vhome.tcp(y.ns, *CLOUD)  # once it asks, its own policy lets it
        finally:
            daemon.stop()
