"""``mudguard device forget`` revokes the device's WiFi key the way the ``keys`` commands
and the daemon write the key file: with ``MUDGUARD_SSID`` set, every remaining line keeps
its PMK form (hostapd would otherwise run PBKDF2 for each line on every reload)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from mudguard.devices.service import DeviceService
from mudguard.keys.core import parse_psk_file
from mudguard.keys.ring import KeyRing
from mudguard.keys.service import KeyFiles, KeyManager
from mudguard.store import Store

SSID = "mgi-home"
GONE, KEPT = "02:00:5e:00:53:0a", "02:00:5e:00:53:0b"


def test_device_forget_keeps_the_pmk_form_of_the_key_file(tmp_path: Path) -> None:
    db, keys, psk = tmp_path / "mudguard.db", tmp_path / "keys.db", tmp_path / "wpa_psk"
    with Store(db) as store:
        service = DeviceService(store=store)
        for mac in (GONE, KEPT):
            service.observe(mac=mac, ip=None)
    manager = KeyManager(KeyRing(keys), KeyFiles(psk_file=psk, pmk_ssid=SSID))
    gone = manager.issue(mac=GONE, now=time.time())
    kept = manager.issue(mac=KEPT, now=time.time())
    pmk_line = re.compile(rf"^keyid={kept.keyid} .*\b[0-9a-f]{{64}}$", re.MULTILINE)
    assert pmk_line.search(psk.read_text())

    env = {**os.environ, "MUDGUARD_KEYS_DB": str(keys), "MUDGUARD_PSK_FILE": str(psk),
           "MUDGUARD_SSID": SSID}
    env.pop("MUDGUARD_HOSTAPD_CTRL", None)
    done = subprocess.run([sys.executable, "-m", "mudguard", "device", "forget", GONE,
                           "--db", str(db)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    text = psk.read_text()
    assert [e.keyid for e in parse_psk_file(text)] == [kept.keyid]
    assert gone.keyid not in text
    assert pmk_line.search(text), text  # still the PMK, never the passphrase
    assert kept.entry.passphrase not in text
