"""Learn, then lock, in the running daemon (issue #16), with real packets: a device that
announces no MUD URL and that no repository knows is learned from its real connections
(conntrack) and DNS answers for a shortened period, its proposal names what it did, the
owner locks it through the CLI and the kernel then allows exactly that."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mudguard.demo import scenario
from mudguard.store import Store
from tests.e2e.test_daemon import GADGET_CLOUD, Daemon, _join, _resolve, daemon_home
from tests.e2e.test_daemon_wiring import _fresh

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]

LEARNING_SECONDS = 12.0


def _scan(address: str, first: int, count: int) -> None:
    """Inside the device: one non-blocking TCP connect to each of ``count`` ports."""
    import socket
    import time

    for port in range(first, first + count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((address, port))
        time.sleep(0.02)
        s.close()


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mudguard", "device", *args, "--db", str(db)],
                          capture_output=True, text=True, timeout=60)


def test_a_device_without_mud_is_learned_proposed_and_locked_by_the_owner(
        tmp_path: Path) -> None:
    # Learning is on by default (#16): not set here, only its period and flushes.
    extra = ("[devices]\n"
             f"learning_days = {LEARNING_SECONDS / 86400:.8f}\nlearning_flush_seconds = 0.5\n")
    with daemon_home(tmp_path, "mgil", extra=extra) as (vhome, config):
        # The home default lets it reach the Internet while it is learned (the usual home).
        config.write_text(config.read_text().replace('home_default = "lan"',
                                                     'home_default = "internet"'))
        db = config.parent / "state" / "mudguard.db"
        gadget = vhome.nodes[2]
        _fresh(vhome, gadget)
        daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
        try:
            daemon.wait_for({"event": "ready"})
            vhome.call(gadget.ns, _join, gadget.iface, gadget.mac, None)
            daemon.wait_for({"event": "device", "mac": gadget.mac, "state": "learning"})
            # What it does while learned: its cloud by name, on 443 (the home default).
            assert vhome.call(gadget.ns, _resolve, "cloud.gadget.example") == [GADGET_CLOUD]
            assert vhome.tcp(gadget.ns, GADGET_CLOUD, 443)
            ended = daemon.wait_for({"event": "learning-ended", "mac": gadget.mac},
                                    timeout=LEARNING_SECONDS + 20)
            assert ended["state"] == "proposed"
            shown = _cli(db, "learn", gadget.mac)
            assert shown.returncode == 0, shown.stderr
            assert "proposed" in shown.stdout and "cloud.gadget.example" in shown.stdout
            proposal = json.loads(_cli(db, "learn", gadget.mac, "--json").stdout)
            assert proposal["learning"]["flows"] >= 2  # its DNS and its cloud at least
            # Still the home default until the owner locks it: anything goes out.
            assert vhome.tcp(gadget.ns, scenario.ELSEWHERE, 443)
            locked = _cli(db, "learn", gadget.mac, "--lock")
            assert locked.returncode == 0, locked.stderr
            daemon.wait_for({"event": "device", "mac": gadget.mac, "state": "profiled"})
            # Real packets show the lock: the learned flow passes, anything new is dropped.
            assert vhome.call(gadget.ns, _resolve, "cloud.gadget.example") == [GADGET_CLOUD]
            assert vhome.tcp(gadget.ns, GADGET_CLOUD, 443)
            assert not vhome.tcp(gadget.ns, scenario.ELSEWHERE, 443)
            assert not vhome.tcp(gadget.ns, scenario.ELSEWHERE, 80)
            # Deviations from the locked profile are reported and quarantined exactly as
            # for a maker's MUD file: a port scan of another host.
            vhome.call(gadget.ns, _scan, scenario.ELSEWHERE, 2000, 40, timeout=20)
            alert = daemon.wait_for({"event": "alert", "mac": gadget.mac}, timeout=15)
            assert alert["kind"] == "scan", alert
            daemon.wait_for({"event": "device", "mac": gadget.mac, "state": "quarantined"})
            with Store(db) as store:
                device = store.get_device(gadget.mac)
                assert device is not None and device.mud_source is not None
                assert (device.mud_source.value, device.signature_status.value) == (
                    "learned", "owner_approved")
                assert store.get_learning(gadget.mac) is None
        finally:
            daemon.stop()
