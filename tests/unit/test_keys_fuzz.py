"""Hostile input to the key core never crashes it: a clear error or a valid result."""

from __future__ import annotations

import contextlib
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from mudguard.keys.core import (
    DeviceFrameError,
    EapolObservation,
    KeyFormatError,
    PskEntry,
    WifiCredentials,
    parse_ctrl_event,
    parse_eapol_key,
    parse_psk_file,
    parse_sae_password_line,
    parse_sta_reply,
    parse_wifi_qr,
    render_psk_file,
    wifi_qr_payload,
)
from mudguard.keys.handshake import find_handshakes

printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                    min_size=8, max_size=63).filter(lambda p: p == p.strip(" "))
keyids = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=25)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_psk_file_parser_never_crashes(text: str) -> None:
    try:
        entries = parse_psk_file(text)
    except KeyFormatError:
        return
    assert parse_psk_file(render_psk_file(entries)) == sorted(entries, key=lambda e: e.keyid)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(keyids, macs, printable, st.integers(0, 4094)), max_size=8,
                unique_by=lambda t: t[0]))
def test_any_valid_entries_round_trip(rows: list[tuple[str, str, str, int]]) -> None:
    entries = [PskEntry(keyid=k, mac=m, passphrase=p, vlan=v) for k, m, p, v in rows]
    try:
        text = render_psk_file(entries)
    except KeyFormatError as exc:
        assert "hostapd reads at most" in str(exc)  # only an over-long line may be refused
        return
    assert parse_psk_file(text) == sorted(entries, key=lambda e: e.keyid)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_sae_and_qr_parsers_never_crash(text: str) -> None:
    for parse in (parse_sae_password_line, parse_wifi_qr):
        with contextlib.suppress(KeyFormatError):
            parse(text)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=32).filter(lambda s: len(s.encode()) <= 32), printable,
       st.booleans())
def test_any_qr_credentials_round_trip(ssid: str, passphrase: str, hidden: bool) -> None:
    creds = WifiCredentials(ssid=ssid, passphrase=passphrase, hidden=hidden)
    try:
        payload = wifi_qr_payload(creds)
    except KeyFormatError:
        assert len(passphrase) == 64  # a raw-PSK-looking value is refused, nothing else
        return
    assert parse_wifi_qr(payload) == creds


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_eapol_parser_never_crashes(data: bytes) -> None:
    with contextlib.suppress(DeviceFrameError):
        parse_eapol_key(data)
    assert find_handshakes([EapolObservation("02:00:00:00:00:01", "02:00:00:00:00:02", data)]) \
        == []


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_control_text_parsers_never_crash(text: str) -> None:
    with contextlib.suppress(DeviceFrameError):
        parse_ctrl_event(text)
    with contextlib.suppress(KeyFormatError):
        parse_sta_reply(text)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 105, 119, 127, 163, 192]), st.binary(max_size=400),
       st.binary(max_size=200))
def test_link_layer_decoders_never_crash(linktype: int, header: bytes, eapol: bytes) -> None:
    # Any bytes in front of (and as) an EAPOL body: skipped or decoded, never an exception.
    from mudguard.keys.capture import _DECODERS

    for frame in (header, header + b"\xaa\xaa\x03\x00\x00\x00\x88\x8e" + eapol):
        _DECODERS[linktype](frame, 0.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=99, max_size=160),
                          st.floats(0, 1e6)), max_size=12))
def test_pairing_any_key_frames_never_crashes(frames: list[tuple[bool, bytes, float]]) -> None:
    ap, sta = "02:00:00:00:00:01", "02:00:00:00:00:02"
    observations = [EapolObservation(ap, sta, b"\x02\x03\x00\x5f\x02" + data[5:], ts=ts)
                    if from_ap else EapolObservation(sta, ap, b"\x02\x03" + data[2:], ts=ts)
                    for from_ap, data, ts in frames]
    for handshake in find_handshakes(observations):
        assert any(handshake.anonce) and any(handshake.snonce)
