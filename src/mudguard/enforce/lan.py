"""Adapter: make every LAN-to-LAN packet cross the gateway, where nftables sees it.

On a plain bridge, two devices on the home LAN talk to each other at layer 2 and
the gateway's ``inet`` rules never see the traffic. ``LanIsolation`` closes that
path on the gateway's LAN bridge:

- every bridge port is ``isolated on``: an isolated port may only talk to the
  bridge itself (the gateway), never to another isolated port;
- the gateway answers ARP for the whole LAN (``proxy_arp`` + ``proxy_arp_pvlan``,
  answers not delayed) and neighbour solicitations for each device's IPv6 address
  (``proxy_ndp`` + one proxy entry per address, kept by the Enforcer), so a device
  that asks for its neighbour's MAC gets the gateway's, and the packet is routed;
- the gateway sends no ICMP redirects to the LAN (the base ruleset also drops
  them), which would tell devices to go direct.

For WiFi, hostapd's ``ap_isolate=1`` does the same inside the access point.
Runs in the calling process's network namespace, or in ``netns`` (through
``ip netns exec``, for tests and the demo); commands are argv lists (no shell) and
the interface name is checked first.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from mudguard.errors import MudguardError

log = logging.getLogger(__name__)

_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


class LanIsolationError(MudguardError):
    """The LAN bridge could not be isolated (the message says what failed)."""

    key = "lan_isolation_failed"


def _run(argv: Sequence[str]) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise LanIsolationError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


class LanIsolation:
    """Port isolation, proxy ARP and proxy ND on one LAN bridge."""

    def __init__(self, bridge: str, *, netns: str | None = None) -> None:
        if not _IFNAME.match(bridge):
            raise ValueError(f"not an interface name: {bridge!r}")
        if netns is not None and not _IFNAME.match(netns.replace("-", "_")[:15]):
            raise ValueError(f"not a namespace name: {netns!r}")
        self.bridge = bridge
        self.netns = netns

    def _run(self, argv: Sequence[str]) -> str:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return _run([*prefix, *argv])

    def _sysctl(self, key: str, value: str) -> None:
        if self.netns:
            self._run(["sysctl", "-q", "-w", f"{key}={value}"])
            return
        path = Path("/proc/sys") / key.replace(".", "/")
        try:
            path.write_text(value)
        except OSError as exc:
            raise LanIsolationError(f"cannot set {key}={value}: {exc.strerror}") from None

    def setup(self) -> list[str]:
        """Configure the bridge and isolate every port it has now; return those ports."""
        br = self.bridge
        self._sysctl(f"net.ipv4.conf.{br}.proxy_arp", "1")
        self._sysctl(f"net.ipv4.conf.{br}.proxy_arp_pvlan", "1")
        # Linux delays proxy answers by up to 0.8 s by default; a home wants them now.
        self._sysctl(f"net.ipv4.neigh.{br}.proxy_delay", "0")
        self._sysctl(f"net.ipv4.conf.{br}.send_redirects", "0")
        self._sysctl("net.ipv4.conf.all.send_redirects", "0")
        self._sysctl("net.ipv6.conf.all.proxy_ndp", "1")
        self._sysctl(f"net.ipv6.conf.{br}.proxy_ndp", "1")
        self._sysctl(f"net.ipv6.neigh.{br}.proxy_delay", "0")
        return self.isolate_ports()

    def ports(self) -> list[str]:
        """The bridge's ports."""
        links = json.loads(self._run(["ip", "-j", "link", "show", "master", self.bridge]) or "[]")
        return [link["ifname"] for link in links if _IFNAME.match(link.get("ifname", ""))]

    def isolate_ports(self) -> list[str]:
        """Set ``isolated on`` on every port (idempotent; call again when a port appears)."""
        ports = self.ports()
        for port in ports:
            self._run(["bridge", "link", "set", "dev", port, "isolated", "on"])
        return ports

    def isolated(self) -> dict[str, bool]:
        """Each port and whether it is isolated."""
        links = json.loads(self._run(["bridge", "-d", "-j", "link", "show"]) or "[]")
        return {link["ifname"]: bool(link.get("isolated"))
                for link in links if link.get("master") == self.bridge}

    def add_proxy(self, address: str) -> None:
        """Answer neighbour solicitations for a device's IPv6 address (idempotent)."""
        ip = ipaddress.ip_address(address)
        if ip.version != 6 or ip.is_link_local:
            return
        self._run(["ip", "-6", "neigh", "add", "proxy", str(ip), "dev", self.bridge])

    def remove_proxy(self, address: str) -> None:
        """Stop answering for a device's IPv6 address (no error if there was no entry)."""
        ip = ipaddress.ip_address(address)
        if ip.version != 6:
            return
        try:
            self._run(["ip", "-6", "neigh", "del", "proxy", str(ip), "dev", self.bridge])
        except LanIsolationError:
            log.debug("no proxy entry for %s", ip)
