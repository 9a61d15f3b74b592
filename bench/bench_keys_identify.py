"""How long does telling which device key a real WPA2 handshake used take, as the home grows?

Capture: the corpus's wpa2-psk-linksys.cap (499 frames, 3 exchanges, 9 candidate
message pairs). The real key is last among N decoys (worst case). Two psk-file forms:
passphrase lines (one PBKDF2-SHA1, 4096 rounds, per candidate, once per run) and PMK
lines (PTK + MIC only). "no match" rows: the real key left out, so every candidate is
also tried with hashcat's 8 nonce corrections where the replay counters differ.
Baseline in the same run: tshark reading each corpus capture with an EAPOL filter.

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
from mudguard.keys.core import PskEntry, parse_psk_file, render_psk_file
from mudguard.keys.handshake import identify_handshakes

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


def extraction() -> None:
    """Reading the handshakes of each corpus capture, against tshark -Y eapol."""
    for capture in sorted((CORPUS / "wifi").glob("*.cap")):
        tshark = timed(lambda c=capture: subprocess.run(
            ["tshark", "-r", str(c), "-Y", "eapol"], capture_output=True, check=True), 5)
        parse = timed(lambda c=capture: read_handshakes(c), 20)
        print(f"{capture.name}: tshark -Y eapol {tshark:.1f} ms; mudguard reads its "
              f"{len(read_handshakes(capture))} candidates in {parse:.2f} ms "
              f"({parse / tshark:.4f}x)")
    print()


def main() -> int:
    if shutil.which("tshark") is None:
        print("tshark is needed for the baseline")
        return 1
    extraction()
    handshakes = read_handshakes(CAPTURE)
    print(f"{'keys':>6} {'form':>10} {'identify ms':>12} {'per key ms':>11}  found")
    for count in (10, 100, 1000):
        for form in ("passphrase", "pmk", "pmk no match"):
            entries = candidates(count)
            if form != "passphrase":
                entries = parse_psk_file(render_psk_file(entries, ssid=SSID))
            if form == "pmk no match":
                entries = entries[:-1]

            def run(entries: list[PskEntry] = entries) -> int:
                found = identify_handshakes(handshakes, SSID, entries)
                assert all(r.entry.keyid == "the-one" for r in found)
                return len(found)

            took = timed(run, 3 if count >= 1000 and form == "passphrase" else 5)
            print(f"{count:>6} {form:>10} {took:>12.1f} {took / count:>11.3f}  {run()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
