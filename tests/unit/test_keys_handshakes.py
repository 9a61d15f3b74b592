"""WPA handshakes as real captures hold them: every message pair, every link type,
WPA1/WPA2/PSK-SHA256, stale or missing message 1, SAE, several stations and APs.

Handshakes are built from known keys by tests/wpa_frames.py; Wireshark checks the
built frames independently (test_wireshark_verifies_the_built_handshakes).
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.keys.capture import CaptureError, read_capture, read_handshakes
from mudguard.keys.core import ONBOARDING_MAC, PskEntry, pmk_from_passphrase, render_psk_file
from mudguard.keys.handshake import (
    HandshakeKind,
    Identification,
    akm_suites,
    find_handshakes,
    identify_handshakes,
)
from tests.wpa_frames import (
    AP,
    LINKTYPES,
    STA,
    Exchange,
    avs,
    beacon,
    capture,
    dot11_data,
    radiotap,
    rsn_element,
    write_pcap,
    write_pcapng,
)

SSID, REAL = "Home", "correct horse battery"
DECOYS = ["correct horse batterz", "password", "Home-network", "12345678"]
runner = CliRunner()


def entries() -> list[PskEntry]:
    out = [PskEntry(keyid=f"decoy-{i}", mac=f"02:00:00:00:00:{i:02x}", passphrase=p)
           for i, p in enumerate(DECOYS)]
    out.insert(2, PskEntry(keyid="the-one", mac=ONBOARDING_MAC, passphrase=REAL))
    return out


def identify(path: Path, **kwargs: int) -> list[Identification]:
    return identify_handshakes(read_handshakes(path), SSID, entries(), **kwargs)


def messages(ex: Exchange, which: str, *, m4_snonce: bool = False,
             start: float = 100.0) -> list[tuple[float, str, str, bytes]]:
    frames = {"1": (ex.aa, ex.spa, ex.m1()), "2": (ex.spa, ex.aa, ex.m2()),
              "3": (ex.aa, ex.spa, ex.m3()), "4": (ex.spa, ex.aa, ex.m4(with_snonce=m4_snonce))}
    return [(start + 0.01 * i, *frames[n]) for i, n in enumerate(which)]


# --- every pairing, every descriptor version -------------------------------------------

PAIRS = {"12": "M1+M2", "23": "M2+M3", "34": "M3+M4", "14": "M1+M4"}


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("which", list(PAIRS))
def test_every_message_pair_identifies_the_key(tmp_path: Path, version: int,
                                               which: str) -> None:
    ex = Exchange(REAL, SSID, version=version)
    path = capture(tmp_path / "c.pcap", "802.11", messages(ex, which, m4_snonce=True))
    found = identify(path)
    assert [(r.entry.keyid, r.handshake.pairing) for r in found] == [("the-one", PAIRS[which])]
    assert found[0].handshake.replay_checked and found[0].correction is None
    assert (found[0].handshake.aa, found[0].handshake.spa) == (AP, STA)


def test_standard_message_4_carries_no_snonce(tmp_path: Path) -> None:
    # IEEE 802.11 12.7.6.5: message 4's nonce is zero, so M3+M4 (and M1+M4) hold no
    # SNonce and cannot be tested; with message 2 they can.
    ex = Exchange(REAL, SSID)
    assert read_handshakes(capture(tmp_path / "a.pcap", "802.11", messages(ex, "134"))) == []
    found = identify(capture(tmp_path / "b.pcap", "802.11", messages(ex, "234")))
    assert [r.handshake.pairing for r in found] == ["M2+M3"]


def test_message_2_is_told_from_message_4_by_its_key_data() -> None:
    ex = Exchange(REAL, SSID)
    from mudguard.keys.core import parse_eapol_key

    assert [parse_eapol_key(m).message for m in
            (ex.m1(), ex.m2(), ex.m3(), ex.m4(), ex.m4(with_snonce=True))] == [1, 2, 3, 4, 4]


# --- message 1 stale, missing, or counted up --------------------------------------------


def test_stale_message_1_minutes_before_still_pairs(tmp_path: Path) -> None:
    # The AP sent message 1 (counter 1), resent it (counter 2) unseen; the station answered
    # the copy 3 minutes later. Old pairing (same counter only) found nothing.
    ex = Exchange(REAL, SSID)
    path = capture(tmp_path / "c.pcap", "radiotap",
                   [(100.0, AP, STA, ex.m1()), (280.0, STA, AP, ex.m2(replay=2))])
    found = identify(path)
    assert [(r.entry.keyid, r.handshake.pairing) for r in found] == [("the-one", "M1+M2")]
    assert not found[0].handshake.replay_checked


def test_message_1_hours_before_is_not_paired(tmp_path: Path) -> None:
    ex = Exchange(REAL, SSID)
    path = capture(tmp_path / "c.pcap", "radiotap",
                   [(100.0, AP, STA, ex.m1()), (100.0 + 7200, STA, AP, ex.m2(replay=2))])
    assert read_handshakes(path) == []


def test_missing_message_1_with_several_stale_ones_around(tmp_path: Path) -> None:
    # Earlier attempts with other ANonces, then M2+M3 of the real exchange without its M1.
    ex = Exchange(REAL, SSID, replay=5)
    old = [(90.0 + i, AP, STA, ex.m1(replay=i, anonce=bytes([i]) * 32)) for i in range(1, 4)]
    path = capture(tmp_path / "c.pcap", "802.11", old + messages(ex, "234"))
    found = identify(path)
    assert [(r.entry.keyid, r.handshake.pairing, r.handshake.anonce) for r in found] == \
        [("the-one", "M2+M3", ex.anonce)]


def test_anonce_counted_up_between_copies_needs_a_nonce_correction(tmp_path: Path) -> None:
    # Some APs count the ANonce up in each resent message 1: the station answered a copy
    # whose ANonce is the seen one + 1 (little-endian), and no message 3 was captured.
    ex = Exchange(REAL, SSID, anonce=bytes(28) + (0x01FF).to_bytes(4, "little"))
    seen = ex.anonce[:28] + (0x01FE).to_bytes(4, "little")
    path = capture(tmp_path / "c.pcap", "802.11", [(100.0, AP, STA, ex.m1(anonce=seen)),
                                                     (101.0, STA, AP, ex.m2(replay=2))])
    found = identify(path)
    assert [(r.entry.keyid, r.correction) for r in found] == [("the-one", "little-endian +1")]
    assert identify(path, corrections=0) == []


# --- link types and file formats ---------------------------------------------------------


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
@pytest.mark.parametrize("link", list(LINKTYPES))
def test_every_link_type_and_file_format(tmp_path: Path, link: str, pcapng: bool) -> None:
    ex = Exchange(REAL, SSID)
    path = capture(tmp_path / "c.cap", link, messages(ex, "1234"), pcapng=pcapng)
    assert [r.entry.keyid for r in identify(path)] == ["the-one"]


def _variant(variant: str, src: str, dst: str, eapol: bytes) -> bytes:
    if variant == "fcs":
        return radiotap(dot11_data(src, dst, AP, eapol), fcs=True)
    if variant == "prism_big_endian":
        return struct.pack(">II", 0x44, 144) + bytes(136) + dot11_data(src, dst, AP, eapol)
    if variant == "avs_as_prism":  # some drivers put an AVS header under DLT 119
        return avs(dot11_data(src, dst, AP, eapol))
    return radiotap(dot11_data(src, dst, AP, eapol, **{variant: True}))


@pytest.mark.parametrize("variant", ["qos", "four_address", "fcs", "prism_big_endian",
                                     "avs_as_prism"])
def test_80211_frame_variants(tmp_path: Path, variant: str) -> None:
    ex = Exchange(REAL, SSID)
    frames = [(ts, _variant(variant, src, dst, eapol))
              for ts, src, dst, eapol in messages(ex, "12")]
    linktype = 119 if variant.endswith(("prism", "endian")) else 127
    path = write_pcap(tmp_path / "c.pcap", linktype, frames)
    assert [r.entry.keyid for r in identify(path)] == ["the-one"]


def test_protected_frames_are_not_read_as_eapol(tmp_path: Path) -> None:
    ex = Exchange(REAL, SSID)
    frames = [(ts, dot11_data(src, dst, AP, eapol, protected=True))
              for ts, src, dst, eapol in messages(ex, "12")]
    assert read_handshakes(write_pcap(tmp_path / "c.pcap", 105, frames)) == []


def test_pcapng_with_several_interfaces(tmp_path: Path) -> None:
    # An unsupported interface first (dpkt's reader took only the first one), radiotap
    # second, Ethernet third: frames of both supported interfaces are read.
    ex = Exchange(REAL, SSID)
    m = messages(ex, "1234")
    frames = [(0, 1.0, b"\x00" * 40),
              (1, m[0][0], radiotap(dot11_data(AP, STA, AP, m[0][3]))),
              (2, m[1][0], STA_TO_AP_ETH(m[1][3]))]
    path = write_pcapng(tmp_path / "c.pcapng", [147, 127, 1], frames)
    assert [(r.entry.keyid, r.handshake.pairing) for r in identify(path)] == \
        [("the-one", "M1+M2")]


def STA_TO_AP_ETH(eapol: bytes) -> bytes:
    from tests.wpa_frames import ethernet

    return ethernet(STA, AP, eapol, vlan=10)


def test_unsupported_link_type_is_a_clear_error(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "c.pcap", 147, [(1.0, b"\x00" * 40)])
    with pytest.raises(CaptureError, match="link type 147 is not supported"):
        read_handshakes(path)
    path = write_pcapng(tmp_path / "c.pcapng", [147], [(0, 1.0, b"\x00" * 40)])
    with pytest.raises(CaptureError, match="link type 147"):
        read_handshakes(path)


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.9])
def test_cut_or_hostile_pcapng_never_crashes(tmp_path: Path, cut: float) -> None:
    ex = Exchange(REAL, SSID)
    path = capture(tmp_path / "c.pcapng", "radiotap", messages(ex, "1234"), pcapng=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with contextlib.suppress(CaptureError):  # a cut block ends the capture, or is an error
        read_handshakes(path)
    shb = int.from_bytes(data[4:8], "little")
    epb = shb + int.from_bytes(data[shb + 4 : shb + 8], "little")
    path.write_bytes(data[: epb + 4] + b"\xff\xff\xff\x7f" + data[epb + 8 :])
    with pytest.raises(CaptureError, match="corrupt pcapng block"):
        read_handshakes(path)


# --- AKMs: WPA1, PSK-SHA256, SAE ----------------------------------------------------------


def test_akm_read_from_message_2_and_beacons(tmp_path: Path) -> None:
    assert akm_suites(rsn_element(6)) == (6,)
    ex = Exchange(REAL, SSID, version=1)
    hs = read_handshakes(capture(tmp_path / "a.pcap", "802.11", messages(ex, "12")))
    assert {h.akm for h in hs} == {2} and hs[0].kind is HandshakeKind.PSK
    ex3 = Exchange(REAL, SSID, version=3)
    m34 = messages(ex3, "34", m4_snonce=True)
    contents = read_capture(capture(tmp_path / "b.pcap", "802.11", m34,
                                    extra=[(1.0, beacon(AP, b"Home", 6))]))
    assert contents.ssids == {AP: {b"Home"}}
    assert {h.akm for h in contents.handshakes} == {6}  # message 4 has none: the beacon's


def test_sae_handshake_is_never_tried(tmp_path: Path) -> None:
    ex = Exchange(REAL, SSID, version=0)
    hs = read_handshakes(capture(tmp_path / "c.pcap", "802.11", messages(ex, "1234")))
    assert hs and {h.kind for h in hs} == {HandshakeKind.SAE}
    assert identify_handshakes(hs, SSID, entries()) == []


def test_ft_psk_is_not_a_psk_file_key() -> None:
    ex = Exchange(REAL, SSID, version=3, akm=4)
    from mudguard.keys.core import EapolObservation

    obs = [EapolObservation(AP, STA, ex.m1()), EapolObservation(STA, AP, ex.m2())]
    assert {h.kind for h in find_handshakes(obs)} == {HandshakeKind.OTHER}


# --- several stations and APs -------------------------------------------------------------


def _two_stations_two_aps(tmp_path: Path) -> Path:
    sta2, ap2 = "02:5a:00:00:00:03", "02:aa:00:00:00:09"
    one = Exchange(REAL, SSID)
    two = Exchange("Home-network", SSID, spa=sta2, anonce=b"\x07" * 32, snonce=b"\x08" * 32)
    elsewhere = Exchange(REAL, "Neighbour", aa=ap2)
    m = messages(one, "12") + messages(two, "23", start=200.0) + \
        messages(elsewhere, "12", start=300.0)
    beacons = [(1.0, radiotap(beacon(AP, b"Home"))), (2.0, radiotap(beacon(ap2, b"Neighbour")))]
    return capture(tmp_path / "c.pcap", "radiotap", m, extra=beacons)


def test_each_station_gets_its_own_key(tmp_path: Path) -> None:
    found = identify(_two_stations_two_aps(tmp_path))
    assert sorted((r.handshake.aa, r.handshake.spa, r.entry.keyid) for r in found) == [
        (AP, STA, "the-one"), (AP, "02:5a:00:00:00:03", "decoy-2")]


# --- the CLI --------------------------------------------------------------------------------


def _run(path: Path, psk: Path, *extra: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["keys", "identify", str(path), "--ssid", SSID,
                                 "--psk-file", str(psk), *extra])
    return result.exit_code, result.stdout, result.stderr


def test_cli_several_stations_and_an_ap_of_another_ssid(tmp_path: Path) -> None:
    psk = tmp_path / "psk"
    psk.write_text(render_psk_file(entries()))
    code, out, err = _run(_two_stations_two_aps(tmp_path), psk)
    assert code == 0, err
    assert out.split() == ["keyid=the-one", "keyid=decoy-2"]
    assert "announces SSID 'Neighbour', not 'Home'" in err
    assert "station 02:5a:00:00:00:03 with AP 02:aa:00:00:00:01: keyid=decoy-2 (M2+M3, WPA2)" \
        in err


def test_cli_pmk_lines_and_lines_without_keyid(tmp_path: Path) -> None:
    # hostapd accepts a line without keyid= and 64-hex PMK lines; identify reads both.
    pmk = pmk_from_passphrase(REAL, SSID).hex()
    psk = tmp_path / "psk"
    psk.write_text("# no key ids here\n02:00:00:00:00:01 password\n"
                   f"00:00:00:00:00:00 {pmk}\nkeyid=other 02:00:00:00:00:02 12345678\n")
    ex = Exchange(REAL, SSID)
    code, out, err = _run(capture(tmp_path / "c.pcap", "802.11", messages(ex, "23")), psk)
    assert code == 0, err
    assert out.strip() == "keyid= line=3"


def test_cli_sae_only_exits_3_and_says_why(tmp_path: Path) -> None:
    psk = tmp_path / "psk"
    psk.write_text(render_psk_file(entries()))
    ex = Exchange(REAL, SSID, version=0)
    code, out, err = _run(capture(tmp_path / "c.pcap", "802.11", messages(ex, "1234")), psk)
    assert code == 3 and out == ""
    assert "WPA3-SAE" in err and "cannot identify" in err
    help_text = runner.invoke(app, ["keys", "identify", "--help"]).stdout
    assert "3 the capture holds only WPA3-SAE" in " ".join(help_text.split())


def test_cli_decoys_only_exit_1(tmp_path: Path) -> None:
    psk = tmp_path / "psk"
    psk.write_text(render_psk_file([e for e in entries() if e.keyid != "the-one"]))
    ex = Exchange(REAL, SSID)
    code, out, err = _run(capture(tmp_path / "c.pcap", "prism", messages(ex, "1234")), psk)
    assert code == 1 and out == ""
    assert "none of the 4 keys matches" in err


def test_cli_nonce_corrections_option(tmp_path: Path) -> None:
    psk = tmp_path / "psk"
    psk.write_text(render_psk_file(entries()))
    ex = Exchange(REAL, SSID, anonce=bytes(28) + (0x1000).to_bytes(4, "big"))
    seen = ex.anonce[:28] + (0x0FFE).to_bytes(4, "big")
    path = capture(tmp_path / "c.pcap", "ppi", [(100.0, AP, STA, ex.m1(anonce=seen)),
                                                (101.0, STA, AP, ex.m2(replay=3))])
    code, out, err = _run(path, psk)
    assert code == 0 and out.strip() == "keyid=the-one"
    assert "ANonce corrected big-endian +2" in err
    assert _run(path, psk, "--nonce-corrections", "1")[0] == 1


# --- an independent check of the generator ---------------------------------------------------


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Wireshark)")
@pytest.mark.parametrize("version", [2, 3])
def test_wireshark_verifies_the_built_handshakes(tmp_path: Path, version: int) -> None:
    # Wireshark derives the PTK itself and shows the KCK only once message 2's MIC and
    # message 3's wrapped GTK check out: the generator's frames are real handshakes.
    ex = Exchange(REAL, SSID, version=version)
    path = capture(tmp_path / "c.pcap", "radiotap", messages(ex, "1234"),
                   extra=[(1.0, radiotap(beacon(AP, b"Home", ex.akm_suite)))])

    def kcks(passphrase: str) -> list[str]:
        out = subprocess.run(
            ["tshark", "-r", str(path), "-o", "wlan.enable_decryption:TRUE", "-o",
             f'uat:80211_keys:"wpa-pwd","{passphrase}:{SSID}"', "-T", "fields",
             "-e", "wlan.analysis.kck"], capture_output=True, text=True, check=True, timeout=60)
        return [line for line in out.stdout.split() if line]

    assert kcks(REAL) == [ex.kck.hex()]
    assert kcks(DECOYS[0]) == []


def test_a_flood_of_message_1_stays_bounded() -> None:
    # 5,000 messages 1 with fresh ANonces (a deauthentication flood), then the real
    # exchange: at most 8 ANonces are tried per station message, the real one first.
    from mudguard.keys.core import EapolObservation

    ex = Exchange(REAL, SSID, replay=9000)
    flood = [EapolObservation(AP, STA, ex.m1(replay=i, anonce=i.to_bytes(32, "big")),
                              ts=float(i) / 100) for i in range(1, 5001)]
    real = [EapolObservation(AP, STA, ex.m1(), ts=60.0),
            EapolObservation(STA, AP, ex.m2(), ts=60.1)]
    handshakes = find_handshakes(flood + real)
    assert len(handshakes) == 8 and handshakes[0].anonce == ex.anonce
    found = identify_handshakes(handshakes, SSID, entries())
    assert [(r.entry.keyid, r.handshake.replay_checked) for r in found] == [("the-one", True)]
