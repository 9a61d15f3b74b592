"""Shared test fixtures: the reference corpus, inside the repository (``tests/data/corpus``).

Everything the tests read is in the repository: a fresh clone with nothing beside it
runs the whole suite. The large captures the benchmarks use stay outside (see
``bench/README.md``); no test reads them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The read-only reference corpus (``tests/data/corpus``, provenance per set)."""
    if not CORPUS.is_dir():
        pytest.fail(f"reference corpus missing at {CORPUS} (it belongs to the repository)")
    return CORPUS
