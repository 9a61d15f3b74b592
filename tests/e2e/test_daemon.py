"""``mudguard run`` end to end in a virtual home: real dnsmasq hands out a lease and the
MUD URL, the daemon fetches the signed MUD file from the fake Internet over TLS, verifies
it, enforces it with nftables and fills the DNS sets; a stop and a restart never open
access (the rules stay in the kernel, and the restart restores from the database)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mudguard.daemon.config import CONFIG_KEYS
from mudguard.demo import dhcp, scenario
from mudguard.demo.runner import gateway_config
from mudguard.devices import EventKind
from mudguard.store import Store

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]

LOG_LEVEL = ["--log-level", os.environ["MUDGUARD_TEST_LOG_LEVEL"]] \
    if os.environ.get("MUDGUARD_TEST_LOG_LEVEL") else []
CLOUD = ("198.51.100.21", 56700)  # v2.broker.lifx.co, named by the bulb's MUD file
GADGET_CLOUD = "198.51.100.25"


class Daemon:
    """``mudguard run`` in the gateway namespace, its JSON events read as they come."""

    def __init__(self, ns: str, config: Path, log: Path) -> None:
        self.log = log.open("a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "mudguard", "run",
             "--config", str(config), "--log-format", "json", *LOG_LEVEL],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, match: dict[str, Any], timeout: float = 30.0,
                 check: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
        """The first event (seen before or after) whose fields include ``match`` and that
        passes ``check``; fails after ``timeout`` even when the daemon says nothing."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if all(event.get(k) == v for k, v in match.items()) and check(event):
                    return event
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self._lines.put(None)  # the daemon has exited: nothing more will come
                break
            self.events.append(json.loads(line))
        raise AssertionError(f"no event {match} in {self.events}")

    def stop(self) -> int:
        """SIGTERM and wait."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


TEST_RULESET = os.environ.get("MUDGUARD_TEST_RULESET", "")
"""``[gateway] ruleset`` of every daemon these tests start ("": the default)."""
DAEMON_RULESET = TEST_RULESET or next(
    str(k.default) for k in CONFIG_KEYS if (k.section, k.name) == ("gateway", "ruleset"))
"""The ruleset those daemons run."""


@pytest.fixture()
def home_and_config(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    with daemon_home(tmp_path, "mgid") as found:
        yield found


@contextlib.contextmanager
def daemon_home(tmp_path: Path, prefix: str, devices: int = 3,
                extra: str = "", ruleset: str = "") -> Iterator[tuple[Any, Path]]:
    """A virtual home (``prefix``), the fake Internet, and the daemon's configuration for it
    (``extra`` TOML appended; ``ruleset``: ``[gateway] ruleset``, by default
    ``MUDGUARD_TEST_RULESET``'s); removed even when the test fails."""
    ruleset = ruleset or TEST_RULESET
    from mudguard.vhome import VirtualHome

    with VirtualHome(prefix=prefix, devices=devices) as vhome:
        run = scenario.prepare(tmp_path, datetime.now(UTC))
        for address in scenario.internet_addresses():
            vhome.run(vhome.inet_ns, ["ip", "addr", "replace", f"{address}/32", "dev", "lo"])
        internet = subprocess.Popen(
            ["ip", "netns", "exec", vhome.inet_ns, sys.executable, "-m",
             "mudguard.demo.internet", str(run.internet_config), "--lifetime", "300"],
            stdout=subprocess.PIPE, text=True)
        try:
            assert internet.stdout is not None and internet.stdout.readline().strip() == "ready"
            (tmp_path / "state").mkdir()
            config = tmp_path / "gateway.toml"
            text = gateway_config(
                lan_interface=vhome.lan_if, wan_interface=vhome.wan_if,
                lan_prefix="192.0.2.0/24", gateway="192.0.2.1", state_dir=tmp_path / "state",
                ca_file=run.ca_file)
            gateway_keys = "[gateway]\nmaintenance_seconds = 1\n"
            if ruleset:  # MUDGUARD_TEST_RULESET=data: the same tests, policy as data
                gateway_keys += f'ruleset = "{ruleset}"\n'
            config.write_text(text.replace("[gateway]\n", gateway_keys)
                              .replace("report_seconds = 2", "report_seconds = 1") + extra)
            yield vhome, config
        finally:
            internet.terminate()
            internet.wait(5)


def _join(interface: str, mac: str, url: str | None) -> str:
    """Inside the device namespace: DHCP with the MUD URL, configure, return the address."""
    from mudguard.demo.devices import configure

    lease = dhcp.obtain(interface, mac, hostname="device", mud_url=url, timeout=15.0)
    configure(interface, lease)
    return lease.address


def _resolve(name: str) -> list[str]:
    import dns.message
    import dns.query

    answer = dns.query.udp(dns.message.make_query(name, "A"), "192.0.2.1", timeout=3)
    return [r.address for rrset in answer.answer for r in rrset]


def test_daemon_onboards_a_signed_device_and_a_restart_never_opens_access(
        home_and_config: tuple[Any, Path]) -> None:
    home, config = home_and_config
    log = config.parent / "gateway.log"
    bulb, stranger, gadget = home.nodes
    home.run(bulb.ns, ["ip", "addr", "flush", "dev", bulb.iface])
    home.run(bulb.ns, ["ip", "route", "flush", "table", "main"])
    daemon = Daemon(home.gw_ns, config, log)
    try:
        daemon.wait_for({"event": "ready"})
        # An empty kernel: the LAN was closed (the base) before any device was restored,
        # and the base the boot unit loads next time was written beside the database.
        assert daemon.wait_for({"event": "lan-closed"})["ms"] < 5000
        assert (config.parent / "state" / "base.json").is_file()
        url = scenario.device("bulb").mud_url
        address = home.call(bulb.ns, _join, bulb.iface, bulb.mac, url)
        daemon.wait_for({"event": "sighting", "mac": bulb.mac, "mud_url": url})
        profiled = daemon.wait_for({"event": "device", "mac": bulb.mac, "state": "profiled"})
        assert profiled["signature"] == "signed_valid"
        assert home.call(bulb.ns, _resolve, "v2.broker.lifx.co") == [CLOUD[0]]
        assert home.tcp(bulb.ns, *CLOUD)
        assert not home.tcp(bulb.ns, scenario.ELSEWHERE, 443)
        assert not home.tcp(stranger.ns, *CLOUD)  # never onboarded: nothing
        # The gateway itself saw the blocked attempt (NFLOG) and recorded it for the owner.
        blocked = f"tcp {scenario.ELSEWHERE} port 443"
        daemon.wait_for({"event": "drops", "mac": bulb.mac}, check=lambda e: blocked in e["flows"])
        with Store(config.parent / "state" / "mudguard.db") as store:
            violations = [e for e in store.list_events(bulb.mac)
                          if e.kind is EventKind.VIOLATION]
        assert any(flow["dst"] == scenario.ELSEWHERE and flow["dst_port"] == 443
                   for event in violations for flow in event.details["evidence"])

        assert daemon.stop() == 0
        # Daemon down: the kernel still enforces exactly the same thing.
        home.run(home.gw_ns, ["nft", "list", "table", "inet", "mudguard"])
        assert home.tcp(bulb.ns, *CLOUD)
        assert not home.tcp(bulb.ns, scenario.ELSEWHERE, 443)
        assert not home.tcp(stranger.ns, *CLOUD)

        daemon = Daemon(home.gw_ns, config, log)
        restored = daemon.wait_for({"event": "restored"})
        assert (restored["devices"], restored["reinstalled"]) == (1, False)
        assert restored["ruleset"] == DAEMON_RULESET
        assert not [e for e in daemon.events if e["event"] == "lan-closed"]  # taken over
        again = daemon.wait_for({"event": "device", "mac": bulb.mac})
        assert (again["state"], again["ipv4"]) == ("profiled", [address])
        daemon.wait_for({"event": "ready"})
        assert home.call(bulb.ns, _resolve, "v2.broker.lifx.co") == [CLOUD[0]]
        assert home.tcp(bulb.ns, *CLOUD)
        assert not home.tcp(bulb.ns, scenario.ELSEWHERE, 443)
        assert not home.tcp(stranger.ns, *CLOUD)

        # A device with no MUD file is learned (on by default, #16) with the home default
        # (LAN only here); the owner's CLI grant goes through the daemon's control socket
        # and is enforced at once, learning or not.
        home.run(gadget.ns, ["ip", "addr", "flush", "dev", gadget.iface])
        home.run(gadget.ns, ["ip", "route", "flush", "table", "main"])
        home.call(gadget.ns, _join, gadget.iface, gadget.mac, None)
        daemon.wait_for({"event": "device", "mac": gadget.mac, "state": "learning"})
        assert not home.tcp(gadget.ns, GADGET_CLOUD, 443)
        expires = datetime.now(UTC) + timedelta(seconds=6)
        grant = subprocess.run(
            [sys.executable, "-m", "mudguard", "device", "grant", gadget.mac, "--internet",
             "--expires", expires.isoformat(),
             "--db", str(config.parent / "state" / "mudguard.db")],
            capture_output=True, text=True, timeout=60)
        assert grant.returncode == 0, grant.stderr
        assert "not running" not in grant.stderr  # it went through the daemon
        assert home.tcp(gadget.ns, GADGET_CLOUD, 443)
        # The daemon's maintenance (every second here) drops the grant once it expires.
        deadline = time.monotonic() + 20
        while home.tcp(gadget.ns, GADGET_CLOUD, 443, timeout=0.5):
            assert time.monotonic() < deadline, "the expired grant still lets it out"
            time.sleep(0.5)
        assert datetime.now(UTC) >= expires
    finally:
        daemon.stop()


def _lldp(interface: str, mac: str, url: str) -> None:
    from mudguard.demo.devices import announce_lldp

    announce_lldp(interface, mac, url, "printer")


def test_mud_url_by_lldp_before_any_address_then_dhcp_is_enforced_for_the_lease(
        home_and_config: tuple[Any, Path]) -> None:
    home, config = home_and_config
    device = home.nodes[0]
    home.run(device.ns, ["ip", "addr", "flush", "dev", device.iface])
    home.run(device.ns, ["ip", "route", "flush", "table", "main"])
    daemon = Daemon(home.gw_ns, config, config.parent / "gateway.log")
    try:
        daemon.wait_for({"event": "ready"})
        url = scenario.device("bulb").mud_url
        assert url is not None
        home.call(device.ns, _lldp, device.iface, device.mac, url)
        daemon.wait_for({"event": "sighting", "mac": device.mac, "source": "lldp"})
        first = daemon.wait_for({"event": "device", "mac": device.mac, "state": "profiled"})
        assert first["ipv4"] == []  # profiled before it had any address
        address = home.call(device.ns, _join, device.iface, device.mac, None)
        daemon.wait_for({"event": "device", "mac": device.mac, "ipv4": [address]})
        # The new address reached the kernel and the DNS guard: names resolve into sets.
        assert home.call(device.ns, _resolve, "v2.broker.lifx.co") == [CLOUD[0]]
        assert home.tcp(device.ns, *CLOUD)
        assert not home.tcp(device.ns, scenario.ELSEWHERE, 443)
    finally:
        daemon.stop()
