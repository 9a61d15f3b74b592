"""The real hostapd 2.10 (driver=none: no radio, a real daemon and control socket).

hostapd runs inside a network namespace of our own (prefix mgk) and touches no
interface; the tests talk to its control socket like hostapd_cli does.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mudguard.keys.core import (
    ONBOARDING_MAC,
    PskEntry,
    parse_psk_file,
    render_psk_file,
    sae_password_line,
)
from mudguard.keys.hostapd import HostapdControl, HostapdError, HostapdEvents, write_atomic
from mudguard.keys.ring import KeyRing
from mudguard.keys.service import KeyFiles, KeyManager

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace"),
    pytest.mark.skipif(shutil.which("hostapd") is None, reason="hostapd is not installed"),
]

IFNAME = "mgkwlan0"


@dataclass
class Hostapd:
    dir: Path
    psk_file: Path
    ctrl: Path
    proc: subprocess.Popen[bytes]
    log: Path


def _config(directory: Path, psk_file: Path, extra: str = "",
            key_mgmt: str = "WPA-PSK") -> Path:
    conf = directory / "hostapd.conf"
    conf.write_text(
        f"interface={IFNAME}\ndriver=none\nctrl_interface={directory / 'ctrl'}\n"
        f"ssid=mgk-test\nwpa=2\nwpa_key_mgmt={key_mgmt}\nrsn_pairwise=CCMP\n"
        f"wpa_psk_file={psk_file}\n{extra}")
    return conf


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"mgk-hap-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _start(netns: str, conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(["ip", "netns", "exec", netns, "hostapd", str(conf)],
                                stdout=out, stderr=subprocess.STDOUT)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"hostapd exited: {log.read_text()[-2000:]}")
        time.sleep(0.02)
    assert path.exists(), "hostapd never opened its control socket"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def hostapd(tmp_path: Path, netns: str) -> Iterator[Hostapd]:
    psk_file = tmp_path / "wpa_psk"
    entries = [PskEntry(keyid="dev-a", mac="02:00:00:00:00:0a", passphrase="first-device-key",
                        vlan=10),
               PskEntry(keyid="onb-b", mac=ONBOARDING_MAC, passphrase="one time key here")]
    write_atomic(psk_file, render_psk_file(entries))
    log = tmp_path / "hostapd.log"
    proc = _start(netns, _config(tmp_path, psk_file), log)
    try:
        _wait_for(tmp_path / "ctrl" / IFNAME, proc, log)
        yield Hostapd(tmp_path, psk_file, tmp_path / "ctrl" / IFNAME, proc, log)
    finally:
        _stop(proc)


def test_ping_status_and_empty_station_list(hostapd: Hostapd) -> None:
    with HostapdControl(hostapd.ctrl) as ctrl:
        assert ctrl.ping()
        status = ctrl.status()
        assert status["state"] == "ENABLED"
        assert status["ssid[0]"] == "mgk-test"
        assert status["num_sta[0]"] == "0"
        assert ctrl.all_sta() == []
        assert ctrl.sta("02:00:00:00:00:0a") is None


def test_reload_accepts_our_file_and_fails_on_a_malformed_one(hostapd: Hostapd) -> None:
    with HostapdControl(hostapd.ctrl) as ctrl:
        many = [PskEntry(keyid=f"dev-{i:03d}", mac=f"02:00:00:00:01:{i:02x}",
                         passphrase=f"generated key {i:03d}", vlan=i % 4000)
                for i in range(200)]
        write_atomic(hostapd.psk_file, render_psk_file(many))
        ctrl.reload_wpa_psk()
        hostapd.psk_file.write_text("keyid=x 02:00:00:00:00:01 short\n")
        with pytest.raises(HostapdError, match="FAIL"):
            ctrl.reload_wpa_psk()
        assert ctrl.ping()  # a refused reload leaves hostapd running
    assert "Invalid PSK" in hostapd.log.read_text()


def test_deauthenticate_and_bad_mac_never_reach_hostapd(hostapd: Hostapd) -> None:
    with HostapdControl(hostapd.ctrl) as ctrl:
        ctrl.deauthenticate("02-00-00-00-00-0A")
        with pytest.raises(Exception, match="not a MAC"):
            ctrl.deauthenticate("02:00:00:00:00:0a\nRELOAD_WPA_PSK")


def test_events_arrive_on_an_attached_socket(hostapd: Hostapd) -> None:
    with HostapdEvents(hostapd.ctrl) as events, HostapdControl(hostapd.ctrl) as ctrl:
        assert ctrl.request("DISABLE").strip() == "OK"
        event = events.next_event(3.0)
        assert event is not None and event.name == "AP-DISABLED"
        assert ctrl.request("ENABLE").strip() == "OK"
        event = events.next_event(3.0)
        assert event is not None and event.name == "AP-ENABLED"
        assert events.next_event(0.2) is None


def test_manager_issue_and_revoke_against_real_hostapd(hostapd: Hostapd) -> None:
    files = KeyFiles(psk_file=hostapd.psk_file, ctrl_path=hostapd.ctrl)
    manager = KeyManager(KeyRing(hostapd.dir / "keys.db"), files)
    keys = [manager.issue(mac=f"02:00:00:00:02:{i:02x}", vlan=20 + i, now=float(i))
            for i in range(5)]
    onboarding = manager.issue(mac=None, now=9.0)
    manager.revoke(keys[2].keyid)
    on_disk = {e.keyid: e for e in parse_psk_file(hostapd.psk_file.read_text())}
    assert set(on_disk) == {k.keyid for k in keys if k is not keys[2]} | {onboarding.keyid}
    for key in keys:
        if key is not keys[2]:
            assert on_disk[key.keyid] == key.entry
    with HostapdControl(hostapd.ctrl) as ctrl:
        assert ctrl.ping()


def test_stopped_hostapd_does_not_block_revocation(hostapd: Hostapd, netns: str) -> None:
    """With hostapd stopped, issue and revoke still change the file (the truth), and the
    restarted hostapd starts from it."""
    files = KeyFiles(psk_file=hostapd.psk_file, ctrl_path=hostapd.ctrl)
    manager = KeyManager(KeyRing(hostapd.dir / "keys.db"), files)
    kept = manager.issue(mac="02:00:00:00:03:01", now=1.0)
    gone = manager.issue(mac="02:00:00:00:03:02", now=1.0)
    _stop(hostapd.proc)
    assert not hostapd.ctrl.exists()
    manager.revoke(gone.keyid)
    added = manager.issue(mac="02:00:00:00:03:03", now=2.0)
    assert {e.keyid for e in parse_psk_file(hostapd.psk_file.read_text())} == {
        kept.keyid, added.keyid}
    log = hostapd.dir / "restart.log"
    proc = _start(netns, hostapd.dir / "hostapd.conf", log)
    try:
        _wait_for(hostapd.ctrl, proc, log)
        manager.revoke(added.keyid)  # and it is told again once it runs
        with HostapdControl(hostapd.ctrl) as ctrl:
            assert ctrl.ping()
    finally:
        _stop(proc)


def test_sae_password_lines_are_accepted_by_hostapd(tmp_path: Path, netns: str) -> None:
    """hostapd 2.10 reads WPA3 per-device passwords as sae_password= lines."""
    entries = [PskEntry(keyid="dev-a", mac="02:00:00:00:00:0a", passphrase="first-device-key",
                        vlan=10),
               PskEntry(keyid="onb-b", mac=ONBOARDING_MAC, passphrase="one time key here")]
    psk_file = tmp_path / "wpa_psk"
    write_atomic(psk_file, render_psk_file(entries))
    extra = "ieee80211w=2\n" + "".join(f"sae_password={sae_password_line(e)}\n" for e in entries)
    conf = _config(tmp_path, psk_file, extra, key_mgmt="SAE")
    log = tmp_path / "sae.log"
    proc = _start(netns, conf, log)
    try:
        _wait_for(tmp_path / "ctrl" / IFNAME, proc, log)
        with HostapdControl(tmp_path / "ctrl" / IFNAME) as ctrl:
            assert ctrl.status()["state"] == "ENABLED"
    finally:
        _stop(proc)
    assert "Invalid sae_password" not in log.read_text()


def test_pmk_form_file_is_accepted_and_holds_no_passphrase(hostapd: Hostapd) -> None:
    files = KeyFiles(psk_file=hostapd.psk_file, ctrl_path=hostapd.ctrl, pmk_ssid="mgk-test")
    manager = KeyManager(KeyRing(hostapd.dir / "keys.db"), files)
    keys = [manager.issue(mac=f"02:00:00:00:04:{i:02x}", vlan=i, now=float(i)) for i in range(20)]
    keys.append(manager.issue(mac=None, now=30.0))
    text = hostapd.psk_file.read_text()
    assert all(k.entry.passphrase not in text for k in keys)
    on_disk = {e.keyid: e for e in parse_psk_file(text)}
    for key in keys:
        assert on_disk[key.keyid].pmk("ignored") == key.entry.pmk("mgk-test")
    manager.revoke(keys[0].keyid)  # RELOAD_WPA_PSK accepted each time, or this raises
    with HostapdControl(hostapd.ctrl) as ctrl:
        assert ctrl.ping()


def test_hostapd_accepts_the_radius_key_configuration(tmp_path: Path, netns: str) -> None:
    """hostapd 2.10 takes the RADIUS path's lines (no psk file needed) and stays up.
    (It asks the server only when a station authenticates, which needs a radio.)"""
    from mudguard.keys.radius import hostapd_radius_config

    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    conf = tmp_path / "hostapd.conf"
    write_atomic(conf, (
        f"interface={IFNAME}\ndriver=none\nctrl_interface={tmp_path / 'ctrl'}\n"
        "ssid=mgk-test\nwpa=2\nwpa_key_mgmt=WPA-PSK\nrsn_pairwise=CCMP\n"
        + hostapd_radius_config("127.0.0.1", 18121, b"radius-secret")))
    log = tmp_path / "radius.log"
    proc = _start(netns, conf, log)
    try:
        _wait_for(tmp_path / "ctrl" / IFNAME, proc, log)
        with HostapdControl(tmp_path / "ctrl" / IFNAME) as ctrl:
            assert ctrl.status()["state"] == "ENABLED"
            config = ctrl.request("GET_CONFIG")
            assert "key_mgmt=WPA-PSK" in config
    finally:
        _stop(proc)
    assert "RADIUS Authentication server 127.0.0.1:18121" in log.read_text()
    assert "radius-secret" not in log.read_text()
