"""The DNS guard's grants kept across restarts: the guard's record, the store's rows
(migration 9) and the journal between them (``daemon/dns_grants.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mudguard.daemon.dns_grants import GrantJournal
from mudguard.devices._model import DnsGrant
from mudguard.dns.core import AddSetElements, DnsGuard, GuardConfig
from mudguard.policy import LifecycleState
from mudguard.store import Device, Store
from tests.unit.test_dns_core import CONFIG, DEV_A, DEV_B, NOW, Playbook, fills, make_guard

MAC_A, MAC_B = "02:00:5e:00:53:0a", "02:00:5e:00:53:0b"
NAMES_A = ["cloud.example.com", "cdn.example.net"]


def granted(book: Playbook, name: str, client: str, answer: str, now: float = NOW,
            ttl: int = 300) -> None:
    (fill,) = fills(book.resolve(name, client, [(name, "A", answer)], now=now, ttl=ttl))
    book.guard.fill_done(fill.token, True, now)


NO_CACHE = GuardConfig(lan_prefixes=CONFIG.lan_prefixes,
                       gateway_addresses=CONFIG.gateway_addresses, cache_size=0)


def guard_of(config: GuardConfig = NO_CACHE) -> DnsGuard:
    guard = DnsGuard(config)
    guard.update_device(MAC_A, DEV_A, NAMES_A)
    guard.update_device(MAC_B, DEV_B, ["cloud.example.com"])
    return guard


def test_grants_under_names_the_device_and_what_is_left() -> None:
    book = Playbook(guard_of())
    granted(book, "cloud.example.com", DEV_A[0], "203.0.113.5")
    assert book.guard.take_changed() == {DEV_A[0]}
    assert book.guard.take_changed() == set()
    assert book.guard.grants_under({DEV_A[0]}, NOW + 100) == [
        DnsGrant(MAC_A, DEV_A[0], "cloud.example.com", "203.0.113.5", NOW + 310, 210)]
    assert book.guard.grants_under({DEV_B[0]}, NOW) == []
    assert book.guard.grants_under({DEV_A[0]}, NOW + 400) == []  # expired
    book.guard.update_device(MAC_B, (DEV_A[0],), ["cloud.example.com"])  # lease moved
    assert book.guard.take_changed() == {DEV_A[0]}
    assert book.guard.grants_under({DEV_A[0]}, NOW) == []  # forgotten with the move


def stored(device: str = MAC_A, address: str = DEV_A[0], name: str = "cloud.example.com",
           remote: str = "203.0.113.5", expires: float = NOW + 200,
           lifetime: int = 300) -> DnsGrant:
    return DnsGrant(device, address, name, remote, expires, lifetime)


def restored(guard: DnsGuard, grants: Sequence[DnsGrant]) -> list[tuple[str, str, int]]:
    commands = guard.restore_grants(grants, NOW)
    assert all(isinstance(c, AddSetElements) and c.token == 0 for c in commands)
    return [(c.dns_name, c.elements[0][1], c.timeout_s) for c in commands]


def test_restore_gives_back_only_what_the_current_policy_gives() -> None:
    guard = guard_of()
    assert restored(guard, [stored()]) == [("cloud.example.com", "203.0.113.5", 200)]
    assert restored(guard_of(), [stored(name="Cloud.Example.COM.")]) == [
        ("cloud.example.com", "203.0.113.5", 200)]
    refused = [
        stored(device="02:00:5e:00:53:ff"),  # a device no longer present
        stored(address=DEV_B[0]),  # an address the device no longer holds
        stored(name="gone.example.org"),  # a name its rules no longer allow
        stored(remote="192.0.2.77"),  # inside the LAN: never inserted
        stored(remote="2001:db8:1::77"),  # family differs from the device address
        stored(expires=NOW),  # expired
        stored(remote="not an address"),
    ]
    assert restored(guard_of(), refused) == []
    quarantined = guard_of()
    quarantined.update_device(MAC_A, DEV_A, [])  # quarantine: no DNS name allowed
    assert restored(quarantined, [stored()]) == []


def test_restore_never_gives_more_than_was_left_and_is_bounded_per_device() -> None:
    # a wall clock set back at boot: expires looks a day away, 300 s were left
    assert restored(guard_of(), [stored(expires=NOW + 86_400, lifetime=300)]) == [
        ("cloud.example.com", "203.0.113.5", 300)]
    config = GuardConfig(lan_prefixes=CONFIG.lan_prefixes,
                         gateway_addresses=CONFIG.gateway_addresses, max_grants_per_device=3)
    many = [stored(remote=f"203.0.113.{i}", expires=NOW + 100 + i) for i in range(1, 9)]
    out = restored(guard_of(config), many)
    assert [r for _n, r, _t in out] == ["203.0.113.8", "203.0.113.7", "203.0.113.6"]


def test_restored_grants_are_refilled_and_never_cut_by_a_shorter_answer() -> None:
    guard = make_guard()
    guard.restore_grants([stored(device="aa:aa", expires=NOW + 1000, lifetime=1000)], NOW)
    assert [g.timeout_s for g in guard.grants_of("aa:aa", NOW)] == [1000]
    book = Playbook(guard)
    (fill,) = fills(book.resolve("cloud.example.com", DEV_A[0],
                                 [("cloud.example.com", "A", "203.0.113.5")], ttl=60))
    assert fill.timeout_s == 1000  # the restored grant outlives this answer's 60 + 10 s


def test_store_keeps_grants_by_address(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        store.save_device(Device(mac=MAC_A, state=LifecycleState.PROFILED))
        one, two = stored(expires=2000.0), stored(remote="203.0.113.6", expires=3000.0)
        store.save_dns_grants([DEV_A[0]], [one, two])
        assert store.list_dns_grants(1500.0) == [one, two]
        assert store.list_dns_grants(2500.0) == [two]
        store.save_dns_grants([DEV_A[0]], [two])  # rewritten under the address
        assert store.list_dns_grants(0) == [two]
        assert store.prune_dns_grants(3000.0) == 1
        store.replace_dns_grants([one])
        assert store.list_dns_grants(0) == [one]
        store.delete_device(MAC_A)  # forgotten: its grants go with it
        assert store.list_dns_grants(0) == []


class Kernel:
    """What the journal's restore hands the enforcer (the real one in tests/e2e)."""

    def __init__(self) -> None:
        self.restored: list[AddSetElements] = []

    def restore_dns(self, commands: Sequence[AddSetElements]) -> None:
        self.restored = list(commands)


def test_journal_writes_changes_and_a_new_run_restores_them(tmp_path: Path) -> None:
    clock = {"wall": 1_800_000_000.0, "mono": NOW}
    with Store(tmp_path / "db") as store:
        guard = guard_of()
        book = Playbook(guard)
        journal = GrantJournal(store, guard, wall=lambda: clock["wall"],
                               monotonic=lambda: clock["mono"])
        granted(book, "cloud.example.com", DEV_A[0], "203.0.113.5")
        granted(book, "cloud.example.com", DEV_B[0], "203.0.113.5")
        journal.flush()
        assert [(g.device, g.expires) for g in store.list_dns_grants(0)] == [
            (MAC_A, clock["wall"] + 310), (MAC_B, clock["wall"] + 310)]
        # a restart 100 s later (a new process: a new monotonic origin); B is quarantined
        clock["wall"] += 100
        clock["mono"] = 5.0
        again = DnsGuard(CONFIG)
        again.update_device(MAC_A, DEV_A, NAMES_A)
        again.update_device(MAC_B, DEV_B, [])
        kernel = Kernel()
        assert GrantJournal(store, again, wall=lambda: clock["wall"],
                            monotonic=lambda: clock["mono"]).restore(kernel) == 1
        assert [(c.elements, c.timeout_s) for c in kernel.restored] == [
            (((DEV_A[0], "203.0.113.5"),), 210)]
        assert [g.device for g in store.list_dns_grants(0)] == [MAC_A]  # B's went
        assert again.grants_under({DEV_A[0]}, clock["mono"] + 10)[0].lifetime_s == 200


def test_addresses_swapped_while_down_restore_nothing_for_either() -> None:
    # the red team: while the daemon was down the leases moved, A now holds B's old
    # address and B A's; both are allowed the name. A grant stored for one device's old
    # address never becomes the other's (the kernel key is the address alone).
    guard = DnsGuard(NO_CACHE)
    guard.update_device(MAC_A, DEV_B, ["cloud.example.com"])
    guard.update_device(MAC_B, DEV_A, ["cloud.example.com"])
    old = [stored(device=MAC_A, address=DEV_A[0]), stored(device=MAC_B, address=DEV_B[0],
                                                         remote="203.0.113.9")]
    assert restored(guard, old) == []
