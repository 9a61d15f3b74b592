"""The running daemon identifies devices live (issue #16), from real packets in a virtual
home: one device announces itself by mDNS and SSDP (multicast, which the home default
does not forward anywhere), another only asks the gateway's DNS guard for its maker's
cloud; the daemon stores each one's maker (and the first one's kind) while they run."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from mudguard.devices import Device
from mudguard.store import Store
from tests.e2e.test_daemon import Daemon, _join, _resolve, daemon_home
from tests.e2e.test_daemon_wiring import _fresh

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]


def _announce(address: str, rounds: int) -> None:
    """Inside the device: a Hue bridge's mDNS answer and SSDP NOTIFY, sent ``rounds``
    times to the multicast groups from ``address`` (real datagrams, real sockets)."""
    import socket
    import time

    from scapy.layers.dns import DNS, DNSRR

    instance = "Hue Bridge - 1A2B3C._hue._tcp.local"
    mdns = bytes(DNS(qr=1, aa=1, qd=[], an=[
        DNSRR(rrname="_hue._tcp.local", type="PTR", rdata=instance),
        DNSRR(rrname=instance, type="TXT", rdata=[b"bridgeid=001788fffe1a2b3c",
                                                  b"modelid=BSB002"])]))
    ssdp = (b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\n"
            b"NTS: ssdp:alive\r\nSERVER: Hue/1.0 UPnP/1.0 IpBridge/1.50.0\r\n"
            b"USN: uuid:2f402f80-da50-11e1-9b23-001788fffe1a2b3c::upnp:rootdevice\r\n\r\n")
    for port, group, payload in ((5353, "224.0.0.251", mdns), (1900, "239.255.255.250", ssdp)):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            socket.inet_aton(address))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255 if port == 5353
                            else 4)
            for _ in range(rounds):
                sock.sendto(payload, (group, port))
                time.sleep(0.05)


def _stored(db: Path, mac: str, timeout: float,
            wanted: tuple[str | None, str | None]) -> Device | None:
    """The device once its stored (maker, kind) is ``wanted`` (None: any), or the last seen."""
    deadline = time.monotonic() + timeout
    device = None
    while time.monotonic() < deadline:
        with Store(db) as store:
            device = store.get_device(mac)
        if device is not None and all(
                want is None or got == want
                for want, got in zip(wanted, (device.manufacturer, device.kind), strict=True)):
            return device
        time.sleep(0.5)
    return device


def test_the_daemon_identifies_devices_from_mdns_ssdp_and_dns_names(tmp_path: Path) -> None:
    with daemon_home(tmp_path, "mgh16b") as (vhome, config):
        # the home default lets devices reach the Internet (the usual home)
        config.write_text(config.read_text().replace('home_default = "lan"',
                                                     'home_default = "internet"'))
        db = config.parent / "state" / "mudguard.db"
        hub, plug = vhome.nodes[0], vhome.nodes[1]
        _fresh(vhome, hub)
        _fresh(vhome, plug)
        daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
        try:
            daemon.wait_for({"event": "ready"})
            hub_address = vhome.call(hub.ns, _join, hub.iface, hub.mac, None)
            vhome.call(plug.ns, _join, plug.iface, plug.mac, None)
            for node in (hub, plug):
                daemon.wait_for({"event": "device", "mac": node.mac, "state": "default"})
            # Its DHCP hostname ("device") and its randomised MAC say nothing of its maker.
            with Store(db) as store:
                before = store.get_device(hub.mac)
            assert before is not None and before.manufacturer is None
            vhome.call(hub.ns, _announce, hub_address, 5, timeout=20)
            assert vhome.call(plug.ns, _resolve, "devs.tplinkcloud.com") == ["198.51.100.22"]
            found = _stored(db, hub.mac, 20, ("Philips Hue (Signify)", "hub"))
            assert found is not None
            assert (found.manufacturer, found.kind) == ("Philips Hue (Signify)", "hub")
            named = _stored(db, plug.mac, 20, ("TP-Link", None))
            assert named is not None and named.manufacturer == "TP-Link"
        finally:
            daemon.stop()
