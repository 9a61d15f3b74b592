"""A virtual home built from network namespaces, for tests, benchmarks and the demo.

Topology (every name starts with ``prefix``; only documentation addresses)::

    <prefix>-d0 ... <prefix>-dN          device namespaces, one veth each
         |             |
    [ <prefix>br  bridge, ports isolated ]  <prefix>-gw  (the gateway: routes v4+v6)
                       |
                  <prefix>w veth   203.0.113.1/24, 2001:db8:ff::1/64
                       |
    <prefix>-inet   203.0.113.2, 2001:db8:ff::2; servers on 198.51.100.0/24 and
                    2001:db8:ff:1::/64 (``INTERNET_HOSTS``)

Lateral traffic must cross the gateway: the bridge's device ports are
``isolated on`` (an isolated port only talks to the bridge itself), and the
gateway answers ARP (``proxy_arp`` + ``proxy_arp_pvlan``) and neighbour
solicitations (``proxy_ndp`` entries for each device) for the LAN, so device A
reaches device B through the gateway's forward path, where nftables sees it.
Devices refuse ICMP redirects: the gateway would otherwise tell them to go direct.

The internet namespace has no default route: nothing can leave the virtual home.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mudguard.child import stop_child
from mudguard.policy import HomeContext
from mudguard.vhome import _netns, probe
from mudguard.vhome._netns import NetnsError

T = TypeVar("T")

LAN4 = ipaddress.ip_network("192.0.2.0/24")
LAN6 = ipaddress.ip_network("2001:db8:1::/64")
GW4 = "192.0.2.1"
GW6 = "2001:db8:1::1"
WAN4_GW, WAN4_INET = "203.0.113.1", "203.0.113.2"
WAN6_GW, WAN6_INET = "2001:db8:ff::1", "2001:db8:ff::2"
INET4 = "198.51.100.0/24"
INET6 = "2001:db8:ff:1::/64"

INTERNET_HOSTS: Mapping[str, tuple[str, str]] = {
    "cloud": ("198.51.100.10", "2001:db8:ff:1::10"),
    "mfg": ("198.51.100.20", "2001:db8:ff:1::20"),  # a second "manufacturer cloud"
    "other": ("198.51.100.30", "2001:db8:ff:1::30"),
    "dns": ("198.51.100.53", "2001:db8:ff:1::53"),
}
"""Addresses the internet namespace answers on, by role."""

MAX_DEVICES = 200


@dataclass(frozen=True, slots=True)
class VDevice:
    """One device namespace on the LAN."""

    index: int
    ns: str
    iface: str
    mac: str
    ipv4: str
    ipv6: str


@dataclass(slots=True)
class VirtualHome:
    """Builds and tears down the namespaces; use as a context manager.

    ``prefix`` starts every namespace and interface name (keep it ≤ 8 characters;
    interface names are limited to 15).
    """

    prefix: str
    devices: int = 2
    gw_ns: str = field(init=False)
    inet_ns: str = field(init=False)
    lan_if: str = field(init=False)
    wan_if: str = field(init=False)
    nodes: list[VDevice] = field(init=False, default_factory=list)
    _procs: list[subprocess.Popen[str]] = field(init=False, default_factory=list)
    _tmp: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not (1 <= len(self.prefix) <= 8) or not self.prefix.isalnum():
            raise ValueError("prefix must be 1-8 letters or digits")
        if not 0 <= self.devices <= MAX_DEVICES:
            raise ValueError(f"devices must be between 0 and {MAX_DEVICES}")
        self.gw_ns = f"{self.prefix}-gw"
        self.inet_ns = f"{self.prefix}-inet"
        self.lan_if = f"{self.prefix}br"
        self.wan_if = f"{self.prefix}w"

    # -- life cycle -------------------------------------------------------------------

    def __enter__(self) -> VirtualHome:
        if os.geteuid() != 0:
            raise PermissionError("the virtual home needs root (network namespaces)")
        self.teardown()  # leftovers of a crashed run with the same prefix
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def namespaces(self) -> list[str]:
        """Every namespace name this home uses (built or not)."""
        return [self.gw_ns, self.inet_ns, *(f"{self.prefix}-d{i}" for i in range(self.devices))]

    def teardown(self) -> None:
        """Stop servers and delete every namespace of this home (safe to call twice)."""
        for proc in self._procs:
            stop_child(proc, grace_s=3)
        self._procs.clear()
        for ns in self.namespaces():
            _netns.delete(ns)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- building ---------------------------------------------------------------------

    def _build(self) -> None:
        self._build_gateway()
        self._build_internet()
        for i in range(self.devices):
            self.nodes.append(self._build_device(i))

    def _build_gateway(self) -> None:
        gw, br = self.gw_ns, self.lan_if
        _netns.add(gw)
        ip = ["ip", "-n", gw]
        _netns.run([*ip, "link", "add", br, "type", "bridge"])
        _netns.sysctl(gw, {
            "net.ipv4.ip_forward": "1",
            "net.ipv6.conf.all.forwarding": "1",
            "net.ipv4.conf.all.send_redirects": "0",
            f"net.ipv4.conf.{br}.send_redirects": "0",
            f"net.ipv4.conf.{br}.proxy_arp": "1",
            f"net.ipv4.conf.{br}.proxy_arp_pvlan": "1",
            # Proxy answers are delayed up to 0.8 s by default; a home wants them now.
            f"net.ipv4.neigh.{br}.proxy_delay": "0",
            "net.ipv6.conf.all.proxy_ndp": "1",
            f"net.ipv6.conf.{br}.proxy_ndp": "1",
            f"net.ipv6.neigh.{br}.proxy_delay": "0",
            f"net.ipv6.conf.{br}.accept_dad": "0",
        })
        _netns.run([*ip, "addr", "add", f"{GW4}/24", "dev", br])
        _netns.run([*ip, "addr", "add", f"{GW6}/64", "dev", br, "nodad"])
        _netns.run([*ip, "link", "set", br, "up"])

    def _build_internet(self) -> None:
        gw, inet, wan = self.gw_ns, self.inet_ns, self.wan_if
        _netns.add(inet)
        _netns.sysctl(inet, {"net.ipv6.conf.all.accept_dad": "0",
                             "net.ipv6.conf.default.accept_dad": "0"})
        _netns.run(["ip", "-n", gw, "link", "add", wan, "type", "veth",
                    "peer", "name", f"{self.prefix}i", "netns", inet])
        _netns.sysctl(gw, {f"net.ipv6.conf.{wan}.accept_dad": "0"})
        for ns, dev, a4, a6 in ((gw, wan, WAN4_GW, WAN6_GW),
                                (inet, f"{self.prefix}i", WAN4_INET, WAN6_INET)):
            _netns.run(["ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", dev])
            _netns.run(["ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", dev, "nodad"])
            _netns.run(["ip", "-n", ns, "link", "set", dev, "up"])
        for a4, a6 in INTERNET_HOSTS.values():
            _netns.run(["ip", "-n", inet, "addr", "add", f"{a4}/32", "dev", "lo"])
            _netns.run(["ip", "-n", inet, "addr", "add", f"{a6}/128", "dev", "lo", "nodad"])
        # The gateway's default route ends in the internet namespace, which has no
        # default route of its own: nothing leaves the virtual home.
        _netns.run(["ip", "-n", gw, "route", "add", "default", "via", WAN4_INET])
        _netns.run(["ip", "-n", gw, "-6", "route", "add", "default", "via", WAN6_INET])
        _netns.run(["ip", "-n", inet, "route", "add", str(LAN4), "via", WAN4_GW])
        _netns.run(["ip", "-n", inet, "-6", "route", "add", str(LAN6), "via", WAN6_GW])

    def device_addresses(self, index: int) -> tuple[str, str, str]:
        """(MAC, IPv4, IPv6) of device ``index``."""
        mac = f"02:6d:67:00:{index >> 8:02x}:{index & 0xFF:02x}"
        return mac, str(LAN4[10 + index]), str(LAN6[0x1000 + index])

    def _build_device(self, index: int) -> VDevice:
        ns = f"{self.prefix}-d{index}"
        port, iface = f"{self.prefix}p{index}", f"{self.prefix}e{index}"
        mac, a4, a6 = self.device_addresses(index)
        _netns.add(ns)
        _netns.sysctl(ns, {"net.ipv6.conf.all.accept_dad": "0",
                           "net.ipv6.conf.default.accept_dad": "0",
                           "net.ipv6.conf.all.accept_redirects": "0",
                           "net.ipv6.conf.default.accept_redirects": "0",
                           "net.ipv6.conf.default.accept_ra": "0",
                           "net.ipv4.conf.all.accept_redirects": "0",
                           "net.ipv4.conf.default.accept_redirects": "0"})
        gw = ["ip", "-n", self.gw_ns]
        _netns.run([*gw, "link", "add", port, "type", "veth", "peer", "name", iface,
                    "netns", ns])
        _netns.run([*gw, "link", "set", port, "master", self.lan_if, "up"])
        _netns.run(["bridge", "-n", self.gw_ns, "link", "set", "dev", port, "isolated", "on"])
        d = ["ip", "-n", ns]
        _netns.run([*d, "link", "set", iface, "address", mac])
        _netns.run([*d, "addr", "add", f"{a4}/24", "dev", iface])
        _netns.run([*d, "addr", "add", f"{a6}/64", "dev", iface, "nodad"])
        _netns.run([*d, "link", "set", iface, "up"])
        _netns.run([*d, "route", "add", "default", "via", GW4])
        _netns.run([*d, "-6", "route", "add", "default", "via", GW6])
        _netns.run([*gw, "-6", "neigh", "add", "proxy", a6, "dev", self.lan_if])
        return VDevice(index=index, ns=ns, iface=iface, mac=mac, ipv4=a4, ipv6=a6)

    # -- running things inside ----------------------------------------------------------

    def call(self, ns: str, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        """Run ``fn(*args)`` inside namespace ``ns``; return its result."""
        return _netns.call_in(ns, fn, *args, timeout=timeout)

    def run(self, ns: str, argv: Sequence[str], *, check: bool = True,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command (no shell) inside namespace ``ns``."""
        return _netns.run(argv, ns=ns, check=check, input_text=input_text)

    def tcp(self, ns: str, address: str, port: int, timeout: float = 1.0, **kw: Any) -> bool:
        """True if a TCP connection from ``ns`` to ``address``:``port`` completes."""
        return self.call(ns, probe.tcp_connect, address, port, timeout, **kw) \
            if not kw else self.call(ns, _tcp_kw, address, port, timeout, kw)

    def udp(self, ns: str, address: str, port: int, timeout: float = 1.0) -> bool:
        """True if a UDP datagram from ``ns`` to ``address``:``port`` is echoed back."""
        return self.call(ns, probe.udp_exchange, address, port, timeout)

    def ping(self, ns: str, address: str, timeout: float = 1.0) -> bool:
        """True if an ICMP echo from ``ns`` to ``address`` is answered."""
        return self.call(ns, probe.ping, address, timeout)

    def serve(self, ns: str, *, tcp: Sequence[int] = (), udp: Sequence[int] = (),
              lifetime: float = 900.0) -> subprocess.Popen[str]:
        """Start a TCP-accept / UDP-echo server in ``ns`` on all its addresses.

        Returns once it listens; it stops at teardown or after ``lifetime`` seconds.
        """
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "mudguard.vhome.serve",
                "--lifetime", str(lifetime)]
        argv += [a for p in tcp for a in ("--tcp", str(p))]
        argv += [a for p in udp for a in ("--udp", str(p))]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready", or EOF if it failed
        if line.strip() != "ready":
            err = proc.stderr.read() if proc.stderr else ""
            raise NetnsError(f"server in {ns} did not start: {err.strip()}")
        return proc

    def serve_dns(self, records: Mapping[str, Sequence[str]], *, ttl: int = 60) -> None:
        """Run real dnsmasq in the internet namespace on the ``dns`` host's addresses.

        ``records`` maps a name to the IPv4/IPv6 addresses it resolves to.
        """
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        a4, a6 = INTERNET_HOSTS["dns"]
        argv = ["ip", "netns", "exec", self.inet_ns, "dnsmasq", "--keep-in-foreground",
                "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
                f"--listen-address={a4}", f"--listen-address={a6}", "--except-interface=",
                f"--local-ttl={ttl}", f"--pid-file={self._tmp}/dnsmasq.pid", "--user=root",
                "--log-facility=-"]
        for name, addresses in records.items():
            for address in addresses:
                ipaddress.ip_address(address)  # only addresses, never text, reach argv
                argv.append(f"--host-record={name},{address}")
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        self._procs.append(proc)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise NetnsError(f"dnsmasq failed: {proc.stderr.read() if proc.stderr else ''}")
            if self.call(self.inet_ns, probe.udp_port_bound, a4, 53):
                return
            time.sleep(0.05)
        raise NetnsError("dnsmasq did not start listening within 5 s")

    def context(self, **overrides: Any) -> HomeContext:
        """The ``HomeContext`` of this home (LAN prefixes, gateway, interfaces)."""
        values: dict[str, Any] = {
            "lan_prefixes": (str(LAN4), str(LAN6)),
            "gateway_addresses": (GW4, GW6),
            "lan_interface": self.lan_if,
            "wan_interface": self.wan_if,
        }
        values.update(overrides)
        return HomeContext(**values)


def _tcp_kw(address: str, port: int, timeout: float, kw: dict[str, Any]) -> bool:
    return probe.tcp_connect(address, port, timeout, **kw)
