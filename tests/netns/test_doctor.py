"""``mudguard doctor`` for real: it passes on this machine (inside a fresh namespace, so no
other test's daemon holds a port) and names the fix when something is taken away: dnsmasq
off the PATH, CAP_NET_ADMIN dropped from the bounding set, a port held by another program."""

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

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("nft") is None or shutil.which("dnsmasq") is None,
                       reason="needs nftables and dnsmasq"),
]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"mgdt{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def doctor(ns: str, *, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
           ) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(["ip", "netns", "exec", ns, *prefix, sys.executable, "-m",
                           "mudguard", "doctor", "--json"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


def test_doctor_passes_on_this_machine(netns: str) -> None:
    rc, report = doctor(netns)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert (rc, report["ok"], failed) == (0, True, [])
    checks = by_name(report)
    for name in ("nf_tables inet family", "concatenated sets with timeouts", "verdict maps",
                 "conntrack state", "log to NFLOG", "TLS ClientHello logging (RFC 9761)",
                 "bridge port isolation", "dnsmasq",
                 "port udp/67"):
        assert checks[name]["status"] == "ok", checks[name]
    # This VM has no nf_flow_table: a warning, never a failure.
    assert checks["flowtable offload"]["status"] in ("ok", "warn")
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout.split() if n.startswith("mgdoctor")]


def test_doctor_names_the_fix_when_dnsmasq_is_not_on_the_path(netns: str,
                                                             tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "nft", "hostapd", "timedatectl"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    rc, report = doctor(netns, env={**os.environ, "PATH": str(bin_dir)})
    dnsmasq = by_name(report)["dnsmasq"]
    assert (rc, report["ok"], dnsmasq["status"]) == (1, False, "fail")
    assert "not found" in dnsmasq["detail"] and "apt install dnsmasq-base" in dnsmasq["fix"]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_doctor_fails_without_cap_net_admin(netns: str) -> None:
    rc, report = doctor(netns, prefix=("setpriv", "--inh-caps=-net_admin",
                                       "--bounding-set=-net_admin"))
    checks = by_name(report)
    assert (rc, report["ok"]) == (1, False)
    assert checks["privileges"]["status"] == "fail"
    assert "CAP_NET_ADMIN" in checks["privileges"]["detail"]
    assert "run as root with CAP_NET_ADMIN" in checks["privileges"]["fix"]
    # And the kernel probe says so too: nft cannot change anything without it.
    assert checks["nf_tables inet family"]["status"] == "fail"


HOLD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 67))
print("ready", flush=True)
sys.stdin.read()
"""


def test_doctor_names_the_program_holding_the_dhcp_port(netns: str, tmp_path: Path) -> None:
    script = tmp_path / "isc-dhcp-stand-in.py"
    script.write_text(HOLD)
    holder = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, str(script)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        rc, report = doctor(netns)
    finally:
        holder.communicate(timeout=10)
    port = by_name(report)["port udp/67"]
    assert (rc, port["status"]) == (1, "fail")
    assert "isc-dhcp-stand-in.py" in port["detail"], port
    assert "stop or reconfigure" in port["fix"]


def test_doctor_reads_the_configuration_for_interfaces_and_wifi(netns: str,
                                                                tmp_path: Path) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "add", "br-lan", "type",
                    "bridge"], check=True)
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\nlan_interface = "br-lan"\nwan_interface = "wan0"\n'
                      'lan_prefixes = ["192.0.2.0/24"]\naddresses = ["192.0.2.1"]\n'
                      '[wifi]\nssid = "home"\ninterface = "wlan0"\n')
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", "mudguard",
                           "doctor", "--json", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    checks = by_name(json.loads(done.stdout))
    assert done.returncode == 1
    assert checks["gateway.lan_interface"]["status"] == "ok"
    assert checks["gateway.wan_interface"]["status"] == "fail"
    assert "no interface wan0" in checks["gateway.wan_interface"]["detail"]
    assert checks["hostapd"]["status"] == "fail"  # WiFi configured, no radio here
    assert "no interface wlan0" in checks["hostapd"]["detail"]
    assert "port udp/67" not in checks  # no [dhcp] range: dnsmasq is not started
    config.write_text("[gateway]\n")
    bad = subprocess.run([sys.executable, "-m", "mudguard", "doctor", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "lan_interface is required" in bad.stderr


@pytest.mark.skipif(shutil.which("faketime") is None, reason="needs faketime (libfaketime)")
def test_doctor_fails_on_a_clock_set_in_the_past(netns: str) -> None:
    rc, report = doctor(netns, prefix=("faketime", "2020-01-01 00:00:00"))
    clock = by_name(report)["clock"]
    assert (rc, clock["status"]) == (1, "fail")
    assert "2020-01-01" in clock["detail"] and "timedatectl set-ntp true" in clock["fix"]
