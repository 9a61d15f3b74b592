"""The repository carries what its tests need: a fresh clone with nothing beside it runs
the suite. Nothing under ``tests/``, ``src/`` or ``scripts/`` reaches for a folder beside
the repository, and every set of test data says where it comes from."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import CORPUS, REPO
from tests.unit.test_bench_data import bench_data

# A path to the sibling folder the corpus used to live in, in any spelling: as text
# (``../NAME``, ``NAME/corpus``, the machine's ``/work/NAME``) or joined with pathlib
# (``parent / "NAME"``, ``"NAME" / "corpus"``). NAME is taken from the one place that may
# name the folder, the benchmarks' default for the large captures, so no test names it.
NAME = re.escape(bench_data().DEFAULT_BIG_CORPUS.parent.name)
SIBLING = re.compile(rf"""\.\./{NAME}\b|/work/{NAME}\b|{NAME}/corpus"""
                     rf"""|/\s*(["']){NAME}\1|(["']){NAME}\2\s*/""")
SCANNED = ("tests", "src", "scripts", ".ci", "pyproject.toml")
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
CORPUS_BUDGET = 2_000_000  # bytes: the bound for the data a clone carries


def scanned_files() -> list[Path]:
    """Every text file of the scanned folders, except build output and this file."""
    found: list[Path] = []
    for name in SCANNED:
        top = REPO / name
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            parts = set(path.relative_to(REPO).parts)
            if (not path.is_file() or parts & SKIPPED_PARTS
                    or any(p.endswith(".egg-info") for p in parts)
                    or path.resolve() == Path(__file__).resolve()):
                continue
            found.append(path)
    return found


def sibling_references(path: Path) -> list[str]:
    """The lines of ``path`` that name the sibling folder (none for binary files)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return []
    return [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
            for number, line in enumerate(text.splitlines(), 1) if SIBLING.search(line)]


def test_the_pattern_catches_every_spelling() -> None:
    name = bench_data().DEFAULT_BIG_CORPUS.parent.name
    for line in (f'CORPUS = REPO.parent / "{name}" / "corpus"',
                 f"LUMINAIRE = Path(__file__).parents[3] / '{name}' / 'corpus' / 'mud'",
                 f"see ../{name}/corpus/mud", f"open('/work/{name}/corpus/wifi/x.cap')",
                 f'base / "{name}/corpus"'):
        assert SIBLING.search(line), line
    for line in ("a shared secret", "shared_library = ctypes.CDLL(name)",
                 '"the shared services"', 'CORPUS = REPO / "tests" / "data" / "corpus"'):
        assert not SIBLING.search(line), line


def test_nothing_reads_from_beside_the_repository() -> None:
    files = scanned_files()
    assert len(files) > 100  # the scan really saw the tests and the sources
    found = [hit for path in files for hit in sibling_references(path)]
    assert not found, "paths out of the repository:\n" + "\n".join(found)


def test_the_corpus_is_inside_the_repository() -> None:
    root = REPO.resolve()
    assert CORPUS.resolve().is_relative_to(root / "tests" / "data")
    files = [p for p in CORPUS.rglob("*") if p.is_file()]
    assert len(files) > 60
    outside = [str(p) for p in files if not p.resolve().is_relative_to(root)]
    assert not outside, outside  # no symlink leads out


def test_every_corpus_set_says_where_it_comes_from() -> None:
    sets = {p.parent for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md"}
    assert {s.relative_to(CORPUS).as_posix() for s in sets} >= {
        "mud/unsw", "mud/rfc", "mud/signed", "wifi", "pcap/smartercoffee",
        "pcap/madea-smarthome"}
    for folder in sets:
        provenance = folder / "PROVENANCE.md"
        assert provenance.is_file(), f"{folder.relative_to(REPO)} has no PROVENANCE.md"
        text = provenance.read_text()
        assert "Source" in text or "source" in text, provenance
        assert re.search(r"[Ll]icen[cs]e", text), provenance
        assert re.search(r"@?[0-9a-f]{7,40}", text), f"{provenance}: no commit"


def test_the_corpus_stays_small() -> None:
    size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert size < CORPUS_BUDGET, f"tests/data/corpus is {size:,} bytes"
