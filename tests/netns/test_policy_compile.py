"""``mudguard policy compile … --json`` for every valid corpus file: the kernel's
``nft -c -j -f -`` accepts the complete batch on an empty ruleset (in a fresh namespace).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.mud import parse_mud
from mudguard.vhome import _netns
from tests.conftest import CORPUS

pytestmark = pytest.mark.root

VALID = [p for p in sorted((CORPUS / "mud").rglob("*.json")) if parse_mud(p.read_bytes()).ok]
INVALID = [p for p in sorted((CORPUS / "mud").rglob("*.json")) if p not in VALID]


@pytest.fixture(scope="module")
def empty_ns() -> Iterator[str]:
    ns = f"mgeC{os.getpid() % 10000}"
    _netns.delete(ns)
    _netns.add(ns)
    try:
        yield ns
    finally:
        _netns.delete(ns)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_compiled_batch_is_accepted_by_nft(path: Path, empty_ns: str) -> None:
    result = CliRunner().invoke(app, ["policy", "compile", str(path), "--mac", "02:00:00:00:00:01",
                                      "--ipv4", "192.0.2.10", "--ipv6", "2001:db8:1::10",
                                      "--json"])
    assert result.exit_code == 0, result.output
    batch = json.loads(result.stdout)
    assert batch["nftables"][0] == {"metainfo": {"json_schema_version": 1}}
    check = subprocess.run(["ip", "netns", "exec", empty_ns, "nft", "-c", "-j", "-f", "-"],
                           input=result.stdout, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    listed = subprocess.run(["ip", "netns", "exec", empty_ns, "nft", "list", "ruleset"],
                            capture_output=True, text=True, check=True).stdout
    assert listed == ""  # check mode applied nothing


def test_corpus_has_valid_files() -> None:
    assert len(VALID) >= 40
