"""How long does adding or revoking one device's key take, end to end, as the home grows?

One operation = rewrite the wpa_psk_file atomically (temp, fsync, rename, fsync dir)
+ RELOAD_WPA_PSK on the real hostapd 2.10 (driver=none). hostapd derives the PMK
(PBKDF2, 4096 rounds) of every passphrase line on each reload, so the file form
matters: passphrase lines vs 64-hex PMK lines (``psk_file_line(entry, ssid=...)``).
Baseline in the same run: a control-socket PING round trip.

Run as root: ``.venv/bin/python bench/bench_keys_reload.py``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mudguard.keys.core import PskEntry, render_psk_file
from mudguard.keys.hostapd import HostapdControl, write_atomic

SSID = "mgk-bench"
SIZES = (1, 100, 1000, 3000)
REPEAT = 5


def entries(count: int) -> list[PskEntry]:
    return [PskEntry(keyid=f"dev-{i:05d}", mac=f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:"
                     f"{i & 255:02x}", passphrase=f"bench-passphrase-{i:06d}", vlan=i % 4000)
            for i in range(count)]


def timed(action: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mgk-bench-") as tmp:
        directory = Path(tmp)
        psk = directory / "psk"
        write_atomic(psk, render_psk_file(entries(1)))
        conf = directory / "hostapd.conf"
        conf.write_text(f"interface=mgkbench0\ndriver=none\nctrl_interface={directory}/ctrl\n"
                        f"ssid={SSID}\nwpa=2\nwpa_key_mgmt=WPA-PSK\nrsn_pairwise=CCMP\n"
                        f"wpa_psk_file={psk}\n")
        ns = "mgk-bench"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "hostapd", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ctrl_path = directory / "ctrl" / "mgkbench0"
            deadline = time.monotonic() + 10
            while not ctrl_path.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            with HostapdControl(ctrl_path, timeout=120) as ctrl:
                ping = timed(ctrl.ping, 50)
                print(f"baseline: control-socket PING round trip {ping:.3f} ms\n")
                print(f"{'keys':>6} {'form':>10} {'write ms':>9} {'reload ms':>10} "
                      f"{'total ms':>9} {'x PING':>8}")
                for size in SIZES:
                    keys = entries(size)
                    for form in ("passphrase", "pmk"):
                        text = render_psk_file(keys, ssid=SSID if form == "pmk" else None)
                        write = timed(lambda text=text: write_atomic(psk, text), REPEAT)
                        reload = timed(ctrl.reload_wpa_psk, 3 if size > 500 else REPEAT)
                        total = write + reload
                        print(f"{size:>6} {form:>10} {write:>9.2f} {reload:>10.2f} "
                              f"{total:>9.2f} {total / ping:>8.0f}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            subprocess.run(["ip", "netns", "del", ns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
