"""The running daemon identifies devices live (issue #16), from real packets in a virtual
home: one device announces itself by mDNS and SSDP (multicast, which the home default
does not forward anywhere), another only asks the gateway's DNS guard for its maker's
cloud; the daemon stores each one's maker (and the first one's kind) while they run,
after a third has flooded it with mDNS from 30,000 forged MACs."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from mudguard.devices import Device
from mudguard.identify.record import IdentityRecord
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
    times, 0.1 s apart, to the multicast groups from ``address`` (real datagrams)."""
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
    sockets = []
    for port in (5353, 1900):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        sockets.append(sock)
    try:
        for _ in range(rounds):  # as devices do: again and again, a flood may hide some
            sockets[0].sendto(mdns, ("224.0.0.251", 5353))
            sockets[1].sendto(ssdp, ("239.255.255.250", 1900))
            time.sleep(0.1)
    finally:
        for sock in sockets:
            sock.close()


def _flood(interface: str, count: int) -> int:
    """Inside a device: ``count`` mDNS frames, each from a different forged MAC and
    naming a different service (a hostile device), as fast as the socket takes them."""
    import socket
    import struct

    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        for i in range(count):
            name = f"_x{i}._tcp.local".encode()
            labels = b"".join(bytes([len(p)]) + p for p in name.split(b".")) + b"\0"
            dns = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + labels \
                + struct.pack("!HHIH", 12, 1, 120, 2) + b"\xc0\x0c"
            udp = struct.pack("!HHHH", 5353, 5353, 8 + len(dns), 0) + dns
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 255, 17, 0,
                             socket.inet_aton("192.0.2.250"), socket.inet_aton("224.0.0.251"))
            total = sum(struct.unpack("!10H", ip))
            total = (total & 0xFFFF) + (total >> 16)
            total = (total & 0xFFFF) + (total >> 16)
            ip = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:]  # the bridge checks it
            mac = b"\x02\xee" + i.to_bytes(4, "big")
            sock.send(b"\x01\x00\x5e\x00\x00\xfb" + mac + b"\x08\x00" + ip + udp)
            sent += 1
    return sent


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _received(vhome: Any) -> int:
    """Packets the gateway's LAN interface received so far."""
    shown = vhome.run(vhome.gw_ns, ["ip", "-s", "-j", "link", "show", "dev", vhome.lan_if])
    return int(json.loads(shown.stdout)[0]["stats64"]["rx"]["packets"])


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


def _identity(db: Path, mac: str, timeout: float) -> IdentityRecord | None:
    """The daemon's stored identification of ``mac`` once it names a maker, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Store(db) as store:
            found = store.get_identity(mac)
        record = IdentityRecord.loads(found[1]) if found else None
        if record is not None and record.manufacturer:
            return record
        time.sleep(0.5)
    return None


def _join_learning(vhome: Any, daemon: Daemon, nodes: tuple[Any, ...]) -> list[str]:
    """Once the daemon is ready: each node (MAC fresh in the namespace) joins by DHCP
    with no MUD URL and is learned (on by default, still observed); their addresses."""
    daemon.wait_for({"event": "ready"})
    addresses = []
    for node in nodes:
        _fresh(vhome, node)
        addresses.append(vhome.call(node.ns, _join, node.iface, node.mac, None))
    for node in nodes:
        daemon.wait_for({"event": "device", "mac": node.mac, "state": "learning"})
    return addresses


def test_the_daemon_identifies_devices_from_mdns_ssdp_and_dns_names(tmp_path: Path) -> None:
    with daemon_home(tmp_path, "mgh16b") as (vhome, config):
        # the home default lets devices reach the Internet (the usual home)
        config.write_text(config.read_text().replace('home_default = "lan"',
                                                     'home_default = "internet"'))
        db = config.parent / "state" / "mudguard.db"
        hub, plug, hostile = vhome.nodes
        daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
        try:
            hub_address, _ = _join_learning(vhome, daemon, (hub, plug))
            # Its DHCP hostname ("device") and its randomised MAC say nothing of its maker.
            with Store(db) as store:
                before = store.get_device(hub.mac)
            assert before is not None and before.manufacturer is None
            # A hostile device floods mDNS from forged MACs first: the daemon's memory
            # stays bounded and the real announcements that follow are still read.
            rss, received = _rss_kib(daemon.proc.pid), _received(vhome)
            assert vhome.call(hostile.ns, _flood, hostile.iface, 30_000, timeout=60) == 30_000
            assert _received(vhome) - received >= 30_000  # it reached the gateway
            vhome.call(hub.ns, _announce, hub_address, 30, timeout=20)
            assert vhome.call(plug.ns, _resolve, "devs.tplinkcloud.com") == ["198.51.100.22"]
            found = _stored(db, hub.mac, 20, ("Philips Hue (Signify)", "hub"))
            assert found is not None
            assert (found.manufacturer, found.kind) == ("Philips Hue (Signify)", "hub")
            named = _stored(db, plug.mac, 20, ("TP-Link", None))
            assert named is not None and named.manufacturer == "TP-Link"
            # Why: the decision, how sure, and the clues behind it are kept for the owner.
            record = _identity(db, hub.mac, 20)
            assert record is not None and record.manufacturer == "Philips Hue (Signify)"
            assert record.manufacturer_confidence >= 0.5 and record.kind == "hub"
            assert any(c.field.startswith(("mdns", "ssdp")) and
                       ("manufacturer", "Philips Hue (Signify)") in c.supports
                       for c in record.clues), record.clues
            grown = _rss_kib(daemon.proc.pid) - rss
            assert grown < 32 * 1024, f"the daemon grew {grown} KiB during the flood"
            with Store(db) as store:  # the forged MACs made no device
                assert len(store.list_devices()) == 2
        finally:
            daemon.stop()


def test_the_daemon_identifies_a_device_from_its_web_flows(tmp_path: Path) -> None:
    """A device without a MUD file (randomised MAC, DHCP hostname "device") makes one
    TLS 1.2 connection and one HTTP request by address, no DNS: the daemon's rules log
    them, its web watcher reads the server certificate's organisation, and the maker is
    stored while the device runs."""
    import tempfile

    from tests.netns.test_identify_web import ORG, _device, servers
    from tests.pki import make_cert

    web4, web6 = "198.51.100.77", "2001:db8:ff:1::77"
    with daemon_home(tmp_path, "mgT5w", devices=1, ruleset="data") as (vhome, config), \
            tempfile.TemporaryDirectory(prefix="mgT5-") as tmp:
        config.write_text(config.read_text().replace('home_default = "lan"',
                                                     'home_default = "internet"'))
        for address in (f"{web4}/32", f"{web6}/128"):
            vhome.run(vhome.inet_ns, ["ip", "addr", "replace", address, "dev", "lo"])
        cert = make_cert("cloud.example.com", dns=("cloud.example.com",), organisation=ORG)
        cert_file = Path(tmp) / "web.pem"
        cert_file.write_bytes(cert.cert_pem() + cert.key_pem())
        db = config.parent / "state" / "mudguard.db"
        plug = vhome.nodes[0]
        _fresh(vhome, plug)
        daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
        try:
            daemon.wait_for({"event": "ready"})
            vhome.call(plug.ns, _join, plug.iface, plug.mac, None)
            daemon.wait_for({"event": "device", "mac": plug.mac, "state": "learning"})
            with Store(db) as store:
                before = store.get_device(plug.mac)
            assert before is not None and before.manufacturer is None
            with servers(vhome.inet_ns, cert_file, web4, web6):
                assert _device(plug.ns, "tls12", web4, web6) == "TLSv1.2"
                assert _device(plug.ns, "http", web4, web6) == "HTTP/1.1 200 OK"
            named = _stored(db, plug.mac, 20, ("TP-Link", None))
            assert named is not None and named.manufacturer == "TP-Link"
        finally:
            daemon.stop()


def _kasa_answer(address: str, phone: str) -> None:
    """Inside the plug: a datagram from its UDP 9999 to the phone (as a Kasa plug
    answers the app's discovery), and the plug's TCP 9999 listening for the app."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 9999))
        sock.sendto(b"\xd0\xf2", (phone, 40000))


def _kasa_ask(plug: str) -> None:
    """Inside the phone: the Kasa app opens TCP 9999 on the plug (nobody listens: the
    SYN is what the gateway's conntrack sees)."""
    import contextlib
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        with contextlib.suppress(OSError):
            sock.connect((plug, 9999))


def test_the_daemon_reads_makers_local_protocol_ports_between_devices(
        tmp_path: Path) -> None:
    """A plug with a randomised MAC and no telling DHCP hostname answers from Kasa's UDP
    9999 to a phone at home, and the phone asks it on TCP 9999: the connections cross the
    gateway (isolated LAN ports), its conntrack NEW events name the ports, and the
    daemon stores TP-Link with both clues in its record."""
    with daemon_home(tmp_path, "mgh16p", devices=2) as (vhome, config):
        db = config.parent / "state" / "mudguard.db"
        plug, phone = vhome.nodes
        daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
        try:
            plug_address, phone_address = _join_learning(vhome, daemon, (plug, phone))
            vhome.call(plug.ns, _kasa_answer, plug_address, phone_address)
            vhome.call(phone.ns, _kasa_ask, plug_address)
            named = _stored(db, plug.mac, 20, ("TP-Link", None))
            assert named is not None and named.manufacturer == "TP-Link"
            record = _identity(db, plug.mac, 20)
            assert record is not None
            fields = {(c.field, c.value) for c in record.clues}
            assert ("served_port", "udp/9999") in fields, record.clues
            assert ("peer_port", "tcp/9999") in fields, record.clues
            with Store(db) as store:  # the phone that asked is not taken for a plug
                asker = store.get_device(phone.mac)
            assert asker is not None and asker.manufacturer != "TP-Link"
        finally:
            daemon.stop()
