"""The gateway daemon's configuration: a TOML file, checked before anything starts.

Example (every key optional except the LAN's interface and addresses)::

    [gateway]
    lan_interface = "br-lan"
    wan_interface = "wan0"
    lan_prefixes = ["192.168.1.0/24"]
    addresses = ["192.168.1.1"]          # the gateway's own LAN addresses
    state_dir = "/var/lib/mudguard"       # database, leases, sockets
    home_default = "internet"             # devices with no MUD file: "internet" or "lan"
    maintenance_seconds = 60              # grant expiry, end of support, MUD refresh
    isolate_lan = true                    # a bridge LAN: ports isolated, proxy ARP/ND, so
                                          # device-to-device traffic crosses the rules
    device_tables = 16                    # nftables tables the devices are spread over:
                                          # 16 keeps a device's update flat in big homes,
                                          # 1 forwards small packets fastest (1-64)

    [dhcp]
    range = ["192.168.1.100", "192.168.1.199"]
    lease_time = "12h"

    [dns]
    upstream = ["192.0.2.53"]             # the resolver the DNS guard forwards to

    [mud]
    ca_file = "/etc/ssl/certs/ca-certificates.crt"   # trust anchors for MUD servers
    signature_roots = "/etc/mudguard/mud-signers.pem" # trust anchors for MUD signatures
    allow_unsigned = true
    # where to look for devices that announce no MUD URL (first match wins): an
    # index.json over HTTPS, or a local folder holding index.json and MUD files
    repositories = ["https://mud.isp.example/index.json", "/etc/mudguard/repository"]

    [portal]
    address = "192.168.1.1"
    port = 8080
    names = ["mudguard.home"]             # Host names the portal answers to, besides its
                                          # addresses (any other Host: refused, DNS rebinding)

    [watch]
    nflog_group = 100
    report_seconds = 10                   # dropped packets summarised per device this often

    [discovery]
    lldp = true                           # MUD URLs from LLDP on the LAN bridge's ports
    neighbours = true                     # devices' IPv6 (SLAAC) addresses from the
                                          # gateway's neighbour table
    dhcp_sniff = true                     # leases read off the LAN interface as dnsmasq
                                          # ACKs them (no process per lease)
    dhcp_hook = true                      # dnsmasq's --dhcp-script too (lease ends,
                                          # DHCPv6, and what the sniffer misses)

    [metrics]
    listen = "127.0.0.1:9469"             # OpenMetrics for Prometheus (off without this
                                          # key); loopback or a gateway.addresses entry only

    [wifi]
    ssid = "home"                         # enables per-device WiFi keys
    interface = "wlan0"
    hostapd = true                        # run hostapd (reads the per-device key file)
    ctrl_interface = "/run/hostapd/wlan0"  # hostapd = false: the system's hostapd's socket

A real home's addresses belong here; the demo writes its own file with documentation
addresses.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mudguard.errors import MudguardError

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
    dhcp_hook: bool = True
    maintenance_seconds: float = 60.0
    report_seconds: float = 10.0
    repositories: tuple[str, ...] = ()
    portal_names: tuple[str, ...] = ()
    isolate_lan: bool = True
    device_tables: int = 16
    metrics_listen: tuple[str, int] | None = None

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

    @property
    def control_socket(self) -> Path:
        """The owner's control socket (root only)."""
        return self.state_dir / "control.sock"


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _text(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = table.get(key, default)
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


def parse_config(text: str) -> GatewayConfig:
    """Parse and check a configuration; raise ``ConfigError`` naming the bad key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the configuration is not valid TOML: {exc}") from None
    gw, dhcp, dns = _section(doc, "gateway"), _section(doc, "dhcp"), _section(doc, "dns")
    mud, portal, watch = _section(doc, "mud"), _section(doc, "portal"), _section(doc, "watch")
    wifi, discovery = _section(doc, "wifi"), _section(doc, "discovery")
    metrics = _section(doc, "metrics")
    lldp = discovery.get("lldp", False)
    if not isinstance(lldp, bool):
        raise ConfigError("discovery.lldp must be true or false")
    neighbours = discovery.get("neighbours", True)
    if not isinstance(neighbours, bool):
        raise ConfigError("discovery.neighbours must be true or false")
    dhcp_sniff, dhcp_hook = discovery.get("dhcp_sniff", True), discovery.get("dhcp_hook", True)
    if not isinstance(dhcp_sniff, bool) or not isinstance(dhcp_hook, bool):
        raise ConfigError("discovery.dhcp_sniff and discovery.dhcp_hook must be true or false")
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
    lease = _text(dhcp, "lease_time", "dhcp", "1h") or "1h"
    if not _LEASE.match(lease):
        raise ConfigError("dhcp.lease_time must look like 600, 45m, 12h, 1d or infinite")
    upstream = _addresses(dns.get("upstream", []), "dns.upstream")
    repositories = _repositories(mud.get("repositories", []))
    portal_names = _host_names(portal.get("names", []))
    allow_unsigned = mud.get("allow_unsigned", True)
    if not isinstance(allow_unsigned, bool):
        raise ConfigError("mud.allow_unsigned must be true or false")
    portal_address = _text(portal, "address", "portal", addresses[0])
    if portal_address:
        _addresses([portal_address], "portal.address")
    home_default = _text(gw, "home_default", "gateway")
    if home_default not in (None, "internet", "lan"):
        raise ConfigError('gateway.home_default must be "internet" or "lan"')
    group = watch.get("nflog_group", 100)
    if not isinstance(group, int) or not 0 <= group <= 65535:
        raise ConfigError("watch.nflog_group must be 0-65535")
    ssid = _text(wifi, "ssid", "wifi")
    if ssid is not None and not re.match(r"^[\x20-\x7e]{1,32}$", ssid):
        raise ConfigError("wifi.ssid must be 1-32 printable ASCII characters")
    run_hostapd = wifi.get("hostapd", True)
    if not isinstance(run_hostapd, bool):
        raise ConfigError("wifi.hostapd must be true or false")
    wifi_ctrl = _path(_text(wifi, "ctrl_interface", "wifi"))
    wifi_interface = _interface(_text(wifi, "interface", "wifi", "wlan0"), "wifi.interface")
    device_tables = gw.get("device_tables", 16)
    if isinstance(device_tables, bool) or not isinstance(device_tables, int) \
            or not 1 <= device_tables <= 64:
        raise ConfigError("gateway.device_tables must be 1-64")
    isolate_lan = gw.get("isolate_lan", True)
    if not isinstance(isolate_lan, bool):
        raise ConfigError("gateway.isolate_lan must be true or false")
    maintenance = gw.get("maintenance_seconds", 60)
    if not isinstance(maintenance, int | float) or isinstance(maintenance, bool) \
            or not 1 <= maintenance <= 86_400:
        raise ConfigError("gateway.maintenance_seconds must be 1-86400")
    report = watch.get("report_seconds", 10)
    if not isinstance(report, int | float) or isinstance(report, bool) \
            or not 1 <= report <= 3600:
        raise ConfigError("watch.report_seconds must be 1-3600")
    return GatewayConfig(
        maintenance_seconds=float(maintenance), report_seconds=float(report), wifi_ssid=ssid,
        wifi_interface=wifi_interface or "wlan0", run_hostapd=run_hostapd, lldp=lldp,
        wifi_ctrl=wifi_ctrl, neighbours=neighbours, repositories=repositories,
        dhcp_sniff=dhcp_sniff, dhcp_hook=dhcp_hook,
        portal_names=portal_names, isolate_lan=isolate_lan, device_tables=device_tables,
        metrics_listen=parse_listen(metrics["listen"], addresses) if "listen" in metrics
        else None,
        lan_interface=lan,
        wan_interface=_interface(_text(gw, "wan_interface", "gateway"),
                                 "gateway.wan_interface"),
        lan_prefixes=prefixes, addresses=addresses,
        state_dir=Path(_text(gw, "state_dir", "gateway", "/var/lib/mudguard") or "."),
        home_default=home_default,
        dhcp_range=dhcp_range, lease_time=lease, dns_upstream=upstream,
        dns_port=_port(dns.get("port", 53), "dns.port"),
        ca_file=_path(_text(mud, "ca_file", "mud")),
        signature_roots=_path(_text(mud, "signature_roots", "mud")),
        allow_unsigned=allow_unsigned, portal_address=portal_address,
        portal_port=_port(portal.get("port", 8080), "portal.port"), nflog_group=group)


def load_config(path: Path) -> GatewayConfig:
    """Read and check the configuration file at ``path``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration {path}: {exc.strerror}") from None
    return parse_config(text)
