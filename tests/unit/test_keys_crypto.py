"""WPA2 key derivation against published vectors and two real over-the-air handshakes."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import pytest

from mudguard.keys.capture import CaptureError, eapol_observations, read_handshakes
from mudguard.keys.core import (
    ONBOARDING_MAC,
    EapolObservation,
    PskEntry,
    eapol_mic,
    parse_eapol_key,
    pmk_from_passphrase,
    ptk_from_pmk,
)
from mudguard.keys.core import _prf_sha1 as prf_sha1
from mudguard.keys.handshake import (
    find_handshakes,
    handshake_matches,
    identify_handshakes,
    identify_key,
)

DECOYS = ["12345679", "dictionarx", "password", "Harkonen", "linksys-key", "abcd-efgh-jkmn-pqrs"]


def entries(real: str) -> list[PskEntry]:
    out = [PskEntry(keyid=f"decoy-{i}", mac=f"02:00:00:00:00:{i:02x}", passphrase=p)
           for i, p in enumerate(DECOYS)]
    out.insert(3, PskEntry(keyid="the-one", mac=ONBOARDING_MAC, passphrase=real, vlan=7))
    return out


# IEEE 802.11-2020 Annex J.4.2 (PSK mapping) test vectors.
@pytest.mark.parametrize(("passphrase", "ssid", "pmk"), [
    ("password", "IEEE", "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"),
    ("ThisIsAPassword", "ThisIsASSID",
     "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"),
])
def test_pmk_matches_ieee_vectors(passphrase: str, ssid: str, pmk: str) -> None:
    assert pmk_from_passphrase(passphrase, ssid).hex() == pmk


def test_prf_matches_ieee_vector() -> None:
    # IEEE 802.11 Annex J.3.2, PRF test case 1 (HMAC-SHA1 based PRF-512).
    out = prf_sha1(b"\x0b" * 20, b"prefix", b"Hi There", 64)
    assert out.hex() == ("bcd4c650b30b9684951829e0d75f9d54b862175ed9f00606e17d8da35402ffee"
                         "75df78c3d31e0f889f012120c0862beb67753e7439ae242edb8373698356cf5a")


def test_real_handshake_harkonen(corpus: Path) -> None:
    handshakes = read_handshakes(corpus / "wifi" / "wpa2.eapol.cap")
    found = identify_handshakes(handshakes, "Harkonen", entries("12345678"))
    assert len(found) == 1  # one message 2 (message 4 carries no SNonce)
    hs = found[0].handshake
    assert (hs.aa, hs.spa) == ("00:14:6c:7e:40:80", "00:13:46:fe:32:0c")
    assert hs.mic_frame.version == 2 and hs.akm == 2  # HMAC-SHA1 MIC, AKM PSK
    assert hs.replay_checked and found[0].entry.keyid == "the-one"
    assert identify_key(hs, "Harkonen", entries("12345678")) == found[0].entry
    assert identify_handshakes(handshakes, "harkonen", entries("12345678")) == []  # SSID salt


def test_real_handshakes_linksys_three_exchanges(corpus: Path) -> None:
    handshakes = read_handshakes(corpus / "wifi" / "wpa2-psk-linksys.cap")
    # Three 4-way exchanges (frames 50/51, 89/90, 339/340); the second's message 2
    # has the Secure bit set (a re-key), which must not hide it.
    found = identify_handshakes(handshakes, "linksys", entries("dictionary"))
    assert [r.entry.keyid for r in found] == ["the-one"] * 3
    assert len({r.handshake.anonce for r in found}) == 3
    assert all(r.handshake.replay_checked and r.correction is None for r in found)


def test_real_captures_without_message_1(corpus: Path, tmp_path: Path) -> None:
    # The same real exchanges with every message 1 dropped: message 3 gives the ANonce.
    for name, ssid, real, count in (("wpa2.eapol.cap", "Harkonen", "12345678", 1),
                                    ("wpa2-psk-linksys.cap", "linksys", "dictionary", 3)):
        path = tmp_path / name
        with path.open("wb") as handle:
            writer = dpkt.pcap.Writer(handle, linktype=dpkt.pcap.DLT_EN10MB)
            for obs in eapol_observations(corpus / "wifi" / name):
                if parse_eapol_key(obs.eapol).message != 1:
                    macs = bytes.fromhex((obs.dst + obs.src).replace(":", ""))
                    writer.writepkt(macs + struct.pack("!H", 0x888E) + obs.eapol, ts=obs.ts)
        found = identify_handshakes(read_handshakes(path), ssid, entries(real))
        assert [(r.entry.keyid, r.handshake.pairing) for r in found] == \
            [("the-one", "M2+M3")] * count


def test_tampered_mic_or_nonce_matches_nothing(corpus: Path) -> None:
    hs = read_handshakes(corpus / "wifi" / "wpa2.eapol.cap")[0]
    pmk = pmk_from_passphrase("12345678", "Harkonen")
    assert handshake_matches(hs, pmk)
    raw = bytearray(hs.mic_frame.raw)
    raw[90] ^= 0x01  # a MIC bit
    bad = parse_eapol_key(bytes(raw))
    assert not handshake_matches(type(hs)(hs.aa, hs.spa, hs.anonce, bad), pmk)
    other_anonce = bytes([hs.anonce[0] ^ 1]) + hs.anonce[1:]
    assert not handshake_matches(type(hs)(hs.aa, hs.spa, other_anonce, hs.mic_frame), pmk)


def test_mic_versions() -> None:
    kck, frame = bytes(range(16)), b"\x01\x03" + bytes(200)
    assert len({eapol_mic(kck, frame, v) for v in (1, 2, 3)}) == 3
    assert all(len(eapol_mic(kck, frame, v)) == 16 for v in (1, 2, 3))
    # AES-CMAC: RFC 4493 example 2 (16-byte message).
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    msg = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert eapol_mic(key, msg, 3).hex() == "070a16b46b4d4144f79bdd9dd04a287c"


def test_sha256_kdf_gives_a_384_bit_ptk() -> None:
    ptk = ptk_from_pmk(bytes(32), b"\x02" * 6, b"\x04" * 6, b"\x01" * 32, b"\x03" * 32,
                       sha256=True)
    assert len(ptk) == 48
    assert ptk != ptk_from_pmk(bytes(32), b"\x02" * 6, b"\x04" * 6, b"\x01" * 32, b"\x03" * 32)[:48]


def test_hostile_eapol_frames_are_skipped() -> None:
    junk = [b"", b"\x01", b"\x02\x03\xff\xff" + bytes(95), b"\x02\x00\x00\x5f" + bytes(95),
            b"\x02\x03\x00\x5f" + b"\x07" + bytes(94), bytes(400)]
    observations = [EapolObservation("02:00:00:00:00:01", "02:00:00:00:00:02", j) for j in junk]
    assert find_handshakes(observations) == []


def _ethernet_capture(src: Path, dst: Path) -> None:
    """Re-encapsulate the capture's EAPOL frames in Ethernet (what a wired AP port shows)."""
    with dst.open("wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=dpkt.pcap.DLT_EN10MB)
        for obs in eapol_observations(src):
            macs = bytes.fromhex((obs.dst + obs.src).replace(":", ""))
            frame = macs + struct.pack("!H", 0x888E) + obs.eapol
            writer.writepkt(frame, ts=0)


def test_ethernet_capture_identifies_too(corpus: Path, tmp_path: Path) -> None:
    eth = tmp_path / "eth.pcap"
    _ethernet_capture(corpus / "wifi" / "wpa2-psk-linksys.cap", eth)
    found = identify_handshakes(read_handshakes(eth), "linksys", entries("dictionary"))
    assert len(found) == 3


def test_capture_without_eapol_has_no_handshake(corpus: Path) -> None:
    pcap = next((corpus / "pcap" / "smartercoffee").iterdir())
    assert read_handshakes(pcap) == []


@pytest.mark.parametrize("content", [b"", b"not a capture at all", b"\xd4\xc3\xb2\xa1" + bytes(8)])
def test_garbage_capture_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError):
        read_handshakes(path)


def test_truncated_capture_is_a_clear_error(corpus: Path, tmp_path: Path) -> None:
    data = (corpus / "wifi" / "wpa2-psk-linksys.cap").read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: len(data) // 2 + 7])
    # The frames before the cut are still read (the first two exchanges), no crash.
    assert len(identify_handshakes(read_handshakes(path), "linksys", entries("dictionary"))) == 2


def test_pmk_form_psk_file_identifies_too(corpus: Path) -> None:
    from mudguard.keys.core import parse_psk_file, render_psk_file

    text = render_psk_file(entries("12345678"), ssid="Harkonen")
    assert "12345678" not in text and "password" not in text
    parsed = parse_psk_file(text)
    hs = read_handshakes(corpus / "wifi" / "wpa2.eapol.cap")[0]
    found = identify_key(hs, "Harkonen", parsed)
    assert found is not None and found.keyid == "the-one" and found.vlan == 7


@pytest.mark.parametrize("link", ["802.11", "radiotap", "prism", "avs", "ppi", "ethernet"])
def test_real_frames_under_every_link_type(corpus: Path, tmp_path: Path, link: str) -> None:
    # The linksys capture's own EAPOL frames, re-wrapped as each link type shows them.
    from tests.wpa_frames import LINKTYPES, wrap, write_pcap

    frames = [(obs.ts, wrap(link, obs.src, obs.dst, obs.eapol, bssid="00:0b:86:c2:a4:85"))
              for obs in eapol_observations(corpus / "wifi" / "wpa2-psk-linksys.cap")]
    path = write_pcap(tmp_path / "c.pcap", LINKTYPES[link], frames)
    found = identify_handshakes(read_handshakes(path), "linksys", entries("dictionary"))
    assert [r.entry.keyid for r in found] == ["the-one"] * 3
