"""``mudguard doctor``'s judges: pure functions of tool output, /proc text and the clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mudguard.daemon.config import parse_config
from mudguard.daemon.doctor import (
    Check,
    Listener,
    Status,
    WantedPort,
    capability_mask,
    dnsmasq_options,
    holder_label,
    is_mudguard,
    judge_br_netfilter,
    judge_capabilities,
    judge_clock,
    judge_dnsmasq,
    judge_hostapd,
    judge_nft,
    judge_ports,
    passed,
    proc_net_listeners,
    version_tuple,
    wanted_ports,
)

DNSMASQ_290 = ("Dnsmasq version 2.90  Copyright (c) 2000-2024 Simon Kelley\nCompile time "
               "options: IPv6 GNU-getopt DBus no-UBus i18n IDN2 DHCP DHCPv6 no-Lua TFTP "
               "conntrack ipset nftset auth cryptohash DNSSEC loop-detect inotify dumpfile\n")
NO_DHCP = DNSMASQ_290.replace(" DHCP DHCPv6", " no-DHCP no-DHCPv6")
# /proc/net/udp of a namespace where something binds 0.0.0.0:67 and 127.0.0.53:53, and
# /proc/net/tcp6 with a listener on [::1]:8080 and an established connection (columns cut
# after the inode: the parser reads no further).
HEAD = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  " \
    "timeout inode ref pointer drops\n"
PROC_UDP = HEAD + (
    "  1: 00000000:0043 00000000:0000 07 00000000:00000000 00:00000000 00000000     0  0 4242\n"
    "  2: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101  0 4343\n")
LOOP6 = "00000000000000000000000001000000"
PROC_TCP6 = HEAD + (
    f"   0: {LOOP6}:1F90 {'0' * 32}:0000 0A 00000000:00000000 00:00000000 00000000  0  0 777\n"
    f"   1: {LOOP6}:1F91 {'0' * 32}:0000 01 00000000:00000000 00:00000000 00000000  0  0 778\n")


def test_versions_and_options_are_read_from_tool_output() -> None:
    assert version_tuple("nftables v1.0.6 (Lester Gooch #5)") == (1, 0, 6)
    assert version_tuple("hostapd v2.10\nUser space daemon") == (2, 10)
    assert version_tuple(DNSMASQ_290) == (2, 90)
    assert {"DHCP", "DHCPv6", "nftset"} <= dnsmasq_options(DNSMASQ_290)
    assert "DHCP" not in dnsmasq_options(NO_DHCP)


@pytest.mark.parametrize(("text", "status"), [
    ("nftables v1.0.6 (Lester Gooch #5)", Status.OK),
    ("nftables v0.9.3 (Topsy)", Status.FAIL),
    (None, Status.FAIL),
])
def test_nft_version(text: str | None, status: Status) -> None:
    assert judge_nft(text).status is status


def test_dnsmasq_needs_dhcp_and_the_mud_url() -> None:
    assert judge_dnsmasq(DNSMASQ_290, mud_url=True, needed=True).status is Status.OK
    without = judge_dnsmasq(NO_DHCP, mud_url=True, needed=True)
    assert without.status is Status.FAIL and "without DHCP, DHCPv6" in without.detail
    old = judge_dnsmasq(DNSMASQ_290.replace("2.90", "2.80"), mud_url=False, needed=True)
    assert old.status is Status.FAIL and "DNSMASQ_MUD_URL" in old.detail
    missing = judge_dnsmasq(None, mud_url=False, needed=False)
    assert missing.status is Status.WARN and "dnsmasq-base" in missing.fix


def test_hostapd_is_required_only_with_wifi_and_needs_a_radio() -> None:
    assert judge_hostapd(None, nl80211=False, needed=False, radio=None).status is Status.WARN
    assert judge_hostapd(None, nl80211=False, needed=True, radio=None).status is Status.FAIL
    assert judge_hostapd("hostapd v2.7", nl80211=True, needed=True,
                         radio=None).status is Status.FAIL
    no_radio = judge_hostapd("hostapd v2.10", nl80211=True, needed=True,
                             radio="wlan0 is not a WiFi radio")
    assert no_radio.status is Status.FAIL and "wifi.interface" in no_radio.fix
    assert judge_hostapd("hostapd v2.10", nl80211=True, needed=True,
                         radio=None).status is Status.OK


def test_a_clock_before_this_release_fails_and_ntp_state_only_warns() -> None:
    stale = judge_clock(datetime(2020, 1, 1, tzinfo=UTC), synced=True)
    assert stale.status is Status.FAIL and "set-ntp" in stale.fix
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert judge_clock(now, synced=None).status is Status.WARN
    assert judge_clock(now, synced=False).status is Status.WARN
    assert judge_clock(now, synced=True).status is Status.OK


def test_capabilities_from_the_status_mask() -> None:
    full = capability_mask("Name:\tx\nCapEff:\t000001ffffffffff\n")
    assert judge_capabilities(0, full).status is Status.OK
    no_admin = full & ~(1 << 12)
    check = judge_capabilities(0, no_admin)
    assert check.status is Status.FAIL and "missing CAP_NET_ADMIN" in check.detail
    assert judge_capabilities(1000, 0).status is Status.FAIL


def test_br_netfilter_matters_only_without_port_isolation() -> None:
    assert judge_br_netfilter(None, isolate_lan=True).status is Status.OK
    assert judge_br_netfilter("1\n", isolate_lan=True).status is Status.OK
    assert judge_br_netfilter("1\n", isolate_lan=False).status is Status.WARN
    bypass = judge_br_netfilter(None, isolate_lan=False)
    assert bypass.status is Status.FAIL and "isolate_lan = true" in bypass.fix


def test_proc_net_tables_are_parsed() -> None:
    assert proc_net_listeners(PROC_UDP, "udp", ipv6=False) == [
        Listener("udp", "0.0.0.0", 67, 4242), Listener("udp", "127.0.0.53", 53, 4343)]
    assert proc_net_listeners(PROC_TCP6, "tcp", ipv6=True) == [
        Listener("tcp", "::1", 8080, 777)]


def test_ports_clash_on_the_wildcard_or_our_address_and_mudguard_may_hold_them() -> None:
    listeners = proc_net_listeners(PROC_UDP, "udp", ipv6=False)
    holders = {4242: "dhcpd (pid 9)", 4343: "systemd-resolved (pid 5)"}.get
    wanted = [WantedPort("udp", 67, "DHCP"), WantedPort("udp", 53, "DNS", ("192.0.2.1",))]
    dhcp, dns = judge_ports(wanted, listeners, holders)
    assert dhcp.status is Status.FAIL and "dhcpd (pid 9)" in dhcp.detail
    assert dns.status is Status.OK  # resolved holds 127.0.0.53 only: no clash on the LAN
    ours = judge_ports(wanted[:1], listeners, {4242: "mudguard (pid 9)"}.get)
    assert ours[0].status is Status.OK and "held by mudguard" in ours[0].detail


def test_mudguard_processes_are_recognised() -> None:
    assert is_mudguard(["/usr/bin/mudguard", "run"])
    assert is_mudguard(["/opt/mudguard/.venv/bin/python", "-m", "mudguard", "run"])
    assert is_mudguard(["dnsmasq", "--keep-in-foreground",
                        "--dhcp-script=/usr/local/bin/mudguard-dhcp-hook"])
    assert not is_mudguard(["/srv/mudguard/.venv/bin/python", "-m", "pytest"])
    assert not is_mudguard(["dnsmasq", "--conf-file=/etc/dnsmasq.conf"])
    assert holder_label("3", ["/usr/bin/python3", "/tmp/hold.py"]) == "python3 hold.py (pid 3)"


def test_ports_follow_the_configuration() -> None:
    config = parse_config('[gateway]\nlan_interface = "br-lan"\nlan_prefixes = '
                          '["192.0.2.0/24"]\naddresses = ["192.0.2.1"]\n[dns]\nupstream = '
                          '["198.51.100.53"]\nport = 5353\n[portal]\nport = 8443\n'
                          '[metrics]\nlisten = "127.0.0.1:9469"\n')
    assert [(w.proto, w.port, w.addresses) for w in wanted_ports(config)] == [
        ("udp", 5353, ("192.0.2.1",)), ("tcp", 5353, ("192.0.2.1",)),
        ("tcp", 8443, ("192.0.2.1",)), ("tcp", 9469, ("127.0.0.1",))]


def test_warnings_pass_failures_do_not() -> None:
    assert passed([Check("a", Status.OK, ""), Check("b", Status.WARN, "")])
    assert not passed([Check("a", Status.OK, ""), Check("b", Status.FAIL, "")])
