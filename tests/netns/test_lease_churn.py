"""Moved leases in the virtual home: at no moment may a device send with an address it
no longer holds (issue #13, class 6).

Three devices, each profiled from its own MUD file (UDP 7000 to its own Internet host,
IPv4 and IPv6). A shared address pair (``A4``, ``A6``) moves between them through the
daemon's own path: ``Intake.on_sighting`` with the DHCP sighting a dnsmasq hook message
becomes (and, for an ended lease, dnsmasq's ``del``), into ``DeviceService`` and the real
``Enforcer`` in the gateway namespace. Every device has ``A4``/``A6`` configured by hand
(the previous holders keep "spoofing" it); right after each move returns, one probe
round sends real datagrams from ``A`` out of every device and checks, at the Internet
hosts, that only the holder's get through, and only to the holder's own host.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mudguard.devices import CachedMud, MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.sighting import Intake, Sighting
from mudguard.enforce import Enforcer, Nft
from mudguard.policy import dns_set_name, set_shard_count, shard_table
from mudguard.store import Store
from mudguard.vhome import INTERNET_HOSTS, VirtualHome, run
from mudguard.vhome._home import LAN4, LAN6
from mudguard.vhome._netns import enter

pytestmark = pytest.mark.root

T = TypeVar("T")
PORT = 7000
HOSTS = [INTERNET_HOSTS["cloud"], INTERNET_HOSTS["other"], INTERNET_HOSTS["mfg"]]
A4, A6 = str(LAN4[50]), str(LAN6[0x50])
NAME = "svc.example.com"  # a DNS name the MUD files may allow
DNS_DEST4 = INTERNET_HOSTS["dns"][0]
GRACE = 0.08  # after the last wanted datagram arrived: time for an unwanted one to arrive


def mud_file(url: str, host: tuple[str, str], *, dnsname: bool = False) -> bytes:
    """A device that may send UDP 7000 to ``host`` (v4 and v6) and, with ``dnsname``, to
    whatever ``NAME`` resolved to for it."""
    def ace(name: str, family: str, match: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "matches": {family: {"protocol": 17, **match},
                                          "udp": {"destination-port": {"operator": "eq",
                                                                       "port": PORT}}},
                "actions": {"forwarding": "accept"}}
    aces4 = [ace("host4", "ipv4", {"destination-ipv4-network": f"{host[0]}/32"})]
    aces6 = [ace("host6", "ipv6", {"destination-ipv6-network": f"{host[1]}/128"})]
    if dnsname:
        aces4.append(ace("svc4", "ipv4", {"ietf-acldns:dst-dnsname": NAME}))
    doc = {
        "ietf-mud:mud": {
            "mud-version": 1, "mud-url": url, "last-update": "2026-11-01T00:00:00+00:00",
            "cache-validity": 48, "is-supported": True, "systeminfo": "lease churn test",
            "mfg-name": "Example", "model-name": url.rsplit("/", 1)[-1],
            "from-device-policy": {"access-lists": {"access-list": [
                {"name": "from4"}, {"name": "from6"}]}}},
        "ietf-access-control-list:acls": {"acl": [
            {"name": "from4", "type": "ipv4-acl-type", "aces": {"ace": aces4}},
            {"name": "from6", "type": "ipv6-acl-type", "aces": {"ace": aces6}}]},
    }
    return json.dumps(doc).encode()


def in_namespace(ns: str, fn: Callable[[], T]) -> T:
    """``fn()`` on a thread inside ``ns`` (sockets it opens stay in ``ns``)."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            enter(ns)
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(timeout=30)
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _bound(family: socket.AddressFamily, address: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    return sock


@dataclass
class ChurnHome:
    """The virtual home, the gateway's pipeline in process, and the probe sockets."""

    home: VirtualHome
    root: Path
    dnsname: bool = False
    senders: dict[tuple[int, str], socket.socket] = field(default_factory=dict)
    receivers: list[socket.socket] = field(default_factory=list)

    def start(self) -> None:
        """Enforcer, store, services; each device profiled at its own addresses."""
        self.nft = Nft.in_namespace(self.home.gw_ns)
        self.enforcer = Enforcer(self.nft, self.home.context())
        self.enforcer.install_home()
        self.store = Store(self.root / "mudguard.db")
        self.service = DeviceService(store=self.store, enforcer=self.enforcer)
        self.intake = Intake(self.service)
        for i, node in enumerate(self.home.nodes):
            url = f"https://mud.example.com/churn{i}.json"
            self.store.put_mud(CachedMud(url=url, data=mud_file(url, HOSTS[i],
                                                                dnsname=self.dnsname),
                                         fetched_at=self.service.clock(),
                                         cache_validity_hours=48))
            device = self.lease(i, node.ipv4, mud_url=url)
            assert device is not None and device.state.value == "profiled", device
            self.lease(i, node.ipv6)
            # Every device carries the shared addresses too, as a spoofer would.
            run(["ip", "addr", "add", f"{A4}/32", "dev", node.iface], ns=node.ns)
            run(["ip", "addr", "add", f"{A6}/128", "dev", node.iface, "nodad"], ns=node.ns)
        for i, node in enumerate(self.home.nodes):
            for address in (A4, A6, node.ipv6):
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                port = 40000 + 10 * i + (0 if address == A4 else 1 if address == A6 else 2)
                self.senders[(i, address)] = in_namespace(
                    node.ns, lambda f=family, a=address, p=port: _bound(f, a, p))
        for v4, v6 in HOSTS + [INTERNET_HOSTS["dns"]]:
            for address, family in ((v4, socket.AF_INET), (v6, socket.AF_INET6)):
                self.receivers.append(in_namespace(
                    self.home.inet_ns, lambda f=family, a=address: _bound(f, a, PORT)))

    def close(self) -> None:
        """Close the probe sockets and the store."""
        for sock in [*self.senders.values(), *self.receivers]:
            sock.close()
        if hasattr(self, "store"):
            self.store.close()

    # -- the daemon's path ----------------------------------------------------------------

    def lease(self, index: int, ip: str, *, mud_url: str | None = None) -> Any:
        """The DHCP server leased ``ip`` to device ``index`` (as its hook reports it)."""
        source = MudSource.DHCP6 if ":" in ip else MudSource.DHCP4
        return self.intake.on_sighting(Sighting(mac=self.home.nodes[index].mac, ip=ip,
                                                source=source, mud_url=mud_url))

    def lease_ended(self, index: int, ip: str) -> Any:
        """The DHCP server's ``del``: the lease of ``ip`` ended."""
        source = MudSource.DHCP6 if ":" in ip else MudSource.DHCP4
        return self.intake.on_sighting(Sighting(mac=self.home.nodes[index].mac, ip=ip,
                                                source=source, lease_ended=True))

    # -- probes ---------------------------------------------------------------------------

    def send(self, index: int, source: str, dest: str, tag: str) -> None:
        """One datagram from device ``index`` with source ``source`` to ``dest``:7000."""
        self.senders[(index, source)].sendto(tag.encode(), (dest, PORT))

    def collect(self, wanted: set[str], timeout: float = 2.0) -> set[str]:
        """Tags received until every ``wanted`` one arrived (or ``timeout``), plus
        ``GRACE`` for any unwanted one sent before them."""
        got: set[str] = set()
        deadline = time.monotonic() + timeout
        grace_end: float | None = None
        while True:
            now = time.monotonic()
            if grace_end is None and (wanted <= got or now >= deadline):
                grace_end = now + GRACE
            if grace_end is not None and now >= grace_end:
                return got
            ready, _, _ = select.select(self.receivers, [], [],
                                        max(0.0, (grace_end or deadline) - now))
            for sock in ready:
                data, _addr = sock.recvfrom(256)
                got.add(data.decode())

    def round(self, holder: int | None, family: int, tag: str) -> tuple[set[str], set[str]]:
        """Every device sends from the shared address of ``family`` to its own host (and
        the holder to every host); non-holders also from their own IPv6 address.
        Returns (received, expected)."""
        shared = A4 if family == 4 else A6
        expected: set[str] = set()
        for i, node in enumerate(self.home.nodes):
            if i == holder:
                continue
            self.send(i, shared, HOSTS[i][family == 6], f"{tag} spoof d{i}")
            if family == 6:  # what it still holds keeps working
                self.send(i, node.ipv6, HOSTS[i][1], f"{tag} own d{i}")
                expected.add(f"{tag} own d{i}")
        if holder is not None:
            for j in range(len(HOSTS)):
                if j != holder:  # another device's policy, never the holder's
                    self.send(holder, shared, HOSTS[j][family == 6], f"{tag} d{holder}->h{j}")
            self.send(holder, shared, HOSTS[holder][family == 6], f"{tag} holder d{holder}")
            expected.add(f"{tag} holder d{holder}")
        return self.collect(expected), expected


@pytest.fixture
def churn(tmp_path: Path) -> Iterator[ChurnHome]:
    with VirtualHome(prefix=f"mgeC{os.getpid() % 1000}", devices=3) as home:
        lan = ChurnHome(home, tmp_path)
        try:
            lan.start()
            yield lan
        finally:
            lan.close()


def holders(lan: ChurnHome, address: str) -> list[str]:
    return [d.mac for d in lan.store.devices_holding(address)]


def test_a_moved_lease_stops_the_previous_holder_at_once(churn: ChurnHome) -> None:
    lan = churn
    x, y = lan.home.nodes[0], lan.home.nodes[1]
    lan.lease(0, A4)
    lan.lease(0, A6)
    for family in (4, 6):
        got, expected = lan.round(0, family, f"before{family}")
        assert got == expected, (family, got)
    lan.lease(1, A4)  # dnsmasq gave X's old address to Y
    got, expected = lan.round(1, 4, "moved4")  # at once: no waiting, one bounded round
    assert got == expected, got
    lan.lease(1, A6)
    got, expected = lan.round(1, 6, "moved6")
    assert got == expected, got
    # Kernel and store agree: X lost A (and keeps its own IPv6), Y holds it.
    assert holders(lan, A4) == [y.mac] and holders(lan, A6) == [y.mac]
    assert lan.store.get_device(x.mac).ipv6 == (x.ipv6,)  # type: ignore[union-attr]
    installed = lan.enforcer.installed()
    assert A4 not in installed[x.mac].ipv4 and A6 not in installed[x.mac].ipv6
    assert installed[y.mac].ipv4 == (A4,) and A6 in installed[y.mac].ipv6


def test_an_ended_lease_leaves_the_device_at_once(churn: ChurnHome) -> None:
    lan = churn
    lan.lease(2, A4)
    lan.lease(2, A6)
    assert lan.round(2, 4, "held")[0] == {"held holder d2"}
    lan.lease_ended(2, A4)  # dnsmasq's "del": released or expired
    lan.lease_ended(2, A6)
    for family in (4, 6):
        got, expected = lan.round(None, family, f"ended{family}")
        assert got == expected, (family, got)
    assert holders(lan, A4) == [] and holders(lan, A6) == []
    lan.lease(2, A4)  # the same lease again is a sighting again, not a duplicate
    assert lan.round(2, 4, "again")[0] == {"again holder d2"}


def test_lease_churn_never_lets_a_device_send_with_an_address_it_gave_up(
        churn: ChurnHome) -> None:
    lan = churn
    moves, failures = 50, []
    started = time.monotonic()
    holder: int | None = None
    for move in range(moves):
        if time.monotonic() - started > 120:  # bounded in time as well as in count
            pytest.fail(f"churn took over 120 s after {move} moves")
        if holder is not None and move % 5 == 4:  # now and then the lease just ends
            lan.lease_ended(holder, A4)
            lan.lease_ended(holder, A6)
            holder = None
        else:
            holder = (move * 7 + 1) % 3 if holder is None else (holder + 1 + move % 2) % 3
            lan.lease(holder, A4)
            lan.lease(holder, A6)
        for family in (4, 6):
            got, expected = lan.round(holder, family, f"m{move}v{family}")
            if got != expected:
                failures.append((move, family, sorted(got ^ expected)))
    assert failures == []


def test_dns_destinations_learned_under_an_address_do_not_move_with_it(
        tmp_path: Path) -> None:
    set_shard_count(1)  # X and Y in one shard: they share the DNS name's set
    try:
        with VirtualHome(prefix=f"mgeN{os.getpid() % 1000}", devices=2) as home:
            lan = ChurnHome(home, tmp_path, dnsname=True)
            try:
                lan.start()
                x, y = home.nodes
                assert shard_table(x.mac) == shard_table(y.mac)
                lan.lease(0, A4)
                # X looked NAME up: the resolver put (A . answer) in the shard's set.
                lan.nft.add_set_elements(shard_table(x.mac), dns_set_name(NAME, 4),
                                         [(A4, DNS_DEST4)], timeout_s=600)
                # ... and many more names' answers (more than one delete command holds).
                many = [(A4, f"{prefix}.{i}") for prefix in ("192.0.2", "198.51.100",
                                                             "203.0.113") for i in range(1, 255)]
                lan.nft.add_set_elements(shard_table(x.mac), dns_set_name(NAME, 4),
                                         [p for p in many if p[1] != DNS_DEST4], timeout_s=600)
                lan.send(0, A4, DNS_DEST4, "x learned")
                assert lan.collect({"x learned"}) == {"x learned"}
                lan.lease(1, A4)
                lan.send(1, A4, DNS_DEST4, "y inherits")
                lan.send(1, A4, HOSTS[1][0], "y own")
                assert lan.collect({"y own"}) == {"y own"}  # Y never asked for NAME
                pairs = lan.nft.read_pairs(shard_table(x.mac), [dns_set_name(NAME, 4)])
                assert pairs == {dns_set_name(NAME, 4): []}
            finally:
                lan.close()
    finally:
        set_shard_count(16)
