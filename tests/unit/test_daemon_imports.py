"""The daemon's entry path leaves heavy libraries unimported until their feature runs
(#19 resource budget: ``bench/bench_daemon_budget.py`` has the figures; nothing here is
timed). Each check runs in a fresh interpreter, so what other tests imported does not
count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mudguard.app import pem_certificates

ROOTS = Path(__file__).parent.parent / "data" / "corpus" / "mud" / "signed" / "luminaire-cacert.pem"

# Libraries the daemon needs only on some path: label/QR images (segno, Pillow,
# zxing-cpp), capture files (dpkt), MUD signatures (cryptography, asn1crypto), HTTPS
# fetches (httpx), Rich (the run command's error lines), pyroute2 (no longer used by
# the daemon), and what is never the daemon's (yangson, playwright: test tools).
LAZY = ("segno", "PIL", "zxingcpp", "dpkt", "cryptography", "asn1crypto", "httpx",
        "rich", "pyroute2", "yangson", "playwright")


def _modules_after(code: str) -> set[str]:
    """The top-level packages imported once ``code`` ran in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] " \
                   "for m in sys.modules})))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_daemons_entry_path_imports_no_lazy_library() -> None:
    loaded = _modules_after(f"""
import sys
from mudguard.cli.main import build_app
build_app("run")
import mudguard.daemon, mudguard.app, mudguard.portal
from mudguard.app import signature_verifier
from mudguard.identify.live import LiveIdentifier
from mudguard.enforce.lan import ports_to_isolate
assert signature_verifier(__import__("pathlib").Path({str(ROOTS)!r})) is not None
LiveIdentifier.load()
ports_to_isolate(b"", 1)
""")
    assert "fastapi" in loaded  # the portal itself is there: it serves from this process
    assert sorted(loaded & set(LAZY)) == []


def test_each_feature_still_imports_its_library() -> None:
    """The lazy imports are reached: a QR image, a capture's DNS answer, a signature
    check, a redirect URL."""
    loaded = _modules_after(f"""
from datetime import UTC, datetime
from pathlib import Path
from mudguard.app import signature_verifier
from mudguard.labels import qr_png
from mudguard.mud.fetch import FetchError, _redirect
from mudguard.mud.signature import SignatureError
from mudguard.profile.capture import dns_answers
assert qr_png("WIFI:T:WPA;S:x;P:y;;").startswith(b"\\x89PNG")
assert dns_answers(b"\\0" * 12) is None
assert _redirect("https://a.example/x", "/y") == "https://a.example/y"
verify = signature_verifier(Path({str(ROOTS)!r}))
try:
    verify(b"{{}}", b"not a signature", datetime.now(UTC))
except SignatureError:
    pass
else:
    raise AssertionError("a garbage signature was accepted")
""")
    assert {"segno", "PIL", "dpkt", "cryptography", "asn1crypto", "httpx"} <= loaded


def test_run_through_main_registers_only_its_own_module() -> None:
    loaded = _modules_after("""
import sys
sys.argv = ["mudguard", "run", "--help"]
from mudguard.cli.main import main
try:
    main()
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
assert "mudguard.cli.run_cmd" in sys.modules
assert "mudguard.cli.devices_cmd" not in sys.modules, "the whole CLI tree was imported"
""")
    assert "mudguard" in loaded


def test_trust_anchor_framing_is_checked_at_start() -> None:
    assert len(pem_certificates(ROOTS.read_bytes())) == 1
    with pytest.raises(ValueError, match="no certificate"):
        pem_certificates(b"")
    with pytest.raises(ValueError, match="no END line"):
        pem_certificates(b"-----BEGIN CERTIFICATE-----\nMIIB\n")
    with pytest.raises(ValueError, match="not base64"):
        pem_certificates(b"-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="DER"):
        pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
