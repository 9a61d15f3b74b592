"""Parse + validate the MUD corpus N times: files/second, against plain ``json.loads``.

Usage: .venv/bin/python bench/bench_mud_parse.py [--rounds N] [--yang]

The baseline is ``json.loads`` of the same bytes in the same run (ratios are
what to trust on a noisy machine). ``--yang`` adds yangson validation of the
same files for comparison (draft-era files fail yangson at the top-level member,
so its figure flatters it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench_data import SMALL_CORPUS

from mudguard.mud import parse_mud

CORPUS = SMALL_CORPUS / "mud"


def measure(label: str, files: list[bytes], work: Callable[[bytes], object], rounds: int,
            repeats: int = 5) -> tuple[str, float, float]:
    """Best-of-``repeats`` files/second for ``work`` over ``rounds`` passes of the corpus."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(rounds):
            for data in files:
                work(data)
        elapsed = time.perf_counter() - start
        rates.append(rounds * len(files) / elapsed)
    return label, max(rates), statistics.median(rates)


def yang_validator() -> Callable[[bytes], object]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.unit.test_mud_yang import yang as make_model
    from yangson.enumerations import ContentType, ValidationScope

    model = make_model.__wrapped__()  # type: ignore[attr-defined]

    def validate(data: bytes) -> object:
        try:
            model.from_raw(json.loads(data)).validate(ValidationScope.all, ContentType.all)
        except Exception:  # a rejection is a result here
            return False
        return True

    return validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--yang", action="store_true")
    args = parser.parse_args()
    paths = sorted(CORPUS.rglob("*.json"))
    files = [p.read_bytes() for p in paths]
    total = sum(len(f) for f in files)
    print(f"corpus: {len(files)} MUD files, {total / 1024:.0f} KiB, "
          f"{args.rounds} rounds, best of 5")
    rows = [measure("json.loads (baseline)", files, json.loads, args.rounds),
            measure("parse_mud (parse+normalise+validate)", files, parse_mud, args.rounds)]
    if args.yang:
        rows.append(measure("yangson from_raw+validate (see doc)", files, yang_validator(),
                            max(1, args.rounds // 10), repeats=1))
    base = rows[0][1]
    print(f"{'what':40} {'files/s (best)':>15} {'median':>10} {'µs/file':>9} {'× json':>8}")
    for label, best, median in rows:
        print(f"{label:40} {best:15,.0f} {median:10,.0f} {1e6 / best:9.1f} {base / best:8.1f}")


if __name__ == "__main__":
    main()
