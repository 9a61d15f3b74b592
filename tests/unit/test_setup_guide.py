"""docs/setup-guide.md: every gateway.toml it shows is accepted by the daemon's own parser
(an unknown key is refused there too), and the hostapd.conf of setup A agrees with its
gateway.toml (the key file mudguard writes, the control socket it follows)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mudguard.daemon import GatewayConfig, parse_config

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "setup-guide.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", GUIDE.read_text(), re.S | re.M)


def _configs() -> list[GatewayConfig]:
    return [parse_config(block) for block in _blocks("toml")]


def test_the_guide_shows_a_gateway_toml_for_each_of_its_three_setups() -> None:
    assert len(_blocks("toml")) == 3


@pytest.mark.parametrize("index", range(3))
def test_each_gateway_toml_of_the_guide_parses(index: int) -> None:
    config = parse_config(_blocks("toml")[index])
    assert config.lan_interface == "br-lan"
    assert config.addresses == ("192.168.1.1",)
    assert config.dhcp_range == ("192.168.1.100", "192.168.1.199")


def test_setup_a_hostapd_conf_reads_the_key_file_mudguard_writes() -> None:
    setup_a = _configs()[0]
    hostapd = next(b for b in _blocks("") if b.startswith("interface=wlan0"))
    settings = dict(line.split("=", 1) for line in hostapd.splitlines()
                    if line and not line.startswith("#"))
    assert settings["wpa_psk_file"] == str(setup_a.psk_file)
    assert settings["ssid"] == setup_a.wifi_ssid
    assert settings["ap_isolate"] == "1"
    assert f"{settings['ctrl_interface']}/{settings['interface']}" == str(setup_a.wifi_ctrl)
    assert not setup_a.run_hostapd


@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("unshare") is None
                    or os.geteuid() != 0, reason="needs root, nft and unshare")
def test_the_nat_ruleset_of_the_guide_is_accepted_by_nft(tmp_path: Path) -> None:
    """``nft -c`` (check only) in a throwaway network namespace: the ruleset the guide
    tells the owner to put in /etc/nftables.conf parses and would load."""
    ruleset = next(b for b in _blocks("") if b.startswith("#!/usr/sbin/nft -f"))
    assert "flush ruleset" not in ruleset.replace("# NAT for the home only: no `flush "
                                                  "ruleset`", "")
    path = tmp_path / "nftables.conf"
    path.write_text(ruleset)
    checked = subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
