"""``[discovery] dhcp_sniff`` / ``dhcp_hook``: both paths on by default; the hook can be
switched off (dnsmasq then runs no script); anything but a boolean is refused."""

from __future__ import annotations

import pytest

from mudguard.daemon.config import ConfigError, parse_config
from mudguard.daemon.dnsmasq import dnsmasq_argv
from tests.e2e.test_daemon_config import GOOD

HOOK = "/usr/bin/mudguard-dhcp-hook"


def test_both_lease_paths_are_on_by_default() -> None:
    config = parse_config(GOOD)
    assert (config.dhcp_sniff, config.dhcp_hook) == (True, True)
    assert f"--dhcp-script={HOOK}" in dnsmasq_argv(config, hook=HOOK)


def test_without_the_hook_dnsmasq_runs_no_script() -> None:
    config = parse_config(GOOD + "[discovery]\ndhcp_hook = false\ndhcp_sniff = true\n")
    assert (config.dhcp_sniff, config.dhcp_hook) == (True, False)
    assert not [a for a in dnsmasq_argv(config, hook=HOOK) if a.startswith("--dhcp-script")]


def test_the_sniffer_can_be_switched_off() -> None:
    assert parse_config(GOOD + "[discovery]\ndhcp_sniff = false\n").dhcp_sniff is False


@pytest.mark.parametrize("text", ["dhcp_sniff = 1", 'dhcp_hook = "no"'])
def test_a_non_boolean_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"dhcp_sniff and discovery\.dhcp_hook"):
        parse_config(GOOD + f"[discovery]\n{text}\n")
