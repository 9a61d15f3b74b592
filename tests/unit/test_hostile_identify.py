"""``mudguard identify`` on hostile input: malformed packets, giant names, junk bytes."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.identify.capture import load_knowledge
from mudguard.identify.decide import Clue, identify
from mudguard.identify.parse import (
    MAX_TEXT,
    clean_text,
    parse_client_hello,
    parse_dhcp,
    parse_dns_query,
    parse_http_request,
    parse_lldp,
    parse_mdns,
    parse_server_certificates,
    parse_ssdp,
)
from tests.unit.test_identify import dhcp_request, write_pcap

runner = CliRunner()
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
PARSERS = (parse_dhcp, parse_mdns, parse_dns_query, parse_ssdp, parse_http_request, parse_lldp,
           parse_client_hello, parse_server_certificates)
JUNK_NAME = b"\x1b[31mEVIL\x1b[0m\x00\r\n\xff\xfe\xe2\x80\xaeevil" + b"A" * 300


def test_junk_dhcp_hostname_is_escaped_and_capped() -> None:
    frame = dhcp_request("02:11:22:33:44:55", [("hostname", JUNK_NAME[:255]),
                                               ("vendor_class_id", b"\x00" * 255)])
    facts = parse_dhcp(frame[42:])
    assert facts, "the options must still be read"
    for _field, value in facts:
        assert len(value) <= MAX_TEXT
        assert not CONTROL.search(value)
    hostname = dict(facts)["hostname"]
    assert hostname.startswith("\\x1b[31mEVIL\\x1b[0m\\x00\\x0d\\x0a")
    assert "\\u202e" in hostname


def test_clean_text_escapes_control_and_bidi_characters() -> None:
    assert clean_text("a\x07b\u202ec\x9b") == "a\\x07b\\u202ec\\x9b"
    assert len(clean_text("x" * 10_000)) == MAX_TEXT


def test_mdns_pointer_loop_and_truncated_records_give_nothing() -> None:
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0)
    loop = header + b"\xc0\x0c" + struct.pack("!HHIH", 12, 1, 0, 2) + b"\xc0\x0c"
    assert parse_mdns(loop) == []
    truncated = header + b"\x04_hue\x04_tcp\x05local\x00" + struct.pack("!HHIH", 12, 1, 0, 500)
    assert parse_mdns(truncated) == []


def test_giant_txt_record_is_bounded() -> None:
    header = struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0)
    strings = b"".join(b"\xff" + b"md=" + b"Z" * 252 for _ in range(200))
    record = (b"\x03dev\x04_hap\x04_tcp\x05local\x00"
              + struct.pack("!HHIH", 16, 1, 0, len(strings) & 0xFFFF) + strings)
    facts = parse_mdns(header + record)
    assert len(facts) <= 32
    assert all(len(value) <= MAX_TEXT for _, value in facts)


def test_tls_record_claiming_more_than_it_has() -> None:
    assert parse_client_hello(b"\x16\x03\x01\xff\xff\x01\x00\xff\xff" + b"\x00" * 40) == []
    assert parse_server_certificates(b"\x16\x03\x03\x00\x0a\x0b\x00\x00\x06\x00\x00\x03\x00"
                                     b"\x00\x03abc") == []


def test_certificate_with_junk_der_gives_nothing() -> None:
    body = b"\x00\x00\x08" + b"\x00\x00\x05" + b"\x30\x03\x02\x01\x01"
    message = b"\x0b" + len(body).to_bytes(3, "big") + body
    assert parse_server_certificates(b"\x16\x03\x03" + struct.pack("!H", len(message))
                                     + message) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parsers_never_raise_on_random_bytes(data: bytes) -> None:
    for parser in PARSERS:
        for field, value in parser(data):
            assert isinstance(field, str) and len(value) <= MAX_TEXT
            assert not CONTROL.search(value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["hostname", "dns_name", "mdns_txt", "user_agent",
                                           "sni", "ssdp_server", "vendor_class", "prl"]),
                          st.text(max_size=200)), max_size=20))
def test_decision_never_raises_and_evidence_is_bounded(pairs: list[tuple[str, str]]) -> None:
    kb = load_knowledge()
    clues = [Clue(f, clean_text(v), i) for i, (f, v) in enumerate(pairs)]
    result = identify(b"\x02\x00\x00\x00\x00\x01", clues, kb).to_json()
    assert 0.0 <= result["confidence"] <= 1.0
    assert len(result["evidence"]) <= 48
    json.dumps(result)


def test_cli_survives_a_capture_of_broken_frames(tmp_path: Path) -> None:
    device = "02:11:22:33:44:55"
    good = dhcp_request(device, [("hostname", JUNK_NAME[:255])])
    broken = [
        good[:20],                      # cut inside the IP header
        good[:14] + b"\x41" + good[15:],  # IHL 4 bytes: below the minimum
        good[:34] + good[34:40],        # cut inside UDP
        good[:300],                     # DHCP cut before the options
        b"\x00" * 13,                   # shorter than an Ethernet header
        bytes.fromhex("0180c200000e021122334455" "88cc") + b"\x0a\xff" + b"x" * 40,  # LLDP lies
        good,
    ]
    capture = write_pcap(tmp_path / "broken.pcap", broken)
    result = runner.invoke(app, ["identify", str(capture), "--device", device, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    says = [e["says"] for e in document["evidence"]]
    assert any("EVIL" in text for text in says)
    assert not any(CONTROL.search(text) for text in says)
    assert "\x1b" not in result.stdout


def test_a_device_flooding_names_and_addresses_stays_bounded(tmp_path: Path) -> None:
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    from mudguard.identify.capture import MAX_CLUES, MAX_NAMES, MAX_REMOTES, scan_capture

    device = "02:11:22:33:44:66"
    frames = [bytes(Ether(src=device, dst="02:00:00:00:00:01")
                    / IP(src="192.0.2.9", dst=f"198.51.{100 + i // 250}.{i % 250 + 1}")
                    / UDP(sport=40000, dport=53) / DNS(qd=[DNSQR(qname=f"n{i}.example.com")]))
              for i in range(600)]
    scan = scan_capture(write_pcap(tmp_path / "flood.pcap", frames))
    found = scan.devices[bytes.fromhex(device.replace(":", ""))]
    assert len(found.clues) == MAX_CLUES
    assert len(found.names) <= MAX_NAMES and len(found.remotes) == MAX_REMOTES
    result = runner.invoke(app, ["identify", str(tmp_path / "flood.pcap"), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["kind"] in ("phone", "computer")  # many destinations
    assert len(document["evidence"]) <= 48


HIDDEN = ("\u061c", "\u00ad", "\u2060", "\u2064", "\u206a", "\U000e0041", "\ufff9",
          "\u180e", "\ud800")


def test_every_invisible_or_format_character_is_written_out() -> None:
    # the Arabic letter mark reorders text like U+202E; tag characters carry hidden
    # text; a word joiner or soft hyphen hides a split: none reaches the owner as is
    for hidden in HIDDEN:
        shown = clean_text(f"Ap{hidden}ple")
        assert hidden not in shown and shown.startswith("Ap\\") and shown.endswith("ple"), \
            (hidden, shown)
    assert clean_text("Café Łódź 東芝") == "Café Łódź 東芝"  # letters stay letters


def test_a_stored_record_shows_device_strings_cleaned() -> None:
    from mudguard.identify.record import IdentityRecord
    from mudguard.portal._identified import identified_view

    stored = {"manufacturer": "Acme\u202e", "manufacturer_confidence": 0.9, "kind": None,
              "kind_confidence": 0.0, "model": "X\u2066", "platform": None,
              "evidence": [{"field": "sni", "value": "gnp.\u202eexe.example\U000e0041",
                            "supports": {"manufacturer": "Ac\u061cme"}, "weight": 0.5}]}
    record = IdentityRecord.from_json(stored)
    assert record is not None
    view = identified_view(record)
    assert view is not None
    shown = [view.maker, record.model, *(c.value for c in view.clues),
             *(arg for c in view.clues for _, arg in c.supports)]
    for text in shown:
        assert text is not None
        assert not any(h in text for h in (*HIDDEN, "\u202e", "\u2066")), text
