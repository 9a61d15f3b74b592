"""Captures of every common link type are read as the Ethernet ones are: Linux cooked
(SLL, SLL2), raw IP, 802.11 behind radiotap; others are refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.profile.link import link_decoder
from tests.unit.test_profile_learn import (
    DEV4,
    DEV6,
    DEV_MAC,
    GW4,
    GW6,
    GW_MAC,
    NET4,
    aces,
    ether,
    home_frames,
    ip4,
    ip6,
    tcp,
)

runner = CliRunner()
BROADCAST = bytes.fromhex("ffffffffffff")


def write(path: Path, records: list[bytes], linktype: int, ng: bool = False) -> Path:
    with path.open("wb") as fh:
        writer = (dpkt.pcapng.Writer(fh, linktype=linktype) if ng
                  else dpkt.pcap.Writer(fh, linktype=linktype))
        for i, record in enumerate(records):
            writer.writepkt(record, ts=1_700_000_000 + i * 0.01)
    return path


def learned(tmp_path: Path, capture: Path, *device: str) -> tuple[list[Any], str]:
    out = tmp_path / f"{capture.stem}.json"
    result = runner.invoke(app, ["profile", "learn", str(capture), "-o", str(out), "-q",
                                 *device])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["mud", "check", str(out)]).exit_code == 0
    document = json.loads(out.read_text())
    check = runner.invoke(app, ["profile", "check", str(capture), "--mud", str(out), "--json",
                                "-q", *device])
    assert (check.exit_code, json.loads(check.stdout)) == (0, []), check.output
    return sorted(aces(document), key=lambda a: json.dumps(a, sort_keys=True)), result.output


def _kind(frame: bytes) -> int:
    """Linux packet type of a frame seen on the gateway: outgoing, broadcast, multicast,
    to the gateway itself, or to another host."""
    src, dst = frame[6:12], frame[0:6]
    if src == bytes.fromhex(GW_MAC.replace(":", "")):
        return 4
    if dst == BROADCAST:
        return 1
    if dst[0] & 1:
        return 2
    return 0 if dst == bytes.fromhex(GW_MAC.replace(":", "")) else 3


def sll(frame: bytes) -> bytes:
    return (_kind(frame).to_bytes(2, "big") + b"\x00\x01\x00\x06" + frame[6:12] + b"\x00\x00"
            + frame[12:14] + frame[14:])


def sll2(frame: bytes) -> bytes:
    return (frame[12:14] + b"\x00\x00" + b"\x00\x00\x00\x02" + b"\x00\x01"
            + bytes((_kind(frame), 6)) + frame[6:12] + b"\x00\x00" + frame[14:])


def radiotap(frame: bytes, protected: bool = False) -> bytes:
    """The frame as an 802.11 data frame to the access point (ToDS) behind radiotap."""
    header = b"\x00\x00\x08\x00\x00\x00\x00\x00"
    flags = 0x01 | (0x40 if protected else 0)
    bssid = bytes.fromhex("020000000099")
    wifi = (bytes((0x08, flags)) + b"\x00\x00" + bssid + frame[6:12] + frame[0:6] + b"\x10\x00")
    return header + wifi + b"\xaa\xaa\x03\x00\x00\x00" + frame[12:14] + frame[14:]


def capture_frames() -> list[bytes]:
    """The hand-made home, with the device's DNS queries before the answers (a cooked
    capture names only the sender's MAC: a receiver is known once it has spoken)."""
    query = dpkt.udp.UDP(sport=40053, dport=53, ulen=8)
    return [ether(DEV_MAC, GW_MAC, ip4(DEV4, GW4, query, 17)),
            ether(DEV_MAC, GW_MAC, ip6(DEV6, GW6, query, 17), v6=True), *home_frames()]


@pytest.mark.parametrize(("linktype", "convert"), [(113, sll), (276, sll2), (127, radiotap)])
def test_link_types_learn_what_ethernet_learns(tmp_path: Path, linktype: int,
                                               convert: Any) -> None:
    frames = capture_frames()
    ethernet = write(tmp_path / "eth.pcap", frames, 1)
    other = write(tmp_path / f"link{linktype}.pcap", [convert(f) for f in frames], linktype)
    expected, _ = learned(tmp_path, ethernet, "--device", DEV_MAC)
    found, _ = learned(tmp_path, other, "--device", DEV_MAC)
    assert found == expected


def test_pcapng_cooked_capture(tmp_path: Path) -> None:
    frames = capture_frames()
    expected, _ = learned(tmp_path, write(tmp_path / "eth.pcap", frames, 1), "--device", DEV_MAC)
    found, _ = learned(tmp_path, write(tmp_path / "sll.pcapng", [sll(f) for f in frames], 113,
                                       ng=True), "--device", DEV_MAC)
    assert found == expected


def test_raw_ip_capture_chooses_the_device_by_address(tmp_path: Path) -> None:
    """No MACs at all: the device is named by address, or found as the one address in
    every flow."""
    frames = home_frames()
    v4 = [f for f in frames if f[12:14] == b"\x08\x00"]
    raw = write(tmp_path / "raw.pcap", [f[14:] for f in frames], 101)
    found, _ = learned(tmp_path, raw, "--device", DEV4)
    expected, _ = learned(tmp_path, write(tmp_path / "eth4.pcap", v4, 1), "--device", DEV_MAC)
    strip = [m for _, m in expected]
    assert [m for _, m in found if "ipv4" in m] == strip
    single = [ether(DEV_MAC, GW_MAC, ip4(DEV4, f"203.0.113.{i}", tcp(50000 + i, 443,
                                                                    dpkt.tcp.TH_SYN), 6))
              for i in range(1, 4)]
    alone, _ = learned(tmp_path, write(tmp_path / "one.pcap", [f[14:] for f in single], 101))
    assert len(alone) == 6


def test_encrypted_wifi_frames_are_named(tmp_path: Path) -> None:
    frames = [ether(DEV_MAC, GW_MAC, ip4(DEV4, NET4, tcp(50000, 443, dpkt.tcp.TH_SYN), 6))]
    records = [radiotap(frames[0]), radiotap(frames[0], protected=True)]
    _, output = learned(tmp_path, write(tmp_path / "wifi.pcap", records, 127),
                        "--device", DEV_MAC)
    assert "1 encrypted 802.11 data frames skipped" in " ".join(output.split())


def test_unsupported_link_type_is_named(tmp_path: Path) -> None:
    capture = write(tmp_path / "usb.pcap", [b"\x00" * 40], 220)
    result = runner.invoke(app, ["profile", "learn", str(capture), "-o",
                                 str(tmp_path / "o.json"), "-q"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "link type 220 (USB Linux mmapped) is not supported" in text
    assert "Linux cooked SLL (113)" in text


@settings(max_examples=300, deadline=None)
@given(linktype=st.sampled_from([0, 101, 105, 113, 127, 192, 228, 229, 276]),
       data=st.binary(max_size=120))
def test_link_decoders_never_raise_on_hostile_bytes(linktype: int, data: bytes) -> None:
    decoder = link_decoder(linktype)
    assert decoder is not None
    frame = decoder.ethernet(data)
    assert frame is None or (len(frame) >= 14 and frame[12:14] in (b"\x08\x00", b"\x86\xdd"))


def test_check_table_is_capped(tmp_path: Path) -> None:
    """Thousands of deviating ports: the table shows the first 200 and says how many more."""
    from tests.unit.test_profile_flows import dhcp_answer, mud_file

    frames = [dhcp_answer()] + [
        ether(DEV_MAC, GW_MAC, ip4(DEV4, NET4, tcp(port, 443, dpkt.tcp.TH_SYN), 6))
        for port in range(40000, 40300)]
    capture = write(tmp_path / "many.pcap", frames, 1)
    mud = mud_file(tmp_path / "none.json", [{"ipv4": {"protocol": 17}}], [])
    result = runner.invoke(app, ["profile", "check", str(capture), "--device", DEV_MAC,
                                 "--mud", str(mud), "-q"])
    assert result.exit_code == 1
    assert "and 100 more" in result.stdout
