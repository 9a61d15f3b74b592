"""The pure core imports no I/O modules (STYLE.md §2.1)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("asyncio", "socket", "sqlite3", "subprocess", "nftables", "pyroute2", "httpx")


def test_core_imports_no_io_modules() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import mudguard.mud, mudguard.policy\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    leaked = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert leaked == []
