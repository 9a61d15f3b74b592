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
  them), which would tell devices to go direct;
- a bridge-family table (``bridge mudguard_lan``) drops every frame the bridge would
  forward from one of its ports to another, so a port is closed to its neighbours even
  before it is isolated (a port joining the bridge, or one whose isolation someone
  turned off, is open for the ≈20 ms the watcher below takes to isolate it; with the
  guard it never is). Frames to and from the gateway itself (the bridge's input and
  output) are untouched.

For WiFi, hostapd's ``ap_isolate=1`` does the same inside the access point.
Runs in the calling process's network namespace, or in ``netns`` (through
``ip netns exec``, for tests and the demo); commands are argv lists (no shell) and
the interface name is checked first.

A port that joins the bridge while the gateway runs (a WiFi interface coming up, a
USB Ethernet adapter) is isolated at once, not at the next maintenance pass:
``LanPortWatcher`` follows the kernel's link announcements (rtnetlink
``RTMGRP_LINK``, parsed with pyroute2) and names every port of the bridge that an
announcement shows not isolated: a new port, or one whose isolation someone turned
off. Setting ``isolated on`` is announced again with the flag set, so the watcher does
not chase its own changes. If announcements were lost (the socket's buffer
overflowed) or cannot be read, every port is isolated again (fail closed).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import re
import socket
import struct
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from mudguard.errors import MudguardError

log = logging.getLogger(__name__)

_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


class LanIsolationError(MudguardError):
    """The LAN bridge could not be isolated (the message says what failed)."""

    key = "lan_isolation_failed"


BRIDGE_GUARD_TABLE = "mudguard_lan"


def bridge_guard_ruleset(bridge: str, other_ports: Sequence[str] | None = None) -> str:
    """The ``nft -f`` text of the bridge guard for ``bridge`` (replaces any older one in
    one transaction: the table is declared, deleted and made again).

    ``other_ports`` None: the rule names the bridge (``meta ibrname``, which needs the
    kernel's bridge meta support). Otherwise (kernels without it) every bridged frame is
    dropped except those arriving on ``other_ports``, the ports of the namespace's other
    bridges when the guard was made (a port later added to another bridge is closed
    until the next guard: it fails closed).
    """
    for name in (bridge, *(other_ports or ())):
        if not _IFNAME.match(name):
            raise ValueError(f"not an interface name: {name!r}")
    if other_ports is None:
        rules = [f'meta ibrname "{bridge}" counter drop comment "port to port: never"']
    else:
        keep = ", ".join(f'"{port}"' for port in other_ports)
        rules = ([f"iifname {{ {keep} }} accept comment \"other bridges\""] if keep else []) \
            + ['counter drop comment "port to port: never"']
    body = "".join(f"    {rule}\n" for rule in rules)
    return (f"table bridge {BRIDGE_GUARD_TABLE}\n"
            f"delete table bridge {BRIDGE_GUARD_TABLE}\n"
            f"table bridge {BRIDGE_GUARD_TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority -200; policy accept;\n"
            f"{body}"
            "  }\n"
            "}\n")


def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False,
                          input=stdin)
    if proc.returncode != 0:
        raise LanIsolationError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def _addresses(texts: Iterable[str]) -> list[ipaddress.IPv6Address]:
    """The IPv6 addresses among ``texts``, sorted (``ValueError`` for one that is not an
    address: nothing is changed then)."""
    parsed = [ipaddress.ip_address(t) for t in texts]
    return sorted(ip for ip in parsed if isinstance(ip, ipaddress.IPv6Address))


class LanIsolation:
    """Port isolation, proxy ARP and proxy ND on one LAN bridge."""

    def __init__(self, bridge: str, *, netns: str | None = None) -> None:
        if not _IFNAME.match(bridge):
            raise ValueError(f"not an interface name: {bridge!r}")
        if netns is not None and not _IFNAME.match(netns.replace("-", "_")[:15]):
            raise ValueError(f"not a namespace name: {netns!r}")
        self.bridge = bridge
        self.netns = netns

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return _run([*prefix, *argv], stdin)

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
        self.guard_bridge()
        return self.isolate_ports()

    def guard_bridge(self) -> None:
        """Install the bridge guard: no frame is bridged from one port to another."""
        try:
            self._run(["nft", "-f", "-"], bridge_guard_ruleset(self.bridge))
        except LanIsolationError as exc:
            if "not supported" not in str(exc):
                raise
            # No bridge meta keys in this kernel: drop all bridged frames but other
            # bridges' ports.
            self._run(["nft", "-f", "-"], bridge_guard_ruleset(self.bridge,
                                                               self._other_bridge_ports()))

    def _other_bridge_ports(self) -> list[str]:
        links = json.loads(self._run(["ip", "-j", "link", "show"]) or "[]")
        return [link["ifname"] for link in links
                if link.get("master") not in (None, self.bridge)
                and _IFNAME.match(link.get("ifname", ""))]

    def bridge_guarded(self) -> bool:
        """True if the kernel holds the bridge guard for this bridge."""
        try:
            out = self._run(["nft", "-j", "list", "table", "bridge", BRIDGE_GUARD_TABLE])
        except LanIsolationError:
            return False
        return "port to port: never" in out

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

    def isolate_port(self, port: str) -> None:
        """Set ``isolated on`` on one port (idempotent)."""
        if not _IFNAME.match(port):
            raise LanIsolationError(f"not an interface name: {port!r}")
        self._run(["bridge", "link", "set", "dev", port, "isolated", "on"])

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

    def setup_or_log(self) -> None:
        """``setup``, a failure logged instead of raised: it runs after the rules are in
        the kernel, and only weakens lateral protection, which the log says loudly."""
        try:
            self.setup()
        except LanIsolationError as exc:
            log.error("LAN isolation failed; lateral traffic may bypass the rules: %s", exc)

    def sync_proxies(self, added: Iterable[str], removed: Iterable[str]) -> None:
        """Keep the proxy-ND entries equal to the installed IPv6 addresses: answer for
        ``added``, stop for ``removed`` (IPv4 addresses are ignored). After the kernel
        accepted the rules; a failure only costs IPv6 lateral reachability (fail closed),
        so it is logged, not raised. One ``ip -batch`` per direction: start-up adds
        thousands (one ``ip`` each took 1.5 ms). Adding an entry again is harmless;
        only entries present are deleted (``ip neigh`` ends a batch at its first error,
        ``-force`` or not)."""
        adds = [ip for ip in _addresses(added) if not ip.is_link_local]
        deletes = _addresses(removed)
        try:
            if adds:
                self._batch([f"neigh add proxy {ip} dev {self.bridge}" for ip in adds])
            if deletes:
                present = set(self.proxies())
                self._batch([f"neigh del proxy {ip} dev {self.bridge}" for ip in deletes
                             if ip in present])
        except LanIsolationError as exc:
            log.warning("proxy ND update failed: %s", exc)

    def proxies(self) -> list[ipaddress.IPv6Address]:
        """The bridge's proxy-ND entries."""
        out = self._run(["ip", "-6", "neigh", "show", "proxy", "dev", self.bridge])
        return _addresses(line.split()[0] for line in out.splitlines() if line.strip())

    def _batch(self, lines: Sequence[str]) -> None:
        if lines:
            self._run(["ip", "-6", "-batch", "-"], "".join(f"{line}\n" for line in lines))

    def remove_proxy(self, address: str) -> None:
        """Stop answering for a device's IPv6 address (no error if there was no entry)."""
        ip = ipaddress.ip_address(address)
        if ip.version != 6:
            return
        try:
            self._run(["ip", "-6", "neigh", "del", "proxy", str(ip), "dev", self.bridge])
        except LanIsolationError:
            log.debug("no proxy entry for %s", ip)


RTMGRP_LINK = 0x1
RTM_NEWLINK = 16
MAX_READS = 64
"""Reads per wake-up; the rest waits for the next one (the loop stays responsive)."""


_NLMSG = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTA = struct.Struct("=HH")
_NLA_TYPE = 0x3FFF  # an attribute's type without NLA_F_NESTED / NLA_F_NET_BYTEORDER
IFLA_IFNAME, IFLA_MASTER, IFLA_PROTINFO, IFLA_LINKINFO = 3, 10, 12, 18
IFLA_INFO_SLAVE_DATA = 5
IFLA_BRPORT_ISOLATED = 33


class UnreadableAnnouncement(ValueError):
    """A link announcement whose lengths do not add up."""


def _attributes(data: bytes) -> dict[int, bytes]:
    """The netlink attributes of ``data`` by type (the first of each); raises
    ``UnreadableAnnouncement`` when a length overruns or is too short."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size or offset + length > len(data):
            raise UnreadableAnnouncement(f"attribute length {length} at {offset}")
        found.setdefault(kind & _NLA_TYPE, data[offset + _RTA.size:offset + length])
        offset += (length + 3) & ~3
    return found


def ports_to_isolate(data: bytes, bridge_index: int) -> list[str] | None:
    """The ports of the bridge ``bridge_index`` that one read of link announcements
    (rtnetlink, parsed here with ``struct``: pyroute2 cost the daemon 8 MB and 0.3 s)
    shows not isolated (a port that just joined, or whose isolation was turned off).

    An announcement without the port's flag counts as not isolated (isolating twice is
    harmless). None if the read cannot be parsed: the caller isolates every port.
    """
    found: list[str] = []
    offset = 0
    try:
        while offset + _NLMSG.size <= len(data):
            length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
            if length < _NLMSG.size or offset + length > len(data):
                raise UnreadableAnnouncement(f"message length {length} at {offset}")
            body = data[offset + _NLMSG.size:offset + length]
            offset += (length + 3) & ~3
            if kind != RTM_NEWLINK:
                continue
            if len(body) < _IFINFOMSG.size:
                raise UnreadableAnnouncement("a link message shorter than its header")
            attributes = _attributes(body[_IFINFOMSG.size:])
            master = attributes.get(IFLA_MASTER)
            if master is None or len(master) < 4 \
                    or struct.unpack_from("=I", master)[0] != bridge_index:
                continue
            name = attributes.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(
                "ascii", "replace")
            if not _IFNAME.match(name) or name in found:
                continue
            if _port_isolated(attributes) is not True:
                found.append(name)
        if offset < len(data) and any(data[offset:]):
            raise UnreadableAnnouncement("bytes after the last message")
    except (UnreadableAnnouncement, struct.error) as exc:  # never trust a partial read
        log.warning("unreadable link announcement (%s): isolating every LAN port", exc)
        return None
    return found


def _port_isolated(attributes: dict[int, bytes]) -> bool | None:
    """The port's ``isolated`` flag as the announcement gives it, or None if it does not.

    AF_BRIDGE announcements carry it in ``IFLA_PROTINFO``; the others in the port's
    ``IFLA_LINKINFO`` slave data.
    """
    protinfo = attributes.get(IFLA_PROTINFO)
    if protinfo:
        flag = _attributes(protinfo).get(IFLA_BRPORT_ISOLATED)
        if flag:
            return bool(flag[0])
    linkinfo = attributes.get(IFLA_LINKINFO)
    slave = _attributes(linkinfo).get(IFLA_INFO_SLAVE_DATA) if linkinfo else None
    if slave:
        flag = _attributes(slave).get(IFLA_BRPORT_ISOLATED)
        if flag:
            return bool(flag[0])
    return None


class LanPortWatcher:
    """Isolates a LAN bridge port as soon as the kernel announces it (see the module
    docstring). Open it *before* the first full isolation, so no port falls between."""

    def __init__(self, isolation: LanIsolation) -> None:
        """Subscribe to the link announcements of the calling thread's namespace."""
        self.isolation = isolation
        self._sock = socket.socket(socket.AF_NETLINK,
                                   socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._sock.bind((0, RTMGRP_LINK))
        except OSError:
            self._sock.close()
            raise

    @classmethod
    def open(cls, isolation: LanIsolation) -> LanPortWatcher | None:
        """The watcher, or None (one error line: new ports then wait for maintenance)."""
        try:
            return cls(isolation)
        except OSError as exc:
            log.error("cannot follow LAN link announcements (%s): a new bridge port is "
                      "isolated only at the next maintenance pass", exc.strerror or exc)
            return None

    def fileno(self) -> int:
        """The netlink socket's descriptor (for ``loop.add_reader``)."""
        return self._sock.fileno()

    def pending(self) -> list[str] | None:
        """Read what the kernel announced; the ports to isolate, or None for all of
        them (announcements lost, unreadable, or the bridge renumbered)."""
        try:
            bridge_index = socket.if_nametoindex(self.isolation.bridge)
        except OSError:
            return None
        ports: list[str] = []
        for _ in range(MAX_READS):
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:  # ENOBUFS: the kernel dropped announcements
                log.warning("LAN link announcements were lost (%s): isolating every port",
                            errno.errorcode.get(exc.errno or 0, exc))
                return None
            found = ports_to_isolate(data, bridge_index)
            if found is None:
                return None
            ports += [p for p in found if p not in ports]
        return ports

    def isolate(self, ports: list[str] | None) -> list[str]:
        """Isolate ``ports`` (None: every port of the bridge); the ports isolated.
        Failures are logged, not raised (a vanished port, a missing tool)."""
        if ports is None:
            try:
                return self.isolation.isolate_ports()
            except LanIsolationError as exc:
                log.error("LAN port isolation failed; lateral traffic may bypass the "
                          "rules until the next pass: %s", exc)
                return []
        done: list[str] = []
        for port in ports:
            try:
                self.isolation.isolate_port(port)
            except LanIsolationError as exc:  # gone again, or the tool failed
                log.error("isolating LAN port %s failed: %s", port, exc)
                continue
            done.append(port)
        return done

    def close(self) -> None:
        """Stop following announcements."""
        self._sock.close()
