"""Adapter: the home's DHCP server, real dnsmasq, run in the foreground as a child.

dnsmasq serves DHCP only (``--port=0``: DNS is mudguard's DNS guard) on the LAN
interface: DHCPv4 (``dhcp.range``) and/or stateful DHCPv6 with router advertisements
(``dhcp.range6``). Each lease change runs ``mudguard-dhcp-hook``, which sends the lease and
the device's MUD URL (DHCPv4 option 161 or DHCPv6 option 112) to the daemon's unix socket
(``mudguard.discovery.dhcp``). Everything on its command line comes from the checked
configuration: addresses are parsed as addresses, never text from a device.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from mudguard.child import stop_child
from mudguard.daemon.config import GatewayConfig
from mudguard.errors import MudguardError

log = logging.getLogger(__name__)


class DnsmasqError(MudguardError):
    """dnsmasq is missing or would not start."""

    key = "dnsmasq_failed"


def hook_path() -> str:
    """The ``mudguard-dhcp-hook`` executable beside this Python (the venv's bin)."""
    beside = Path(sys.executable).parent / "mudguard-dhcp-hook"
    if beside.exists():
        return str(beside)
    found = shutil.which("mudguard-dhcp-hook")
    if found is None:
        raise DnsmasqError("mudguard-dhcp-hook is not installed (pip install -e .)")
    return found


def _lan_of(config: GatewayConfig, first: str, last: str, key: str
            ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]:
    """The LAN prefix holding the range ``first``-``last`` and the gateway's address in it."""
    network = next((ipaddress.ip_network(p) for p in config.lan_prefixes
                    if ipaddress.ip_address(first) in ipaddress.ip_network(p)), None)
    if network is None or ipaddress.ip_address(last) not in network:
        raise DnsmasqError(f"{key} {first}-{last} is not inside a LAN prefix")
    router = next((a for a in config.addresses if ipaddress.ip_address(a) in network), None)
    if router is None:
        raise DnsmasqError(f"no gateway address in {network}")
    return network, router


def _dhcp4_args(config: GatewayConfig) -> list[str]:
    if config.dhcp_range is None:
        return []
    first, last = config.dhcp_range
    network, router = _lan_of(config, first, last, "dhcp.range")
    return [f"--dhcp-range={first},{last},{network.netmask},{config.lease_time}",
            f"--dhcp-option=option:router,{router}",
            f"--dhcp-option=option:dns-server,{router}"]


def _dhcp6_args(config: GatewayConfig) -> list[str]:
    """Stateful DHCPv6 (RFC 8415) with router advertisements: the RAs carry the managed
    flag and the on-link prefix but no autonomous flag, so a device gets its address from
    DHCPv6 and announces its MUD URL in option 112 (RFC 8520 §10), which dnsmasq hands to
    the hook. (Stateless DHCPv6 makes no lease, so dnsmasq never runs the hook for it.)"""
    if config.dhcp_range6 is None:
        return []
    first, last = config.dhcp_range6
    network, router = _lan_of(config, first, last, "dhcp.range6")
    return ["--enable-ra",
            f"--dhcp-range={first},{last},{network.prefixlen},{config.lease_time}",
            f"--dhcp-option=option6:dns-server,[{router}]"]


def dnsmasq_argv(config: GatewayConfig, *, binary: str = "dnsmasq",
                 hook: str | None = None) -> list[str]:
    """dnsmasq's command line for ``config`` (DHCPv4 and/or DHCPv6 with router
    advertisements on the LAN interface, no DNS)."""
    if config.dhcp_range is None and config.dhcp_range6 is None:
        raise DnsmasqError("neither dhcp.range nor dhcp.range6 is configured")
    state = config.state_dir
    return [
        binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--port=0", f"--interface={config.lan_interface}", "--bind-interfaces",
        "--except-interface=lo", "--user=root", "--group=root",
        *_dhcp4_args(config), *_dhcp6_args(config),
        # No ICMP check before offering an address: dnsmasq waits up to 3 s per offer,
        # one offer at a time, so five devices booting together waited 15 s. The gateway
        # is the only DHCP server on the LAN and proxy-ARPs for it.
        "--no-ping",
        "--dhcp-authoritative", "--log-facility=-", "--log-dhcp",
        f"--dhcp-leasefile={state / 'dnsmasq.leases'}",
        f"--pid-file={state / 'dnsmasq.pid'}",
        *dns_advertising_options(config),
    ] + ([f"--dhcp-script={hook or hook_path()}"] if config.dhcp_hook else [])


def dns_advertising_options(config: GatewayConfig) -> list[str]:
    """dnsmasq options that announce the gateway's resolver over IPv6 (RFC 9726 §6.5).

    DHCPv4 option 6 is set with the router above. ``option6:dns-server`` is DHCPv6
    option 23 (RFC 3646) and, when router advertisements are on, the RDNSS option
    of every RA (RFC 8106): without it dnsmasq would announce its link-local
    address, where the DNS guard does not listen (``--port=0``: dnsmasq serves no
    DNS). Only the gateway's IPv6 addresses inside a LAN prefix are named, the ones
    the DNS guard binds.

    Not announced: DNR (RFC 9463: DHCPv4 option 162, DHCPv6 option 144, RA option
    144). DNR describes *encrypted* resolvers (an authentication domain name, ALPN
    for DoT/DoH/DoQ); the gateway serves plain DNS only, which options 6/23 and
    RDNSS already announce, so a DNR option would promise a service that does not
    exist.
    """
    networks = [ipaddress.ip_network(p) for p in config.lan_prefixes]
    servers = [a for a in config.addresses
               if ipaddress.ip_address(a).version == 6
               and any(ipaddress.ip_address(a) in n for n in networks if n.version == 6)]
    if not servers:
        return []
    return ["--dhcp-option=option6:dns-server," + ",".join(f"[{a}]" for a in servers)]


class Dnsmasq:
    """A running dnsmasq child; its log lines go to this module's logger."""

    def __init__(self, config: GatewayConfig) -> None:
        binary = shutil.which("dnsmasq")
        if binary is None:
            raise DnsmasqError("dnsmasq is not installed (apt-get install dnsmasq-base)")
        self.argv = dnsmasq_argv(config, binary=binary)
        self.env = {**os.environ, "MUDGUARD_DHCP_SOCKET": str(config.dhcp_socket)}
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start dnsmasq; raise ``DnsmasqError`` if it exits at once (bad config, port)."""
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        try:
            self.proc.wait(timeout=0.3)
        except subprocess.TimeoutExpired:
            threading.Thread(target=self._log, daemon=True, name="dnsmasq-log").start()
            log.info("dnsmasq serving DHCP (pid %d)", self.proc.pid)
            return
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise DnsmasqError(f"dnsmasq exited at once: {err.strip()[-500:]}")

    def _log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            log.debug("dnsmasq: %s", line.rstrip())

    def alive(self) -> bool:
        """True while dnsmasq runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop dnsmasq (SIGTERM, then SIGKILL after 5 s)."""
        stop_child(self.proc)
