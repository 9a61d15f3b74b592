"""Adapter: the home's DHCP server, real dnsmasq, run in the foreground as a child.

dnsmasq serves DHCP only (``--port=0``: DNS is mudguard's DNS guard) on the LAN
interface. Each lease change runs ``mudguard-dhcp-hook``, which sends the lease and the
device's MUD URL (option 161, ``DNSMASQ_MUD_URL``) to the daemon's unix socket
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


def dnsmasq_argv(config: GatewayConfig, *, binary: str = "dnsmasq",
                 hook: str | None = None) -> list[str]:
    """dnsmasq's command line for ``config`` (DHCPv4 on the LAN interface, no DNS)."""
    if config.dhcp_range is None:
        raise DnsmasqError("no dhcp.range is configured")
    first, last = config.dhcp_range
    network = next((ipaddress.ip_network(p) for p in config.lan_prefixes
                    if ipaddress.ip_address(first) in ipaddress.ip_network(p)), None)
    if network is None or ipaddress.ip_address(last) not in network:
        raise DnsmasqError(f"dhcp.range {first}-{last} is not inside a LAN prefix")
    router = next((a for a in config.addresses if ipaddress.ip_address(a) in network), None)
    if router is None:
        raise DnsmasqError(f"no gateway address in {network}")
    state = config.state_dir
    return [
        binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--port=0", f"--interface={config.lan_interface}", "--bind-interfaces",
        "--except-interface=lo", "--user=root", "--group=root",
        f"--dhcp-range={first},{last},{network.netmask},{config.lease_time}",
        f"--dhcp-option=option:router,{router}",
        f"--dhcp-option=option:dns-server,{router}",
        # No ICMP check before offering an address: dnsmasq waits up to 3 s per offer,
        # one offer at a time, so five devices booting together waited 15 s. The gateway
        # is the only DHCP server on the LAN and proxy-ARPs for it.
        "--no-ping",
        "--dhcp-authoritative", "--log-facility=-", "--log-dhcp",
        f"--dhcp-leasefile={state / 'dnsmasq.leases'}",
        f"--pid-file={state / 'dnsmasq.pid'}",
    ] + ([f"--dhcp-script={hook or hook_path()}"] if config.dhcp_hook else [])


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
