"""Key files on disk: atomic, 0600, crash-safe; the key ring; QR images read back."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from mudguard.keys.core import (
    ONBOARDING_MAC,
    KeyRecord,
    PskEntry,
    WifiCredentials,
    parse_psk_file,
    parse_wifi_qr,
    render_psk_file,
)
from mudguard.keys.hostapd import write_atomic
from mudguard.keys.qr import save_wifi_qr, wifi_qr_image
from mudguard.keys.ring import KeyRing, KeyRingError
from mudguard.keys.service import KeyFiles, KeyManager


def _entries(count: int) -> list[PskEntry]:
    return [PskEntry(keyid=f"dev-{i:03d}", mac=f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",
                     passphrase=f"passphrase-number-{i:04d}", vlan=i % 5) for i in range(count)]


def test_written_file_is_0600_and_exact(tmp_path: Path) -> None:
    path = tmp_path / "psk"
    text = render_psk_file(_entries(3))
    write_atomic(path, text)
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["psk"]  # no temporary left behind


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "psk"
    old = render_psk_file(_entries(2))
    write_atomic(path, old)

    def boom(_tmp: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, render_psk_file(_entries(1)), before_rename=boom)
    assert path.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["psk"]


def test_killed_mid_write_keeps_every_other_devices_key(tmp_path: Path) -> None:
    """SIGKILL the writer after its new file is complete but before the rename, and
    while the new file is only half written: the old file stays whole both times."""
    path = tmp_path / "psk"
    old = render_psk_file(_entries(50))
    write_atomic(path, old)
    for stage in ("half", "before_rename"):
        marker = tmp_path / f"{stage}.ready"
        script = textwrap.dedent(f"""
            import os, time
            from pathlib import Path
            from mudguard.keys import hostapd
            from mudguard.keys.core import PskEntry, render_psk_file
            text = render_psk_file([PskEntry(keyid="only", mac="02:00:00:00:00:01",
                                             passphrase="the-new-single-key")])
            marker = Path({str(marker)!r})
            if {stage!r} == "half":
                real_fdopen = os.fdopen
                class Half:
                    def __init__(self, f): self.f = f
                    def __enter__(self): return self
                    def __exit__(self, *a): self.f.close()
                    def write(self, data):
                        self.f.write(data[: len(data) // 2]); self.f.flush()
                        marker.write_text("x"); time.sleep(30)
                    def flush(self): pass
                    def fileno(self): return self.f.fileno()
                hostapd.os.fdopen = lambda fd, mode: Half(real_fdopen(fd, mode))
                hostapd.write_atomic(Path({str(path)!r}), text)
            else:
                def stall(tmp):
                    marker.write_text("x"); time.sleep(30)
                hostapd.write_atomic(Path({str(path)!r}), text, before_rename=stall)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script])
        try:
            deadline = time.monotonic() + 20
            while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            assert marker.exists(), "writer never reached the crash point"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        assert path.read_text() == old
        assert len(parse_psk_file(path.read_text())) == 50
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".psk.")]
        assert leftovers, "the crash left its temporary file (harmless, never read)"
        for leftover in leftovers:
            leftover.unlink()


# --- QR images ------------------------------------------------------------------------


@pytest.mark.parametrize("ssid", ["Home", 'Caf\u00e9 "Bar"; 2,4:GHz\\x'])
def test_png_qr_reads_back_with_zxing(tmp_path: Path, ssid: str) -> None:
    creds = WifiCredentials(ssid=ssid, passphrase="abcd-efgh-jkmn-pqrs-tuvw")
    path = tmp_path / "key.png"
    save_wifi_qr(creds, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    results = zxingcpp.read_barcodes(Image.open(path))
    assert len(results) == 1
    assert parse_wifi_qr(results[0].text) == creds


def test_svg_qr_renders_in_chromium_and_reads_back(tmp_path: Path) -> None:
    """The SVG through a real renderer (Debian's chromium), then zxing-cpp."""
    creds = WifiCredentials(ssid='Home "2,4";GHz', passphrase="abcd-efgh-jkmn-pqrs-tuvw")
    path = tmp_path / "key.svg"
    save_wifi_qr(creds, path)
    svg = path.read_text()
    assert svg == wifi_qr_image(creds, "svg").decode("ascii")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<path" in svg
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    shot = tmp_path / "shot.png"
    subprocess.run([str(chromium), "--headless", "--no-sandbox", "--disable-gpu",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=500,500",
                    f"--screenshot={shot}", path.as_uri()],
                   check=True, capture_output=True, timeout=60)
    results = zxingcpp.read_barcodes(Image.open(shot))
    assert len(results) == 1
    assert parse_wifi_qr(results[0].text) == creds


# --- the key ring and the manager without hostapd -------------------------------------


def test_ring_file_is_0600_and_refuses_duplicates(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.db")
    assert stat.S_IMODE(os.stat(tmp_path / "keys.db").st_mode) == 0o600
    first = KeyRecord(entry=_entries(1)[0], device="cam", created_at=1.0, bound_at=1.0)
    ring.add(first)
    with pytest.raises(KeyRingError, match="already exists"):
        ring.add(first)
    same_mac = KeyRecord(entry=PskEntry(keyid="other", mac=first.entry.mac,
                                        passphrase="another-passphrase"),
                         device="x", created_at=2.0)
    with pytest.raises(KeyRingError, match="already has a key"):
        ring.add(same_mac)
    assert ring.records() == [first]
    assert ring.by_mac(first.entry.mac.upper()) == first
    assert ring.by_mac(ONBOARDING_MAC) is None


def test_manager_issue_and_revoke_keep_others(tmp_path: Path) -> None:
    files = KeyFiles(psk_file=tmp_path / "psk", sae_file=tmp_path / "sae")
    manager = KeyManager(KeyRing(tmp_path / "keys.db"), files)
    a = manager.issue(mac="02:00:00:00:00:0a", vlan=10, device="camera", now=1.0)
    b = manager.issue(mac=None, now=2.0)
    c = manager.issue(mac="02-00-00-00-00-0C", now=3.0)
    on_disk = parse_psk_file(files.psk_file.read_text())
    assert {e.keyid for e in on_disk} == {a.keyid, b.keyid, c.keyid}
    assert b.entry.mac == ONBOARDING_MAC and b.keyid.startswith("onb-")
    assert stat.S_IMODE(files.sae_file.stat().st_mode) == 0o600  # type: ignore[union-attr]
    manager.revoke(a.keyid)
    remaining = parse_psk_file(files.psk_file.read_text())
    assert remaining == sorted([b.entry, c.entry], key=lambda e: e.keyid)
    assert a.entry.passphrase not in files.sae_file.read_text()  # type: ignore[union-attr]
    with pytest.raises(KeyRingError):
        manager.revoke(a.keyid)


def test_manager_refuses_a_second_key_for_one_mac_and_changes_nothing(tmp_path: Path) -> None:
    files = KeyFiles(psk_file=tmp_path / "psk")
    manager = KeyManager(KeyRing(tmp_path / "keys.db"), files)
    manager.issue(mac="02:00:00:00:00:0a", now=1.0)
    before = files.psk_file.read_text()
    with pytest.raises(KeyRingError):
        manager.issue(mac="02:00:00:00:00:0A", now=2.0)
    with pytest.raises(KeyRingError):
        manager.issue(mac="00:00:00:00:00:00", now=2.0)
    assert files.psk_file.read_text() == before


def test_key_files_from_env() -> None:
    files = KeyFiles.from_env({"MUDGUARD_PSK_FILE": "/x/psk", "MUDGUARD_SSID": "Home",
                               "MUDGUARD_HOSTAPD_CTRL": "/run/hostapd/wlan0"})
    assert files == KeyFiles(psk_file=Path("/x/psk"), ctrl_path=Path("/run/hostapd/wlan0"),
                             pmk_ssid="Home")
    assert KeyFiles.from_env({}).psk_file == Path("/var/lib/mudguard/hostapd.wpa_psk")
