"""Adapter: keep the kernel's ``inet mudguard`` table equal to the home's policies.

Theory of operation. The ``Enforcer`` owns one ``Nft`` handle and a record of
what it installed (``Installed`` per device). It never reads the ruleset back
on a hot path: ``apply_policy`` compiles one device, adds the commands that
unmap its stale addresses (and addresses another device held before), and
applies everything in ONE batch; the record changes only after the kernel
accepted the batch (firewalld's order). If a device's addresses or MUD URL
change, the devices whose rules name it (same-manufacturer, manufacturer,
model) are recompiled in the same batch.

Fail closed: ``install_home`` replaces the whole table in one transaction whose
base chains drop everything from unknown LAN devices; a device update swaps its
chains atomically, so a packet sees the old policy or the new one, never a gap
and never more than either.

``reconcile(policies)`` is for start-up after a crash or restart: it reads the
table back once, compares it with what the policies compile to (chain
presence, rule counts, the fingerprint comment, map entries), and repairs only
what differs; a missing or foreign base table is reinstalled whole.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from mudguard.enforce.lan import LanIsolation, LanIsolationError
from mudguard.enforce.nft import Nft, NftCommand
from mudguard.mud import MudFile
from mudguard.policy import (
    GW_DISPATCH,
    IN_DISPATCH4,
    IN_DISPATCH6,
    OUT_DISPATCH,
    TABLE,
    DeviceFacts,
    DevicePolicy,
    Grant,
    HomeContext,
    HomeDefault,
    Installed,
    LifecycleState,
    compile_base,
    compile_device_record,
    decide,
    device_chain,
    fingerprint_comment,
    identity_refs,
    map_element,
    peer_refs,
    remove_device_commands,
)

log = logging.getLogger(__name__)


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


def facts_of(device: DeviceLike | DeviceFacts) -> DeviceFacts:
    """The policy layer's ``DeviceFacts`` for a store device (or the facts themselves)."""
    if isinstance(device, DeviceFacts):
        return device
    return DeviceFacts(mac=device.mac.lower(), ipv4=tuple(device.ipv4), ipv6=tuple(device.ipv6),
                       mud_url=device.mud_url, state=device.state, name=device.name)


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

    # -- state ------------------------------------------------------------------------------

    @property
    def nft(self) -> Nft:
        """The libnftables handle (the DNS guard adds set elements through it)."""
        return self._nft

    @property
    def context(self) -> HomeContext:
        """The home context with every device currently installed."""
        devices = tuple(e.policy.device for e in self._entries.values())
        return dataclasses.replace(self._base_context, devices=devices)

    def installed(self) -> dict[str, Installed]:
        """The record of what is installed, by MAC (a copy)."""
        return {mac: e.installed for mac, e in self._entries.items()}

    def policy(self, mac: str) -> DevicePolicy | None:
        """The policy currently installed for ``mac``."""
        entry = self._entries.get(mac.lower())
        return entry.policy if entry else None

    # -- whole home ---------------------------------------------------------------------------

    def install_home(self, policies: Iterable[DevicePolicy] = ()) -> None:
        """Replace the whole table: base chains and maps, then every given device."""
        policies = list(policies)
        context = self._context_with(p.device for p in policies)
        cmds = compile_base(context)
        entries: dict[str, _Entry] = {}
        sets: set[str] = set()
        for policy in policies:
            device_cmds, record = compile_device_record(policy, context, existing_sets=sets)
            sets.update(record.dns_sets)
            cmds += device_cmds
            entries[record.mac] = _Entry(policy=policy, installed=record)
        self._nft.apply(cmds)
        self._entries = entries
        self._reindex()
        self._setup_lan()

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
        """Install or replace one device's policy (and its dependents) in one batch."""
        mac = policy.device.mac.lower()
        old = self._entries.get(mac)
        context = self._context_with([policy.device], replacing=mac)
        cmds: list[NftCommand] = self._steal_addresses(policy.device)
        device_cmds, record = compile_device_record(
            policy, context, previous=old.installed if old else None,
            existing_sets=self._sets())
        cmds += device_cmds
        updates = {mac: _Entry(policy=policy, installed=record, mud=mud, grants=tuple(grants))}
        if old is None or _identity(old.policy.device) != _identity(policy.device):
            updates.update(self._recompile_dependents(policy.device, context, cmds))
        self._nft.apply(cmds)
        self._drop_stolen(record)
        self._entries.update(updates)
        before = set(self._owner)
        if old is not None:
            for address in old.installed.ipv4 + old.installed.ipv6:
                self._owner.pop(address, None)
        for address in record.ipv4 + record.ipv6:
            self._owner[address] = mac
        self._sync_proxies(before, set(self._owner))

    def remove_device(self, mac: str) -> None:
        """Remove every rule and map entry of the device (idempotent)."""
        mac = mac.lower()
        entry = self._entries.get(mac)
        if entry is None:
            return
        cmds = remove_device_commands(entry.installed)
        gone = dataclasses.replace(entry.policy.device, state=LifecycleState.FORGOTTEN)
        context = self._context_with([], replacing=mac)
        updates = self._recompile_dependents(gone, context, cmds)
        self._nft.apply(cmds)
        del self._entries[mac]
        self._entries.update(updates)
        before = set(self._owner)
        for address in entry.installed.ipv4 + entry.installed.ipv6:
            if self._owner.get(address) == mac:
                del self._owner[address]
        self._sync_proxies(before, set(self._owner))

    # -- helpers ------------------------------------------------------------------------------

    def _sets(self) -> set[str]:
        return {name for e in self._entries.values() for name in e.installed.dns_sets}

    def _context_with(self, devices: Iterable[DeviceFacts], *,
                      replacing: str | None = None) -> HomeContext:
        known = {mac: e.policy.device for mac, e in self._entries.items() if mac != replacing}
        for device in devices:
            known[device.mac.lower()] = device
        return dataclasses.replace(self._base_context, devices=tuple(known.values()))

    def _setup_lan(self) -> None:
        """Isolate the LAN bridge's ports and proxy every installed IPv6 address."""
        if self._lan is None:
            return
        try:
            self._lan.setup()
        except LanIsolationError as exc:
            log.error("LAN isolation failed; lateral traffic may bypass the rules: %s", exc)
        self._sync_proxies(set(), set(self._owner))

    def _sync_proxies(self, before: set[str], after: set[str]) -> None:
        """Keep the LAN's proxy-ND entries equal to the installed IPv6 addresses.

        After the kernel accepted the rules; a failure here only costs IPv6 lateral
        reachability (fail closed), so it is logged, not raised.
        """
        if self._lan is None:
            return
        try:
            for address in sorted(after - before):
                if ":" in address:
                    self._lan.add_proxy(address)
            for address in sorted(before - after):
                if ":" in address:
                    self._lan.remove_proxy(address)
        except LanIsolationError as exc:
            log.warning("proxy ND update failed: %s", exc)

    def _reindex(self) -> None:
        self._owner = {address: mac for mac, e in self._entries.items()
                       for address in e.installed.ipv4 + e.installed.ipv6}

    def _steal_addresses(self, device: DeviceFacts) -> list[NftCommand]:
        """Unmap addresses that another device held before (DHCP gave them out again)."""
        mac = device.mac.lower()
        lost4 = sorted(a for a in _canon(device.ipv4) if self._owner.get(a, mac) != mac)
        lost6 = sorted(a for a in _canon(device.ipv6) if self._owner.get(a, mac) != mac)
        cmds: list[NftCommand] = []
        if lost4:
            cmds.append(map_element("delete", IN_DISPATCH4, lost4, None))
        if lost6:
            cmds.append(map_element("delete", IN_DISPATCH6, lost6, None))
        return cmds

    def _drop_stolen(self, record: Installed) -> None:
        """Forget, in the other devices' records, the addresses ``record`` now holds."""
        for address in record.ipv4 + record.ipv6:
            owner = self._owner.get(address)
            if owner is None or owner == record.mac or owner not in self._entries:
                continue
            entry = self._entries[owner]
            rec = entry.installed
            entry.installed = dataclasses.replace(
                rec, ipv4=tuple(a for a in rec.ipv4 if a != address),
                ipv6=tuple(a for a in rec.ipv6 if a != address))

    def _recompile_dependents(self, changed: DeviceFacts, context: HomeContext,
                              cmds: list[NftCommand]) -> dict[str, _Entry]:
        updates: dict[str, _Entry] = {}
        keys = identity_refs(changed)
        for mac, entry in self._entries.items():
            if mac == changed.mac.lower() or not (entry.refs & keys):
                continue
            device_cmds, record = compile_device_record(entry.policy, context,
                                                        previous=entry.installed,
                                                        existing_sets=self._sets())
            cmds += device_cmds
            updates[mac] = dataclasses.replace(entry, installed=record)
        return updates

    # -- reconcile ----------------------------------------------------------------------------

    def reconcile(self, policies: Iterable[DevicePolicy]) -> ReconcileReport:
        """Make the kernel match ``policies`` after a restart; repair only what differs.

        Reads the table back once (slow on big rulesets: start-up only).
        """
        policies = list(policies)
        report = ReconcileReport()
        try:
            items = self._nft.list_json("table", "inet", TABLE)
        except Exception:  # no table at all (or unreadable): start from scratch
            items = []
        kernel = _KernelView.parse(items)
        if not kernel.has_base():
            self.install_home(policies)
            report.reinstalled_table = True
            return report
        context = self._context_with(p.device for p in policies)
        self._entries = {}
        cmds: list[NftCommand] = []
        wanted: dict[str, _Entry] = {}
        for policy in policies:
            mac = policy.device.mac.lower()
            previous = kernel.installed_guess(mac)
            device_cmds, record = compile_device_record(policy, context)
            wanted[mac] = _Entry(policy=policy, installed=record)
            if kernel.matches(record):
                report.ok.append(mac)
                continue
            cmds += kernel.unmap_foreign(record, previous)
            cmds += device_cmds
            report.repaired.append(mac)
        for mac, chains in kernel.foreign_devices(set(wanted)).items():
            cmds += kernel.remove_foreign(mac, chains)
            report.removed_chains.extend(chains)
        if cmds:
            self._nft.apply(cmds)
        self._entries = wanted
        self._reindex()
        self._setup_lan()
        return report


def _identity(device: DeviceFacts) -> tuple[Any, ...]:
    """What other devices' compiled rules depend on (addresses, MUD URL, being present)."""
    return (device.ipv4, device.ipv6, device.mud_url, device.state is LifecycleState.FORGOTTEN)


def _canon(addresses: Iterable[str]) -> list[str]:
    return [str(ipaddress.ip_address(a)) for a in addresses]


@dataclass(slots=True)
class _KernelView:
    """The parts of a read-back table that reconcile compares."""

    chains: set[str] = field(default_factory=set)
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    maps: dict[str, dict[str, str]] = field(default_factory=dict)  # map -> key -> chain

    @classmethod
    def parse(cls, items: list[dict[str, Any]]) -> _KernelView:
        """Build the view from ``nft -j list table`` items."""
        view = cls()
        for item in items:
            if "chain" in item:
                view.chains.add(item["chain"]["name"])
            elif "rule" in item:
                view.rules.setdefault(item["rule"]["chain"], []).append(item["rule"])
            elif "map" in item:
                entries: dict[str, str] = {}
                for elem in item["map"].get("elem", []):
                    key, verdict = elem[0], elem[1]
                    if isinstance(key, dict):  # {"elem": {"val": ...}} forms
                        key = key.get("elem", {}).get("val", key)
                    target = verdict.get("jump", {}).get("target", "")
                    entries[str(key)] = target
                view.maps[item["map"]["name"]] = entries
        return view

    def has_base(self) -> bool:
        """True if the base chains and all four dispatch maps exist."""
        return ({"forward", "input", "output"} <= self.chains
                and {OUT_DISPATCH, GW_DISPATCH, IN_DISPATCH4, IN_DISPATCH6} <= set(self.maps))

    def matches(self, record: Installed) -> bool:
        """True if the kernel holds exactly ``record``'s chains, fingerprint and map entries."""
        out, inn, gw = record.chains
        if not {out, inn, gw} <= self.chains:
            return False
        counts = tuple(len(self.rules.get(c, [])) for c in (out, inn, gw))
        if counts != record.rule_counts:
            return False
        last = self.rules.get(out, [{}])[-1]
        if last.get("comment") != fingerprint_comment(record.fingerprint):
            return False
        if self.maps[OUT_DISPATCH].get(record.mac) != out:
            return False
        if self.maps[GW_DISPATCH].get(record.mac) != gw:
            return False
        have4 = {k for k, v in self.maps[IN_DISPATCH4].items() if v == inn}
        have6 = {k for k, v in self.maps[IN_DISPATCH6].items() if v == inn}
        return have4 == set(record.ipv4) and have6 == set(record.ipv6)

    def installed_guess(self, mac: str) -> Installed:
        """What the kernel holds for ``mac`` (addresses mapped to its in chain)."""
        inn = device_chain(mac, "in")
        return Installed(mac=mac,
                         ipv4=tuple(k for k, v in self.maps[IN_DISPATCH4].items() if v == inn),
                         ipv6=tuple(k for k, v in self.maps[IN_DISPATCH6].items() if v == inn),
                         dns_sets=())

    def unmap_foreign(self, record: Installed, previous: Installed) -> list[NftCommand]:
        """Delete map entries for the device's addresses that point elsewhere or are stale."""
        cmds: list[NftCommand] = []
        inn = device_chain(record.mac, "in")
        for name, wanted, old in ((IN_DISPATCH4, record.ipv4, previous.ipv4),
                                  (IN_DISPATCH6, record.ipv6, previous.ipv6)):
            entries = self.maps[name]
            stale = [a for a in old if a not in wanted]
            foreign = [a for a in wanted if a in entries and entries[a] != inn]
            if stale or foreign:
                cmds.append(map_element("delete", name, sorted(set(stale + foreign)), None))
                for a in stale + foreign:
                    entries.pop(a, None)
        for name, chain in ((OUT_DISPATCH, record.chains[0]), (GW_DISPATCH, record.chains[2])):
            if record.mac in self.maps[name] and self.maps[name][record.mac] != chain:
                cmds.append(map_element("delete", name, [record.mac], None))
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
            for name in (OUT_DISPATCH, GW_DISPATCH, IN_DISPATCH4, IN_DISPATCH6):
                keys = sorted(k for k, v in self.maps[name].items() if v == chain)
                if keys:
                    cmds.append(map_element("delete", name, keys, None))
            body = {"family": "inet", "table": TABLE, "name": chain}
            cmds += [{"flush": {"chain": body}}, {"delete": {"chain": body}}]
        return cmds
