"""The daemon's identifier end to end: busybox udhcpc (device namespace) sends its
hostname and vendor class → dnsmasq (gateway namespace) runs ``mudguard-dhcp-hook``
→ ``DhcpHookListener`` → ``Intake`` with ``DhcpIdentifier`` → the device's maker is
stored."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudguard.devices.service import DeviceService
from mudguard.discovery.dhcp import SOCKET_ENV, DhcpHookListener
from mudguard.discovery.sighting import Intake
from mudguard.identify.live import DhcpIdentifier
from mudguard.store import Store
from mudguard.vhome import VirtualHome, run
from mudguard.vhome._home import GW4, LAN4

pytestmark = pytest.mark.root

HOOK = Path(sys.executable).with_name("mudguard-dhcp-hook")


@pytest.fixture
def dhcp_home(tmp_path: Path) -> Iterator[tuple[VirtualHome, DhcpHookListener]]:
    for binary in ("dnsmasq", "busybox"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (scripts/setup.sh installs it)")
    if not HOOK.is_file():
        pytest.skip(f"{HOOK} missing: run pip install -e . to create the entry point")
    with VirtualHome(prefix=f"mgi{os.getpid() % 10000}", devices=1) as home:
        node = home.nodes[0]
        run(["ip", "-4", "addr", "flush", "dev", node.iface], ns=node.ns)
        listener = DhcpHookListener(tmp_path / "dhcp.sock")
        argv = ["ip", "netns", "exec", home.gw_ns, shutil.which("dnsmasq") or "dnsmasq",
                "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                f"--interface={home.lan_if}", "--bind-interfaces", "--no-ping",
                f"--dhcp-range={LAN4[100]},{LAN4[199]},255.255.255.0,1h",
                f"--dhcp-option=option:router,{GW4}", f"--dhcp-script={HOOK}",
                f"--dhcp-leasefile={tmp_path / 'leases'}",
                f"--pid-file={tmp_path / 'dnsmasq.pid'}", "--user=root", "--group=root"]
        proc = subprocess.Popen(argv, env={**os.environ, SOCKET_ENV: str(listener.path)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield home, listener
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            listener.close()


def test_a_lease_names_the_maker(dhcp_home: tuple[VirtualHome, DhcpHookListener],
                                 tmp_path: Path) -> None:
    home, listener = dhcp_home
    node = home.nodes[0]
    run(["busybox", "udhcpc", "-i", node.iface, "-f", "-q", "-n", "-t", "5", "-T", "1",
         "-s", "/bin/true", "-x", "hostname:Sensi-1DBA50", "-V", "udhcp 1.36.1"],
        ns=node.ns, timeout=20)
    sighting = listener.receive(timeout=10)
    assert sighting is not None, "dnsmasq's hook sent nothing"
    assert sighting.hostname == "Sensi-1DBA50"
    assert sighting.vendor_class == "udhcp 1.36.1"
    assert sighting.prl and sighting.prl.split(",")[0].isdigit()
    store = Store(tmp_path / "m.db")
    try:
        intake = Intake(DeviceService(store=store), enrich=DhcpIdentifier.load().enrich)
        intake.on_sighting(sighting)
        device = store.get_device(sighting.mac)
        assert device is not None and device.manufacturer == "Emerson (Sensi)"
    finally:
        store.close()
