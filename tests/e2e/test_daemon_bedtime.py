"""Issue #15: a daily pause (bedtime) opened and closed by the real daemon's maintenance.

``mudguard run`` in a virtual home, maintenance every second. Two devices join by DHCP
and the owner trusts them (everything out, the LAN in); the owner's time zone is set to
Asia/Kolkata (UTC+05:30) and a daily pause is given without a zone, starting at the next
minute boundary a few seconds ahead and lasting one minute. Real packets: the paused
device reaches the Internet before the window, not inside it (while the other device on
the LAN still answers it), and again after it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tests.e2e.test_daemon import GADGET_CLOUD, Daemon, _join, daemon_home, pytestmark

__all__ = ["pytestmark"]

LAN_PORT = 8080
ZONE = "Asia/Kolkata"
LEAD = 8.0  # at least this many seconds between the grant and the window's start


def _cli(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "mudguard", *args,
                           "--db", str(config.parent / "state" / "mudguard.db")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "not running" not in done.stderr  # it went through the daemon
    return done.stdout


def _wait_until(moment: datetime) -> None:
    left = (moment - datetime.now(UTC)).total_seconds()
    assert left < 130, left  # bounded
    if left > 0:
        time.sleep(left)


def _first_change(probe: Any, want: bool, deadline: float) -> datetime:
    """Probe every half second until ``probe()`` is ``want``: the (UTC) time it was."""
    while probe() is not want:
        assert time.monotonic() < deadline, f"still {not want} at the deadline"
        time.sleep(0.5)
    return datetime.now(UTC)


def test_the_daemons_maintenance_opens_and_closes_a_bedtime_window(tmp_path: Path) -> None:
    with daemon_home(tmp_path, "h15bd", devices=2) as (home, config):
        tablet, laptop = home.nodes
        daemon = Daemon(home.gw_ns, config, config.parent / "gateway.log")
        try:
            daemon.wait_for({"event": "ready"})
            addresses = {}
            for node in (tablet, laptop):
                home.run(node.ns, ["ip", "addr", "flush", "dev", node.iface])
                home.run(node.ns, ["ip", "route", "flush", "table", "main"])
                addresses[node.mac] = home.call(node.ns, _join, node.iface, node.mac, None)
                daemon.wait_for({"event": "device", "mac": node.mac})
                _cli(config, "device", "trust", node.mac)
            home.serve(laptop.ns, tcp=[LAN_PORT])

            def internet() -> bool:
                return home.tcp(tablet.ns, GADGET_CLOUD, 443, timeout=0.5)

            def lan() -> bool:
                return home.tcp(tablet.ns, addresses[laptop.mac], LAN_PORT, timeout=0.5)

            assert internet() and lan()
            _cli(config, "settings", "--time-zone", ZONE)
            # The window: the next whole minute at least LEAD seconds ahead, one minute.
            start = (datetime.now(UTC) + timedelta(seconds=LEAD + 60)).replace(
                second=0, microsecond=0)
            if (start - datetime.now(UTC)).total_seconds() > 60 + LEAD:
                start -= timedelta(minutes=1)
            end = start + timedelta(minutes=1)
            local = ZoneInfo(ZONE)
            window = f"{start.astimezone(local):%H:%M}-{end.astimezone(local):%H:%M}"
            shown = _cli(config, "device", "grant", tablet.mac, "--pause", "--schedule", window)
            assert f"daily {window} {ZONE}" in " ".join(shown.split())  # the owner's zone

            # Before: the Internet and the LAN both pass (checked up to 2 s before).
            while datetime.now(UTC) < start - timedelta(seconds=2):
                assert internet(), "paused before its window"
                time.sleep(1.0)
            assert lan()
            _wait_until(start)
            closed = _first_change(internet, False, time.monotonic() + 10)
            # Inside: the Internet stays closed; the LAN still works.
            while datetime.now(UTC) < end - timedelta(seconds=5):
                assert not internet(), "the Internet opened inside the window"
                assert lan(), "the LAN closed with the pause"
                time.sleep(2.0)
            _wait_until(end)
            opened = _first_change(internet, True, time.monotonic() + 10)
            assert opened >= end and lan()
            print(f"\nwindow {window} {ZONE}: closed {(closed - start).total_seconds():.1f} s "
                  f"after its start, opened {(opened - end).total_seconds():.1f} s after "
                  "its end")
        finally:
            daemon.stop()
