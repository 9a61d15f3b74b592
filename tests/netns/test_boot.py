"""Fail closed at boot (issue #20): no device is unrestricted while the home's rules go in.

A virtual home with forwarding on and two real devices probing the same Internet host
every 3 ms: ``d0`` is out of support (LAN only: the host is forbidden), ``d1`` is on the
home default (Internet: allowed). The daemon's start-up runs as a process of its own
(``boot_install.py``: ``close_lan``, decide, ``reconcile`` in batches) with 1,000 more
devices with corpus MUD profiles. Before the fix the cold install was one transaction:
until it committed (seconds) there was no firewall at all, and a kill mid-install left
none.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mudguard.enforce import Enforcer, Nft
from mudguard.enforce import enforcer as enforcer_module
from mudguard.policy import (
    PENDING6,
    DeviceFacts,
    LifecycleState,
    decide,
    main_set_element,
)
from mudguard.vhome import INTERNET_HOSTS, VirtualHome
from tests.netns.rulesets import TEST_RULESET, make_enforcer

pytestmark = pytest.mark.root

SYNTHETIC = 1000
CLOUD4 = INTERNET_HOSTS["cloud"][0]
INSTALLER = Path(__file__).with_name("boot_install.py")


@pytest.fixture
def home() -> Iterator[VirtualHome]:
    with VirtualHome(prefix=f"mgeT{os.getpid() % 1000}", devices=2) as h:
        h.serve(h.inet_ns, tcp=[443])
        yield h


class Boot:
    """The probes and the installer of one test, and what they saw."""

    def __init__(self, home: VirtualHome, corpus: Path, tmp_path: Path) -> None:
        self.home = home
        self.corpus = corpus / "mud"
        self.stop_file = tmp_path / "stop-probes"
        self.probes: list[subprocess.Popen[str]] = []
        self.installer: subprocess.Popen[str] | None = None
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start_probes(self) -> None:
        """``d0`` and ``d1`` each start a TCP connection to the cloud host every 3 ms."""
        for node in self.home.nodes:
            self.probes.append(subprocess.Popen(
                ["ip", "netns", "exec", node.ns, sys.executable, "-c",
                 "from mudguard.vhome.probe import probe_loop_main; probe_loop_main()",
                 CLOUD4, "443", str(self.stop_file), "90"],
                stdout=subprocess.PIPE, text=True))
        time.sleep(0.3)

    def start_installer(self) -> None:
        """The daemon's start-up, in the gateway's namespace."""
        states = ("out-of-support", "default")
        real = [{"mac": n.mac, "ipv4": n.ipv4, "ipv6": n.ipv6, "state": states[n.index]}
                for n in self.home.nodes]
        args = {"lan_if": self.home.lan_if, "wan_if": self.home.wan_if, "real": real,
                "synthetic": SYNTHETIC, "corpus": str(self.corpus)}
        self.installer = subprocess.Popen(
            ["ip", "netns", "exec", self.home.gw_ns, sys.executable, str(INSTALLER),
             json.dumps(args)], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.installer is not None and self.installer.stdout is not None
        for line in self.installer.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        """The installer's first ``event`` (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            for seen in self.events:
                if seen["event"] == event:
                    return seen
            line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                pytest.fail(f"the installer ended before {event!r}: {self.events}")
            self.events.append(json.loads(line))

    def stop_probes(self) -> list[list[tuple[float, bool]]]:
        """Stop both probe loops; each one's attempts as (start time, got through)."""
        self.stop_file.touch()
        results = []
        for proc in self.probes:
            out, _ = proc.communicate(timeout=30)
            results.append([(float(t), bool(ok)) for t, ok in json.loads(out)])
        return results

    def batch_window(self, mac: str) -> tuple[float, float]:
        """When the step before the batch holding ``mac`` was told, and when that batch
        was: the kernel accepted the batch in between."""
        before = self.wait_for("base")["t"]
        for event in self.events:
            if event["event"] == "batch" and mac in event["macs"]:
                return before, event["t"]
            before = event["t"]
        raise AssertionError(f"{mac} was in no batch")

    def close(self) -> None:
        """Stop whatever still runs."""
        self.stop_file.touch()
        for proc in [*self.probes, *([self.installer] if self.installer else [])]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def boot(home: VirtualHome, corpus: Path, tmp_path: Path) -> Iterator[Boot]:
    run = Boot(home, corpus, tmp_path)
    try:
        yield run
    finally:
        run.close()


def through(attempts: list[tuple[float, bool]], after: float,
            before: float = float("inf")) -> list[float]:
    """Start times of the attempts started in (after, before) that got through."""
    return [t for t, ok in attempts if ok and after < t < before]


def started(attempts: list[tuple[float, bool]], after: float, before: float) -> int:
    return sum(1 for t, _ in attempts if after < t < before)


def assert_open_without_rules(home: VirtualHome) -> None:
    """No ruleset, forwarding on: the forbidden host IS reachable (the test can fail)."""
    assert home.run(home.gw_ns, ["nft", "list", "ruleset"]).stdout.strip() == ""
    forwarding = home.run(home.gw_ns, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout
    assert forwarding.strip() == "1"
    assert home.tcp(home.nodes[0].ns, CLOUD4, 443)


def assert_allowed_device_waits_then_works(boot: Boot, attempts: list[tuple[float, bool]],
                                           closed_at: float) -> None:
    """``d1`` got nothing through from the base until the batch before its own was in
    (its own batch's commit lies between that one's report and its own), then got
    through within a second of its batch."""
    before, mine = boot.batch_window(boot.home.nodes[1].mac)
    assert through(attempts, closed_at, before) == []
    assert through(attempts, before, mine + 1.0), "the allowed host stayed unreachable"


def test_cold_install_closes_the_lan_first_and_devices_follow(
        home: VirtualHome, boot: Boot) -> None:
    assert_open_without_rules(home)
    boot.start_probes()
    boot.start_installer()
    base = boot.wait_for("base")
    done = boot.wait_for("done")
    time.sleep(0.3)
    forbidden, allowed = boot.stop_probes()
    assert base["installed"] is True and done["installed"] == SYNTHETIC + 2
    # From the base's commit to the end (seconds, many batches), the forbidden host
    # never answered one of the hundreds of attempts.
    assert started(forbidden, base["t"], done["t"]) > 100
    assert through(forbidden, base["t"]) == []
    assert base["t"] - boot.wait_for("start")["t"] < 2.0  # milliseconds, on a quiet machine
    batches = len([e for e in boot.events if e["event"] == "batch"])
    assert batches == 1 if TEST_RULESET == "data" else batches > 1  # data: one transaction
    assert_allowed_device_waits_then_works(boot, allowed, base["t"])


def test_boot_base_loaded_early_is_taken_over_and_never_opens(
        home: VirtualHome, boot: Boot, tmp_path: Path) -> None:
    assert_open_without_rules(home)
    # What mudguard-base.service does before the network comes up.
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nlan_interface = "{home.lan_if}"\n'
                      f'lan_prefixes = ["192.0.2.0/24"]\naddresses = ["192.0.2.1"]\n'
                      f'state_dir = "{tmp_path / "state"}"\n'
                      # the fixed ruleset holds the portal's port: none, as the installer
                      + ('ruleset = "data"\n[portal]\naddress = ""\n'
                         if TEST_RULESET == "data" else 'ruleset = "chains"\n'))
    ruleset = tmp_path / "base.json"
    subprocess.run([sys.executable, "-m", "mudguard", "base", "--config", str(config),
                    "--output", str(ruleset)], check=True)
    home.run(home.gw_ns, ["nft", "-j", "-f", str(ruleset)])
    assert not home.tcp(home.nodes[0].ns, CLOUD4, 443, 0.3)
    assert not home.tcp(home.nodes[1].ns, CLOUD4, 443, 0.3)
    loaded = time.time()
    boot.start_probes()
    boot.start_installer()
    base = boot.wait_for("base")
    done = boot.wait_for("done")
    time.sleep(0.3)
    forbidden, allowed = boot.stop_probes()
    assert base["installed"] is False  # taken over: never replaced, never flushed
    assert done["installed"] == SYNTHETIC + 2
    assert started(forbidden, loaded, done["t"]) > 100
    assert through(forbidden, 0) == []  # not one, over the whole run
    assert_allowed_device_waits_then_works(boot, allowed, loaded)


CHAINS_ONLY = pytest.mark.skipif(
    TEST_RULESET == "data", reason="the chains design's batches and pending sets: policy as "
    "data installs every device in one transaction (tests/netns/test_enforce_data.py)")


@CHAINS_ONLY
def test_killed_mid_install_leaves_the_lan_closed(home: VirtualHome, boot: Boot) -> None:
    assert_open_without_rules(home)
    boot.start_probes()
    boot.start_installer()
    base = boot.wait_for("base")
    boot.wait_for("batch")
    assert boot.installer is not None
    boot.installer.send_signal(signal.SIGKILL)  # ip netns exec runs it in its own process
    boot.installer.wait(timeout=10)
    killed = time.time()
    time.sleep(1.5)
    forbidden, _allowed = boot.stop_probes()
    assert not any(e["event"] == "done" for e in boot.events), "killed too late"
    assert started(forbidden, killed, killed + 1.5) > 50
    assert through(forbidden, base["t"]) == []
    home.run(home.gw_ns, ["nft", "list", "table", "inet", "mudguard"])  # the base stayed


def test_close_lan_keeps_a_running_home_and_replaces_another_base(home: VirtualHome) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    d1 = home.nodes[1]
    facts = DeviceFacts(mac=d1.mac, ipv4=(d1.ipv4,), ipv6=(d1.ipv6,),
                        state=LifecycleState.DEFAULT)
    policy = decide(facts, None, (), home.context(devices=(facts,)), now=now)
    first = make_enforcer(Nft.in_namespace(home.gw_ns), home.context(), clock=lambda: now)
    first.install_home([policy])
    assert home.tcp(d1.ns, CLOUD4, 443)
    # A restart: the kernel holds this base with the device in it; nothing is replaced.
    restart = make_enforcer(Nft.in_namespace(home.gw_ns), home.context(), clock=lambda: now)
    assert restart.close_lan() is False
    assert home.tcp(d1.ns, CLOUD4, 443)
    assert restart.reconcile([policy]).ok == [d1.mac]
    # Another configuration's base (another LAN interface) is replaced, closed either way.
    other = make_enforcer(Nft.in_namespace(home.gw_ns),
                          home.context(lan_interface="mgother0"), clock=lambda: now)
    assert other.close_lan() is True
    assert not home.tcp(d1.ns, CLOUD4, 443, 0.5)
    report = make_enforcer(Nft.in_namespace(home.gw_ns), home.context(),
                           clock=lambda: now).reconcile([policy])
    assert report.reinstalled_table
    assert home.tcp(d1.ns, CLOUD4, 443)


@CHAINS_ONLY
@pytest.mark.parametrize("moved", [False, True], ids=["fresh", "address-moved"])
def test_a_device_whose_rules_are_not_in_yet_receives_nothing(
        home: VirtualHome, monkeypatch: pytest.MonkeyPatch, moved: bool) -> None:
    # One device per batch; the first one installed may send anywhere on the LAN
    # (trusted); the other's own rules refuse it. Between the two batches the second
    # device has no rules of its own yet: the base must not let the first one in.
    # "address-moved": the last run gave the second device's addresses to a device
    # forgotten since (trusted: it accepted everything), still in the kernel.
    monkeypatch.setattr(enforcer_module, "DEVICES_PER_BATCH", 1)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first, second = home.nodes  # installed in this order
    home.serve(second.ns, tcp=[8080])
    enforcer = Enforcer(Nft.in_namespace(home.gw_ns), home.context(), clock=lambda: now)
    if moved:
        gone = DeviceFacts(mac="02:6d:67:00:aa:aa", ipv4=(second.ipv4,), ipv6=(second.ipv6,),
                           state=LifecycleState.TRUSTED)
        enforcer.install_home([decide(gone, None, (), home.context(devices=(gone,)),
                                      now=now)])
        enforcer = Enforcer(Nft.in_namespace(home.gw_ns), home.context(), clock=lambda: now)
    states = {first.mac: LifecycleState.TRUSTED, second.mac: LifecycleState.DEFAULT}
    devices = [DeviceFacts(mac=n.mac, ipv4=(n.ipv4,), ipv6=(n.ipv6,), state=states[n.mac])
               for n in (first, second)]
    context = home.context(devices=tuple(devices))
    policies = [decide(d, None, (), context, now=now) for d in devices]
    assert enforcer.close_lan() is not moved
    seen: list[tuple[list[str], bool, bool]] = []

    def between(macs: list[str]) -> None:
        seen.append((macs, home.tcp(first.ns, second.ipv4, 8080, 0.3),
                     home.tcp(first.ns, second.ipv6, 8080, 0.3)))

    report = enforcer.reconcile(policies, on_batch=between)
    assert report.removed_chains if moved else not report.removed_chains
    assert seen[0] == ([first.mac], False, False)  # installed sender, receiver pending
    assert seen[1] == ([second.mac], False, False)  # the receiver's own rules refuse it
    assert home.tcp(first.ns, CLOUD4, 443) and home.tcp(second.ns, CLOUD4, 443)
    assert home.run(home.gw_ns, ["nft", "list", "set", "inet", "mudguard", "pending4"]
                    ).stdout.count("elements") == 0  # nothing left pending


def test_thousands_of_addresses_in_one_element_command_go_over_netlink(
        home: VirtualHome) -> None:
    # Reconcile's first transaction marks every device still to come as pending: 5,000
    # IPv6 addresses are more than one netlink attribute holds (64 KiB).
    nft = Nft.in_namespace(home.gw_ns)
    Enforcer(nft, home.context()).close_lan()
    addresses = [str(ipaddress.ip_address("2001:db8:1::1:0") + i) for i in range(5000)]
    before = nft.netlink_batches
    nft.apply([main_set_element("add", PENDING6, addresses)])
    assert nft.netlink_batches == before + 1
    listed = json.loads(home.run(home.gw_ns, ["nft", "-j", "list", "set", "inet", "mudguard",
                                              PENDING6]).stdout)
    elements = next(i["set"] for i in listed["nftables"] if "set" in i)["elem"]
    assert len(elements) == 5000
    nft.apply([main_set_element("delete", PENDING6, addresses)])
