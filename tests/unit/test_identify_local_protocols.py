"""Identification from what devices say on the LAN in their makers' own protocols.

Set-up traffic (what IoT Sentinel's captures hold) often has no DNS or announcements:
only DHCP, and the maker's app talking to the device on its own port. These tests
cover the service-port clue (the device answering from a port the knowledge names,
or a peer talking to it there), the Kasa ``get_sysinfo`` answer (XOR "autokey",
checked against the vector python-kasa publishes) and the HNAP device settings
answer, on real captures where we have them (the IoT Sentinel SmarterCoffee set-ups).
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.identify.capture import load_knowledge, scan_capture
from mudguard.identify.knowledge import KnowledgeBase, KnowledgeError
from mudguard.identify.parse import kasa_decode, parse_kasa, parse_upnp_description
from tests.unit.test_identify import dhcp_request, write_pcap

runner = CliRunner()
DATA = Path(__file__).resolve().parents[1] / "data" / "corpus" / "pcap" / "smartercoffee"
COFFEE = "5c:cf:7f:07:ae:fb"  # _iotdevice-mac.txt of the IoT Sentinel SmarterCoffee set
PLUG, PHONE, DLINK = "50:c7:bf:00:c7:03", "38:0b:40:ef:85:41", "90:8d:78:a9:3d:6f"
MANUF = ("5C:CF:7F\tEspressi\tEspressif Inc.\n"
         "50:C7:BF\tTp-LinkT\tTP-LINK TECHNOLOGIES CO.,LTD.\n"
         "90:8D:78\tD-LinkIn\tD-Link International\n"
         "38:0B:40\tSamsungE\tSamsung Electronics Co.,Ltd\n")
# python-kasa's XorEncryption.encrypt('{"system":{"get_sysinfo":{}}}'), as published in
# the projects that cross-check against it (the UDP discovery query)
KASA_QUERY_VECTOR = "d0f281f88bff9af7d5ef94b6d1b4c09fec95e68fe187e8caf08bf68bf6"
SYSINFO = {"system": {"get_sysinfo": {
    "sw_ver": "1.2.5 Build 171213 Rel.101523", "hw_ver": "1.0", "type": "IOT.SMARTPLUGSWITCH",
    "model": "HS110(EU)", "mac": "50:C7:BF:00:C7:03",
    "dev_name": "Wi-Fi Smart Plug With Energy Monitoring", "alias": "Kitchen",
    "relay_state": 1, "on_time": 120, "feature": "TIM:ENE", "rssi": -52,
    "oemId": "FFF22CFF774A0B89F7624BFC6F50D5DE", "err_code": 0}}}


def kasa_encode(plain: bytes) -> bytes:
    key, out = 171, bytearray()
    for byte in plain:
        key ^= byte
        out.append(key)
    return bytes(out)


def udp(src: str, dst: str, src_ip: str, dst_ip: str, sport: int, dport: int,
        payload: bytes) -> bytes:
    return bytes(Ether(src=src, dst=dst) / IP(src=src_ip, dst=dst_ip)
                 / UDP(sport=sport, dport=dport) / payload)


def segment(src: str, dst: str, src_ip: str, dst_ip: str, sport: int, dport: int,
            flags: str, payload: bytes = b"") -> bytes:
    return bytes(Ether(src=src, dst=dst) / IP(src=src_ip, dst=dst_ip)
                 / TCP(sport=sport, dport=dport, flags=flags) / payload)


@pytest.fixture()
def oui_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "manuf"
    path.write_text(MANUF)
    monkeypatch.setenv("MUDGUARD_OUI_FILE", str(path))
    return path


def identify_json(capture: Path, device: str) -> dict[str, object]:
    result = runner.invoke(app, ["identify", str(capture), "--device", device, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def says(found: dict[str, object]) -> str:
    """Every evidence line of an identification, joined."""
    return "\n".join(e["says"] for e in found["evidence"])  # type: ignore[attr-defined]


# --- Kasa ---------------------------------------------------------------------------

def test_kasa_decoder_matches_the_published_vector() -> None:
    query = bytes.fromhex(KASA_QUERY_VECTOR)
    assert kasa_decode(query, stream=False) == b'{"system":{"get_sysinfo":{}}}'
    framed = struct.pack(">I", len(query)) + query
    assert kasa_decode(framed, stream=True) == b'{"system":{"get_sysinfo":{}}}'
    assert kasa_encode(b'{"system":{"get_sysinfo":{}}}').hex() == KASA_QUERY_VECTOR


def test_kasa_answer_gives_model_type_and_product_name() -> None:
    answer = kasa_encode(json.dumps(SYSINFO).encode())
    facts = parse_kasa(answer, stream=False)
    assert ("device_model", "HS110(EU)") in facts
    assert ("device_type", "IOT.SMARTPLUGSWITCH") in facts
    assert ("device_description", "Wi-Fi Smart Plug With Energy Monitoring") in facts
    assert not any(value == "Kitchen" for _, value in facts)  # the owner's name stays out
    # over TCP: length first, and the first segment alone (the answer cut) still tells
    framed = struct.pack(">I", len(answer)) + answer
    assert ("device_model", "HS110(EU)") in parse_kasa(framed[:200], stream=True)
    # the query itself, noise and other ports' bytes say nothing
    assert parse_kasa(bytes.fromhex(KASA_QUERY_VECTOR), stream=False) == []
    rng = random.Random(9999)
    for _ in range(2000):
        assert parse_kasa(rng.randbytes(rng.randrange(0, 600)), stream=rng.random() < .5) == []


def test_a_kasa_plug_answering_its_app_is_named_with_model_and_kind(
        tmp_path: Path, oui_file: Path) -> None:
    answer = kasa_encode(json.dumps(SYSINFO).encode())
    frames = [
        dhcp_request(PLUG, [("hostname", "HS110")]),
        udp(PHONE, "ff:ff:ff:ff:ff:ff", "192.0.2.30", "192.0.2.255", 40000, 9999,
            bytes.fromhex(KASA_QUERY_VECTOR)),
        udp(PLUG, PHONE, "192.0.2.40", "192.0.2.30", 9999, 40000, answer),
    ]
    found = identify_json(write_pcap(tmp_path / "kasa.pcap", frames), PLUG)
    assert (found["manufacturer"], found["kind"], found["model"]) == ("TP-Link", "plug",
                                                                       "HS110")
    assert 'its local API names the device type "IOT.SMARTPLUGSWITCH"' in says(found)
    assert 'answers on its port "udp/9999"' in says(found)
    # the phone that asked is not taken for a Kasa device
    phone = identify_json(tmp_path / "kasa.pcap", PHONE)
    assert phone["manufacturer"] != "TP-Link"


# --- service ports ------------------------------------------------------------------

def test_smartercoffee_setups_name_the_maker_only_when_its_app_port_shows() -> None:
    """The real IoT Sentinel set-up captures: in two of fifteen the phone's app talks to
    the machine's TCP 2081 (Smarter's protocol); the others hold only DHCP from an
    Espressif module, which names no maker."""
    named = {}
    for capture in sorted(DATA.glob("Setup-*.pcap")):
        scan = scan_capture(capture)
        clues = scan.devices[bytes.fromhex(COFFEE.replace(":", ""))].clues
        named[capture.name] = ("peer_port", "tcp/2081") in clues
    assert sum(named.values()) == 2, named
    with_port = identify_json(DATA / "Setup-A-8-STA.pcap", COFFEE)
    assert (with_port["manufacturer"], with_port["kind"]) == ("Smarter", "appliance")
    assert 'a device on the LAN talks to its port "tcp/2081"' in says(with_port)
    without = identify_json(DATA / "Setup-A-1-STA.pcap", COFFEE)
    assert without["manufacturer"] is None and without["platform"] == "Espressif (Wi-Fi module)"


def test_a_device_answering_from_a_port_says_more_than_a_peer_knocking(
        tmp_path: Path, oui_file: Path) -> None:
    camera, peer = "02:00:5e:10:00:01", "02:00:5e:10:00:02"
    camera_ip, peer_ip = "192.0.2.50", "192.0.2.51"
    knock = segment(peer, camera, peer_ip, camera_ip, 50000, 554, "S")
    answer = segment(camera, peer, camera_ip, peer_ip, 554, 50000, "SA")
    only_knock = scan_capture(write_pcap(tmp_path / "k.pcap", [knock]))
    clues = only_knock.devices[bytes.fromhex(camera.replace(":", ""))].clues
    assert set(clues) == {("peer_port", "tcp/554")}
    kb = load_knowledge()
    weak = kb.match("peer_port", "tcp/554")
    strong = kb.match("served_port", "tcp/554")
    assert [c.value for c in strong] == ["camera"] and weak[0].weight < strong[0].weight
    both = scan_capture(write_pcap(tmp_path / "a.pcap", [knock, answer]))
    assert ("served_port", "tcp/554") in both.devices[bytes.fromhex(
        camera.replace(":", ""))].clues
    # a port to or from the Internet is not a LAN service (a pcap only: nothing is sent)
    remote = segment(camera, peer, camera_ip, "1.1.1.1", 554, 50000, "SA")
    far = scan_capture(write_pcap(tmp_path / "r.pcap", [remote]))
    assert not far.devices[bytes.fromhex(camera.replace(":", ""))].clues


def test_a_port_scan_cannot_crowd_out_the_device_s_own_clues(tmp_path: Path) -> None:
    victim, scanner = "02:00:5e:10:00:03", "02:00:5e:10:00:04"
    ports = sorted(int(p.split("/")[1]) for p in load_knowledge().service_ports
                   if p.startswith("tcp"))
    frames = [segment(scanner, victim, "192.0.2.61", "192.0.2.60", 40000 + i, port, "S")
              for i in range(5) for port in ports]
    frames += [segment(scanner, victim, "192.0.2.61", "192.0.2.60", 41000, p, "S")
               for p in range(1, 3000)]
    frames.append(dhcp_request(victim, [("hostname", "Philips-hue")]))
    scan = scan_capture(write_pcap(tmp_path / "scan.pcap", frames))
    clues = scan.devices[bytes.fromhex(victim.replace(":", ""))].clues
    assert sum(1 for f, _ in clues if f == "peer_port") == 8
    assert ("hostname", "Philips-hue") in clues


def test_no_port_claims_a_phone_or_computer_and_bad_ports_are_refused() -> None:
    """A port clue can be made by anyone on the LAN: it must never earn trust."""
    kb = load_knowledge()
    for port, rule in kb.service_ports.items():
        kinds = {v for a, v in rule.claims if a == "kind"}
        assert not kinds & kb.trusted_kinds, port
    text = json.loads((Path(__file__).resolve().parents[2] / "src" / "mudguard" / "identify"
                       / "knowledge.json").read_text())
    for bad in ("tcp/0", "tcp/65536", "sctp/80", "tcp/80 ", "tcp/08", "80"):
        broken = dict(text, service_ports=[{"port": bad, "kind": "camera"}])
        with pytest.raises(KnowledgeError):
            KnowledgeBase.from_mapping(broken)


# --- HNAP ---------------------------------------------------------------------------

HNAP_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\n\r\n"
    b'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap='
    b'"http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    b'<GetDeviceSettingsResponse xmlns="http://purenetworks.com/HNAP1/">'
    b"<GetDeviceSettingsResult>OK</GetDeviceSettingsResult><Type>Smart Plug</Type>"
    b"<DeviceName>D-Link Smart plug</DeviceName><VendorName>D-Link</VendorName>"
    b"<ModelDescription>Wi-Fi Smart Plug</ModelDescription><ModelName>DSP-W215</ModelName>"
    b"<FirmwareVersion>1.02</FirmwareVersion></GetDeviceSettingsResponse>"
    b"</soap:Body></soap:Envelope>")


def test_hnap_device_settings_name_maker_model_and_kind(tmp_path: Path,
                                                       oui_file: Path) -> None:
    facts = parse_upnp_description(HNAP_ANSWER)
    assert ("device_maker", "D-Link") in facts and ("device_model", "DSP-W215") in facts
    assert parse_upnp_description(HNAP_ANSWER.replace(b"purenetworks.com", b"example.org")) == []
    frames = [dhcp_request(DLINK, []),
              segment(PHONE, DLINK, "192.0.2.30", "192.0.2.70", 40100, 80, "PA",
                      b'POST /HNAP1/ HTTP/1.1\r\nHost: 192.0.2.70\r\nSOAPAction: '
                      b'"http://purenetworks.com/HNAP1/GetDeviceSettings"\r\n\r\n'),
              segment(DLINK, PHONE, "192.0.2.70", "192.0.2.30", 80, 40100, "PA", HNAP_ANSWER)]
    found = identify_json(write_pcap(tmp_path / "hnap.pcap", frames), DLINK)
    assert (found["manufacturer"], found["kind"], found["model"]) == ("D-Link", "plug",
                                                                       "DSP-W215")


# --- the daemon: ports from conntrack NEW events -----------------------------------

def test_the_daemon_reads_ports_from_connections_between_devices() -> None:
    from mudguard.identify.knowledge import OuiRegistry
    from mudguard.identify.live import LiveIdentifier, PortClue, connection_port_clues
    from mudguard.profile.core import mac_bytes

    kb = load_knowledge()
    plug, phone = "02:00:5e:20:00:01", "02:00:5e:20:00:02"  # no OUI to lean on
    answer = connection_port_clues(17, 9999, 40000, plug, phone, kb.service_ports)
    assert answer == [PortClue(plug, "served_port", "udp/9999")]
    asked = connection_port_clues(6, 40001, 9999, phone, plug, kb.service_ports)
    assert asked == [PortClue(plug, "peer_port", "tcp/9999")]
    # with the gateway or the Internet (no device at one end), ICMP, or itself: nothing
    assert connection_port_clues(6, 40001, 9999, phone, None, kb.service_ports) == []
    assert connection_port_clues(1, None, None, phone, plug, kb.service_ports) == []
    assert connection_port_clues(6, 9999, 9999, plug, plug, kb.service_ports) == []
    live = LiveIdentifier(kb, OuiRegistry.from_manuf(MANUF))
    live.on_ports([PortClue(phone, "served_port", "tcp/22")])  # not a known port
    assert not live.evidence.device(mac_bytes(phone)).clues
    live.on_ports(answer + asked)
    found = live.identification(mac_bytes(plug))
    assert found.manufacturer == "TP-Link"
    assert {e.field for e in found.evidence} >= {"served_port", "peer_port"}
    # a port scan of the plug by the phone keeps at most 8 port clues for it
    live.on_ports([PortClue(plug, "peer_port", port) for port in sorted(kb.service_ports)])
    kept = live.evidence.device(mac_bytes(plug)).clues
    assert sum(1 for f, _ in kept if f == "peer_port") == 8


# --- the device's own web server ----------------------------------------------------

def test_the_web_server_a_device_runs_names_its_kind(tmp_path: Path, oui_file: Path) -> None:
    from tests.unit.test_identify import GATEWAY

    camera, printer = "02:00:5e:30:00:01", "02:00:5e:30:00:02"
    camera_answer = (b"HTTP/1.0 401 Unauthorized\r\nServer: alphapd/2.1.8\r\n"
                     b"WWW-Authenticate: Basic realm=\"DCS-930L\"\r\n\r\n")
    printer_answer = (b"HTTP/1.1 200 OK\r\nServer: HP HTTP Server; HP Officejet Pro 8600 - "
                      b"CM749A; Serial Number: CN12345678; Built:Tue Mar 04, 2014\r\n\r\n")
    frames = [
        dhcp_request(camera, []), dhcp_request(printer, []),
        segment(PHONE, camera, "192.0.2.30", "192.0.2.80", 40200, 80, "PA",
                b"GET / HTTP/1.1\r\nHost: 192.0.2.80\r\n\r\n"),
        segment(camera, PHONE, "192.0.2.80", "192.0.2.30", 80, 40200, "PA", camera_answer),
        segment(printer, PHONE, "192.0.2.81", "192.0.2.30", 80, 40201, "PA", printer_answer),
        # a web server on the Internet answering the phone comes from the gateway's MAC
        segment(GATEWAY, PHONE, "1.1.1.1", "192.0.2.30", 80, 40202, "PA", camera_answer),
    ]
    capture = write_pcap(tmp_path / "web.pcap", frames)
    found = identify_json(capture, camera)
    assert (found["manufacturer"], found["kind"]) == ("D-Link", "camera")
    assert 'its web server calls itself "alphapd/2.1.8"' in says(found)
    found = identify_json(capture, printer)
    assert (found["manufacturer"], found["kind"]) == ("HP", "printer")
    phone = identify_json(capture, PHONE)
    assert phone["kind"] != "camera" and "alphapd" not in says(phone)


def test_without_device_the_headline_is_the_device_being_set_up_not_the_phone(
        tmp_path: Path, oui_file: Path) -> None:
    """In a set-up capture the phone running the maker's app is often the busiest
    sender: the top-level object is the busiest device that is not a phone/computer."""
    answer = kasa_encode(json.dumps(SYSINFO).encode())
    query = bytes.fromhex(KASA_QUERY_VECTOR)
    frames = [dhcp_request(PHONE, [("vendor_class_id", b"android-dhcp-13")])]
    frames += [udp(PHONE, PLUG, "192.0.2.30", "192.0.2.40", 40000 + i, 9999, query)
               for i in range(6)]
    frames.append(udp(PLUG, PHONE, "192.0.2.40", "192.0.2.30", 9999, 40000, answer))
    result = runner.invoke(app, ["identify", str(write_pcap(tmp_path / "setup.pcap", frames)),
                                 "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["mac"] == PLUG and document["kind"] == "plug"
    order = [d["mac"] for d in document["devices"]]
    assert order == [PLUG, PHONE]
    phone = next(d for d in document["devices"] if d["mac"] == PHONE)
    assert phone["kind"] == "phone" and phone["trusted_candidate"]
