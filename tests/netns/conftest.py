"""Fixtures for the network-namespace tier: real namespaces, real nftables, real packets.

Every test here needs root. Tests marked ``root`` skip with a clear reason otherwise;
CI runs as root, so they run there. Namespaces are named after a per-test prefix and
removed even when the test fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mudguard.vhome import VirtualHome

NOT_ROOT = "needs root: network namespaces and nftables (CI runs these as root)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip ``root`` tests with a clear reason when not running as root."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=NOT_ROOT)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def vhome() -> Iterator[VirtualHome]:
    """A fresh virtual home with three devices (prefix ``mgeV<pid>``), torn down after."""
    with VirtualHome(prefix=f"mgeV{os.getpid() % 10000}", devices=3) as home:
        yield home


@pytest.fixture
def corpus_mud():  # type: ignore[no-untyped-def]
    """Load a corpus MUD file by its path under ``corpus/mud`` (parsed, must be valid)."""
    from mudguard.mud import MudFile, parse_mud
    from tests.conftest import CORPUS

    def load(relative: str) -> MudFile:
        result = parse_mud((CORPUS / "mud" / relative).read_bytes())
        assert result.ok and result.mud is not None, [str(f) for f in result.errors]
        return result.mud

    return load
