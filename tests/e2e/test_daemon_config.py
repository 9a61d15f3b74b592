"""The daemon's configuration checks, dnsmasq command line and control requests
(no privileges: a real SQLite store and the real device services, no kernel)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mudguard.daemon.config import ConfigError, parse_config
from mudguard.daemon.control import ControlServer
from mudguard.daemon.dnsmasq import DnsmasqError, dnsmasq_argv
from mudguard.demo.runner import control_request, gateway_config
from mudguard.devices.service import DeviceService
from mudguard.store import Store

GOOD = """
[gateway]
lan_interface = "br-lan"
lan_prefixes = ["192.0.2.0/24"]
addresses = ["192.0.2.1"]
state_dir = "/tmp/mg"
home_default = "lan"
[dhcp]
range = ["192.0.2.100", "192.0.2.199"]
[dns]
upstream = ["198.51.100.53"]
"""


def test_a_good_configuration_parses_with_defaults() -> None:
    config = parse_config(GOOD)
    assert (config.lan_interface, config.addresses, config.home_default) == (
        "br-lan", ("192.0.2.1",), "lan")
    assert (config.dns_port, config.portal_address, config.portal_port) == (53, "192.0.2.1", 8080)
    assert config.database == Path("/tmp/mg/mudguard.db")
    assert config.dhcp_range == ("192.0.2.100", "192.0.2.199")
    assert config.isolate_lan is True and config.device_tables == 16
    assert parse_config(GOOD.replace('home_default = "lan"', 'home_default = "lan"\n'
                                     'device_tables = 1')).device_tables == 1
    off = GOOD.replace('home_default = "lan"', 'home_default = "lan"\nisolate_lan = false')
    assert parse_config(off).isolate_lan is False


def test_the_demo_writes_a_configuration_the_daemon_accepts(tmp_path: Path) -> None:
    text = gateway_config(lan_interface="mghdbr", wan_interface="mghdw",
                          lan_prefix="192.0.2.0/24", gateway="192.0.2.1",
                          state_dir=tmp_path, ca_file=tmp_path / "ca.pem")
    config = parse_config(text)
    assert (config.ca_file, config.signature_roots) == (tmp_path / "ca.pem",) * 2
    assert config.home_default == "lan"


@pytest.mark.parametrize(("text", "complaint"), [
    ("[gateway", "not valid TOML"),
    ('[gateway]\nlan_prefixes=["192.0.2.0/24"]\naddresses=["192.0.2.1"]', "lan_interface"),
    ('[gateway]\nlan_interface="br; rm -rf /"\nlan_prefixes=["192.0.2.0/24"]\n'
     'addresses=["192.0.2.1"]', "not an interface name"),
    ('[gateway]\nlan_interface="br"\nlan_prefixes=["not-a-prefix"]\naddresses=["192.0.2.1"]',
     "not an IP prefix"),
    (GOOD.replace('"lan"', '"everything"'), "home_default"),
    (GOOD + "[portal]\nport = 70000\n", "port number"),
    (GOOD.replace('range = ["192.0.2.100", "192.0.2.199"]', 'range = ["192.0.2.100"]'),
     "dhcp.range"),
    (GOOD + '[mud]\nallow_unsigned = "yes"\n', "allow_unsigned"),
    (GOOD.replace('home_default = "lan"', 'home_default = "lan"\nisolate_lan = 1'),
     "isolate_lan"),
    (GOOD.replace('home_default = "lan"', 'home_default = "lan"\ndevice_tables = 65'),
     "device_tables"),
    (GOOD.replace('home_default = "lan"', 'home_default = "lan"\ndevice_tables = true'),
     "device_tables"),
    (GOOD + "[devices]\nlearning = 1\n", "devices.learning must"),
    (GOOD + "[devices]\nlearning_days = -1\n", "devices.learning_days"),
    (GOOD + '[devices]\nlock_automatically = "no"\n', "devices.lock_automatically"),
])
def test_bad_configurations_are_refused_naming_the_key(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_config(text)


def test_learning_is_on_by_default_and_the_devices_section_sets_it() -> None:
    """Issue #16: a fresh gateway learns devices without a MUD file; locking stays the
    owner's choice (``lock_automatically`` unset: the database's setting, first false)."""
    default = parse_config(GOOD)
    assert (default.learning, default.learning_days, default.lock_automatically) == (
        True, None, None)
    assert parse_config(GOOD + "[devices]\nlearning = false\n").learning is False
    config = parse_config(GOOD + "[devices]\nlearning = true\nlearning_days = 0.01\n"
                          "lock_automatically = true\nlearning_flush_seconds = 0.5\n")
    assert (config.learning, config.learning_days, config.lock_automatically,
            config.learning_flush_seconds) == (True, 0.01, True, 0.5)


def test_dnsmasq_serves_dhcp_only_with_the_mud_hook() -> None:
    argv = dnsmasq_argv(parse_config(GOOD), hook="/usr/bin/mudguard-dhcp-hook")
    assert "--port=0" in argv  # DNS is the guard's job
    assert "--dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,1h" in argv
    assert "--dhcp-option=option:dns-server,192.0.2.1" in argv
    assert "--dhcp-script=/usr/bin/mudguard-dhcp-hook" in argv
    assert "--interface=br-lan" in argv


DUAL = GOOD.replace('lan_prefixes = ["192.0.2.0/24"]',
                   'lan_prefixes = ["192.0.2.0/24", "2001:db8:1::/64"]').replace(
    'addresses = ["192.0.2.1"]', 'addresses = ["192.0.2.1", "2001:db8:1::1"]')


def test_dnsmasq_serves_dhcpv6_with_router_advertisements_when_range6_is_set() -> None:
    text = DUAL.replace("[dhcp]\n", '[dhcp]\nrange6 = ["2001:db8:1::100", "2001:db8:1::1ff"]\n')
    argv = dnsmasq_argv(parse_config(text), hook="/usr/bin/mudguard-dhcp-hook")
    assert "--enable-ra" in argv
    assert "--dhcp-range=2001:db8:1::100,2001:db8:1::1ff,64,1h" in argv
    assert "--dhcp-option=option6:dns-server,[2001:db8:1::1]" in argv
    assert "--dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,1h" in argv  # v4 kept
    v6_only = parse_config(text.replace('range = ["192.0.2.100", "192.0.2.199"]\n', ""))
    assert v6_only.dhcp_range is None
    argv = dnsmasq_argv(v6_only, hook="/bin/true")
    assert "--enable-ra" in argv and not any("255.255.255.0" in a for a in argv)
    assert "--enable-ra" not in dnsmasq_argv(parse_config(DUAL), hook="/bin/true")


@pytest.mark.parametrize(("range6", "complaint"), [
    ('["2001:db8:1::100"]', "dhcp.range6"),
    ('["192.0.2.100", "192.0.2.199"]', "IPv6 addresses"),
])
def test_a_bad_dhcpv6_range_is_refused(range6: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_config(DUAL.replace("[dhcp]\n", f"[dhcp]\nrange6 = {range6}\n"))


def test_dnsmasq_refuses_a_dhcpv6_range_outside_the_lan() -> None:
    config = parse_config(DUAL.replace("[dhcp]\n", '[dhcp]\nrange6 = ["2001:db8:9::1", '
                                                    '"2001:db8:9::9"]\n'))
    with pytest.raises(DnsmasqError, match=r"dhcp\.range6 .* not inside a LAN prefix"):
        dnsmasq_argv(config, hook="/bin/true")


def test_dnsmasq_refuses_a_range_outside_the_lan() -> None:
    config = parse_config(GOOD.replace('"192.0.2.199"', '"198.51.100.9"'))
    with pytest.raises(DnsmasqError, match="not inside a LAN prefix"):
        dnsmasq_argv(config, hook="/bin/true")


async def _serve_and_ask(tmp_path: Path, requests: list[bytes]) -> list[dict[str, object]]:
    store = Store(tmp_path / "db.sqlite")
    service = DeviceService(store=store)
    service.observe(mac="02:6d:67:00:00:09", ip="192.0.2.109")

    async def run(fn):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    server = ControlServer(tmp_path / "control.sock", service, run)
    await server.start()
    assert (tmp_path / "control.sock").stat().st_mode & 0o777 == 0o600
    replies = []
    try:
        for raw in requests:
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "control.sock"))
            writer.write(raw + b"\n")
            await writer.drain()
            replies.append(json.loads(await reader.readline()))
            writer.close()
    finally:
        await server.stop()
        store.close()
    return replies


def test_control_socket_answers_and_refuses_bad_requests(tmp_path: Path) -> None:
    replies = asyncio.run(_serve_and_ask(tmp_path, [
        b'{"op": "devices"}',
        b'{"op": "grant", "mac": "02:6d:67:00:00:09", "kind": "internet"}',
        b'{"op": "grant", "mac": "02:6d:67:00:00:09", "kind": "everything"}',
        b'{"op": "grant", "mac": "02:6d:67:00:00:99", "kind": "lan"}',
        b'{"op": "shell", "mac": "02:6d:67:00:00:09"}',
        b"not json",
        b"[1, 2]",
    ]))
    devices, granted, bad_kind, unknown, bad_op, not_json, not_object = replies
    assert devices["ok"] and [d["mac"] for d in devices["devices"]] == ["02:6d:67:00:00:09"]
    assert granted["ok"] and granted["grant"]["kind"] == "internet"
    assert (bad_kind["ok"], bad_kind["error"]) == (False, "bad_request")
    assert (unknown["ok"], unknown["error"]) == (False, "device_not_found")
    assert (bad_op["ok"], bad_op["error"]) == (False, "bad_request")
    assert (not_json["ok"], not_object["ok"]) == (False, False)


def test_control_request_reports_a_missing_daemon(tmp_path: Path) -> None:
    reply = control_request(tmp_path / "nobody.sock", {"op": "devices"}, timeout=1)
    assert reply["ok"] is False and "control socket" in reply["error"]


def test_wifi_section_enables_per_device_keys_and_checks_the_ssid() -> None:
    config = parse_config(GOOD + '[wifi]\nssid = "home"\n')
    assert (config.wifi_ssid, config.wifi_interface, config.run_hostapd) == ("home", "wlan0", True)
    assert config.psk_file == Path("/tmp/mg/hostapd.wpa_psk")
    assert parse_config(GOOD).wifi_ssid is None
    with pytest.raises(ConfigError, match=r"wifi\.ssid"):
        parse_config(GOOD + '[wifi]\nssid = "a\\nwpa_passphrase=x"\n')


def test_hostapd_config_reads_the_per_device_key_file(tmp_path: Path) -> None:
    from mudguard.daemon.hostapd import HostapdStartError, hostapd_config

    text = hostapd_config(interface="wlan0", ssid="home", psk_file=tmp_path / "psk",
                          ctrl_dir=tmp_path / "ctrl")
    assert f"wpa_psk_file={tmp_path / 'psk'}\n" in text and "driver=none\n" in text
    assert "ap_isolate=1\n" in text  # stations reach each other only through the gateway
    with pytest.raises(HostapdStartError):
        hostapd_config(interface="wlan0", ssid="x" * 33, psk_file=tmp_path / "psk",
                       ctrl_dir=tmp_path / "ctrl")


def test_violation_log_counts_every_drop_and_keeps_bounded_distinct_evidence() -> None:
    from mudguard.daemon.violations import ViolationLog
    from mudguard.mud import Direction
    from mudguard.watch import FlowEvent

    def drop(device: str, port: int) -> FlowEvent:
        return FlowEvent(device_id=device, direction=Direction.FROM_DEVICE, family=4,
                         src="192.0.2.100", dst="198.51.100.30", protocol=6, dst_port=port)

    log = ViolationLog(max_evidence=3, max_devices=2)
    for port in (443, 443, 80, 22, 23, 443):
        log.add(drop("dev-a", port))
    log.add(drop("dev-b", 1))
    log.add(drop("dev-c", 1))  # beyond max_devices: not tracked
    tallies = log.drain()
    assert sorted(tallies) == ["dev-a", "dev-b"]
    assert tallies["dev-a"].count == 6
    assert [e.dst_port for e in tallies["dev-a"].evidence] == [443, 80, 22]
    assert log.drain() == {}  # drained: starts afresh


def test_controller_classes_map_to_the_owners_addresses_and_reach_the_home_context() -> None:
    """``[mud] controllers``: the owner's addresses per controller class (RFC 8520), the
    only way a class other than dns/ntp grants anything; bad entries are refused."""
    from mudguard.daemon.config import ConfigError, parse_config

    base = ('[gateway]\nlan_interface = "br0"\nlan_prefixes = ["192.0.2.0/24"]\n'
            'addresses = ["192.0.2.1"]\n')
    config = parse_config(base + '[mud]\ncontrollers = { "bacnet" = ["192.0.2.20"], '
                                 '"urn:ietf:params:mud:gateway" = ["192.0.2.1"] }\n')
    assert config.controllers == {"bacnet": ("192.0.2.20",),
                                  "urn:ietf:params:mud:gateway": ("192.0.2.1",)}
    assert dict(config.home_context().controllers) == dict(config.controllers)
    assert parse_config(base).home_context().controllers == {}
    for bad in ('controllers = { "bacnet" = ["not-an-address"] }',
                'controllers = { "bacnet" = [] }', 'controllers = ["192.0.2.20"]'):
        with pytest.raises(ConfigError):
            parse_config(base + "[mud]\n" + bad + "\n")
