"""Issue #6 end to end: a device's real traffic is recorded on the gateway's LAN
(tcpdump in a namespace), ``profile learn`` proposes a MUD file, the owner approves it
with ``device apply-profile``, and the gateway's real nftables then lets the device do
what it did and drops anything else (real packets between namespaces)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudguard.devices.requests import handle_request
from mudguard.devices.service import DeviceService
from mudguard.enforce import Enforcer, Nft
from mudguard.store import Store
from mudguard.vhome import INTERNET_HOSTS, VirtualHome

pytestmark = pytest.mark.root

MUDGUARD = str(Path(sys.executable).with_name("mudguard"))
CLOUD4, _ = INTERNET_HOSTS["cloud"]
OTHER4, _ = INTERNET_HOSTS["other"]


@pytest.fixture
def home() -> Iterator[VirtualHome]:
    with VirtualHome(prefix=f"mgn{os.getpid() % 10000}", devices=2) as h:
        h.serve(h.inet_ns, tcp=[443, 8443])
        yield h


def record(home: VirtualHome, path: Path) -> subprocess.Popen[bytes]:
    """tcpdump on the gateway's LAN bridge (inside the gateway's namespace)."""
    proc = subprocess.Popen(["ip", "netns", "exec", home.gw_ns, "tcpdump", "-i", home.lan_if,
                             "-U", "--immediate-mode", "-w", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b"listening" not in proc.stderr.readline():
        pass
    return proc


def mudguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MUDGUARD, *args], capture_output=True, text=True, timeout=60)


def test_learned_profile_applied_by_the_owner_is_enforced(home: VirtualHome,
                                                          tmp_path: Path) -> None:
    coffee, neighbour = home.nodes
    # 1. The device does its usual thing while the gateway records (no rules yet).
    pcap = tmp_path / "usual.pcap"
    tcpdump = record(home, pcap)
    try:
        assert all(home.tcp(coffee.ns, CLOUD4, 443) for _ in range(3))
    finally:
        time.sleep(0.3)  # the last packets reach the file
        tcpdump.terminate()
        tcpdump.wait(timeout=10)

    # 2. The gateway proposes a profile from the recording.
    proposal = tmp_path / "proposal.json"
    learned = mudguard("profile", "learn", str(pcap), "--device", coffee.mac, "--gateway",
                       "192.0.2.1", "-o", str(proposal), "-q")
    assert learned.returncode == 0, learned.stderr
    assert mudguard("mud", "check", str(proposal)).returncode == 0

    # 3. The devices are known (DHCP sightings); the owner approves the proposal.
    db = tmp_path / "state" / "mudguard.db"
    with Store(db) as store:
        service = DeviceService(store=store)
        for node in home.nodes:
            service.observe(mac=node.mac, ip=node.ipv4)
    applied = mudguard("device", "apply-profile", coffee.mac, str(proposal), "--db", str(db),
                       "--json")
    assert applied.returncode == 0, applied.stderr
    device = json.loads(applied.stdout)["device"]
    assert device["state"] == "profiled" and device["signature_status"] == "owner_approved"

    # 4. The gateway starts and enforces every device from the database, as the
    # daemon's restore does (the cached profile of each device, its grants).
    enforcer = Enforcer(Nft.in_namespace(home.gw_ns), home.context())
    enforcer.install_home()
    with Store(db) as store:
        service = DeviceService(store=store, enforcer=enforcer)
        for stored in store.list_devices():
            enforcer.apply_device(stored, service.cached_mud(stored), [])

        assert home.tcp(coffee.ns, CLOUD4, 443)  # what it did
        assert not home.tcp(coffee.ns, CLOUD4, 8443)  # another port of the same host
        assert not home.tcp(coffee.ns, OTHER4, 443)  # another host
        # The neighbour is on the home default (Internet only): the same probe passes
        # for it, so the drops above come from the learned profile.
        assert home.tcp(neighbour.ns, OTHER4, 443)

        # 5. With the gateway running, an approval (the control socket's request) is
        # enforced at once: a revised proposal moves the device from 443 to 8443.
        revised = proposal.read_text().replace('"port": 443', '"port": 8443')
        assert revised != proposal.read_text()
        reply = handle_request(service, {"op": "apply-profile", "mac": coffee.mac,
                                         "mud": revised})
        assert reply["device"]["mud_source"] == "learned"
    assert home.tcp(coffee.ns, CLOUD4, 8443)
    assert not home.tcp(coffee.ns, CLOUD4, 443)
