"""The daemon's enforcer for policy as data (``[gateway] ruleset = "data"``).

``DataEnforcer`` keeps the kernel equal to a list of policies; the daemon wants what the
chains ``Enforcer`` offers: decide-and-apply one device against the home's current
devices (peers by manufacturer or model resolve from them, and a device joining
recompiles the devices whose rules name it), the closed LAN first at start-up
(``close_lan``: the fixed ruleset alone passes nothing from the LAN), LAN port isolation
and proxy-ND, the DNS answers granted under an address deleted when the address leaves
its device, and the mark map the watcher names inbound drops with. ``DataSetFiller``
is the DNS guard's filler for this design: an answer becomes the elements of the
asking device's templates (``policy._data.dns_answer_elements``) with the TTL timeout.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mudguard.enforce.bytecode import encode_batch
from mudguard.enforce.data import (
    NFT_MSG_NEWSETELEM,
    DataEnforcer,
    layouts,
    raw_delete_messages,
)
from mudguard.enforce.enforcer import DeviceLike, ReconcileReport, facts_of
from mudguard.enforce.lan import LanIsolation, LanIsolationError
from mudguard.enforce.nft import Nft, NftError
from mudguard.enforce.readback import RawElement, raw_elements
from mudguard.mud import MudFile
from mudguard.policy import (
    TABLE,
    DeviceFacts,
    DevicePolicy,
    HomeContext,
    LifecycleState,
    decide,
    device_id,
)
from mudguard.policy._data import (
    DNS_PHASES,
    DeviceElements,
    data_mark,
    device_elements,
    device_mark,
    dns_answer_elements,
    element_commands,
    set_layouts,
    set_name,
)
from mudguard.policy._decide import HomeDefault
from mudguard.policy._model import Grant, PeerIndex
from mudguard.policy._names import dns_set_name
from mudguard.policy._nft import identity_refs, peer_refs

log = logging.getLogger(__name__)


def dns_answer_sets() -> tuple[str, ...]:
    """The fixed ruleset's DNS-answer sets (``dnsout``/``dnsin``, with timeouts)."""
    return tuple(n for n in set_layouts() if n.startswith(DNS_PHASES))


class DataGatewayEnforcer:
    """The chains ``Enforcer``'s interface over a ``DataEnforcer`` (see the module)."""

    def __init__(self, nft: Nft, context: HomeContext, *, home_default: HomeDefault = "internet",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 lan: LanIsolation | None = None) -> None:
        self._base_context = dataclasses.replace(context, devices=())
        self.data = DataEnforcer(nft, self._base_context)
        self._home_default: HomeDefault = home_default
        self._clock = clock
        self._lan = lan
        self._devices: dict[str, DeviceFacts] = {}
        self._peers = PeerIndex.of(())
        self._referrers: dict[str, frozenset[tuple[str, str]]] = {}  # MAC -> its peer refs
        self._by_address: dict[str, DeviceElements] = {}
        self._marks: dict[int, str] = {}
        self._dns_reset: set[str] = set()  # MACs whose DNS answers an update deleted
        self._closed_empty = False  # close_lan installed the fixed ruleset, nothing since
        self._lock = threading.Lock()  # the indexes other threads read

    # -- state -----------------------------------------------------------------------------

    @property
    def nft(self) -> Nft:
        """The nftables handle."""
        return self.data.nft

    @property
    def context(self) -> HomeContext:
        """The home context with every device currently installed."""
        return dataclasses.replace(self._base_context, devices=tuple(self._devices.values()),
                                   peers=self._peers)

    def installed(self) -> dict[str, DeviceElements]:
        """What is installed, by MAC (a copy): records with ``ipv4``/``ipv6``."""
        return dict(self.data.installed)

    def policy(self, mac: str) -> DevicePolicy | None:
        """The policy installed for ``mac``."""
        return self.data._policies.get(mac.lower())

    def record_of(self, address: str) -> DeviceElements | None:
        """The installed record of the device holding ``address`` (any thread)."""
        try:
            key = str(ipaddress.ip_address(address))
        except ValueError:
            return None
        return self._by_address.get(key)

    def marks(self) -> Mapping[int, str]:
        """Log mark -> device id of every installed device (``watch.nflog.flow_event``)."""
        return self._marks

    def rule_count(self) -> int:
        """Rules installed: the fixed ruleset's and the fallback devices' chains'."""
        fixed = sum(1 for c in _fixed(self._base_context) if "rule" in c.get("add", {}))
        return fixed + sum(1 for r in self.data.installed.values() for c in r.fallback
                           if "rule" in c.get("add", {}))

    def element_count(self) -> int:
        """Elements installed for devices and their profiles (DNS answers not counted)."""
        profiles = {r.profile: r.profile_elements for r in self.data.installed.values()
                    if r.profile}
        return (sum(len(v) for r in self.data.installed.values() for v in r.elements.values())
                + sum(len(v) for p in profiles.values() for v in p.values()))

    def dns_set_count(self) -> int:
        """DNS-answer sets the devices' DNS names fill: the fixed ruleset's (one per
        phase, family and shape a template uses) and the fallback devices' per-name sets."""
        names: set[str] = set()
        for record in self.data.installed.values():
            for template in record.dns:
                row = template.row
                names.add(set_name(row.phase, row.family, row.action, row.shape))
            for name in record.fallback_names:
                names.update(dns_set_name(name, family) for family in (4, 6))
        return len(names)

    # -- whole home ------------------------------------------------------------------------

    def close_lan(self) -> bool:
        """Install the fixed ruleset with no element (nothing forwarded from the LAN)
        unless the kernel holds this one already (a boot-loaded or last run's); True
        if installed. Every device is forgotten then."""
        try:
            intact = any(chain == "forward" and comment == data_mark(self._base_context)
                         for chain, comment in self.nft.read_rules(TABLE))
        except Exception:  # unreadable: install it (closed either way)
            log.exception("could not read the main table back; installing the fixed ruleset")
            intact = False
        if intact:
            return False
        self.data.install_home_records([])
        self._set_devices([])
        self._isolate_lan()
        self._closed_empty = True  # the next reconcile adds every device at once
        return True

    def install_home(self, policies: Iterable[DevicePolicy] = (), *,
                     on_batch: Callable[[list[str]], None] | None = None) -> None:
        """The fixed ruleset, then every device in one transaction (``on_batch`` is told
        every MAC once, after it)."""
        policies = list(policies)
        self._set_devices(policies)
        self.data.context = self.context
        self.data.install_home(policies)
        self._after_home()
        if on_batch is not None:
            on_batch(sorted(self.data.installed))

    def reconcile(self, policies: Iterable[DevicePolicy], *,
                  on_batch: Callable[[list[str]], None] | None = None) -> ReconcileReport:
        """Make the kernel hold exactly ``policies``; repair only what differs, in one
        transaction (``on_batch`` is told every MAC once, after it)."""
        policies = list(policies)
        before = {a for r in self.data.installed.values() for a in r.ipv6}
        self._set_devices(policies)
        self.data.context = self.context
        if self._closed_empty and not self.data.installed:
            # Just closed with no element (``close_lan``): nothing to compare, every
            # device in one transaction (the fixed ruleset checked again first).
            self._closed_empty = False
            self.data.install_home(policies)
            counts = {"missing": 0, "stray": 0, "reinstalled": 0}
        else:
            counts = self.data.reconcile(policies)
        self._after_home(before)
        report = ReconcileReport(reinstalled_table=bool(counts["reinstalled"]))
        if counts["missing"] or counts["stray"]:
            report.repaired = sorted(self.data.installed)
        else:
            report.ok = sorted(self.data.installed)
        if on_batch is not None:
            on_batch(sorted(self.data.installed))
        return report

    def _set_devices(self, policies: Sequence[DevicePolicy]) -> None:
        self._devices = {p.device.mac.lower(): p.device for p in policies}
        self._peers = PeerIndex.of(self._devices.values())
        self._referrers = {p.device.mac.lower(): refs for p in policies
                           if (refs := peer_refs(p))}

    def _after_home(self, proxies_before: Collection[str] = ()) -> None:
        self._isolate_lan()
        self._reindex()
        after = {a for r in self.data.installed.values() for a in r.ipv6}
        self._sync_proxies(after - set(proxies_before), set(proxies_before) - after)

    # -- one device ------------------------------------------------------------------------

    def apply_device(self, device: DeviceLike | DeviceFacts, mud: MudFile | None,
                     grants: Sequence[Grant] = ()) -> DevicePolicy:
        """Decide and install one device's policy; return it."""
        facts = facts_of(device)
        context = self._context_replacing(facts)
        policy = decide(facts, mud, grants, context, home_default=self._home_default,
                        now=self._clock())
        self.apply_policy(policy, mud=mud, grants=grants)
        return policy

    def apply_policy(self, policy: DevicePolicy, *, mud: MudFile | None = None,
                     grants: Sequence[Grant] = ()) -> None:
        """Install or replace one device's policy; the DNS answers granted under an
        address it gives up or takes from another device are deleted first; the
        devices whose rules name it are recompiled after."""
        del mud, grants
        mac = policy.device.mac.lower()
        old = self.data.installed.get(mac)
        mine = {str(ipaddress.ip_address(a)) for a in (*policy.device.ipv4, *policy.device.ipv6)}
        owners = {a: self.data._owner.get(a, mac) for a in mine}
        taken = {a for a, owner in owners.items() if owner != mac}
        given_up = set((*old.ipv4, *old.ipv6)) - mine if old is not None else set()
        forget = taken | given_up
        previous = self._devices.get(mac)
        changed_identity = previous is None or _identity(previous) != _identity(policy.device)
        self._devices[mac] = policy.device
        if changed_identity:
            self._peers = self._peers.with_device(mac, previous, policy.device)
        refs = peer_refs(policy)
        if refs:
            self._referrers[mac] = refs
        else:
            self._referrers.pop(mac, None)
        self.data.context = self.context
        fresh = device_elements(policy, self.data.context)
        if old is not None and (old.dns or old.fallback_names) \
                and _dns_rules(old) != _dns_rules(fresh):
            # Its DNS answers carry the old rules' protocols and ports (and names it may
            # no longer resolve): deleted before the new rules; the DNS guard adds the
            # grants it still may have back under them (``take_dns_reset``).
            forget |= set((*old.ipv4, *old.ipv6))
            self._dns_reset.add(mac)
        self.forget_dns_answers(forget)
        self.data.apply_policy(policy)
        if changed_identity:
            self._recompile_dependents(policy.device)
        self._reindex({mac, *(owners[a] for a in taken)}, old)
        v6 = {a for a in mine if ":" in a}
        old6 = set(old.ipv6) if old is not None else set()
        self._sync_proxies(v6 - old6, old6 - v6)

    def take_dns_reset(self, mac: str) -> bool:
        """Whether ``mac``'s DNS answers were deleted by its last update (once)."""
        if mac.lower() in self._dns_reset:
            self._dns_reset.discard(mac.lower())
            return True
        return False

    def remove_device(self, mac: str) -> None:
        """Take a device out (idempotent); its DNS answers go too."""
        mac = mac.lower()
        record = self.data.installed.get(mac)
        if record is None:
            return
        self.data.remove_device(mac)
        self.forget_dns_answers({*record.ipv4, *record.ipv6})
        gone = self._devices.pop(mac, None)
        self._referrers.pop(mac, None)
        if gone is not None:
            self._peers = self._peers.with_device(mac, gone, None)
        self.data.context = self.context
        if gone is not None:
            self._recompile_dependents(gone)
        self._reindex({mac}, record)
        self._sync_proxies(set(), set(record.ipv6))

    def isolate_lan_ports(self) -> list[str]:
        """Isolate the LAN bridge's ports again; the ports (nothing without isolation)."""
        if self._lan is None:
            return []
        try:
            return self._lan.isolate_ports()
        except LanIsolationError as exc:
            log.error("LAN port isolation failed; lateral traffic may bypass the rules: %s",
                      exc)
            return []

    def replace_dns_answers(self, commands: Sequence[Any]) -> tuple[int, int]:
        """Make the kernel's DNS answers exactly those of ``commands`` (the DNS guard's
        grants a start restored, ``DnsGuard.restore_grants``), under the devices' current
        rules: every other DNS-answer element (a previous run's, perhaps under rules
        since changed, or a device since quarantined) is deleted, in the same
        transaction as the adds. Returns (added, deleted) element counts.

        Raises:
            NftError: the kernel refused (nothing changed) or could not be read.
        """
        adds = answer_commands(self.record_of, commands)
        names = set(dns_answer_sets())
        for record in self.data.installed.values():
            for name in record.fallback_names:
                names.update(dns_set_name(name, family) for family in (4, 6))
        add_messages = encode_batch(adds, self.data._layouts) if adds else []
        expected: dict[str, set[RawElement]] = {}
        for message in add_messages:
            if message.kind == NFT_MSG_NEWSETELEM:
                name, elements = raw_elements(message.body)
                expected.setdefault(name, set()).update(elements)
        for _attempt in range(3):  # an element may time out between read and delete
            found = self.nft.read_elements(TABLE, sorted(names))
            stale = {name: sorted(elements - expected.get(name, set()))
                     for name, elements in found.items()
                     if elements - expected.get(name, set())}
            messages = raw_delete_messages(stale) + add_messages
            if not messages:
                return 0, 0
            try:
                self.nft.send_messages(messages)
            except NftError as exc:
                log.info("replacing the DNS answers: %s (read again)", exc)
                continue
            added = sum(len(v) for v in expected.values())
            deleted = sum(len(v) for v in stale.values())
            log.info("DNS answers restored: %d elements added, %d stale deleted",
                     added, deleted)
            return added, deleted
        raise NftError(-1, "the DNS answers could not be replaced", [])

    def forget_dns_answers(self, addresses: Collection[str]) -> int:
        """Delete every DNS-answer element granted under one of ``addresses`` (read back
        from the kernel: a restarted daemon's grants too); how many went."""
        if not addresses:
            return 0
        prefixes = {ipaddress.ip_address(a).packed for a in addresses}
        names = set(dns_answer_sets())
        for record in self.data.installed.values():
            for name in record.fallback_names:
                names.update(dns_set_name(name, family) for family in (4, 6))
        for _attempt in range(3):  # an element may time out between read and delete
            try:
                found = self.nft.read_elements(TABLE, sorted(names))
            except Exception:
                log.exception("could not read the DNS answers back")
                return 0
            stale: dict[str, list[RawElement]] = {}
            for name, elements in found.items():
                hits = [e for e in elements if any(e[0].startswith(p) for p in prefixes)]
                if hits:
                    stale[name] = sorted(hits)
            if not stale:
                return 0
            try:
                self.nft.send_messages(raw_delete_messages(stale))
            except Exception as exc:
                log.info("deleting stale DNS answers: %s (read again)", exc)
                continue
            count = sum(len(v) for v in stale.values())
            log.info("deleted %d DNS-answer elements under %s", count, sorted(addresses))
            return count
        log.warning("stale DNS answers under %s not deleted", sorted(addresses))
        return 0

    # -- helpers ---------------------------------------------------------------------------

    def _context_replacing(self, facts: DeviceFacts) -> HomeContext:
        mac = facts.mac.lower()
        devices = dict(self._devices)
        devices[mac] = facts
        return dataclasses.replace(
            self._base_context, devices=tuple(devices.values()),
            peers=self._peers.with_device(mac, self._devices.get(mac), facts))

    def _recompile_dependents(self, changed: DeviceFacts) -> None:
        """Recompile the devices whose rules name ``changed`` (same maker or model)."""
        keys = identity_refs(changed)
        if not keys:
            return
        for mac, refs in list(self._referrers.items()):
            policy = self.data._policies.get(mac)
            if mac != changed.mac.lower() and refs & keys and policy is not None:
                self.data.apply_policy(policy)
                self._reindex({mac}, None)

    def _reindex(self, macs: Collection[str] | None = None,
                 old: DeviceElements | None = None) -> None:
        """Keep the address and mark indexes (read by other threads) in step: all of
        them, or only ``macs`` (``old``: the previous record of one of them)."""
        if macs is None:
            records = list(self.data.installed.values())
            by_address = {a: r for r in records for a in (*r.ipv4, *r.ipv6)}
            marks = {device_mark(r.mac): device_id(r.mac) for r in records}
            with self._lock:
                self._by_address = by_address
                self._marks = marks
            return
        with self._lock:
            if old is not None:
                for address in (*old.ipv4, *old.ipv6):
                    if self._by_address.get(address) is not None \
                            and self._by_address[address].mac == old.mac:
                        del self._by_address[address]
            for mac in macs:
                record = self.data.installed.get(mac)
                if record is None:
                    self._marks.pop(device_mark(mac), None)
                    continue
                for address in (*record.ipv4, *record.ipv6):
                    self._by_address[address] = record
                self._marks[device_mark(mac)] = device_id(mac)

    def _isolate_lan(self) -> None:
        """Isolate the LAN bridge's ports (proxy ARP, no redirects): with the base."""
        if self._lan is not None:
            self._lan.setup_or_log()

    def _sync_proxies(self, added: set[str], removed: set[str]) -> None:
        """Keep the LAN's proxy-ND entries equal to the installed IPv6 addresses."""
        if self._lan is not None:
            self._lan.sync_proxies(added, removed)


def _dns_rules(record: DeviceElements) -> tuple[Any, ...]:
    """What a device's DNS-answer elements are made from (its templates, or its fallback
    chains' names)."""
    return (record.dns, record.fallback_names, bool(record.fallback))


def _identity(device: DeviceFacts) -> tuple[Any, ...]:
    """What other devices' rules depend on (as the chains ``Enforcer`` has it)."""
    return (device.ipv4, device.ipv6, device.mud_url, device.manufacturer,
            device.state is LifecycleState.FORGOTTEN)


_FIXED: dict[str, list[Any]] = {}


def _fixed(context: HomeContext) -> list[Any]:
    from mudguard.policy._data import compile_fixed_ruleset

    key = data_mark(context)
    if key not in _FIXED:
        _FIXED.clear()
        _FIXED[key] = compile_fixed_ruleset(context)
    return _FIXED[key]


class DataSetFiller:
    """The DNS guard's ``SetFiller`` under policy as data: each granted (device address,
    answer) pair becomes the elements of that device's templates for the name, added
    with the answer's timeout in one transaction over its own nftables handle."""

    def __init__(self, records: Callable[[str], DeviceElements | None],
                 nft: Nft | None = None) -> None:
        self._records = records
        self._nft = nft or Nft()
        self._layouts = layouts()

    def fill(self, commands: Sequence[Any]) -> None:
        """Add the elements of every ``AddSetElements`` in ``commands`` (one transaction)."""
        batch = answer_commands(self._records, commands)
        if batch:
            self._nft.apply(batch, set_types=self._layouts)


def answer_commands(records: Callable[[str], DeviceElements | None],
                    commands: Sequence[Any]) -> list[Any]:
    """The ``add element`` commands of the DNS guard's ``AddSetElements`` ``commands``:
    each (device address, answer) pair becomes the elements of the templates of the
    device holding that address now (``records``) for the granted name, with the
    command's timeout; an address no device holds adds nothing."""
    # one command per set and timeout; each element once (keyed by its text)
    by_timeout: dict[int, dict[str, dict[str, Any]]] = {}
    for cmd in commands:
        by_target = by_timeout.setdefault(cmd.timeout_s, {})
        for device_address, answer in cmd.elements:
            record = records(device_address)
            if record is None:
                continue
            name = cmd.dns_name or ""
            for target, elements in dns_answer_elements(record, name, device_address,
                                                          answer).items():
                bucket = by_target.setdefault(target, {})
                for element in elements:
                    bucket.setdefault(repr(element), element)
    batch: list[Any] = []
    for timeout, by_target in by_timeout.items():
        batch += element_commands("add", {t: list(b.values()) for t, b in by_target.items()},
                                  timeout=timeout)
    return batch

