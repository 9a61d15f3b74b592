"""The gateway daemon's configuration: a TOML file, checked before anything starts.

``CONFIG_KEYS`` is the one description of the file: every ``[section] key`` the parser
accepts, with its default and meaning. The parser takes its defaults from it and refuses
any other key; ``mudguard run --print-example-config`` and ``docs/configuration.md`` are
generated from it (``mudguard.daemon.config_reference``), and a test keeps all three
equal. Only ``[gateway] lan_interface``, ``lan_prefixes`` and ``addresses`` are required.
A real home's addresses belong here; the demo writes its own file with documentation
addresses.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mudguard.errors import MudguardError
from mudguard.policy import HomeContext, set_shard_count

_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$")
_LEASE = re.compile(r"^(infinite|\d{1,7}[smhd]?)$")


class ConfigError(MudguardError):
    """The configuration file is missing, malformed or inconsistent."""

    key = "bad_config"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """Everything the daemon needs to know about the home it runs."""

    lan_interface: str
    wan_interface: str | None
    lan_prefixes: tuple[str, ...]
    addresses: tuple[str, ...]
    state_dir: Path
    home_default: str | None
    dhcp_range: tuple[str, str] | None
    lease_time: str
    dns_upstream: tuple[str, ...]
    dns_port: int
    ca_file: Path | None
    signature_roots: Path | None
    allow_unsigned: bool
    portal_address: str | None
    portal_port: int
    nflog_group: int
    wifi_ssid: str | None = None
    wifi_interface: str = "wlan0"
    run_hostapd: bool = True
    wifi_ctrl: Path | None = None
    lldp: bool = False
    neighbours: bool = True
    dhcp_sniff: bool = True
    identify_announcements: bool = True
    dhcp_hook: bool = True
    controllers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # controller class (a MUD "controller" URI or bare name) -> the owner's addresses
    maintenance_seconds: float = 60.0
    report_seconds: float = 10.0
    repositories: tuple[str, ...] = ()
    portal_names: tuple[str, ...] = ()
    isolate_lan: bool = True
    device_tables: int = 16
    ruleset: str = "data"  # "chains" (a device's chains) or "data" (policy as data)
    metrics_listen: tuple[str, int] | None = None
    learning: bool = True
    learning_days: float | None = None  # None: the owner's setting in the database
    lock_automatically: bool | None = None
    learning_flush_seconds: float = 5.0  # recorded flows written to the database this often
    dhcp_range6: tuple[str, str] | None = None

    @property
    def keys_db(self) -> Path:
        """The WiFi key ring (SQLite, 0600)."""
        return self.state_dir / "keys.db"

    @property
    def psk_file(self) -> Path:
        """hostapd's ``wpa_psk_file`` (one line per device key)."""
        return self.state_dir / "hostapd.wpa_psk"

    @property
    def database(self) -> Path:
        """The SQLite database."""
        return self.state_dir / "mudguard.db"

    @property
    def dhcp_socket(self) -> Path:
        """Where dnsmasq's hook sends lease events."""
        return self.state_dir / "dhcp.sock"

    def home_context(self) -> HomeContext:
        """The home's context (no device yet). Sets the number of device tables first:
        everything compiled after it must use the same."""
        set_shard_count(self.device_tables)  # before anything compiles or fills a set
        return HomeContext(
            lan_prefixes=self.lan_prefixes, gateway_addresses=self.addresses,
            lan_interface=self.lan_interface, wan_interface=self.wan_interface or "",
            portal_ports=(self.portal_port,) if self.portal_address else (),
            log_group=self.nflog_group, tls_log_group=self.nflog_group + 1,
            identify_log_group=self.nflog_group + 2,
            controllers=dict(self.controllers))

    @property
    def base_file(self) -> Path:
        """The static base ruleset an early-boot unit loads (``nft -j -f``); the daemon
        rewrites it at each start so it stays in step with this configuration."""
        return self.state_dir / "base.json"

    @property
    def control_socket(self) -> Path:
        """The owner's control socket (root only)."""
        return self.state_dir / "control.sock"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigKey:
    """One ``[section] key`` of the file: the field it sets, its default and its meaning."""

    section: str
    name: str
    field: str  # the GatewayConfig attribute it sets
    kind: str  # the value's form, for people
    meaning: str
    example: object  # a valid value other than the default, for the docs and tests
    default: object = None  # the TOML value used when the key is absent; None: unset
    default_text: str | None = None  # how to say a default that is not a constant
    required: bool = False

    @property
    def dotted(self) -> str:
        """``section.name``, as error messages say it."""
        return f"{self.section}.{self.name}"


CONFIG_SECTIONS: dict[str, str] = {
    "gateway": "The home network the gateway serves and where it keeps its state.",
    "dhcp": "The DHCP server (dnsmasq, run by the daemon) that hands out leases and "
            "receives devices' MUD URLs.",
    "dns": "The DNS guard: the gateway's resolver for the LAN, which learns the addresses "
           "of the names MUD files allow.",
    "mud": "Fetching MUD files and checking their signatures.",
    "portal": "The owner's web portal.",
    "watch": "The traffic watcher: packets the rules drop, summarised per device.",
    "devices": "Devices without a MUD file anywhere: learn what they do, then lock them "
               "to it.",
    "discovery": "Other ways the gateway learns about devices.",
    "metrics": "OpenMetrics (Prometheus) endpoint of the daemon's health and figures.",
    "wifi": "Per-device WiFi keys (WPA2-PSK, one key per device, through hostapd).",
}

CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(section="gateway", name="lan_interface", field="lan_interface",
              kind="interface name", required=True, example="br-lan",
              meaning="The LAN interface the devices are on (best a bridge: see isolate_lan)."),
    ConfigKey(section="gateway", name="wan_interface", field="wan_interface",
              kind="interface name", example="wan0", default_text="unset",
              meaning="The Internet-side interface. Recorded only: the rules tell the LAN "
                      "from the Internet by lan_prefixes, not by interface."),
    ConfigKey(section="gateway", name="lan_prefixes", field="lan_prefixes",
              kind="list of IP prefixes", required=True, example=["192.168.1.0/24"],
              meaning="The home's LAN prefixes (IPv4 and IPv6): what counts as local-networks "
                      "and is never fetched from."),
    ConfigKey(section="gateway", name="addresses", field="addresses",
              kind="list of IP addresses", required=True, example=["192.168.1.1"],
              meaning="The gateway's own LAN addresses: DHCP router and DNS server, where the "
                      "DNS guard listens, and the portal's default address (the first)."),
    ConfigKey(section="gateway", name="state_dir", field="state_dir", kind="folder path",
              default="/var/lib/mudguard", example="/srv/mudguard",
              meaning="The database, the WiFi key ring, leases and the control socket "
                      "(created 0700)."),
    ConfigKey(section="gateway", name="home_default", field="home_default",
              kind='"internet" or "lan"', example="lan",
              default_text="unset: the owner's choice kept in the database (first start: "
                           '"internet")',
              meaning="What devices without a usable MUD file may reach: the Internet only, "
                      "or the home LAN only. Set here, it replaces the owner's choice at "
                      "every start."),
    ConfigKey(section="gateway", name="maintenance_seconds", field="maintenance_seconds",
              kind="seconds, 1-86400", default=60, example=300,
              meaning="How often grants expire, devices pass their end of support and MUD "
                      "files are refreshed."),
    ConfigKey(section="gateway", name="isolate_lan", field="isolate_lan", kind="true or false",
              default=True, example=False,
              meaning="On a bridge LAN: isolate the ports and answer ARP/ND for them, so "
                      "device-to-device traffic crosses the rules. Off: devices on the "
                      "bridge reach each other without any rule."),
    ConfigKey(section="gateway", name="device_tables", field="device_tables",
              kind="integer, 1-64", default=16, example=1,
              meaning="nftables tables the devices are spread over: 16 keeps one device's "
                      "update flat in big homes, 1 forwards small packets fastest."),
    ConfigKey(section="gateway", name="ruleset", field="ruleset",
              kind='"data" or "chains"', default="data", example="chains",
              meaning="How the rules are laid out in nftables: \"chains\", each device's "
                      "own chains (spread over device_tables); \"data\", one fixed ruleset "
                      "whose per-device content is set and map elements (cold install, "
                      "reconcile and updates stay flat to thousands of devices; devices "
                      "it cannot express, or with RFC 9761 TLS profiles, keep chains)."),
    ConfigKey(section="dhcp", name="range", field="dhcp_range",
              kind="[first, last] IP addresses", example=["192.168.1.100", "192.168.1.199"],
              default_text="unset: no DHCP server",
              meaning="The addresses dnsmasq leases, inside a LAN prefix that holds one of "
                      "the gateway's addresses. Unset: the daemon runs no DHCP server and "
                      "learns no MUD URL from DHCP."),
    ConfigKey(section="dhcp", name="range6", field="dhcp_range6",
              kind="[first, last] IPv6 addresses", example=["2001:db8:1::100", "2001:db8:1::1ff"],
              default_text="unset: no DHCPv6",
              meaning="Serve stateful DHCPv6 with router advertisements (managed flag) from "
                      "these addresses: IPv6 devices announce their MUD URL in option 112 "
                      "(RFC 8520 §10)."),
    ConfigKey(section="dhcp", name="lease_time", field="lease_time",
              kind="600, 45m, 12h, 1d or infinite", default="1h", example="12h",
              meaning="How long a lease lasts (dnsmasq's lease time)."),
    ConfigKey(section="dns", name="upstream", field="dns_upstream", kind="list of IP addresses",
              default=[], example=["192.0.2.53"],
              meaning="The resolvers the DNS guard forwards to (the first) and the MUD fetcher "
                      "asks (in order). Empty: no DNS service on the LAN, rules naming hosts "
                      "learn no addresses, and MUD URLs with names cannot be fetched."),
    ConfigKey(section="dns", name="port", field="dns_port", kind="port, 1-65535", default=53,
              example=5353, meaning="The port the DNS guard listens on, on every gateway "
                                    "address."),
    ConfigKey(section="mud", name="ca_file", field="ca_file", kind="PEM file path",
              example="/etc/ssl/certs/ca-certificates.crt",
              default_text="unset: the system's CAs",
              meaning="Trust anchors for the HTTPS servers MUD files are fetched from."),
    ConfigKey(section="mud", name="signature_roots", field="signature_roots",
              kind="PEM file path", example="/etc/mudguard/mud-signers.pem",
              default_text="unset: no signature can be verified",
              meaning="Trust anchors for MUD file signatures (RFC 8520 §13.2). Unset: a "
                      "signed MUD file counts as invalidly signed and the device gets the "
                      "home default."),
    ConfigKey(section="mud", name="allow_unsigned", field="allow_unsigned",
              kind="true or false", default=True, example=False,
              meaning="Accept MUD files without a signature. False: an unsigned file is "
                      "refused and the device gets the home default. Replaces the owner's "
                      "choice at every start."),
    ConfigKey(section="mud", name="repositories", field="repositories",
              kind="list of https:// URLs or absolute folder paths", default=[],
              example=["https://mud.isp.example/index.json", "/etc/mudguard/repository"],
              meaning="Where to look for devices that announce no MUD URL, first match "
                      "wins: an index.json over HTTPS, or a local folder holding index.json "
                      "and MUD files."),
    ConfigKey(section="mud", name="controllers", field="controllers",
              kind="table: controller class = list of IP addresses", default={},
              example={"urn:ietf:params:mud:gateway": ["192.168.1.1"],
                       "bacnet": ["192.168.1.20"]},
              meaning="The controllers of each class MUD files name (RFC 8520 \"controller\": "
                      "a URI, or a bare name as some suites write). An ACE naming a class "
                      "reaches exactly these addresses; an unmapped class grants nothing. "
                      "(urn:ietf:params:mud:dns and :ntp need no entry: they open the "
                      "gateway's own DNS or NTP.)"),
    ConfigKey(section="portal", name="address", field="portal_address", kind="IP address",
              example="192.168.1.2", default_text="the first of gateway.addresses",
              meaning='The address the portal listens on. "" (empty): no portal.'),
    ConfigKey(section="portal", name="port", field="portal_port", kind="port, 1-65535",
              default=8080, example=8443, meaning="The portal's port."),
    ConfigKey(section="portal", name="names", field="portal_names", kind="list of host names",
              default=[], example=["mudguard.home"],
              meaning="Host names the portal answers to besides its addresses; any other "
                      "Host header is refused (DNS rebinding)."),
    ConfigKey(section="watch", name="nflog_group", field="nflog_group", kind="integer, 0-65533",
              default=100, example=7,
              meaning="The NFLOG group the rules log dropped packets to and the watcher "
                      "reads; the next group carries the ClientHellos of devices whose MUD "
                      "file has RFC 9761 TLS profiles, the one after it the web flows "
                      "observed to identify devices without a MUD file."),
    ConfigKey(section="watch", name="report_seconds", field="report_seconds",
              kind="seconds, 1-3600", default=10, example=2,
              meaning="How often dropped packets are summarised per device."),
    ConfigKey(section="devices", name="learning", field="learning", kind="true or false",
              default=True, example=False,
              meaning="Learn, then lock: a device with no MUD file and no repository match is "
                      "learned from its connections (conntrack) while it has the home "
                      "default, then its profile is proposed to the owner (nothing is "
                      "locked without the owner's consent unless lock_automatically). "
                      "false: such a device keeps the home default until the owner acts."),
    ConfigKey(section="devices", name="learning_days", field="learning_days",
              kind="days, 0-365", example=1,
              default_text="unset: the owner's setting in the database (first start: 3)",
              meaning="How long a device is learned before its profile is proposed (0: no "
                      "learning). Set here, it replaces the owner's choice at every start."),
    ConfigKey(section="devices", name="lock_automatically", field="lock_automatically",
              kind="true or false", example=True,
              default_text="unset: the owner's setting in the database (first start: false)",
              meaning="Lock a device to its learned profile without asking the owner."),
    ConfigKey(section="devices", name="learning_flush_seconds",
              field="learning_flush_seconds", kind="seconds, 0.1-600", default=5, example=2,
              meaning="How often recorded connections of learning devices are written to "
                      "the database."),
    ConfigKey(section="discovery", name="lldp", field="lldp", kind="true or false",
              default=False, example=True,
              meaning="Read MUD URLs from LLDP on the LAN bridge's ports (or the LAN "
                      "interface)."),
    ConfigKey(section="discovery", name="neighbours", field="neighbours", kind="true or false",
              default=True, example=False,
              meaning="Learn devices' IPv6 (SLAAC) addresses from the gateway's neighbour "
                      "table."),
    ConfigKey(section="discovery", name="dhcp_sniff", field="dhcp_sniff", kind="true or false",
              default=True, example=False,
              meaning="Read leases off the LAN interface as dnsmasq acknowledges them "
                      "(AF_PACKET, needs CAP_NET_RAW): a lease reaches the rules without "
                      "starting a process."),
    ConfigKey(section="discovery", name="announcements", field="identify_announcements",
              kind="true or false", default=True, example=False,
              meaning="Read devices' mDNS and SSDP announcements off the LAN interface "
                      "(AF_PACKET with a BPF filter, needs CAP_NET_RAW) as clues to their "
                      "maker and kind, shown to the owner; never used to grant access."),
    ConfigKey(section="discovery", name="dhcp_hook", field="dhcp_hook", kind="true or false",
              default=True, example=False,
              meaning="Run dnsmasq's --dhcp-script too: lease ends, DHCPv6 and what the "
                      "sniffer misses. Off, nothing reports lease ends (a test knob)."),
    ConfigKey(section="metrics", name="listen", field="metrics_listen",
              kind="ADDRESS:PORT ([IPv6]:PORT for IPv6)", example="127.0.0.1:9469",
              default_text="unset: no metrics endpoint",
              meaning="Serve OpenMetrics for Prometheus here. Loopback or one of "
                      "gateway.addresses only: the metrics name every device of the home."),
    ConfigKey(section="wifi", name="ssid", field="wifi_ssid",
              kind="1-32 printable ASCII characters", example="home",
              default_text="unset: no WiFi keys",
              meaning="The network's name. Set, it enables per-device WiFi keys."),
    ConfigKey(section="wifi", name="interface", field="wifi_interface", kind="interface name",
              default="wlan0", example="wlan1", meaning="The WiFi interface hostapd runs on."),
    ConfigKey(section="wifi", name="hostapd", field="run_hostapd", kind="true or false",
              default=True, example=False,
              meaning="Run hostapd (it reads the per-device key file). False: the system's "
                      "hostapd, followed through ctrl_interface."),
    ConfigKey(section="wifi", name="ctrl_interface", field="wifi_ctrl", kind="socket path",
              example="/run/hostapd/wlan0",
              default_text="unset: the daemon's own hostapd's socket",
              meaning="With hostapd = false: the system hostapd's control socket (key "
                      "file reloads, events that bind one-time keys to devices). Unset then: "
                      "the key file is still written, read at hostapd's next start."),
)
_KEYS = {(key.section, key.name): key for key in CONFIG_KEYS}


def _known_keys_only(doc: dict[str, Any]) -> None:
    """Refuse a section or key the parser does not know (a typo would be silently lost)."""
    for section, table in doc.items():
        if section not in CONFIG_SECTIONS:
            raise ConfigError(f"unknown section [{section}]; the sections are "
                              + ", ".join(f"[{name}]" for name in CONFIG_SECTIONS))
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        for name in table:
            if (section, name) not in _KEYS:
                known = ", ".join(k.name for k in CONFIG_KEYS if k.section == section)
                raise ConfigError(f"unknown key {section}.{name}; [{section}] takes {known}")


def _default(section: str, name: str) -> Any:
    """The value a key takes when the file leaves it out (from ``CONFIG_KEYS``)."""
    return _KEYS[(section, name)].default


def _learning(devices: dict[str, Any]) -> tuple[bool, float | None, bool | None, float]:
    learning = devices.get("learning", _default("devices", "learning"))
    if not isinstance(learning, bool):
        raise ConfigError("devices.learning must be true or false")
    days = devices.get("learning_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int | float)
                             or not 0 <= days <= 365):
        raise ConfigError("devices.learning_days must be 0-365")
    auto_lock = devices.get("lock_automatically")
    if auto_lock is not None and not isinstance(auto_lock, bool):
        raise ConfigError("devices.lock_automatically must be true or false")
    flush = devices.get("learning_flush_seconds", 5)
    if isinstance(flush, bool) or not isinstance(flush, int | float) or not 0.1 <= flush <= 600:
        raise ConfigError("devices.learning_flush_seconds must be 0.1-600")
    return learning, None if days is None else float(days), auto_lock, float(flush)


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _get(table: dict[str, Any], section: str, key: str) -> Any:
    """``table[key]``, or the key's default from ``CONFIG_KEYS``."""
    return table.get(key, _default(section, key))


def _text(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    """A string key (``where`` is its section), its schema default, or ``default``."""
    value = table.get(key, default if default is not None else _default(where, key))
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    return value


def _addresses(values: object, where: str, *, networks: bool = False) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where} must be a list of strings")
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value, strict=False) if networks
                           else ipaddress.ip_address(value)))
        except ValueError:
            kind = "prefix" if networks else "address"
            raise ConfigError(f"{where}: {value!r} is not an IP {kind}") from None
    return tuple(out)


def _interface(value: str | None, where: str) -> str | None:
    if value is not None and not _IFNAME.match(value):
        raise ConfigError(f"{where}: {value!r} is not an interface name")
    return value


def _port(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ConfigError(f"{where} must be a port number (1-65535)")
    return value


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _host_names(values: object) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError("portal.names must be a list of strings")
    for value in values:
        if not _HOST.match(value):
            raise ConfigError(f"portal.names: {value[:80]!r} is not a host name")
    return tuple(v.lower() for v in values)


def _controllers(value: object) -> dict[str, tuple[str, ...]]:
    """``mud.controllers``: class -> addresses, each checked."""
    if not isinstance(value, dict):
        raise ConfigError("mud.controllers must be a table: class = [addresses]")
    if len(value) > 256:
        raise ConfigError("mud.controllers: at most 256 classes")
    mapped: dict[str, tuple[str, ...]] = {}
    for name, addresses in value.items():
        if not name or len(name) > 255 or not name.isprintable():
            raise ConfigError(f"mud.controllers: {name[:80]!r} is not a controller class")
        found = _addresses(addresses, f"mud.controllers.{name[:80]}")
        if not found or len(found) > 64:
            raise ConfigError(f"mud.controllers.{name[:80]} must list 1-64 addresses")
        mapped[name] = tuple(found)
    return mapped


def _repositories(values: object) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError("mud.repositories must be a list of strings")
    for value in values:
        if not (value.startswith("https://") or value.startswith("/")) \
                or not value.isprintable() or len(value) > 1024:
            raise ConfigError(f"mud.repositories: {value[:80]!r} is neither an https:// URL "
                              "nor an absolute folder path")
    return tuple(values)


def parse_listen(value: object, allowed: tuple[str, ...]) -> tuple[str, int]:
    """``metrics.listen`` ("ADDRESS:PORT", "[IPv6]:PORT") as (address, port); only a
    loopback address or one of ``allowed`` (the gateway's LAN addresses) is accepted."""
    if not isinstance(value, str):
        raise ConfigError("metrics.listen must be a string like \"127.0.0.1:9469\"")
    host, sep, port_text = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
        port = int(port_text) if sep and port_text.isdigit() else -1
    except ValueError:
        raise ConfigError(f"metrics.listen: {value[:80]!r} is not ADDRESS:PORT") from None
    if not 0 < port < 65536:
        raise ConfigError(f"metrics.listen: {value[:80]!r} is not ADDRESS:PORT")
    if not address.is_loopback and str(address) not in allowed:
        raise ConfigError(f"metrics.listen: {address} is neither a loopback address nor one of "
                          "gateway.addresses; the metrics name every device of the home, so "
                          "they are served only on the gateway itself or its LAN address")
    return str(address), port


def _range6(dhcp: dict[str, object]) -> tuple[str, str] | None:
    """``dhcp.range6``: the first and last IPv6 address DHCPv6 hands out, if set."""
    if "range6" not in dhcp:
        return None
    first_last = _addresses(dhcp["range6"], "dhcp.range6")
    if len(first_last) != 2 or any(ipaddress.ip_address(a).version != 6 for a in first_last):
        raise ConfigError("dhcp.range6 must be [first, last] IPv6 addresses")
    return (first_last[0], first_last[1])


def parse_config(text: str) -> GatewayConfig:
    """Parse and check a configuration; raise ``ConfigError`` naming the bad key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the configuration is not valid TOML: {exc}") from None
    _known_keys_only(doc)
    gw, dhcp, dns = _section(doc, "gateway"), _section(doc, "dhcp"), _section(doc, "dns")
    mud, portal, watch = _section(doc, "mud"), _section(doc, "portal"), _section(doc, "watch")
    wifi, discovery = _section(doc, "wifi"), _section(doc, "discovery")
    metrics = _section(doc, "metrics")
    learning, learning_days, auto_lock, flush = _learning(_section(doc, "devices"))
    lldp = _get(discovery, "discovery", "lldp")
    if not isinstance(lldp, bool):
        raise ConfigError("discovery.lldp must be true or false")
    neighbours = _get(discovery, "discovery", "neighbours")
    if not isinstance(neighbours, bool):
        raise ConfigError("discovery.neighbours must be true or false")
    dhcp_sniff = _get(discovery, "discovery", "dhcp_sniff")
    dhcp_hook = _get(discovery, "discovery", "dhcp_hook")
    if not isinstance(dhcp_sniff, bool) or not isinstance(dhcp_hook, bool):
        raise ConfigError("discovery.dhcp_sniff and discovery.dhcp_hook must be true or false")
    announcements = _get(discovery, "discovery", "announcements")
    if not isinstance(announcements, bool):
        raise ConfigError("discovery.announcements must be true or false")
    lan = _interface(_text(gw, "lan_interface", "gateway"), "gateway.lan_interface")
    if lan is None:
        raise ConfigError("gateway.lan_interface is required")
    prefixes = _addresses(gw.get("lan_prefixes", []), "gateway.lan_prefixes", networks=True)
    addresses = _addresses(gw.get("addresses", []), "gateway.addresses")
    if not prefixes or not addresses:
        raise ConfigError("gateway.lan_prefixes and gateway.addresses must not be empty")
    dhcp_range = None
    if "range" in dhcp:
        first_last = _addresses(dhcp["range"], "dhcp.range")
        if len(first_last) != 2:
            raise ConfigError("dhcp.range must be [first, last]")
        dhcp_range = (first_last[0], first_last[1])
    dhcp_range6 = _range6(dhcp)
    lease = _text(dhcp, "lease_time", "dhcp") or "1h"
    if not _LEASE.match(lease):
        raise ConfigError("dhcp.lease_time must look like 600, 45m, 12h, 1d or infinite")
    upstream = _addresses(_get(dns, "dns", "upstream"), "dns.upstream")
    repositories = _repositories(_get(mud, "mud", "repositories"))
    controllers = _controllers(_get(mud, "mud", "controllers"))
    portal_names = _host_names(_get(portal, "portal", "names"))
    allow_unsigned = _get(mud, "mud", "allow_unsigned")
    if not isinstance(allow_unsigned, bool):
        raise ConfigError("mud.allow_unsigned must be true or false")
    portal_address = _text(portal, "address", "portal", addresses[0])
    if portal_address:
        _addresses([portal_address], "portal.address")
    home_default = _text(gw, "home_default", "gateway")
    if home_default not in (None, "internet", "lan"):
        raise ConfigError('gateway.home_default must be "internet" or "lan"')
    group = _get(watch, "watch", "nflog_group")
    if not isinstance(group, int) or isinstance(group, bool) or not 0 <= group <= 65533:
        raise ConfigError("watch.nflog_group must be 0-65533 (the next two groups carry "
                          "TLS ClientHellos and identification)")
    ssid = _text(wifi, "ssid", "wifi")
    if ssid is not None and not re.match(r"^[\x20-\x7e]{1,32}$", ssid):
        raise ConfigError("wifi.ssid must be 1-32 printable ASCII characters")
    run_hostapd = _get(wifi, "wifi", "hostapd")
    if not isinstance(run_hostapd, bool):
        raise ConfigError("wifi.hostapd must be true or false")
    wifi_ctrl = _path(_text(wifi, "ctrl_interface", "wifi"))
    wifi_interface = _interface(_text(wifi, "interface", "wifi"), "wifi.interface")
    device_tables = _get(gw, "gateway", "device_tables")
    if isinstance(device_tables, bool) or not isinstance(device_tables, int) \
            or not 1 <= device_tables <= 64:
        raise ConfigError("gateway.device_tables must be 1-64")
    ruleset = _get(gw, "gateway", "ruleset")
    if ruleset not in ("chains", "data"):
        raise ConfigError('gateway.ruleset must be "chains" or "data"')
    isolate_lan = _get(gw, "gateway", "isolate_lan")
    if not isinstance(isolate_lan, bool):
        raise ConfigError("gateway.isolate_lan must be true or false")
    maintenance = _get(gw, "gateway", "maintenance_seconds")
    if not isinstance(maintenance, int | float) or isinstance(maintenance, bool) \
            or not 1 <= maintenance <= 86_400:
        raise ConfigError("gateway.maintenance_seconds must be 1-86400")
    report = _get(watch, "watch", "report_seconds")
    if not isinstance(report, int | float) or isinstance(report, bool) \
            or not 1 <= report <= 3600:
        raise ConfigError("watch.report_seconds must be 1-3600")
    return GatewayConfig(
        learning=learning, learning_days=learning_days, lock_automatically=auto_lock,
        learning_flush_seconds=flush,
        maintenance_seconds=float(maintenance), report_seconds=float(report), wifi_ssid=ssid,
        wifi_interface=wifi_interface or "wlan0", run_hostapd=run_hostapd, lldp=lldp,
        wifi_ctrl=wifi_ctrl, neighbours=neighbours, repositories=repositories,
        dhcp_sniff=dhcp_sniff, dhcp_hook=dhcp_hook, identify_announcements=announcements,
        controllers=controllers,
        portal_names=portal_names, isolate_lan=isolate_lan, device_tables=device_tables,
        ruleset=ruleset,
        metrics_listen=parse_listen(metrics["listen"], addresses) if "listen" in metrics
        else None,
        lan_interface=lan,
        wan_interface=_interface(_text(gw, "wan_interface", "gateway"),
                                 "gateway.wan_interface"),
        lan_prefixes=prefixes, addresses=addresses,
        state_dir=Path(_text(gw, "state_dir", "gateway") or "."),
        home_default=home_default,
        dhcp_range=dhcp_range, dhcp_range6=dhcp_range6, lease_time=lease, dns_upstream=upstream,
        dns_port=_port(_get(dns, "dns", "port"), "dns.port"),
        ca_file=_path(_text(mud, "ca_file", "mud")),
        signature_roots=_path(_text(mud, "signature_roots", "mud")),
        allow_unsigned=allow_unsigned, portal_address=portal_address,
        portal_port=_port(_get(portal, "portal", "port"), "portal.port"), nflog_group=group)


def load_config(path: Path) -> GatewayConfig:
    """Read and check the configuration file at ``path``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration {path}: {exc.strerror}") from None
    return parse_config(text)
