"""``mudguard run`` observes a profiled device's TLS (RFC 9761): the owner approves a
profile with a (D)TLS profile for the bulb (``device apply-profile``), the bulb makes
real TLS connections to a server in the fake Internet; the daemon stores a fitting
ClientHello as ``tls-observed``, each deviating one as ``tls-deviation`` with its reason
and evidence, and quarantines the bulb at the third (real daemon, nftables, NFLOG)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mudguard.devices import EventKind
from mudguard.policy import device_chain
from mudguard.store import Store
from tests.e2e.test_daemon import DAEMON_RULESET, daemon_home
from tests.e2e.test_daemon_wiring import _poll, _profiled_bulb
from tests.netns.test_tls_observe import CLOUD4, MUD, TLS_PORT, _device, tls_server
from tests.pki import make_cert

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]


@pytest.fixture()
def home(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    with daemon_home(tmp_path, "h18d") as found:
        yield found


def test_the_daemon_stores_tls_outcomes_and_quarantines_a_changed_stack(
        home: tuple[Any, Path], tmp_path: Path) -> None:
    vhome, config = home
    db = config.parent / "state" / "mudguard.db"
    profile = tmp_path / "tls-sensor.json"
    profile.write_text(json.dumps(MUD))
    cert = make_cert("cloud.example.com", dns=("cloud.example.com",))
    cert_file = tmp_path / "cloud.pem"
    cert_file.write_bytes(cert.cert_pem() + cert.key_pem())
    with _profiled_bulb(vhome, config) as (daemon, bulb), \
            tls_server(vhome.inet_ns, cert_file):
        applied = subprocess.run([sys.executable, "-m", "mudguard", "device",
                                  "apply-profile", bulb.mac, str(profile), "--db", str(db)],
                                 capture_output=True, text=True, timeout=60)
        assert applied.returncode == 0, applied.stderr
        assert "not running" not in applied.stderr  # it went through the daemon
        _poll(lambda: vhome.tcp(bulb.ns, CLOUD4, TLS_PORT, 0.5))
        if DAEMON_RULESET == "data":  # policy as data: the observation is data too (no chain)
            listing = vhome.run(vhome.gw_ns, ["nft", "list", "table", "inet", "mudguard"]).stdout
            assert "mudguard data " in listing and device_chain(bulb.mac, "out") not in listing
            profiles = vhome.run(vhome.gw_ns, ["nft", "list", "set", "inet", "mudguard",
                                               "tls_profiles"]).stdout
            assert "elements = {" in profiles, profiles
        assert _device(bulb.ns, "good") == "TLSv1.3 mqtt"
        fits = daemon.wait_for({"event": "tls-observed", "mac": bulb.mac}, timeout=10)
        assert fits["ace"] == "from-sensor/mqtts" and fits["message"] == "fits its profile"
        for which in ("tls10", "alpn-h2", "not-tls"):
            _device(bulb.ns, which)
        alert = daemon.wait_for({"event": "alert", "mac": bulb.mac}, timeout=10)
        assert alert["kind"] == "tls" and "3 TLS ClientHellos" in alert["message"], alert
        daemon.wait_for({"event": "device", "mac": bulb.mac, "state": "quarantined"})
        assert not vhome.tcp(bulb.ns, CLOUD4, TLS_PORT, 0.5)
    with Store(db) as store:
        events = store.list_events(bulb.mac)
    observed = [e.details for e in events if e.kind is EventKind.TLS_OBSERVED]
    deviations = [e.details for e in events if e.kind is EventKind.TLS_DEVIATION]
    assert len(observed) == 1 and observed[0]["fits"] is True
    reasons = {str(d["reason"]) for d in deviations}
    assert "ALPN h2 instead of mqtt" in reasons
    assert "not a TLS ClientHello (not a TLS handshake record)" in reasons
    assert any(r.startswith("offered TLS 1.0") for r in reasons), reasons
    evidence = next(d for d in deviations if d["reason"] == "ALPN h2 instead of mqtt")
    assert evidence["observation"]["hello"]["alpn"] == ["h2"]
    assert any(e.kind is EventKind.VIOLATION and e.details.get("kind") == "tls"
               for e in events)
