"""Moved and ended leases (issue #13, class 6): the decisions, the store, the intake and
the DNS guard. The kernel side, with real packets, is ``tests/netns/test_lease_churn.py``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mudguard.devices import Device, EventKind, MudSource
from mudguard.devices import lifecycle as lc
from mudguard.devices.service import DeviceService
from mudguard.discovery.dhcp import parse_hook_message
from mudguard.discovery.sighting import Intake, Sighting, SightingError
from mudguard.dns.core import DnsGuard, GuardConfig
from mudguard.enforce.enforcer import addresses_taken
from mudguard.store import Store
from tests.unit.test_dns_core import Playbook, fills

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
X, Y, Z = "02:00:5e:00:53:01", "02:00:5e:00:53:02", "02:00:5e:00:53:03"


@pytest.mark.parametrize("owner, mac, addresses, taken", [
    ({}, X, ["192.0.2.10"], {}),                                         # nobody held it
    ({"192.0.2.10": X}, X, ["192.0.2.10"], {}),                          # its own already
    ({"192.0.2.10": X}, Y, ["192.0.2.10"], {X: {"192.0.2.10"}}),         # handed on
    ({"2001:db8::10": X}, Y, ["2001:DB8:0::0010"], {X: {"2001:db8::10"}}),  # canonical v6
    ({"192.0.2.10": X, "2001:db8::10": X, "2001:db8::11": Z}, Y,
     ["192.0.2.10", "2001:db8::11", "2001:db8::12"],
     {X: {"192.0.2.10"}, Z: {"2001:db8::11"}}),                          # two holders
    ({"192.0.2.10": X}, Y.upper(), ["192.0.2.10"], {X: {"192.0.2.10"}}),  # MAC case
])
def test_addresses_taken(owner: dict[str, str], mac: str, addresses: list[str],
                         taken: dict[str, set[str]]) -> None:
    assert addresses_taken(owner, mac, addresses) == {k: frozenset(v) for k, v in taken.items()}


def test_addresses_taken_refuses_a_malformed_address() -> None:
    with pytest.raises(ValueError):
        addresses_taken({}, X, ["not-an-address"])


def test_addresses_moving_keeps_the_holders_other_addresses() -> None:
    taker = Device(mac=Y, ipv4=("192.0.2.10",), ipv6=("2001:db8::10",))
    x = Device(mac=X, ipv4=("192.0.2.10",), ipv6=("2001:db8::10", "2001:db8::99"))
    z = Device(mac=Z, ipv4=("192.0.2.30",))
    moved = lc.addresses_moving(taker, [x, z, taker])
    assert [(d.mac, d.ipv4, d.ipv6) for d in moved] == [(X, (), ("2001:db8::99",))]


def test_on_lease_ended() -> None:
    x = Device(mac=X, ipv4=("192.0.2.10",), ipv6=("2001:db8::10", "2001:db8::11"))
    ended = lc.on_lease_ended(x, ip="2001:DB8::10", now=NOW)
    assert ended.device.ipv6 == ("2001:db8::11",) and ended.device.ipv4 == x.ipv4
    assert [n.kind for n in ended.notices] == [EventKind.SEEN]
    assert ended.notices[0].details == {"lease_ended": "2001:db8::10"}
    for ip in ("192.0.2.99", "garbage"):  # not its lease (any more): nothing changes
        assert not lc.on_lease_ended(x, ip=ip, now=NOW).changed


@pytest.fixture
def svc(tmp_path: Path) -> DeviceService:
    store = Store(tmp_path / "m.db")
    yield DeviceService(store=store, clock=lambda: NOW)
    store.close()


def test_service_moves_an_address_and_ends_a_lease(svc: DeviceService) -> None:
    svc.observe(mac=X, ip="192.0.2.10", source=MudSource.DHCP4)
    svc.observe(mac=X, ip="2001:db8::10", source=MudSource.DHCP6)
    svc.observe(mac=X, ip="2001:db8::11", source=MudSource.DHCP6)
    svc.observe(mac=Y, ip="2001:db8::10", source=MudSource.DHCP6)
    assert svc.device(X).ipv6 == ("2001:db8::11",) and svc.device(X).ipv4 == ("192.0.2.10",)
    assert svc.device(Y).ipv6 == ("2001:db8::10",)
    assert svc.lease_ended(X, "192.0.2.10") == svc.device(X)
    assert svc.device(X).ipv4 == ()
    assert svc.store.list_events(X)[-1].details == {"lease_ended": "192.0.2.10"}
    before = len(svc.store.list_events())
    assert svc.lease_ended(X, "192.0.2.10") == svc.device(X)  # again: nothing new
    assert svc.lease_ended(X, "2001:db8::10") == svc.device(X)  # Y's now: untouched
    assert len(svc.store.list_events()) == before and svc.device(Y).ipv6 == ("2001:db8::10",)
    assert svc.lease_ended(Z, "192.0.2.10") is None  # unknown device


def test_intake_takes_a_lease_back_and_ended_leases(svc: DeviceService) -> None:
    intake = Intake(svc)

    def lease(mac: str, ip: str, ended: bool = False) -> Device | None:
        return intake.on_sighting(Sighting(mac=mac, ip=ip, source=MudSource.DHCP4,
                                           lease_ended=ended))

    lease(X, "192.0.2.10")
    lease(Y, "192.0.2.10")
    assert svc.device(X).ipv4 == ()
    # The same sighting X's last one was: the address came back, it is news.
    assert lease(X, "192.0.2.10") is not None
    assert svc.device(X).ipv4 == ("192.0.2.10",) and svc.device(Y).ipv4 == ()
    lease(X, "192.0.2.10", ended=True)
    assert svc.device(X).ipv4 == ()
    assert lease(X, "192.0.2.10") is not None and svc.device(X).ipv4 == ("192.0.2.10",)


def test_hook_message_for_an_ended_lease() -> None:
    msg = b'{"v": 1, "action": "del", "family": 6, "mac": "%s", "ip": "2001:db8::10", ' \
          b'"mud_url": "https://evil.example/x.json"}' % X.encode()
    sighting = parse_hook_message(msg)
    assert sighting.lease_ended and sighting.mud_url is None  # an ended lease announces nothing
    assert sighting.source is MudSource.DHCP6
    with pytest.raises(SightingError):
        parse_hook_message(b'{"v": 1, "action": "del", "family": 4, "mac": "%s"}' % X.encode())


def test_dns_guard_stops_granting_under_an_address_about_to_move() -> None:
    guard = DnsGuard(GuardConfig(lan_prefixes=("192.0.2.0/24",), min_timeout_s=30,
                                 max_timeout_s=3600, grace_s=10, cache_size=0))
    guard.update_device("x", ["192.0.2.10", "192.0.2.20"], ["cloud.example.com"])
    guard.update_device("y", ["192.0.2.30"], ["cloud.example.com"])
    book = Playbook(guard)
    first = fills(book.resolve("cloud.example.com", "192.0.2.10",
                               [("cloud.example.com", "A", "198.51.100.7")], ttl=3000))
    guard.fill_done(first[0].token, True, 1000.0)
    guard.before_update("y", ["192.0.2.10"])  # the enforcer is about to give it to Y
    late = book.resolve("cloud.example.com", "192.0.2.10",
                        [("cloud.example.com", "A", "198.51.100.7")])
    assert not [c for c in late if hasattr(c, "elements")]  # nothing granted under it
    other = fills(book.resolve("cloud.example.com", "192.0.2.20",
                               [("cloud.example.com", "A", "198.51.100.7")]))
    assert {e[0] for c in other for e in c.elements} == {"192.0.2.20"}  # X keeps the rest
    guard.fill_done(other[0].token, True, 1000.0)
    guard.update_device("y", ["192.0.2.30", "192.0.2.10"], ["cloud.example.com"])
    mine = fills(book.resolve("cloud.example.com", "192.0.2.10",
                              [("cloud.example.com", "A", "198.51.100.7")], ttl=60))
    # Y's element lives by Y's answer, not by X's longer grant under the same address.
    assert mine[0].timeout_s == 70
