"""Adapter: keep the kernel's ``inet mudguard`` tables equal to the home's policies.

Theory of operation. The ``Enforcer`` owns one ``Nft`` handle and a record of
what it installed (``Installed`` per device). It never reads the ruleset back
on a hot path: ``apply_policy`` compiles one device, adds the commands that
unmap its stale addresses, and applies everything in ONE batch; the record
changes only after the kernel accepted the batch (firewalld's order). If a
device's addresses or MUD URL change, the devices whose rules name it
(same-manufacturer, manufacturer, model) are recompiled in the same batch.

A moved lease (``addresses_taken``): an address the device now holds that another
installed device held leaves that device in the same batch. Its chains are
recompiled without it (their source binding no longer accepts it), its map
entries go, the DNS-set elements learned under it are deleted (read back from the
shard: only the kernel knows what a restarted daemon granted), and its tracked
connections using it are forgotten; it keeps its other addresses. An address a
device gives up itself (renumbered, forgotten) loses its DNS-set elements too, so
the next holder of an address never inherits what the previous one looked up.

Fail closed, at boot too: ``install_home`` first replaces the main and shard tables
with the base alone, in one small transaction (milliseconds) whose chains drop
everything forwarded from or to a LAN device that is not installed yet; then it
adds the devices ``DEVICES_PER_BATCH`` at a time, each batch one transaction, so a
device gains its own access as soon as its batch is in and never more than its
policy (a cold install of 1,000 devices as one transaction left the LAN with no
firewall at all for its 5 s). The addresses of the devices still to come are in the
main table's pending sets (``_Pending``): nothing is forwarded to them, whatever the
sender's rules allow, until their own batch maps their ``in`` chain and takes them
out. ``close_lan`` installs the base alone unless the kernel already holds this very
base (its mark: ``base_mark``), e.g. the static base an early-boot unit loaded
(``mudguard base``): the daemon calls it first at start-up and takes that base over
without ever flushing it. A device update swaps
its chains atomically, so a packet sees the old policy or the new one, never a gap
and never more than either.

``reconcile(policies)`` is for start-up after a crash or restart: it reads the
tables back once, compares them with what the policies compile to (chain
presence, rule counts, the fingerprint comment, map and main-set entries), and
repairs only what differs, in batches too (what it takes away first, then the
devices); a missing or foreign base is reinstalled (``install_home``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

from mudguard.enforce.lan import LanIsolation, LanIsolationError
from mudguard.enforce.nft import Nft, NftCommand
from mudguard.mud import MudFile
from mudguard.policy import (
    BIND4,
    BIND6,
    GW_DISPATCH,
    IN_DISPATCH4,
    IN_DISPATCH6,
    KNOWN_MACS,
    MANAGED4,
    MANAGED6,
    OUT_DISPATCH,
    PENDING4,
    PENDING6,
    TABLE,
    DeviceFacts,
    DevicePolicy,
    Grant,
    HomeContext,
    HomeDefault,
    Installed,
    LifecycleState,
    PeerIndex,
    base_mark,
    compile_base,
    compile_device_record,
    decide,
    device_chain,
    fingerprint_comment,
    identity_refs,
    main_set_element,
    map_element,
    peer_refs,
    remove_device_commands,
    shard_names,
    shard_table,
    surplus_shard_names,
)
from mudguard.policy._nft import IDENTIFY_MACS

log = logging.getLogger(__name__)

ELEMENTS_PER_COMMAND = 512
"""Set elements per ``add``/``delete element`` command: one netlink attribute holds at
most 64 KiB, about 2,000 DNS pair elements."""

DEVICES_PER_BATCH = 100
"""Devices per transaction when a whole home is installed or repaired at start-up: small
enough that each device waits little for its own batch, large enough that the batches'
fixed costs stay small (``bench/bench_boot.py``)."""

_T = TypeVar("_T")

BatchHook = Callable[[list[str]], None]
"""Told the MACs of each batch of devices the kernel has just accepted."""


class DeviceLike(Protocol):
    """Anything with a device's facts (the store's ``Device`` fits)."""

    @property
    def mac(self) -> str: ...
    @property
    def state(self) -> LifecycleState: ...
    @property
    def ipv4(self) -> tuple[str, ...]: ...
    @property
    def ipv6(self) -> tuple[str, ...]: ...
    @property
    def mud_url(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def quarantine_exceptions(self) -> tuple[str, ...]: ...


def facts_of(device: DeviceLike | DeviceFacts) -> DeviceFacts:
    """The policy layer's ``DeviceFacts`` for a store device (or the facts themselves)."""
    if isinstance(device, DeviceFacts):
        return device
    return DeviceFacts(mac=device.mac.lower(), ipv4=tuple(device.ipv4), ipv6=tuple(device.ipv6),
                       mud_url=device.mud_url, state=device.state, name=device.name,
                       quarantine_exceptions=tuple(device.quarantine_exceptions))


@dataclass(slots=True)
class ReconcileReport:
    """What ``reconcile`` found and did."""

    reinstalled_table: bool = False
    repaired: list[str] = field(default_factory=list)  # MACs re-applied
    removed_chains: list[str] = field(default_factory=list)  # foreign device chains
    ok: list[str] = field(default_factory=list)  # MACs already correct


@dataclass(slots=True)
class _Entry:
    policy: DevicePolicy
    installed: Installed
    mud: MudFile | None = None
    grants: tuple[Grant, ...] = ()
    refs: frozenset[tuple[str, str]] = frozenset()  # other devices its rules name

    def __post_init__(self) -> None:
        if not self.refs:
            self.refs = peer_refs(self.policy)


class Enforcer:
    """Installs, replaces and removes device policies in the kernel."""

    def __init__(self, nft: Nft, context: HomeContext, *, home_default: HomeDefault = "internet",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 lan: LanIsolation | None = None) -> None:
        """``lan``, if given, is set up (``LanIsolation.setup``) by ``install_home`` and
        ``reconcile``, and gets a proxy-ND entry for each installed IPv6 address."""
        self._nft = nft
        self._lan = lan
        self._base_context = dataclasses.replace(context, devices=())
        self._home_default: HomeDefault = home_default
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._owner: dict[str, str] = {}  # address -> MAC whose in chain it maps to
        # shard table -> DNS set name -> how many installed devices reference it; kept
        # with ``_entries`` so an update costs the same whatever the home's size.
        self._dns_refs: dict[str, Counter[str]] = {}
        # Every installed device's facts, and the same by manufacturer and model: what
        # the compiler resolves peers from, kept here so an update never scans the home.
        self._devices: dict[str, DeviceFacts] = {}
        self._peers = PeerIndex.of(())

    # -- state ------------------------------------------------------------------------------

    @property
    def nft(self) -> Nft:
        """The libnftables handle (the DNS guard adds set elements through it)."""
        return self._nft

    @property
    def context(self) -> HomeContext:
        """The home context with every device currently installed."""
        return dataclasses.replace(self._base_context, devices=tuple(self._devices.values()),
                                   peers=self._peers)

    def installed(self) -> dict[str, Installed]:
        """The record of what is installed, by MAC (a copy)."""
        return {mac: e.installed for mac, e in self._entries.items()}

    def policy(self, mac: str) -> DevicePolicy | None:
        """The policy currently installed for ``mac``."""
        entry = self._entries.get(mac.lower())
        return entry.policy if entry else None

    # -- whole home ---------------------------------------------------------------------------

    def close_lan(self) -> bool:
        """Install the base alone (no device: nothing forwarded from or to the LAN)
        unless the main table already carries this base's mark; True if installed.

        One small transaction; reads back only the main table. Called first at
        start-up, before the home's policies are even decided: a base loaded at boot
        (``mudguard base``) or left by the last run is taken over as it is.
        """
        try:
            items = self._nft.read_tables({TABLE})
        except Exception:  # unreadable: install it (closed either way)
            log.exception("could not read the main table back; installing the base")
            items = []
        if _KernelView.parse(items).base_mark == base_mark(self._base_context):
            return False
        self._install_base()
        return True

    def install_home(self, policies: Iterable[DevicePolicy] = (), *,
                     on_batch: BatchHook | None = None) -> None:
        """Replace the tables with the base (one small transaction), then add every
        given device, ``DEVICES_PER_BATCH`` per transaction (``on_batch`` is told each).

        A device not in yet has nothing forwarded (the base's drop); one whose batch
        is in has its policy. If a batch is refused, ``NftError`` is raised and the
        devices of the batches before it stay installed (and recorded).
        """
        policies = list(policies)
        context = self._context_with(p.device for p in policies)
        pending = _Pending.of(p.device for p in policies)
        self._install_base(pending.add_commands())
        sets: dict[str, set[str]] = {}

        def batch_of(chunk: list[DevicePolicy]) -> tuple[list[NftCommand], dict[str, _Entry]]:
            cmds: list[NftCommand] = []
            entries: dict[str, _Entry] = {}
            for policy in chunk:
                in_shard = sets.setdefault(shard_table(policy.device.mac), set())
                device_cmds, record = compile_device_record(policy, context,
                                                            existing_sets=in_shard)
                in_shard.update(record.dns_sets)
                cmds += device_cmds
                cmds += pending.take(record)
                entries[record.mac] = _Entry(policy=policy, installed=record)
            return cmds, entries

        self._apply_batches((batch_of(chunk) for chunk in _chunks(policies)),
                            on_batch)

    def _install_base(self, extra: Sequence[NftCommand] = ()) -> None:
        """Replace the main and shard tables with the base alone (and ``extra``, in the
        same transaction); forget every device."""
        self._nft.apply([*compile_base(self._base_context), *extra])
        self._set_entries({})
        self._isolate_lan()

    def _apply_batches(self, batches: Iterable[tuple[list[NftCommand], dict[str, _Entry]]],
                       on_batch: BatchHook | None) -> None:
        """Apply each batch in its own transaction and record its devices once the
        kernel accepted it; the indexes are rebuilt at the end, even after a refusal."""
        try:
            for cmds, entries in batches:
                self._nft.apply(cmds)
                self._update_entries(entries)
                if on_batch is not None:
                    on_batch(list(entries))
        finally:
            self._peers = PeerIndex.of(self._devices.values())
            self._reindex()
            self._sync_proxies(set(self._owner), set())

    # -- one device ---------------------------------------------------------------------------

    def apply_device(self, device: DeviceLike | DeviceFacts, mud: MudFile | None,
                     grants: Sequence[Grant] = ()) -> DevicePolicy:
        """Decide and install the policy of one device in its state; return the policy.

        Raises ``NftError`` if the kernel refuses (nothing changes then).
        """
        facts = facts_of(device)
        policy = decide(facts, mud, grants, self.context, home_default=self._home_default,
                        now=self._clock())
        self.apply_policy(policy, mud=mud, grants=grants)
        return policy

    def apply_policy(self, policy: DevicePolicy, *, mud: MudFile | None = None,
                     grants: Sequence[Grant] = ()) -> None:
        """Install or replace one device's policy (and its dependents) in one batch.

        An address the device now holds that another installed device held (a lease
        handed on, a renumbered device) leaves that device in the same batch: its
        chains stop accepting it as a source, its map entries go, the DNS-set elements
        learned under it are deleted, and its tracked connections are forgotten. An
        address the device itself gave up loses its DNS-set elements the same way.
        """
        mac = policy.device.mac.lower()
        old = self._entries.get(mac)
        taken = addresses_taken(self._owner, mac, policy.device.ipv4 + policy.device.ipv6)
        narrowed = {other: _without(self._entries[other].policy, lost)
                    for other, lost in taken.items() if other in self._entries}
        context = self._context_replacing([policy.device,
                                           *(p.device for p in narrowed.values())])
        cmds: list[NftCommand] = []
        updates: dict[str, _Entry] = {}
        for other, narrower in sorted(narrowed.items()):
            entry = self._entries[other]
            other_cmds, other_record = compile_device_record(
                narrower, context, previous=entry.installed,
                existing_sets=self._sets(entry.installed.table))
            cmds += other_cmds  # its map entries go before this device's are added
            updates[other] = dataclasses.replace(entry, policy=narrower, installed=other_record)
        device_cmds, record = compile_device_record(
            policy, context, previous=old.installed if old else None,
            existing_sets=self._sets(shard_table(mac)))
        cmds += device_cmds
        updates[mac] = _Entry(policy=policy, installed=record, mud=mud, grants=tuple(grants))
        changed = [p.device for p in narrowed.values()]
        if old is None or _identity(old.policy.device) != _identity(policy.device):
            changed.append(policy.device)
        updates.update(self._recompile_dependents(changed, context, cmds, skip=set(updates)))
        given_up = _addresses(old.installed) - _addresses(record) if old else set()
        cmds += self._forget_dns_elements(
            [(shard_table(o), lost) for o, lost in sorted(taken.items())]
            + [(record.table, given_up)])
        cmds += self._unused_sets(updates, [])
        self._nft.apply(cmds)
        if old is not None and old.installed.fingerprint != record.fingerprint \
                and policy.state is not LifecycleState.TRUSTED:
            # Established connections are accepted before any device chain: the old
            # policy's would outlive the new one. (Trusted: nothing to take back.)
            self._nft.forget_connections(old.installed.ipv4 + old.installed.ipv6)
        lost_elsewhere = sorted(a for lost in taken.values() for a in lost)
        if lost_elsewhere:
            # The previous holders' connections from (and to) the addresses they lost.
            self._nft.forget_connections(lost_elsewhere)
        self._update_entries(updates)
        if context.peers is not None:
            self._peers = context.peers
        before = _addresses(old.installed) if old is not None else set()
        for address in before | set(lost_elsewhere):
            self._owner.pop(address, None)
        after = _addresses(record)
        for address in after:
            self._owner[address] = mac
        self._sync_proxies(after - before, before - after)

    def remove_device(self, mac: str) -> None:
        """Remove every rule and map entry of the device (idempotent)."""
        mac = mac.lower()
        entry = self._entries.get(mac)
        if entry is None:
            return
        cmds = remove_device_commands(entry.installed)
        gone = dataclasses.replace(entry.policy.device, state=LifecycleState.FORGOTTEN)
        context = self._context_with([], replacing=mac)
        updates = self._recompile_dependents([gone], context, cmds, skip={mac})
        cmds += self._forget_dns_elements([(entry.installed.table, _addresses(entry.installed))])
        cmds += self._unused_sets(updates, [entry])
        self._nft.apply(cmds)
        self._nft.forget_connections(entry.installed.ipv4 + entry.installed.ipv6)
        self._unindex(self._entries.pop(mac))
        self._devices.pop(mac, None)
        self._update_entries(updates)
        if context.peers is not None:
            self._peers = context.peers
        freed: set[str] = set()
        for address in entry.installed.ipv4 + entry.installed.ipv6:
            if self._owner.get(address) == mac:
                del self._owner[address]
                freed.add(address)
        self._sync_proxies(set(), freed)

    def isolate_lan_ports(self) -> list[str]:
        """Isolate the LAN bridge's ports again (a port may have appeared since); the
        ports, or nothing without LAN isolation. Failures are logged, not raised."""
        if self._lan is None:
            return []
        try:
            return self._lan.isolate_ports()
        except LanIsolationError as exc:
            log.error("LAN port isolation failed; lateral traffic may bypass the rules: %s",
                      exc)
            return []

    # -- helpers ------------------------------------------------------------------------------

    def _sets(self, table: str) -> Collection[str]:
        """The DNS sets installed in one shard table."""
        return self._dns_refs.get(table, {}).keys()

    def _unused_sets(self, updates: dict[str, _Entry],
                     removed: Iterable[_Entry]) -> list[NftCommand]:
        """``delete set`` for the DNS sets no device of their shard names after this batch.

        Sent last in the batch: the rules that looked them up are flushed before it.
        """
        delta: Counter[tuple[str, str]] = Counter()
        gone = [*removed, *(self._entries[m] for m in updates if m in self._entries)]
        for entry in gone:
            delta.subtract((entry.installed.table, n) for n in entry.installed.dns_sets)
        for entry in updates.values():
            delta.update((entry.installed.table, n) for n in entry.installed.dns_sets)
        cmds: list[NftCommand] = []
        for (table, name), change in sorted(delta.items()):
            if change < 0 and self._dns_refs.get(table, Counter())[name] + change <= 0:
                cmds.append({"delete": {"set": {"family": "inet", "table": table,
                                                "name": name}}})
        return cmds

    def _set_entries(self, entries: dict[str, _Entry]) -> None:
        """Replace the whole record (install, reconcile) and rebuild its indexes."""
        self._entries = {}
        self._dns_refs = {}
        self._devices = {}
        self._update_entries(entries)
        self._peers = PeerIndex.of(self._devices.values())
        self._reindex()

    def _update_entries(self, updates: dict[str, _Entry]) -> None:
        """Record new entries for some devices, keeping the DNS-set index in step (the
        peer index is the caller's: it compiled with it)."""
        for mac, entry in updates.items():
            old = self._entries.get(mac)
            if old is not None:
                self._unindex(old)
            self._entries[mac] = entry
            self._devices[mac] = entry.policy.device
            refs = self._dns_refs.setdefault(entry.installed.table, Counter())
            refs.update(entry.installed.dns_sets)

    def _unindex(self, entry: _Entry) -> None:
        refs = self._dns_refs.get(entry.installed.table)
        if refs is not None:
            refs.subtract(entry.installed.dns_sets)
            for name in entry.installed.dns_sets:
                if refs[name] <= 0:
                    del refs[name]

    def _context_with(self, devices: Iterable[DeviceFacts], *,
                      replacing: str | None = None) -> HomeContext:
        """The context with ``devices`` added to (or, for ``replacing``, in place of) the
        installed ones; its peer index is updated, not rebuilt, for one device."""
        given = list(devices)
        known = dict(self._devices)
        if replacing is not None:
            known.pop(replacing, None)
        for device in given:
            known[device.mac.lower()] = device
        if replacing is not None and len(given) <= 1:
            peers = self._peers.with_device(replacing, self._devices.get(replacing),
                                            given[0] if given else None)
        else:
            peers = PeerIndex.of(known.values())
        return dataclasses.replace(self._base_context, devices=tuple(known.values()),
                                   peers=peers)

    def _isolate_lan(self) -> None:
        """Isolate the LAN bridge's ports (proxy ARP, no redirects): with the base."""
        if self._lan is not None:
            self._lan.setup_or_log()

    def _sync_proxies(self, added: set[str], removed: set[str]) -> None:
        """Keep the LAN's proxy-ND entries equal to the installed IPv6 addresses."""
        if self._lan is not None:
            self._lan.sync_proxies(added, removed)

    def _reindex(self) -> None:
        self._owner = {address: mac for mac, e in self._entries.items()
                       for address in e.installed.ipv4 + e.installed.ipv6}

    def _context_replacing(self, devices: Sequence[DeviceFacts]) -> HomeContext:
        """The context with each of ``devices`` in place of its installed self (the
        device being applied and the devices it takes addresses from)."""
        if len(devices) == 1:
            return self._context_with(devices, replacing=devices[0].mac.lower())
        known = dict(self._devices)
        peers = self._peers
        for device in devices:
            mac = device.mac.lower()
            peers = peers.with_device(mac, known.get(mac), device)
            known[mac] = device
        return dataclasses.replace(self._base_context, devices=tuple(known.values()),
                                   peers=peers)

    def _forget_dns_elements(self, lost: Iterable[tuple[str, Collection[str]]]
                             ) -> list[NftCommand]:
        """``delete element`` for every DNS-set element learned under an address its
        device no longer holds (``lost``: shard table, addresses), so whoever gets the
        address next never inherits the destinations its previous holder looked up.

        Reads the shard's DNS sets back (the kernel, not the DNS guard's memory, knows
        what a restarted daemon granted before); only when an address is lost.
        """
        wanted: dict[str, set[str]] = {}
        for table, addresses in lost:
            if addresses and self._sets(table):
                wanted.setdefault(table, set()).update(addresses)
        cmds: list[NftCommand] = []
        for table, addresses in sorted(wanted.items()):
            pairs = self._nft.read_pairs(table, sorted(self._sets(table)))
            for name, elements in sorted(pairs.items()):
                stale = [{"concat": [device, remote]} for device, remote in elements
                         if device in addresses]
                for start in range(0, len(stale), ELEMENTS_PER_COMMAND):
                    # Added first: an element that timed out since the read would make
                    # a bare delete fail the whole batch (ENOENT); add-then-delete in
                    # one transaction removes it either way (firewalld's table trick).
                    body = {"family": "inet", "table": table, "name": name,
                            "elem": stale[start:start + ELEMENTS_PER_COMMAND]}
                    cmds += [{"add": {"element": body}}, {"delete": {"element": body}}]
        return cmds

    def _recompile_dependents(self, changed: Sequence[DeviceFacts], context: HomeContext,
                              cmds: list[NftCommand], *, skip: Collection[str] = ()
                              ) -> dict[str, _Entry]:
        """Recompile, once each, the installed devices whose rules name one of ``changed``
        (same manufacturer, model, ...), except those in ``skip``."""
        updates: dict[str, _Entry] = {}
        keys: frozenset[tuple[str, str]] = frozenset().union(*map(identity_refs, changed))
        if not keys:
            return updates
        for mac, entry in self._entries.items():
            if mac in skip or not (entry.refs & keys):
                continue
            device_cmds, record = compile_device_record(
                entry.policy, context, previous=entry.installed,
                existing_sets=self._sets(entry.installed.table))
            cmds += device_cmds
            updates[mac] = dataclasses.replace(entry, installed=record)
        return updates

    # -- reconcile ----------------------------------------------------------------------------

    def reconcile(self, policies: Iterable[DevicePolicy], *,
                  on_batch: BatchHook | None = None) -> ReconcileReport:
        """Make the kernel match ``policies`` after a restart; repair only what differs.

        Reads the tables back once (over nfnetlink: chains, rules, map and set entries).
        What it takes away (stray devices, stale entries) goes in one transaction, then
        the devices to repair ``DEVICES_PER_BATCH`` per transaction (``on_batch`` is
        told each), so a home restored onto a bare base gains access device by device.
        """
        policies = list(policies)
        report = ReconcileReport()
        try:
            items = self._nft.read_tables({TABLE, *shard_names(), *surplus_shard_names()})
        except Exception:  # unreadable: start from scratch
            log.exception("could not read the tables back; reinstalling them")
            items = []
        kernel = _KernelView.parse(items)
        if not kernel.has_base(base_mark(self._base_context)):
            self.install_home(policies, on_batch=on_batch)
            report.reinstalled_table = True
            return report
        context = self._context_with(p.device for p in policies)
        self._set_entries({})
        wanted = [p.device for p in policies]
        removals: list[NftCommand] = []
        for mac, chains in kernel.foreign_devices({d.mac.lower() for d in wanted}).items():
            removals += kernel.remove_foreign(mac, chains)
            report.removed_chains.extend(chains)
        removals += kernel.stale_main_elements(wanted)
        pending = _Pending.of(wanted, mapped=kernel.installed_guess)
        removals += kernel.replace_pending(pending)
        self._nft.apply(removals)  # only takes away: first
        self._isolate_lan()

        def batch_of(chunk: list[DevicePolicy]) -> tuple[list[NftCommand], dict[str, _Entry]]:
            cmds: list[NftCommand] = []
            entries: dict[str, _Entry] = {}
            for policy in chunk:
                mac = policy.device.mac.lower()
                device_cmds, record = compile_device_record(policy, context)
                entries[mac] = _Entry(policy=policy, installed=record)
                if kernel.matches(record):
                    report.ok.append(mac)
                    continue
                cmds += kernel.unmap_foreign(record, kernel.installed_guess(mac))
                cmds += device_cmds
                cmds += pending.take(record)
                report.repaired.append(mac)
            return cmds, entries

        self._apply_batches((batch_of(chunk) for chunk in _chunks(policies)),
                            on_batch)
        return report


def _identity(device: DeviceFacts) -> tuple[Any, ...]:
    """What other devices' compiled rules depend on (addresses, MUD URL, being present)."""
    return (device.ipv4, device.ipv6, device.mud_url, device.state is LifecycleState.FORGOTTEN)


def _canon(addresses: Iterable[str]) -> list[str]:
    return [str(ipaddress.ip_address(a)) for a in addresses]


def _addresses(record: Installed) -> set[str]:
    return set(record.ipv4 + record.ipv6)


def addresses_taken(owner: Mapping[str, str], mac: str,
                    addresses: Iterable[str]) -> dict[str, frozenset[str]]:
    """Which installed devices lose which addresses when ``mac`` holds ``addresses``
    (pure): every address ``owner`` maps to another device moves to ``mac``; each
    previous holder keeps the rest of its addresses.

    Raises ``ValueError`` for a malformed address (nothing is decided).
    """
    mac = mac.lower()
    taken: dict[str, set[str]] = {}
    for address in _canon(addresses):
        holder = owner.get(address)
        if holder is not None and holder != mac:
            taken.setdefault(holder, set()).add(address)
    return {holder: frozenset(lost) for holder, lost in taken.items()}


def _without(policy: DevicePolicy, lost: Collection[str]) -> DevicePolicy:
    """``policy`` for the same device without the addresses it ``lost``."""
    facts = policy.device
    return dataclasses.replace(policy, device=dataclasses.replace(
        facts, ipv4=tuple(a for a in facts.ipv4 if _canon([a])[0] not in lost),
        ipv6=tuple(a for a in facts.ipv6 if _canon([a])[0] not in lost)))


def _chunks(items: Sequence[_T], size: int | None = None) -> Iterator[list[_T]]:
    """``items`` in consecutive lists of ``size`` (``DEVICES_PER_BATCH``)."""
    step = size or DEVICES_PER_BATCH
    for start in range(0, len(items), step):
        yield list(items[start:start + step])


@dataclass(slots=True)
class _Pending:
    """The addresses of devices about to be installed at start-up (main-table sets
    ``pending4/6``): nothing is forwarded to them until their own batch, which takes
    them out in the same transaction that maps their ``in`` chain."""

    ipv4: set[str] = field(default_factory=set)
    ipv6: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, devices: Iterable[DeviceFacts],
           mapped: Callable[[str], Installed] | None = None) -> _Pending:
        """The devices' addresses, less those the kernel already maps to the device's
        own ``in`` chain (``mapped(mac)``: then its rules, old or new, apply)."""
        pending = cls()
        for device in devices:
            have = mapped(device.mac.lower()) if mapped is not None else None
            pending.ipv4.update(a for a in _canon(device.ipv4)
                                if have is None or a not in have.ipv4)
            pending.ipv6.update(a for a in _canon(device.ipv6)
                                if have is None or a not in have.ipv6)
        return pending

    def add_commands(self) -> list[NftCommand]:
        """Add every pending address to the kernel's sets."""
        return [main_set_element("add", name, sorted(keys))
                for name, keys in ((PENDING4, self.ipv4), (PENDING6, self.ipv6)) if keys]

    def take(self, record: Installed) -> list[NftCommand]:
        """Commands that take ``record``'s addresses out of the pending sets (once)."""
        cmds: list[NftCommand] = []
        for name, keys, mine in ((PENDING4, self.ipv4, record.ipv4),
                                 (PENDING6, self.ipv6, record.ipv6)):
            taken = sorted(a for a in mine if a in keys)
            if taken:
                keys.difference_update(taken)
                cmds.append(main_set_element("delete", name, taken))
        return cmds


@dataclass(slots=True)
class _KernelView:
    """The parts of the read-back main and shard tables that reconcile compares."""

    chains: dict[str, str] = field(default_factory=dict)  # device chain -> its table
    base: dict[str, set[str]] = field(default_factory=dict)  # table -> its base chain names
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # -> key -> chain
    sets: dict[str, set[str]] = field(default_factory=dict)  # main-table set -> elements
    surplus: set[str] = field(default_factory=set)  # shard tables beyond the setting
    base_mark: str | None = None  # the main forward chain's first rule's comment

    @classmethod
    def parse(cls, items: list[dict[str, Any]]) -> _KernelView:
        """Build the view from ``nft -j list ruleset`` items (other tables are ignored)."""
        view = cls()
        ours = {TABLE, *shard_names()}
        surplus = set(surplus_shard_names())
        for item in items:
            kind, body = next(iter(item.items()))
            if not isinstance(body, dict) or body.get("family") != "inet":
                continue
            if body.get("table") in surplus:
                view.surplus.add(body["table"])
                continue
            if body.get("table") not in ours:
                continue
            table = body["table"]
            if kind == "chain" and "hook" in body:
                view.base.setdefault(table, set()).add(body["name"])
            elif kind == "chain":
                view.chains[body["name"]] = table
            elif kind == "rule":
                view.rules.setdefault(body["chain"], []).append(body)
                if table == TABLE and body["chain"] == "forward" and view.base_mark is None:
                    view.base_mark = body.get("comment", "")
            elif kind == "map":
                view.maps[(table, body["name"])] = _map_entries(body)
            elif kind == "set" and table == TABLE:
                view.sets[body["name"]] = {_element_key(e) for e in body.get("elem", [])}
        return view

    def has_base(self, mark: str) -> bool:
        """True if the main table carries ``mark`` (``base_mark``: the same base), it and
        every shard have their base chains, maps and sets, and no shard table is left
        from a bigger setting (its drops would still apply)."""
        if self.base_mark != mark or self.surplus:
            return False
        if not ({"forward", "input", "output"} <= self.base.get(TABLE, set())
                and {KNOWN_MACS, MANAGED4, MANAGED6, BIND4, BIND6} <= set(self.sets)):
            return False
        return all({"forward", "input"} <= self.base.get(shard, set())
                   and all((shard, m) in self.maps
                           for m in (OUT_DISPATCH, GW_DISPATCH, IN_DISPATCH4, IN_DISPATCH6))
                   for shard in shard_names())

    def matches(self, record: Installed) -> bool:
        """True if the kernel holds exactly ``record``'s chains, fingerprint and entries."""
        out, inn, gw = record.chains
        table = record.table
        if any(self.chains.get(c) != table for c in (out, inn, gw)):
            return False
        counts = tuple(len(self.rules.get(c, [])) for c in (out, inn, gw))
        if counts != record.rule_counts:
            return False
        last = self.rules.get(out, [{}])[-1]
        if last.get("comment") != fingerprint_comment(record.fingerprint):
            return False
        if self.maps[(table, OUT_DISPATCH)].get(record.mac) != out:
            return False
        if self.maps[(table, GW_DISPATCH)].get(record.mac) != gw:
            return False
        if record.mac not in self.sets[KNOWN_MACS]:
            return False
        if (record.mac in self.sets.get(IDENTIFY_MACS, set())) != record.observed:
            return False
        have4 = {k for k, v in self.maps[(table, IN_DISPATCH4)].items() if v == inn}
        have6 = {k for k, v in self.maps[(table, IN_DISPATCH6)].items() if v == inn}
        return (have4 == set(record.ipv4) and have6 == set(record.ipv6)
                and set(record.ipv4) <= self.sets[MANAGED4]
                and set(record.ipv6) <= self.sets[MANAGED6]
                and _bound(record.mac, record.ipv4) <= self.sets[BIND4]
                and _bound(record.mac, record.ipv6) <= self.sets[BIND6])

    def installed_guess(self, mac: str) -> Installed:
        """What the kernel holds for ``mac`` (addresses mapped to its in chain)."""
        inn = device_chain(mac, "in")
        table = shard_table(mac)
        return Installed(
            mac=mac,
            ipv4=tuple(k for k, v in self.maps[(table, IN_DISPATCH4)].items() if v == inn),
            ipv6=tuple(k for k, v in self.maps[(table, IN_DISPATCH6)].items() if v == inn),
            dns_sets=(), observed=mac in self.sets.get(IDENTIFY_MACS, set()))

    def unmap_foreign(self, record: Installed, previous: Installed) -> list[NftCommand]:
        """Delete map entries for the device's addresses that point elsewhere or are stale."""
        cmds: list[NftCommand] = []
        inn = device_chain(record.mac, "in")
        for name, wanted, old in ((IN_DISPATCH4, record.ipv4, previous.ipv4),
                                  (IN_DISPATCH6, record.ipv6, previous.ipv6)):
            stale = [a for a in old if a not in wanted]
            for shard in shard_names():
                entries = self.maps[(shard, name)]
                gone = sorted({a for a in stale + list(wanted)
                               if a in entries and entries[a] != inn}
                              | {a for a in stale if entries.get(a) == inn})
                if gone:
                    cmds.append(map_element("delete", name, gone, None, table=shard))
                    for a in gone:
                        entries.pop(a, None)
        table = record.table
        for name, chain in ((OUT_DISPATCH, record.chains[0]), (GW_DISPATCH, record.chains[2])):
            current = self.maps[(table, name)].get(record.mac)
            if current is not None and current != chain:
                cmds.append(map_element("delete", name, [record.mac], None, table=table))
        return cmds

    def foreign_devices(self, wanted: set[str]) -> dict[str, list[str]]:
        """Device chains in the kernel that belong to no wanted device, by map key."""
        wanted_chains = {device_chain(m, k) for m in wanted for k in ("out", "in", "gw")}
        stray = sorted(c for c in self.chains if c.startswith("dev_") and c not in wanted_chains)
        return {c: [c] for c in stray}

    def remove_foreign(self, key: str, chains: list[str]) -> list[NftCommand]:
        """Unmap and delete stray device chains."""
        cmds: list[NftCommand] = []
        for chain in chains:
            table = self.chains[chain]
            for name in (OUT_DISPATCH, GW_DISPATCH, IN_DISPATCH4, IN_DISPATCH6):
                entries = self.maps.get((table, name), {})  # the main table has no maps
                keys = sorted(k for k, v in entries.items() if v == chain)
                if keys:
                    cmds.append(map_element("delete", name, keys, None, table=table))
                for key in keys:  # a wanted device's repair must not delete it again
                    del entries[key]
            body = {"family": "inet", "table": table, "name": chain}
            cmds += [{"flush": {"chain": body}}, {"delete": {"chain": body}}]
        return cmds

    def replace_pending(self, pending: _Pending) -> list[NftCommand]:
        """Make the kernel's pending sets hold exactly ``pending`` (a run killed mid-way
        left its own)."""
        cmds: list[NftCommand] = []
        for name in (PENDING4, PENDING6):
            left = sorted(self.sets.get(name, set()))
            if left:
                cmds.append(main_set_element("delete", name, left))
        return cmds + pending.add_commands()

    def stale_main_elements(self, wanted: Iterable[DeviceFacts]) -> list[NftCommand]:
        """Delete main-set elements (known MACs, managed addresses, bindings) no wanted
        device holds."""
        devices = list(wanted)
        keep = {KNOWN_MACS: {d.mac.lower() for d in devices},
                MANAGED4: {a for d in devices for a in _canon(d.ipv4)},
                MANAGED6: {a for d in devices for a in _canon(d.ipv6)},
                BIND4: {k for d in devices for k in _bound(d.mac, _canon(d.ipv4))},
                BIND6: {k for d in devices for k in _bound(d.mac, _canon(d.ipv6))}}
        cmds: list[NftCommand] = []
        for name, kept in keep.items():
            stale = sorted(self.sets.get(name, set()) - kept)
            if stale and name in (BIND4, BIND6):
                cmds.append(main_set_element("delete", name, [
                    {"concat": key.split(_PAIR)} for key in stale]))
            elif stale:
                cmds.append(main_set_element("delete", name, stale))
        return cmds


_PAIR: Final = " . "


def _bound(mac: str, addresses: Iterable[str]) -> set[str]:
    """The ``bind4``/``bind6`` keys (as ``_element_key`` reads them) of a device's addresses."""
    return {f"{mac.lower()}{_PAIR}{address}" for address in addresses}


def _element_key(elem: Any) -> str:
    if isinstance(elem, dict) and "elem" in elem:  # {"elem": {"val": ...}} forms
        elem = elem["elem"].get("val", elem)
    if isinstance(elem, dict) and "concat" in elem:  # bind4/6: MAC . address
        return _PAIR.join(str(part) for part in elem["concat"])
    return str(elem)


def _map_entries(body: dict[str, Any]) -> dict[str, str]:
    entries: dict[str, str] = {}
    for elem in body.get("elem", []):
        key, verdict = elem[0], elem[1]
        target = verdict.get("jump", {}).get("target", "")
        entries[_element_key(key)] = target
    return entries
