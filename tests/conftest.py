"""Shared test fixtures: paths to the reference corpus beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The read-only reference corpus (``../shared/corpus``)."""
    if not CORPUS.is_dir():
        pytest.fail(f"reference corpus missing at {CORPUS}")
    return CORPUS
