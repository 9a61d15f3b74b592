"""The pure key core: passphrases, hostapd lines, QR payloads, binding rule, control text."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mudguard.keys.core import (
    ONBOARDING_MAC,
    PASSPHRASE_ALPHABET,
    BindingOutcome,
    DeviceFrameError,
    KeyFormatError,
    KeyRecord,
    PskEntry,
    WifiCredentials,
    decide_connection,
    generate_passphrase,
    normalise_mac,
    parse_ctrl_event,
    parse_psk_file,
    parse_sae_password_line,
    parse_sta_reply,
    parse_wifi_qr,
    psk_file_line,
    render_psk_file,
    render_sae_password_file,
    sae_password_line,
    validate_keyid,
    validate_passphrase,
    wifi_qr_payload,
)

SECRET = "abcd-efgh-jkmn-pqrs-tuvw"


def entry(keyid: str = "dev-1", mac: str = "02:00:00:00:00:01", vlan: int = 0,
          passphrase: str = SECRET) -> PskEntry:
    return PskEntry(keyid=keyid, mac=mac, vlan=vlan, passphrase=passphrase)


# --- passphrases ----------------------------------------------------------------------


def test_generated_passphrases_are_long_readable_and_distinct() -> None:
    seen = {generate_passphrase() for _ in range(300)}
    assert len(seen) == 300
    for passphrase in seen:
        assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){4}", passphrase)
        random_part = passphrase.replace("-", "")
        assert len(random_part) >= 16
        assert set(random_part) <= set(PASSPHRASE_ALPHABET)
        assert not set(random_part) & set("01oil")
        validate_passphrase(passphrase, sae=True)


def test_every_alphabet_character_is_used() -> None:
    used = set("".join(generate_passphrase() for _ in range(200)).replace("-", ""))
    assert used == set(PASSPHRASE_ALPHABET)


def test_too_few_groups_refused() -> None:
    with pytest.raises(KeyFormatError):
        generate_passphrase(groups=3)


@pytest.mark.parametrize("bad", ["short", "x" * 64, "tab\there-ok", "new\nline-key",
                                 " leading-space", "trailing-space ", "caf\u00e9-passphrase"])
def test_bad_passphrases_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        validate_passphrase(bad)
    assert bad.strip() not in str(info.value)


def test_sae_refuses_pipe_but_psk_accepts_it() -> None:
    validate_passphrase("pass|word-ok")
    with pytest.raises(KeyFormatError):
        validate_passphrase("pass|word-ok", sae=True)


@pytest.mark.parametrize("keyid", ["", "has space", "x" * 32, "semi;colon", "a=b"])
def test_bad_key_ids_refused(keyid: str) -> None:
    with pytest.raises(KeyFormatError):
        validate_keyid(keyid)


@pytest.mark.parametrize("text", ["02:00:00:00:00:0A", "02-00-00-00-00-0a", "02000000000a",
                                  " 02:00:00:00:00:0a "])
def test_mac_forms_normalise(text: str) -> None:
    assert normalise_mac(text) == "02:00:00:00:00:0a"


@pytest.mark.parametrize("text", ["02:00:00:00:00", "zz:00:00:00:00:00", "02:00:00:00:00:00:00",
                                  "", "02:00:00:00:00:0a; rm -rf"])
def test_bad_macs_refused(text: str) -> None:
    with pytest.raises(KeyFormatError):
        normalise_mac(text)


def test_entry_repr_hides_the_passphrase() -> None:
    assert SECRET not in repr(entry())
    assert SECRET not in repr(WifiCredentials(ssid="home", passphrase=SECRET))


# --- wpa_psk_file ---------------------------------------------------------------------


def test_psk_line_format() -> None:
    assert psk_file_line(entry()) == f"keyid=dev-1 02:00:00:00:00:01 {SECRET}"
    assert psk_file_line(entry(vlan=20)) == f"keyid=dev-1 vlanid=20 02:00:00:00:00:01 {SECRET}"
    onboarding = entry(keyid="onb-1", mac=ONBOARDING_MAC)
    assert psk_file_line(onboarding) == f"keyid=onb-1 00:00:00:00:00:00 {SECRET}"
    assert onboarding.is_onboarding


def test_pmk_form_line_carries_the_ieee_vector_pmk() -> None:
    line = psk_file_line(entry(passphrase="password"), ssid="IEEE")
    pmk = "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    assert line == f"keyid=dev-1 02:00:00:00:00:01 {pmk}"
    raw = parse_psk_file(line + "\n")[0]
    assert raw.pmk("any SSID").hex() == pmk
    with pytest.raises(KeyFormatError, match="raw PSK"):
        sae_password_line(raw)
    with pytest.raises(KeyFormatError, match="raw PSK"):
        wifi_qr_payload(WifiCredentials(ssid="IEEE", passphrase=pmk))


def test_pmk_form_lines_fit_hostapd_buffer_up_to_25_character_key_ids() -> None:
    # 6 + 25 (keyid=ID) + 12 ( vlanid=4094) + 18 ( MAC) + 65 ( PMK) = 126
    fits = entry(keyid="k" * 25, vlan=4094, passphrase="p" * 63)
    assert len(psk_file_line(fits, ssid="s" * 32)) == 126
    with pytest.raises(KeyFormatError, match="at most 126"):
        psk_file_line(entry(keyid="k" * 26, vlan=4094), ssid="s")


def test_psk_line_longer_than_hostapd_buffer_refused() -> None:
    long_entry = entry(keyid="k" * 31, vlan=4094, passphrase="p" * 63)
    with pytest.raises(KeyFormatError, match="hostapd reads at most 126"):
        psk_file_line(long_entry)


def test_psk_file_round_trip_sorted_and_commented() -> None:
    entries = [entry("dev-b", "02:00:00:00:00:02", 30, "second-key-with space"),
               entry("dev-a"), entry("onb-c", ONBOARDING_MAC)]
    text = render_psk_file(entries)
    assert text.startswith("#")
    assert [ln.split(" ")[0] for ln in text.splitlines()[1:]] == [
        "keyid=dev-a", "keyid=dev-b", "keyid=onb-c"]
    assert parse_psk_file(text) == sorted(entries, key=lambda e: e.keyid)


def test_duplicate_key_ids_refused() -> None:
    with pytest.raises(KeyFormatError, match="duplicate"):
        render_psk_file([entry(), entry(mac="02:00:00:00:00:02")])


@pytest.mark.parametrize(("text", "reason"), [
    ("keyid=a 02:00:00:00:00:01\n", "needs a MAC and a passphrase"),
    ("keyid=a wps=1 02:00:00:00:00:01 secretsecret\n", "unknown field"),
    ("keyid=a vlanid=x 02:00:00:00:00:01 secretsecret\n", "vlanid must be a number"),
    ("02:00:00:00:00:01 secretsecret\n", "no keyid"),
    ("keyid=a 02:00:00:00:00:01 short\n", "8..63"),
    ("keyid=a nonsense secretsecret\n", "not a MAC"),
    ("# ok\n\nkeyid=a 02:00:00:00:00:01 " + "x" * 120 + "\n", "longer than 126"),
])
def test_malformed_psk_file_errors_name_the_line(text: str, reason: str) -> None:
    with pytest.raises(KeyFormatError, match=reason) as info:
        parse_psk_file(text)
    assert "line" in str(info.value)
    assert "secretsecret" not in str(info.value)


# --- sae_password ---------------------------------------------------------------------


def test_sae_line_format_puts_id_last() -> None:
    assert sae_password_line(entry(vlan=20)) == f"{SECRET}|mac=02:00:00:00:00:01|vlanid=20|id=dev-1"
    assert sae_password_line(entry(keyid="onb-2", mac=ONBOARDING_MAC)) == f"{SECRET}|id=onb-2"


def test_sae_file_round_trip() -> None:
    entries = [entry("dev-a"), entry("dev-b", "02:00:00:00:00:02", 7), entry("onb", ONBOARDING_MAC)]
    lines = render_sae_password_file(entries).splitlines()
    assert [parse_sae_password_line(ln) for ln in lines] == entries


@pytest.mark.parametrize("line", ["justapassword", "secretsecret|foo=1|id=a",
                                  "secretsecret|mac=02:00:00:00:00:01", "short|id=a",
                                  "secretsecret|vlanid=x|id=a", "secretsecret|id=a|id=b"])
def test_malformed_sae_lines_refused(line: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_sae_password_line(line)


# --- WiFi QR payloads -----------------------------------------------------------------


def test_qr_payload_plain() -> None:
    creds = WifiCredentials(ssid="Home", passphrase=SECRET)
    assert wifi_qr_payload(creds) == f"WIFI:T:WPA;S:Home;P:{SECRET};;"


def test_qr_payload_escapes_every_special_character() -> None:
    creds = WifiCredentials(ssid='a\\b;c,d"e:f', passphrase='p;a,s"s:w\\ord', hidden=True)
    payload = wifi_qr_payload(creds)
    assert payload == 'WIFI:T:WPA;S:a\\\\b\\;c\\,d\\"e\\:f;P:p\\;a\\,s\\"s\\:w\\\\ord;H:true;;'
    assert parse_wifi_qr(payload) == creds


@pytest.mark.parametrize("payload", ["WIFI:T:WPA;P:secretsecret;;", "HTTP:x", "WIFI:S:abc",
                                     "WIFI:S:abc\\", "WIFI:" + "S:x;" * 200])
def test_bad_qr_payloads_refused(payload: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_wifi_qr(payload)


def test_qr_payload_refuses_bad_ssid() -> None:
    with pytest.raises(KeyFormatError):
        wifi_qr_payload(WifiCredentials(ssid="x" * 33, passphrase=SECRET))


# --- the binding rule -----------------------------------------------------------------


def records() -> list[KeyRecord]:
    return [KeyRecord(entry=entry("dev-a", "02:00:00:00:00:0a"), device="camera",
                      created_at=1.0, bound_at=1.0),
            KeyRecord(entry=entry("onb-b", ONBOARDING_MAC, vlan=5), device="new plug",
                      created_at=2.0)]


def test_own_key_from_own_mac_is_accepted_silently() -> None:
    decision = decide_connection(records(), "dev-a", "02-00-00-00-00-0A", now=10.0)
    assert decision.outcome is BindingOutcome.ACCEPT
    assert decision.record is not None and decision.record.device == "camera"
    assert decision.event is None


def test_another_devices_key_is_a_mismatch_event_without_policy() -> None:
    decision = decide_connection(records(), "dev-a", "02:00:00:00:00:66", now=10.0)
    assert decision.outcome is BindingOutcome.MISMATCH
    assert decision.event == {"event": "wifi_key_mac_mismatch", "mac": "02:00:00:00:00:66",
                              "keyid": "dev-a", "key_mac": "02:00:00:00:00:0a",
                              "device": "camera"}


def test_onboarding_key_binds_to_first_mac_and_keeps_its_vlan() -> None:
    decision = decide_connection(records(), "onb-b", "02:00:00:00:00:0b", now=10.0)
    assert decision.outcome is BindingOutcome.BIND
    assert decision.record is not None
    assert decision.record.entry.mac == "02:00:00:00:00:0b"
    assert decision.record.entry.vlan == 5
    assert decision.record.bound_at == 10.0
    assert decision.event is not None and decision.event["event"] == "wifi_key_bound"


@pytest.mark.parametrize("mac", [ONBOARDING_MAC, "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff"])
def test_zero_or_group_station_mac_never_binds(mac: str) -> None:
    for keyid in ("onb-b", "dev-a"):
        decision = decide_connection(records(), keyid, mac, now=10.0)
        assert decision.outcome is BindingOutcome.UNKNOWN and decision.record is None
        assert decision.event is not None
        assert decision.event["event"] == "wifi_station_mac_invalid"


@pytest.mark.parametrize("keyid", [None, "revoked", ""])
def test_unknown_key_is_an_event(keyid: str | None) -> None:
    decision = decide_connection(records(), keyid, "02:00:00:00:00:0c", now=10.0)
    assert decision.outcome is BindingOutcome.UNKNOWN
    assert decision.record is None and decision.event is not None


# --- hostapd control text: replies recorded from the real hostapd 2.10 ----------------

# Events: AP-ENABLED/AP-DISABLED recorded from hostapd 2.10 (driver=none) after
# DISABLE/ENABLE. AP-STA-CONNECTED cannot be produced without a radio; the text is
# hostapd 2.10's format string (src/ap/sta_info.c: AP_STA_CONNECTED "%s%s%s%s",
# MAC, " ip_addr=..", " keyid=..", " dpp_pkhash=..").
RECORDED_EVENTS = ["<3>AP-DISABLED ", "<3>AP-ENABLED "]
STA_CONNECTED = "<3>AP-STA-CONNECTED 02:00:00:00:00:0b keyid=onb-b"
STA_CONNECTED_IP = "<3>AP-STA-CONNECTED 02:00:00:00:00:0b ip_addr=192.0.2.10 keyid=dev-a"
STA_REPLY = ("02:00:00:00:00:0a\nflags=[AUTH][ASSOC][AUTHORIZED][WMM]\naid=1\n"
             "capability=0x0\nlisten_interval=0\nsupported_rates=82 84 8b 96\n"
             "timeout_next=NULLFUNC POLL\nkeyid=dev-a\nrx_packets=3\n")


@pytest.mark.parametrize("text", RECORDED_EVENTS)
def test_recorded_events_parse(text: str) -> None:
    event = parse_ctrl_event(text)
    assert event.level == 3 and event.name == text[3:].strip() and event.mac is None


def test_sta_connected_event_parses_mac_and_keyid() -> None:
    event = parse_ctrl_event(STA_CONNECTED)
    assert (event.name, event.mac, event.params) == (
        "AP-STA-CONNECTED", "02:00:00:00:00:0b", {"keyid": "onb-b"})
    event = parse_ctrl_event(STA_CONNECTED_IP)
    assert event.params == {"ip_addr": "192.0.2.10", "keyid": "dev-a"}


@pytest.mark.parametrize("text", ["AP-STA-CONNECTED 02:00:00:00:00:0b", "<x>EVENT", "", "<3>"])
def test_malformed_events_refused(text: str) -> None:
    with pytest.raises(DeviceFrameError):
        parse_ctrl_event(text)


def test_sta_reply_parses() -> None:
    info = parse_sta_reply(STA_REPLY)
    assert info is not None
    assert info.mac == "02:00:00:00:00:0a" and info.keyid == "dev-a"
    assert info.params["aid"] == "1"


@pytest.mark.parametrize("text", ["", "FAIL\n"])
def test_empty_or_fail_sta_reply_is_none(text: str) -> None:
    assert parse_sta_reply(text) is None


def test_core_imports_no_io_modules() -> None:
    code = ("import sys\nbefore = set(sys.modules)\nimport mudguard.keys.core\n"
            "print(' '.join(sorted(set(sys.modules) - before)))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    forbidden = ("asyncio", "socket", "sqlite3", "subprocess", "pyroute2", "dpkt", "pyrad",
                 "segno", "_socket")
    assert [m for m in loaded if m.split(".")[0] in forbidden] == []
