"""The daemon identifies live from mDNS, SSDP, DNS names and DHCP, as ``mudguard identify``
does offline, within bounds a hostile LAN cannot push (real frames, real sockets)."""

from __future__ import annotations

import socket
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from mudguard.devices import MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.announce_sniff import AnnouncementSniffer
from mudguard.discovery.sighting import Sighting
from mudguard.identify.capture import identify_scan, load_knowledge, scan_capture
from mudguard.identify.knowledge import KnowledgeBase
from mudguard.identify.live import LiveEvidence, LiveIdentifier
from mudguard.store import Store
from tests.unit.test_identify import (
    dhcp_request,
    mac,
    mdns_announcement,
    ssdp_notify,
    write_pcap,
)

HUE = "00:17:88:1a:2b:3c"
SONOS = "00:0e:58:a0:b1:c2"
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_knowledge()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[DeviceService]:
    store = Store(tmp_path / "m.db")
    yield DeviceService(store=store, clock=lambda: NOW)
    store.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dns_query(src: str, name: str) -> bytes:
    return bytes(Ether(src=src, dst="02:00:00:00:00:01") / IP(src="192.0.2.30", dst="192.0.2.1")
                 / UDP(sport=40000, dport=53) / DNS(rd=1, qd=DNSQR(qname=name)))


def mdns_instance(src: str, number: int) -> bytes:
    instance = f"Speaker {number}._googlecast._tcp.local"
    return bytes(Ether(src=src, dst="01:00:5e:00:00:fb") / IP(src="192.0.2.12", dst="224.0.0.251")
                 / UDP(sport=5353, dport=5353)
                 / DNS(qr=1, aa=1, qd=[], an=[DNSRR(rrname="_googlecast._tcp.local",
                                                    type="PTR", rdata=instance)]))


# --- live and offline agree ---------------------------------------------------------

def test_live_and_offline_give_the_same_identification(tmp_path: Path,
                                                       kb: KnowledgeBase) -> None:
    frames = [dhcp_request(SONOS, [("hostname", b"Sonos-000E58A0B1C2")]),
              ssdp_notify(SONOS), mdns_announcement(HUE),
              dns_query(SONOS, "api.sonos.com"), dns_query(HUE, "diag.meethue.com")]
    offline = scan_capture(write_pcap(tmp_path / "c.pcap", frames))
    live = LiveIdentifier(kb, None)
    for frame in frames[1:3]:
        live.on_frame(frame)  # the sniffer's part: announcements
    live.on_name(SONOS, "api.sonos.com.")  # the DNS guard's part
    live.on_name(HUE, "Diag.MeetHue.com")
    live.identify(Sighting(mac=SONOS, source=MudSource.DHCP4,
                           hostname="Sonos-000E58A0B1C2"))  # the lease's part
    for device in (SONOS, HUE):
        off = identify_scan(offline, mac(device), kb, None)
        on = live.identification(mac(device))
        assert off.manufacturer is not None and off.kind is not None
        assert (on.manufacturer, on.model, on.kind, round(on.confidence, 6)) == (
            off.manufacturer, off.model, off.kind, round(off.confidence, 6))
        assert sorted(e.says for e in on.evidence) == sorted(e.says for e in off.evidence)


def test_updates_name_what_became_more_certain_once(kb: KnowledgeBase) -> None:
    live = LiveIdentifier(kb, None)
    live.on_frame(ssdp_notify(SONOS))
    (update,) = live.updates()
    assert (update.mac, update.maker, update.kind) == (SONOS, "Sonos", "speaker")
    assert (update.replaces_maker, update.replaces_kind) == (None, None)
    live.on_frame(ssdp_notify(SONOS))  # nothing new
    assert live.updates() == []


def test_lldp_system_name_is_a_clue(kb: KnowledgeBase) -> None:
    live = LiveIdentifier(kb, None)
    live.on_lldp(SONOS, "Sonos-Port")
    live.on_lldp(SONOS, None)
    (update,) = live.updates()
    assert (update.maker, update.kind) == ("Sonos", "speaker")


def test_a_frame_the_gateway_could_not_attribute_is_ignored(kb: KnowledgeBase) -> None:
    live = LiveIdentifier(kb, None)
    frame = bytearray(ssdp_notify(SONOS))
    frame[6] |= 1  # a multicast source MAC names no device
    live.on_frame(bytes(frame))
    live.on_frame(b"\x00" * 10)
    assert live.updates() == [] and not live.evidence.scan.devices


# --- what is stored, and what never is replaced -------------------------------------

def test_service_stores_identification_but_never_over_a_label(service: DeviceService) -> None:
    service.observe(mac=SONOS, ip="192.0.2.11")
    service.identified(SONOS, maker="Sonos", kind="speaker")
    device = service.store.get_device(SONOS)
    assert (device.manufacturer, device.kind) == ("Sonos", "speaker")
    # identification may improve its own value ...
    service.identified(SONOS, maker="Sonos Inc", replaces_maker="Sonos")
    assert service.store.get_device(SONOS).manufacturer == "Sonos Inc"
    # ... but not the owner's label, nor a value it did not store
    service.add_device(mac=SONOS, manufacturer="Label Maker")
    service.identified(SONOS, maker="Other", replaces_maker="Sonos Inc")
    assert service.store.get_device(SONOS).manufacturer == "Label Maker"
    service.identified(SONOS, kind="tv", replaces_kind="plug")
    assert service.store.get_device(SONOS).kind == "speaker"
    assert service.identified("02:99:99:99:99:99", maker="X") is None  # unknown: not made


def test_service_never_sets_a_maker_on_a_device_with_its_own_mud_file(
        service: DeviceService) -> None:
    service.observe(mac=HUE, ip="192.0.2.10", hostname="hue")
    device = service.store.get_device(HUE)
    from dataclasses import replace
    service.store.save_device(replace(device, mud_url="https://example.com/hue.json",
                                      mud_source=MudSource.DHCP4))
    service.identified(HUE, maker="Philips Hue (Signify)", kind="hub")
    device = service.store.get_device(HUE)
    assert (device.manufacturer, device.kind) == (None, "hub")


# --- bounds: a hostile LAN ------------------------------------------------------------

def test_a_flood_of_forged_macs_keeps_memory_bounded(kb: KnowledgeBase) -> None:
    evidence = LiveEvidence(max_devices=64, clock=FakeClock())
    live = LiveIdentifier(kb, None, evidence=evidence)
    template = bytearray(mdns_instance("02:00:00:00:00:00", 0))
    tracemalloc.start()
    try:
        for i in range(5000):
            frame = bytearray(template)
            frame[6:12] = b"\x02" + i.to_bytes(5, "big")
            live.on_frame(bytes(frame))
            if i == 500:
                early = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - early
    finally:
        tracemalloc.stop()
    assert len(evidence.scan.devices) <= 64
    assert len(evidence.dirty) <= 64 and len(evidence._buckets) <= 64
    assert len(evidence.scan.infrastructure) <= 64
    assert grown < 200_000, f"memory grew {grown} bytes after the table filled"
    assert len(live.updates(limit=1000)) <= 64


def test_frames_of_macs_the_gateway_does_not_know_are_not_read(kb: KnowledgeBase) -> None:
    evidence = LiveEvidence()
    evidence.known = lambda raw: raw == mac(SONOS)
    live = LiveIdentifier(kb, None, evidence=evidence)
    live.on_frame(mdns_announcement(HUE))
    live.on_frame(ssdp_notify(SONOS))
    assert list(evidence.scan.devices) == [mac(SONOS)]
    assert (evidence.unknown, evidence.frames) == (1, 1)


def test_one_mac_flooding_is_read_at_its_rate_and_its_clues_are_capped(
        kb: KnowledgeBase) -> None:
    clock = FakeClock()
    evidence = LiveEvidence(max_clues=16, burst=30, frames_per_minute=60, clock=clock)
    live = LiveIdentifier(kb, None, evidence=evidence)
    distinct = [mdns_instance(SONOS, i) for i in range(50)]
    for i in range(3000):
        live.on_frame(distinct[i % 30])
    assert evidence.frames == 30 and evidence.limited == 2970
    clock.now += 10  # 10 s later: 10 more frames
    for i in range(100):
        live.on_frame(distinct[30 + i % 20])
    assert evidence.frames == 40
    assert len(evidence.scan.devices[mac(SONOS)].clues) == 16
    for i in range(500):  # names asked are capped too
        live.on_name(SONOS, f"host{i}.example.com")
    assert len(evidence.scan.devices[mac(SONOS)].names) <= 64


# --- the sniffer: a real packet socket --------------------------------------------------

def send_udp(port: int, count: int, payload: bytes, *, v6: bool = False) -> None:
    family, address = (socket.AF_INET6, "::1") if v6 else (socket.AF_INET, "127.0.0.1")
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(payload, (address, port))


def test_sniffer_reads_only_mdns_and_ssdp_and_stops_at_its_budget() -> None:
    token = f"mudguard-test-{time.time_ns()}".encode()
    seen: list[bytes] = []
    clock = FakeClock()
    with AnnouncementSniffer("lo", seen.append, frames_per_second=50, clock=clock) as sniffer:
        send_udp(5354, 20, token)  # another port: the kernel's filter drops it
        send_udp(5354, 20, token, v6=True)
        send_udp(1900, 3, token)
        send_udp(5353, 2, token, v6=True)
        time.sleep(0.05)
        assert sniffer.drain() is None
        mine = [f for f in seen if token in f]
        v4 = [f for f in mine if f[12:14] == b"\x08\x00"]
        v6 = [f for f in mine if f[12:14] == b"\x86\xdd"]
        assert len(v4) == 3 and all(f[36:38] == b"\x07\x6c" for f in v4)
        assert len(v6) == 2 and all(f[56:58] == b"\x14\xe9" for f in v6)
        seen.clear()
        send_udp(5353, 200, token)  # a flood: on lo each is seen twice (out and in)
        time.sleep(0.05)
        wait = None
        for _ in range(20):
            wait = sniffer.drain()
            if wait is not None:
                break
        assert wait is not None and 0 < wait <= 1.0
        first = len(seen)
        assert 0 < first <= 50
        assert sniffer.drain() == wait  # still this second: nothing more is read
        assert len(seen) == first
        clock.now += 1.0  # the next second: reading resumes, within the budget again
        sniffer.drain()
        assert first < len(seen) <= first + 50
