"""Adapter: gather each device's clues from a capture, load the knowledge and OUIs.

The capture is streamed with ``profile.capture.read_frames`` (bounded memory).
Headers are cut by hand with ``struct``; only packets on the ports that carry
clues are parsed further (``identify.parse``). Everything is bounded: clues per
device, devices per capture, TLS server bytes buffered per connection.

Frame numbers are 1-based positions of the Ethernet packets in the file (what
Wireshark shows as ``frame.number`` for an all-Ethernet capture).
"""

from __future__ import annotations

import ipaddress
import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mudguard.identify.decide import Clue, Identification, TrafficSummary, identify
from mudguard.identify.knowledge import KnowledgeBase, OuiRegistry, port_numbers
from mudguard.identify.parse import (
    parse_client_hello,
    parse_dhcp,
    parse_dns_query,
    parse_http_request,
    parse_http_response,
    parse_kasa,
    parse_lldp,
    parse_mdns,
    parse_server_certificates,
    parse_ssdp,
)
from mudguard.identify.registry import DiscoveryRegistry
from mudguard.profile.capture import CaptureStats, read_frames

OUI_FILE_ENV = "MUDGUARD_OUI_FILE"
OUI_FILES = (Path("/usr/share/wireshark/manuf"),)
MAX_DEVICES = 4096
MAX_CLUES = 128  # distinct clues kept per device
MAX_REMOTES = 256  # enough to tell "many" (the threshold is 40)
MAX_NAMES = 256
MAX_TLS_STREAMS = 4096
TLS_BUFFER = 16384  # server bytes kept per connection: enough for a certificate chain
TCP, UDP = 6, 17
KASA_PORT = 9999
MAX_PORT_CLUES = 8  # distinct service ports kept per device and field


@dataclass
class DeviceScan:
    """What the capture showed of one MAC."""

    clues: dict[tuple[str, str], int] = field(default_factory=dict)  # → first frame
    packets_sent: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    first_ts: float | None = None
    last_ts: float = 0.0
    first_frame: int | None = None
    remotes: set[bytes] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    max_clues: int = MAX_CLUES
    max_names: int = MAX_NAMES

    def add(self, facts: Iterable[tuple[str, str]], frame: int) -> int:
        """Keep the facts a packet stated (first frame of each, bounded); how many
        were new."""
        added = 0
        for fact in facts:
            if fact not in self.clues and len(self.clues) < self.max_clues:
                self.clues[fact] = frame
                added += 1
            if fact[0] == "dns_name" and len(self.names) < self.max_names:
                self.names.add(fact[1])
        return added

    def add_port(self, field_name: str, port: str, frame: int) -> None:
        """Keep a service-port clue: at most ``MAX_PORT_CLUES`` per field, so a port
        scan cannot crowd out the device's other clues."""
        if (field_name, port) in self.clues:
            return
        if sum(1 for f, _ in self.clues if f == field_name) < MAX_PORT_CLUES:
            self.add([(field_name, port)], frame)

    def traffic(self) -> TrafficSummary:
        """The device's traffic summary."""
        seconds = self.last_ts - self.first_ts if self.first_ts is not None else 0.0
        return TrafficSummary(packets_sent=self.packets_sent, bytes_sent=self.bytes_sent,
                              bytes_received=self.bytes_received, seconds=seconds,
                              remote_addresses=len(self.remotes), dns_names=len(self.names),
                              first_packet=self.first_frame)

    def clue_list(self) -> list[Clue]:
        """The clues in frame order."""
        return [Clue(f, v, n) for (f, v), n in sorted(self.clues.items(), key=lambda i: i[1])]


@dataclass
class CaptureScan:
    """Every MAC's clues and traffic, and which MACs are infrastructure (gateway)."""

    devices: dict[bytes, DeviceScan] = field(default_factory=dict)
    infrastructure: set[bytes] = field(default_factory=set)
    tls_streams: dict[tuple[bytes, int, bytes, int], tuple[bytes, int, bytearray]] = field(
        default_factory=dict)
    stats: CaptureStats = field(default_factory=CaptureStats)
    max_devices: int = MAX_DEVICES
    max_clues: int = MAX_CLUES
    max_names: int = MAX_NAMES
    service_ports: frozenset[str] = frozenset()
    """``tcp/N``/``udp/N`` ports the knowledge names: only these become clues."""
    port_numbers: frozenset[int] = field(init=False, default=frozenset())
    """Their numbers (a cheap first test per packet)."""
    _global: dict[bytes, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port_numbers = port_numbers(self.service_ports)

    def device(self, mac: bytes) -> DeviceScan | None:
        """The scan of ``mac``, made on first sight (None once the table is full)."""
        scan = self.devices.get(mac)
        if scan is None and len(self.devices) < self.max_devices:
            scan = self.devices[mac] = DeviceScan(max_clues=self.max_clues,
                                                    max_names=self.max_names)
        return scan

    def mark_infrastructure(self, mac: bytes) -> None:
        """``mac`` forwards or answers for others (a router, the gateway): bounded."""
        if len(self.infrastructure) < self.max_devices:
            self.infrastructure.add(mac)

    def is_global(self, address: bytes) -> bool:
        """Whether an address is on the Internet (cached)."""
        known = self._global.get(address)
        if known is None:
            known = ipaddress.ip_address(address).is_global
            if len(self._global) < 65536:
                self._global[address] = known
        return known

    def candidates(self) -> list[tuple[bytes, DeviceScan]]:
        """Devices (unicast senders that are not the gateway), busiest first."""
        found = [(mac, scan) for mac, scan in self.devices.items()
                 if scan.packets_sent and mac not in self.infrastructure]
        return sorted(found, key=lambda item: -item[1].packets_sent)


def scan_capture(path: Path, service_ports: Iterable[str] | None = None) -> CaptureScan:
    """Read a capture and gather each MAC's clues. Raises ``CaptureError``."""
    return scan_captures([path], service_ports)


def scan_captures(paths: Iterable[Path],
                  service_ports: Iterable[str] | None = None) -> CaptureScan:
    """Read captures one after the other, as one (frame numbers run on, as in
    ``mergecap -a``), and gather each MAC's clues (service ports: those given, by
    default the shipped knowledge's). Raises ``CaptureError``."""
    if service_ports is None:
        service_ports = load_knowledge().service_ports
    scan = CaptureScan(service_ports=frozenset(service_ports))
    number = 0
    for path in paths:
        for ts, frame, length in read_frames(path, stats=scan.stats):
            number += 1
            scan_frame(scan, number, ts, frame, length)
    for mac, frame_no, buffer in scan.tls_streams.values():
        target = scan.devices.get(mac)
        if buffer and target is not None:
            target.add(parse_server_certificates(bytes(buffer)), frame_no)
    return scan


def scan_frame(scan: CaptureScan, number: int, ts: float, frame: bytes, length: int) -> None:
    """Gather what one Ethernet frame (``number``-th, captured at ``ts``, ``length``
    bytes on the wire) says into ``scan``: the offline capture and the daemon's
    announcement sniffer (``identify.live``) both read frames through this."""
    if len(frame) < 14:
        return
    dst, src = frame[0:6], frame[6:12]
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    offset = 14
    if ethertype == 0x8100 and len(frame) >= 18:
        ethertype = struct.unpack_from("!H", frame, 16)[0]
        offset = 18
    sender = scan.device(src) if not src[0] & 1 else None
    if sender is not None:
        sender.packets_sent += 1
        sender.bytes_sent += length
        if sender.first_ts is None:
            sender.first_ts, sender.first_frame = ts, number
        sender.last_ts = ts
    receiver = scan.device(dst) if not dst[0] & 1 else None
    if receiver is not None:
        receiver.bytes_received += length
    if ethertype == 0x88CC and sender is not None:
        sender.add(parse_lldp(frame[offset:]), number)
    elif ethertype == 0x0800:
        _ipv4(scan, number, frame, offset, src, (sender, receiver))
    elif ethertype == 0x86DD and len(frame) >= offset + 40:
        nxt = frame[offset + 6]
        _transport(scan, number, nxt, frame[offset + 8:offset + 24],
                   frame[offset + 24:offset + 40], frame[offset + 40:], src,
                   (sender, receiver))


Ends = tuple["DeviceScan | None", "DeviceScan | None"]
"""The scans of a frame's sender and receiver (None: multicast, or the table is full)."""


def _ipv4(scan: CaptureScan, number: int, frame: bytes, offset: int, src: bytes,
          ends: Ends) -> None:
    if len(frame) < offset + 20:
        return
    ihl = (frame[offset] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, offset + 2)[0]
    if ihl < 20 or struct.unpack_from("!H", frame, offset + 6)[0] & 0x1FFF:
        return  # bad header, or a later fragment
    saddr, daddr = frame[offset + 12:offset + 16], frame[offset + 16:offset + 20]
    if scan.is_global(saddr):
        scan.mark_infrastructure(src)  # forwards Internet traffic: a router
    end = offset + total if total >= ihl else len(frame)
    _transport(scan, number, frame[offset + 9], saddr, daddr, frame[offset + ihl:end], src,
               ends)


def _transport(scan: CaptureScan, number: int, proto: int, saddr: bytes, daddr: bytes,
               data: bytes, src: bytes, ends: Ends) -> None:
    sender = ends[0]
    if sender is not None and scan.is_global(daddr) and len(sender.remotes) < MAX_REMOTES:
        sender.remotes.add(daddr)
    if proto == UDP and len(data) >= 8:
        sport, dport = struct.unpack_from("!HH", data)
        if sport in scan.port_numbers or dport in scan.port_numbers:
            _service_port(scan, number, f"udp/{sport}", f"udp/{dport}", True, saddr, daddr,
                          ends)
        _udp(scan, number, sport, dport, data[8:], src, sender)
    elif proto == TCP and len(data) >= 20:
        sport, dport = struct.unpack_from("!HH", data)
        payload = data[(data[12] >> 4) * 4:]
        if sport in scan.port_numbers or dport in scan.port_numbers:
            # a SYN+ACK or data from a port: the device serves it
            serves = bool(payload) or data[13] & 0x12 == 0x12
            _service_port(scan, number, f"tcp/{sport}", f"tcp/{dport}", serves, saddr,
                          daddr, ends)
        if payload:
            _tcp(scan, number, (saddr, sport, daddr, dport), payload, src, sender)


def _service_port(scan: CaptureScan, number: int, source: str, destination: str,
                  serves: bool, saddr: bytes, daddr: bytes, ends: Ends) -> None:
    """A port the knowledge names (a maker's local protocol: Smarter's 2081, Kasa's
    9999, …) in a LAN exchange: the device answering from it (``served_port``), or a
    LAN peer talking to it there (``peer_port``, weaker: anyone can send there)."""
    if scan.is_global(saddr) or scan.is_global(daddr):
        return
    sender, receiver = ends
    if sender is not None and serves and source in scan.service_ports:
        sender.add_port("served_port", source, number)
    if receiver is not None and destination in scan.service_ports:
        receiver.add_port("peer_port", destination, number)


def _udp(scan: CaptureScan, number: int, sport: int, dport: int, payload: bytes, src: bytes,
         sender: DeviceScan | None) -> None:
    if sport in (53, 67):
        scan.mark_infrastructure(src)  # answers DNS or DHCP: the gateway
        return
    if dport == 67 and len(payload) >= 34:
        client = scan.device(payload[28:34]) if not payload[28] & 1 else None
        if client is not None:
            client.add(parse_dhcp(payload), number)
        return
    if sender is None:
        return
    if sport == KASA_PORT:
        sender.add(parse_kasa(payload, stream=False), number)
    elif 5353 in (sport, dport):
        sender.add(parse_mdns(payload), number)
    elif 1900 in (sport, dport):
        sender.add(parse_ssdp(payload), number)
    elif dport == 53:
        sender.add(parse_dns_query(payload), number)


def _tcp(scan: CaptureScan, number: int, key: tuple[bytes, int, bytes, int], payload: bytes,
         src: bytes, sender: DeviceScan | None) -> None:
    stream = scan.tls_streams.get(key)
    if stream is not None:
        buffer = stream[2]
        if len(buffer) < TLS_BUFFER:
            buffer += payload[:TLS_BUFFER - len(buffer)]
        return
    if sender is None:
        return
    if key[1] == KASA_PORT:
        sender.add(parse_kasa(payload, stream=True), number)
    elif payload[0] == 0x16:
        facts = parse_client_hello(payload)
        if facts:
            sender.add(facts, number)
            if len(scan.tls_streams) < MAX_TLS_STREAMS:  # the server's answer, to read
                scan.tls_streams[(key[2], key[3], key[0], key[1])] = (src, number, bytearray())
    elif payload.startswith(b"HTTP/1."):
        sender.add(parse_http_response(payload), number)
    elif payload[:1].isalpha():
        sender.add(parse_http_request(payload), number)


def load_knowledge() -> KnowledgeBase:
    """The knowledge base shipped in this package, with Home Assistant's discovery
    matchers (``discovery_registry.json``, see ``identify.registry``)."""
    package = resources.files("mudguard.identify")
    registry = DiscoveryRegistry.from_mapping(
        json.loads(package.joinpath("discovery_registry.json").read_text("utf-8")))
    text = package.joinpath("knowledge.json").read_text("utf-8")
    return KnowledgeBase.from_mapping(json.loads(text), discovery=registry)


def load_oui_registry() -> OuiRegistry | None:
    """The OUI registry: ``$MUDGUARD_OUI_FILE``, else Wireshark's ``manuf`` (Debian
    package ``libwireshark-data``); None when none is installed."""
    override = os.environ.get(OUI_FILE_ENV)
    for path in ([Path(override)] if override else list(OUI_FILES)):
        if path.is_file():
            with path.open(encoding="utf-8", errors="replace") as lines:
                return OuiRegistry.from_manuf_lines(lines)
    return None


def identify_scan(scan: CaptureScan, mac: bytes, kb: KnowledgeBase,
                  oui: OuiRegistry | None) -> Identification:
    """Identify one MAC of a scanned capture."""
    device = scan.devices.get(mac) or DeviceScan()
    return identify_device(mac, device, kb, oui, device.traffic())


def identify_device(mac: bytes, device: DeviceScan, kb: KnowledgeBase,
                    oui: OuiRegistry | None,
                    traffic: TrafficSummary | None = None) -> Identification:
    """Identify ``mac`` from what was gathered of it: the one decision both
    ``mudguard identify`` (with the capture's traffic summary) and the daemon (with
    only the count of DNS names: it sees no per-packet traffic) take."""
    return identify(mac, device.clue_list(), kb, oui, traffic)
