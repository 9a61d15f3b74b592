"""Adapter: the static base ruleset file an early-boot unit loads before the network.

``mudguard base --output FILE`` writes it, and the daemon rewrites
``<state_dir>/base.json`` at each start, so the next boot closes the LAN with the base
of the configuration in force (LAN interface, device tables). The unit loads it with
``nft -j -f FILE`` (``packaging/systemd/mudguard-base.service``); the daemon then finds
the base's mark in the kernel and takes it over without replacing it (``docs/boot.md``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from mudguard.policy import HomeContext, base_ruleset


def base_ruleset_text(context: HomeContext, ruleset: str = "chains") -> str:
    """The base ruleset as the JSON text ``nft -j -f`` loads (one line, a newline):
    the chains design's base, or with ``ruleset="data"`` the fixed ruleset of policy as
    data with no element (it passes nothing from the LAN either)."""
    if ruleset == "data":
        from mudguard.policy._data import data_ruleset

        return json.dumps(data_ruleset(context), separators=(",", ":")) + "\n"
    return json.dumps(base_ruleset(context), separators=(",", ":")) + "\n"


def write_base_ruleset(path: Path, context: HomeContext, ruleset: str = "chains") -> bool:
    """Write the base ruleset to ``path`` atomically (mode 0644: no secret in it);
    False if the file already held exactly this base (then it is left untouched)."""
    text = base_ruleset_text(context, ruleset)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".base-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
