"""How long does telling which device key a real WPA2 handshake used take, as the home grows?

Capture: the corpus's wpa2-psk-linksys.cap (499 frames, 3 exchanges). The real key
is last among N decoys (worst case). Two psk-file forms: passphrase lines (one
PBKDF2-SHA1, 4096 rounds, per candidate) and PMK lines (PTK + MIC only).
Baseline in the same run: tshark reading the same capture with an EAPOL filter.

Run: ``.venv/bin/python bench/bench_keys_identify.py``.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from bench_data import SMALL_CORPUS

from mudguard.keys.capture import read_handshakes
from mudguard.keys.core import PskEntry, identify_key, parse_psk_file, render_psk_file

CORPUS = SMALL_CORPUS
CAPTURE = CORPUS / "wifi" / "wpa2-psk-linksys.cap"
SSID, REAL = "linksys", "dictionary"


def timed(action: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def candidates(count: int) -> list[PskEntry]:
    keys = [PskEntry(keyid=f"dev-{i:05d}", mac=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}",
                     passphrase=f"decoy-passphrase-{i:06d}") for i in range(count - 1)]
    return [*keys, PskEntry(keyid="the-one", mac="02:00:00:ff:ff:ff", passphrase=REAL)]


def main() -> int:
    if shutil.which("tshark") is None:
        print("tshark is needed for the baseline")
        return 1
    tshark = timed(lambda: subprocess.run(["tshark", "-r", str(CAPTURE), "-Y", "eapol"],
                                          capture_output=True, check=True), 5)
    parse = timed(lambda: read_handshakes(CAPTURE), 20)
    print(f"baseline: tshark -Y eapol on the capture {tshark:.1f} ms; "
          f"mudguard reads its handshakes in {parse:.2f} ms ({parse / tshark:.3f}x)\n")
    handshake = read_handshakes(CAPTURE)[0]
    print(f"{'keys':>6} {'form':>10} {'identify ms':>12} {'per key ms':>11} {'x tshark':>9}")
    for count in (10, 100, 1000):
        for form in ("passphrase", "pmk"):
            entries = candidates(count)
            if form == "pmk":
                entries = parse_psk_file(render_psk_file(entries, ssid=SSID))

            def run(entries: list[PskEntry] = entries) -> None:
                found = identify_key(handshake, SSID, entries)
                assert found is not None and found.keyid == "the-one"

            took = timed(run, 3 if count >= 1000 and form == "passphrase" else 5)
            print(f"{count:>6} {form:>10} {took:>12.1f} {took / count:>11.3f} "
                  f"{took / tshark:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
