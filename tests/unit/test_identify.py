"""``mudguard identify``: parsers, scoring and the CLI, on small captures built here."""

from __future__ import annotations

import datetime
import json
import ssl
from pathlib import Path
from typing import Any

import dpkt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSRR, DNSRRSRV
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.identify.capture import load_knowledge
from mudguard.identify.decide import Clue, TrafficSummary, identify
from mudguard.identify.knowledge import KnowledgeBase, OuiRegistry
from mudguard.identify.parse import (
    parse_client_hello,
    parse_dhcp,
    parse_http_request,
    parse_mdns,
    parse_server_certificates,
    parse_ssdp,
)

runner = CliRunner()
GATEWAY = "02:00:00:00:00:01"
MANUF = ("# test registry\n"
         "5C:CF:7F\tEspressi\tEspressif Inc.\n"
         "D0:73:D5\tLifiLabs\tLifi Labs Management Pty Ltd\n"
         "64:16:66\tNestLabs\tNest Labs Inc.\n"
         "70:B3:D5:12:30:00/36\tFooBar\tFoo Bar Widgets Co., Ltd.\n"
         "AC:DE:48\tPrivate\tPrivate\n")


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_knowledge()


@pytest.fixture(scope="module")
def oui() -> OuiRegistry:
    return OuiRegistry.from_manuf(MANUF)


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def write_pcap(path: Path, frames: list[bytes]) -> Path:
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh)
        for i, frame in enumerate(frames):
            writer.writepkt(frame, ts=1_700_000_000 + i)
    return path


def dhcp_request(src: str, options: list[Any]) -> bytes:
    return bytes(Ether(src=src, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
                 / UDP(sport=68, dport=67) / BOOTP(chaddr=mac(src))
                 / DHCP(options=[("message-type", "request"), *options, "end"]))


def mdns_announcement(src: str) -> bytes:
    instance = "Hue Bridge - 1A2B3C._hue._tcp.local"
    answer = [DNSRR(rrname="_hue._tcp.local", type="PTR", rdata=instance),
              DNSRR(rrname=instance, type="TXT",
                    rdata=[b"bridgeid=001788fffe1a2b3c", b"modelid=BSB002"])]
    return bytes(Ether(src=src, dst="01:00:5e:00:00:fb") / IP(src="192.0.2.10", dst="224.0.0.251")
                 / UDP(sport=5353, dport=5353) / DNS(qr=1, aa=1, qd=[], an=answer))


def ssdp_notify(src: str) -> bytes:
    text = (b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\n"
            b"SERVER: Linux UPnP/1.0 Sonos/70.3-35220 (ZPS1)\r\n"
            b"USN: uuid:RINCON_000E58A0B1C2::upnp:rootdevice\r\n\r\n")
    return bytes(Ether(src=src, dst="01:00:5e:7f:ff:fa")
                 / IP(src="192.0.2.11", dst="239.255.255.250")
                 / UDP(sport=1900, dport=1900) / text)


def client_hello(server_name: str) -> bytes:
    """A real TLS ClientHello, made by Python's ssl module into memory."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def server_first_flight(tmp_path: Path, organisation: str, common_name: str) -> bytes:
    """A real TLS 1.2 server answer (ServerHello, Certificate, ...) for a certificate with
    subject ``O=organisation, CN=common_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.load_cert_chain(cert_file, key_file)
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    s_in.write(client_hello(common_name))
    with pytest.raises(ssl.SSLWantReadError):
        server.do_handshake()
    return s_out.read()


def tcp(src: str, dst: str, sport: int, dport: int, payload: bytes, *, src_ip: str = "192.0.2.20",
        dst_ip: str = "198.51.100.7") -> bytes:
    return bytes(Ether(src=src, dst=dst) / IP(src=src_ip, dst=dst_ip)
                 / TCP(sport=sport, dport=dport, flags="PA") / payload)


# --- parsers ----------------------------------------------------------------------

def test_dhcp_parser_reads_hostname_vendor_class_and_prl() -> None:
    frame = dhcp_request("d0:73:d5:12:8e:30", [("hostname", b"LIFX-Bulb"),
                                               ("vendor_class_id", b"udhcp 1.30.1"),
                                               ("param_req_list", [1, 3, 6, 15])])
    payload = bytes(Ether(frame)[UDP].payload)
    assert parse_dhcp(payload) == [("hostname", "LIFX-Bulb"), ("vendor_class", "udhcp 1.30.1"),
                                   ("prl", "1,3,6,15")]


def test_mdns_parser_reads_service_instance_and_txt() -> None:
    payload = bytes(Ether(mdns_announcement("00:17:88:1a:2b:3c"))[UDP].payload)
    facts = parse_mdns(payload)
    assert ("mdns_service", "_hue._tcp") in facts
    assert ("mdns_instance", "Hue Bridge - 1A2B3C") in facts
    assert ("mdns_txt", "modelid=BSB002") in facts


def test_ssdp_parser_reads_server_and_usn() -> None:
    payload = bytes(Ether(ssdp_notify("00:0e:58:a0:b1:c2"))[UDP].payload)
    facts = dict(parse_ssdp(payload))
    assert facts["ssdp_server"] == "Linux UPnP/1.0 Sonos/70.3-35220 (ZPS1)"
    assert facts["ssdp_usn"].startswith("uuid:RINCON_")


def test_sni_from_a_real_client_hello() -> None:
    assert parse_client_hello(client_hello("use1-api.tplinkra.com")) == [
        ("sni", "use1-api.tplinkra.com")]


def test_certificate_organisation_from_a_real_tls12_server_answer(tmp_path: Path) -> None:
    flight = server_first_flight(tmp_path, "iRobot Corporation", "disc-prod.iot.irobotapi.com")
    facts = parse_server_certificates(flight)
    assert ("cert_org", "iRobot Corporation") in facts
    assert ("cert_cn", "disc-prod.iot.irobotapi.com") in facts


def test_http_user_agent_and_host() -> None:
    request = (b"GET /v1/ping HTTP/1.1\r\nHost: api.wyzecam.com:80\r\n"
               b"User-Agent: WyzeCam/4.36 (Linux)\r\n\r\n")
    assert parse_http_request(request) == [("user_agent", "WyzeCam/4.36 (Linux)"),
                                           ("http_host", "api.wyzecam.com")]


def test_oui_registry_reads_long_prefixes(oui: OuiRegistry) -> None:
    assert oui.organisation(mac("70:b3:d5:12:34:56")) == "Foo Bar Widgets Co., Ltd."
    assert oui.organisation(mac("70:b3:d5:12:44:56")) is None
    assert oui.organisation(mac("64:16:66:00:00:01")) == "Nest Labs Inc."


# --- decisions ----------------------------------------------------------------------

def test_module_maker_oui_is_a_platform_not_the_maker(kb: KnowledgeBase, oui: OuiRegistry) -> None:
    result = identify(mac("5c:cf:7f:07:ae:fb"), [Clue("hostname", "ESP_07AEFB", 3)], kb, oui)
    assert result.manufacturer is None
    assert result.platform == "Espressif (Wi-Fi module)"
    assert result.kind == "iot"
    assert result.confidence < 0.3


def test_domain_and_oui_agree_and_the_maker_range_gives_the_kind(
        kb: KnowledgeBase, oui: OuiRegistry) -> None:
    result = identify(mac("d0:73:d5:12:8e:30"), [Clue("dns_name", "v2.broker.lifx.co", 7)],
                      kb, oui)
    assert (result.manufacturer, result.kind) == ("LIFX", "bulb")
    dns = next(e for e in result.evidence if e.source == "dns")
    assert dns.packet == 7 and dns.supports == {"manufacturer": "LIFX", "kind": "bulb"}
    assert result.confidence > 0.6


def test_conflicting_clues_lower_the_confidence(kb: KnowledgeBase, oui: OuiRegistry) -> None:
    agree = identify(mac("d0:73:d5:12:8e:30"), [Clue("dns_name", "lifx.co", 1)], kb, oui)
    conflict = identify(mac("d0:73:d5:12:8e:30"), [Clue("dns_name", "lifx.co", 1),
                                                   Clue("hostname", "Sonos-Kitchen", 2)], kb, oui)
    assert conflict.manufacturer_confidence < agree.manufacturer_confidence


def test_mdns_model_txt_gives_the_model(kb: KnowledgeBase) -> None:
    result = identify(mac("00:17:88:1a:2b:3c"), [Clue("mdns_service", "_hue._tcp", 4),
                                                Clue("mdns_txt", "modelid=BSB002", 4)], kb)
    assert (result.manufacturer, result.model, result.kind) == (
        "Philips Hue (Signify)", "BSB002", "hub")


def test_randomised_mac_and_android_dhcp_is_a_trusted_phone(kb: KnowledgeBase) -> None:
    result = identify(mac("e6:ce:94:c8:64:43"),
                      [Clue("vendor_class", "android-dhcp-13", 2)], kb)
    assert result.kind == "phone"
    assert result.trusted_candidate
    assert result.evidence[0].source == "mac"


def test_a_video_uploader_is_a_camera(kb: KnowledgeBase, oui: OuiRegistry) -> None:
    traffic = TrafficSummary(packets_sent=20_000, bytes_sent=4_000_000, bytes_received=900_000,
                             seconds=3600.0, remote_addresses=1, first_packet=1)
    result = identify(mac("64:16:66:49:3e:cb"), [], kb, oui, traffic)
    # Home Assistant's registry lists 64:16:66 under its nest integration (brand Google)
    assert (result.manufacturer, result.kind) == ("Google", "camera")
    idle = identify(mac("64:16:66:49:3e:cb"), [], kb, oui,
                    TrafficSummary(packets_sent=50, bytes_sent=5000, seconds=3600.0))
    assert idle.kind != "camera"


def test_equal_evidence_for_two_kinds_names_neither(kb: KnowledgeBase) -> None:
    result = identify(mac("7c:f6:66:1f:a8:b6"), [Clue("dns_name", "a3.tuyaus.com", 9)], kb)
    assert result.kind is None
    assert {k for k, _ in result.kind_candidates} == {"plug", "bulb"}


def test_nothing_known_is_null_with_confidence_zero(kb: KnowledgeBase) -> None:
    result = identify(mac("00:00:00:00:00:01"), [], kb).to_json()
    assert (result["manufacturer"], result["kind"], result["confidence"]) == (None, None, 0.0)


def test_shipped_knowledge_base_compiles_and_names_only_known_kinds(kb: KnowledgeBase) -> None:
    assert "camera" in kb.kinds and kb.trusted_kinds == {"phone", "computer"}
    assert all(rule.claims or rule.pattern.groupindex for rule in kb.rules)


# --- the CLI on built captures ------------------------------------------------------

def home_capture(tmp_path: Path) -> Path:
    lifx, sonos, roomba = "d0:73:d5:12:8e:30", "00:0e:58:a0:b1:c2", "50:14:79:00:00:01"
    hello = client_hello("disc-prod.iot.irobotapi.com")
    flight = server_first_flight(tmp_path, "iRobot Corporation", "disc-prod.iot.irobotapi.com")
    frames = [
        dhcp_request(lifx, [("hostname", b"LIFX-Kitchen")]),
        bytes(Ether(src=GATEWAY, dst=lifx) / IP(src="192.0.2.1", dst="192.0.2.30")
              / UDP(sport=67, dport=68) / BOOTP(op=2)),
        ssdp_notify(sonos),
        tcp(roomba, GATEWAY, 40000, 443, hello),
        tcp(GATEWAY, roomba, 443, 40000, flight, src_ip="198.51.100.7", dst_ip="192.0.2.20"),
        tcp(roomba, GATEWAY, 40000, 443, b"\x17\x03\x03\x00\x10" + bytes(16)),
    ]
    return write_pcap(tmp_path / "home.pcap", frames)


def test_cli_without_device_prints_the_busiest_and_every_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUDGUARD_OUI_FILE", str(write_manuf(tmp_path)))
    result = runner.invoke(app, ["identify", str(home_capture(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["mac"] == "50:14:79:00:00:01"  # the busiest device: two frames sent
    found = {d["mac"]: d for d in document["devices"]}
    assert GATEWAY not in found  # it answers DHCP and forwards Internet traffic
    assert (found["50:14:79:00:00:01"]["manufacturer"], found["50:14:79:00:00:01"]["kind"]) == (
        "iRobot", "vacuum")
    sources = {e["source"]: e for e in found["50:14:79:00:00:01"]["evidence"]}
    assert sources["tls_sni"]["packet"] == 4 and sources["tls_certificate"]["packet"] == 4
    assert (found["00:0e:58:a0:b1:c2"]["manufacturer"], found["00:0e:58:a0:b1:c2"]["kind"]) == (
        "Sonos", "speaker")
    assert (found["d0:73:d5:12:8e:30"]["manufacturer"], found["d0:73:d5:12:8e:30"]["kind"]) == (
        "LIFX", "bulb")


def write_manuf(tmp_path: Path) -> Path:
    path = tmp_path / "manuf"
    path.write_text(MANUF)
    return path


def test_cli_with_device_prints_that_device(tmp_path: Path) -> None:
    result = runner.invoke(app, ["identify", str(home_capture(tmp_path)), "--device",
                                 "00:0E:58:A0:B1:C2", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {"manufacturer", "kind", "confidence", "evidence", "model", "mac",
            "trusted_candidate"} <= set(document)
    assert "devices" not in document
    ssdp = next(e for e in document["evidence"] if e["source"] == "ssdp")
    assert ssdp["packet"] == 3 and ssdp["supports"]["manufacturer"] == "Sonos"


def test_cli_errors_exit_1_with_a_message(tmp_path: Path) -> None:
    capture = home_capture(tmp_path)
    absent = runner.invoke(app, ["identify", str(capture), "--device", "02:aa:bb:cc:dd:ee",
                                 "--json"])
    assert absent.exit_code == 1 and "does not appear in the capture" in absent.output
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    unreadable = runner.invoke(app, ["identify", str(junk), "--json"])
    assert unreadable.exit_code == 1 and "not a pcap or pcapng file" in unreadable.output
    missing = runner.invoke(app, ["identify", str(tmp_path / "nope.pcap")])
    assert missing.exit_code == 1 and "no such file" in missing.output


def test_cli_on_the_smartercoffee_setup_capture(corpus: Path) -> None:
    capture = corpus / "pcap" / "smartercoffee" / "Setup-A-1-STA.pcap"
    result = runner.invoke(app, ["identify", str(capture), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["mac"] == "5c:cf:7f:07:ae:fb"
    assert document["manufacturer"] is None  # Espressif made the Wi-Fi chip, not the machine
    hostname = next(e for e in document["evidence"] if "hostname" in e["says"])
    assert hostname["packet"] == 3 and "ESP_07AEFB" in hostname["says"]
    assert not document["trusted_candidate"]


def test_identify_core_imports_no_io_modules() -> None:
    import subprocess
    import sys

    code = ("import sys\nbefore = set(sys.modules)\n"
            "import mudguard.identify.parse, mudguard.identify.knowledge, "
            "mudguard.identify.decide\n"
            "print(' '.join(sorted(set(sys.modules) - before)))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    forbidden = ("asyncio", "socket", "sqlite3", "subprocess", "nftables", "pyroute2", "httpx",
                 "mudguard.profile", "mudguard.store")
    assert [m for m in loaded if m.startswith(forbidden)] == []


def test_mdns_host_names_and_srv_targets_are_device_names(kb: KnowledgeBase) -> None:
    records = [DNSRRSRV(rrname="Roomba-3176C0._http._tcp.local", port=8009,
                        target="Roomba-3176C0.local"),
               DNSRR(rrname="Roomba-3176C0.local", type="A", rdata="192.0.2.40")]
    payload = bytes(DNS(qr=1, aa=1, qd=[], an=records))
    facts = parse_mdns(payload)
    assert ("mdns_host", "Roomba-3176C0") in facts
    result = identify(mac("02:00:00:00:00:09"), [Clue(f, v, 1) for f, v in facts], kb)
    assert result.manufacturer == "iRobot"


def test_an_oui_alone_never_proposes_trust(kb: KnowledgeBase) -> None:
    registry = OuiRegistry.from_manuf("E4:5F:01\tRaspberr\tRaspberry Pi Trading Ltd\n")
    result = identify(mac("e4:5f:01:c3:64:86"), [Clue("mdns_query", "_ipp._tcp", 5)], kb,
                      registry)
    assert result.manufacturer == "Raspberry Pi"
    assert not result.trusted_candidate


def test_oui_registry_keeps_the_last_entry_and_non_ascii_names() -> None:
    registry = OuiRegistry.from_manuf("00:11:22\tOld\tOld Name\n"
                                      "00:11:22\tNew\tNouvelle Société\n"
                                      "00:11:23\tNew\tNouvelle Société\n"
                                      "# comment\n00:11:24:5/36\tBad\n"
                                      "00:11:22:30/28\tSub\tSub Block\n")
    assert len(registry) == 3  # the /36 has too few digits for its length: skipped
    assert registry.organisation(mac("00:11:22:00:00:01")) == "Nouvelle Société"
    assert registry.organisation(mac("00:11:23:ff:ff:ff")) == "Nouvelle Société"
    assert registry.organisation(mac("00:11:22:3f:00:01")) == "Sub Block"
    assert registry.organisation(mac("00:11:21:00:00:01")) is None
    assert registry.organisation(mac("ff:ff:ff:ff:ff:ff")) is None
