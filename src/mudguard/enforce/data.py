"""The enforcer of policy as data (``policy._data``): a fixed ruleset, devices as elements.

Theory of operation. ``install_home`` loads the fixed ruleset in one small
transaction (with no element it forwards nothing from the LAN: fail closed), then
every device's elements in ONE transaction: a device becomes known (``known_macs``)
in the same transaction that gives it its rules, so no managed device's traffic is
ever accepted without its policy, and a refused transaction leaves the home closed.
``apply_policy`` sends the difference between a device's installed and new elements
(one transaction, no rule commit, so the kernel re-validates nothing and the cost
does not grow with the home); ``remove_device`` deletes its elements; ``reconcile``
reads every element set back once and repairs only what differs. Elements are
encoded to netlink by ``enforce/bytecode.py`` with the sets' layouts
(``policy._data.set_layouts``).

Like the chains ``Enforcer``: an address taken from another device goes in the same
transaction, and tracked connections of a changed (not trusted) or removed device are
forgotten behind the update (``Nft.forget_connections``). Not yet here: proxy-ND, the
DNS guard's fills (``dns_answer_elements``) and their removal when an address moves.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from mudguard.enforce.bytecode import SetLayout, encode_batch
from mudguard.enforce.nft import Nft
from mudguard.enforce.readback import RawElement, raw_elements
from mudguard.policy import TABLE, DevicePolicy, HomeContext, LifecycleState
from mudguard.policy._data import (
    DeviceElements,
    ProfileCollision,
    compile_fixed_ruleset,
    data_mark,
    device_elements,
    device_mark,
    device_sets,
    element_commands,
    home_element_commands,
    profile_collision,
    remove_commands,
    set_layouts,
    update_commands,
    without_collisions,
)

NFT_MSG_NEWSETELEM = 12

log = logging.getLogger(__name__)


def _canon(address: str) -> str:
    return str(ipaddress.ip_address(address))

MAX_IDLE_PROFILES = 64
"""Profiles no device uses that stay installed (a device switching back costs nothing)."""


def layouts() -> dict[str, SetLayout]:
    """The fixed ruleset's set layouts, as the netlink encoder takes them."""
    return {name: SetLayout(types, interval, data)
            for name, (types, interval, data) in set_layouts().items()}


class DataEnforcer:
    """Keeps the kernel equal to the home's policies, as elements of one fixed ruleset."""

    def __init__(self, nft: Nft, context: HomeContext) -> None:
        self.nft = nft
        self.context = context
        self.installed: dict[str, DeviceElements] = {}
        self._layouts = layouts()
        self._users: dict[int, int] = {}  # profile id -> devices using it
        self._idle: OrderedDict[int, None] = OrderedDict()  # installed, unused, oldest first
        self._profiles: dict[int, DeviceElements] = {}  # a record carrying each profile
        self._policies: dict[str, DevicePolicy] = {}  # MAC -> its installed policy
        self._owner: dict[str, str] = {}  # address -> MAC of the device holding it
        self._marks: dict[int, str] = {}  # log mark -> MAC of the (non-fallback) device

    def _set_installed(self, records: Iterable[DeviceElements],
                       policies: Iterable[DevicePolicy] = ()) -> None:
        self.installed = {r.mac: r for r in records}
        self._policies = {p.device.mac.lower(): p for p in policies}
        self._owner = {a: r.mac for r in self.installed.values() for a in (*r.ipv4, *r.ipv6)}
        self._marks = {device_mark(r.mac): r.mac for r in self.installed.values()
                       if not r.fallback}
        self._users = {}
        self._idle = OrderedDict()
        self._profiles = {}
        for record in self.installed.values():
            if record.profile:
                self._users[record.profile] = self._users.get(record.profile, 0) + 1
                self._profiles.setdefault(record.profile, record)

    def _apply(self, commands: list[dict[str, Any]]) -> None:
        self.nft.apply(commands, set_types=self._layouts)

    def install_home(self, policies: Iterable[DevicePolicy]) -> None:
        """The fixed ruleset, then every device in one transaction (see the module)."""
        policies = list(policies)
        self.install_home_records([device_elements(p, self.context) for p in policies],
                                  policies)

    @staticmethod
    def _home_commands(records: Iterable[DeviceElements]) -> list[dict[str, Any]]:
        return home_element_commands(records)

    def _take(self, record: DeviceElements) -> bool:
        """Count a device on its profile; True if the profile's elements are in already."""
        if not record.profile:
            return True
        present = record.profile in self._users or record.profile in self._idle
        self._idle.pop(record.profile, None)
        self._users[record.profile] = self._users.get(record.profile, 0) + 1
        self._profiles.setdefault(record.profile, record)
        return present

    def _release(self, record: DeviceElements | None) -> list[dict[str, Any]]:
        """Uncount a device; a profile no device uses stays installed (idle: a device
        going back to it costs no interval-set commit) until ``MAX_IDLE_PROFILES`` are
        idle, then the oldest goes (the commands that delete it)."""
        if record is None or not record.profile:
            return []
        left = self._users[record.profile] - 1
        if left:
            self._users[record.profile] = left
            return []
        del self._users[record.profile]
        self._idle[record.profile] = None
        commands: list[dict[str, Any]] = []
        while len(self._idle) > MAX_IDLE_PROFILES:
            oldest, _ = self._idle.popitem(last=False)
            commands += element_commands("delete", self._profiles.pop(oldest).profile_elements)
        return commands

    def apply_policy(self, policy: DevicePolicy) -> DeviceElements:
        """Install or update one device: its element changes in one transaction. An
        address it takes from another device is taken from that device in the same
        transaction (its elements recompiled without it: its source binding then
        refuses the address)."""
        record = device_elements(policy, self.context)
        previous = self.installed.get(record.mac)
        if previous is not None and previous.fingerprint == record.fingerprint:
            self._policies[record.mac] = policy
            return record
        why = profile_collision(record, self._profiles, self._marks)
        if why is not None:
            raise ProfileCollision(why)
        state = (dict(self._users), OrderedDict(self._idle), dict(self._profiles))
        commands: list[dict[str, Any]] = []
        losers: list[tuple[DevicePolicy, DeviceElements]] = []
        try:
            for other_policy in self._losers(record):
                mine = set(record.ipv4) | set(record.ipv6)
                facts = other_policy.device
                narrowed = replace(other_policy, device=replace(
                    facts, ipv4=tuple(a for a in facts.ipv4 if _canon(a) not in mine),
                    ipv6=tuple(a for a in facts.ipv6 if _canon(a) not in mine)))
                theirs = device_elements(narrowed, self.context)
                before = self.installed[theirs.mac]
                present = self._take(theirs)
                commands += update_commands(before, theirs, profile_installed=present)
                commands += self._release(before)
                losers.append((narrowed, theirs))
            present = self._take(record)
            evicted = self._release(previous)
            commands += update_commands(previous, record, profile_installed=present)
            self._apply(commands + evicted)
        except BaseException:
            self._users, self._idle, self._profiles = state
            raise
        if previous is not None and policy.state is not LifecycleState.TRUSTED:
            # Established connections are accepted first: the old policy's would
            # outlive the new one (as the chains Enforcer does, behind the update).
            self.nft.forget_connections(previous.ipv4 + previous.ipv6)
        lost = sorted({a for _narrowed, theirs in losers
                       for a in (*self.installed[theirs.mac].ipv4,
                                 *self.installed[theirs.mac].ipv6)}
                      - {*(a for _n, t in losers for a in (*t.ipv4, *t.ipv6))})
        if lost:
            self.nft.forget_connections(lost)
        for narrowed, theirs in losers:
            self._record(theirs, narrowed)
        self._record(record, policy)
        return record

    def _record(self, record: DeviceElements, policy: DevicePolicy | None) -> None:
        """Keep ``installed``, the policies and the address index in step."""
        before = self.installed.get(record.mac)
        if before is not None:
            for address in (*before.ipv4, *before.ipv6):
                if self._owner.get(address) == record.mac:
                    del self._owner[address]
        self.installed[record.mac] = record
        for address in (*record.ipv4, *record.ipv6):
            self._owner[address] = record.mac
        if before is not None and not before.fallback:
            self._marks.pop(device_mark(before.mac), None)
        if not record.fallback:
            self._marks[device_mark(record.mac)] = record.mac
        if policy is not None:
            self._policies[record.mac] = policy

    def _losers(self, record: DeviceElements) -> list[DevicePolicy]:
        """The policies of other devices that hold one of ``record``'s addresses."""
        wanted = set(record.ipv4) | set(record.ipv6)
        out: list[DevicePolicy] = []
        for address in sorted(wanted):
            mac = self._owner.get(address)
            if mac is not None and mac != record.mac and mac in self._policies:
                policy = self._policies[mac]
                if policy not in out:
                    out.append(policy)
        return out

    def remove_device(self, mac: str) -> None:
        """Take a device out: its elements (and fallback chains) in one transaction."""
        previous = self.installed.get(mac.lower())
        if previous is None:
            return
        state = (dict(self._users), OrderedDict(self._idle), dict(self._profiles))
        try:
            evicted = self._release(previous)
            self._apply(remove_commands(previous, drop_profile=False) + evicted)
        except BaseException:
            self._users, self._idle, self._profiles = state
            raise
        del self.installed[mac.lower()]
        if self._marks.get(device_mark(previous.mac)) == previous.mac:
            del self._marks[device_mark(previous.mac)]
        self.nft.forget_connections(previous.ipv4 + previous.ipv6)
        self._policies.pop(mac.lower(), None)
        for address in (*previous.ipv4, *previous.ipv6):
            if self._owner.get(address) == previous.mac:
                del self._owner[address]

    def reconcile(self, policies: Iterable[DevicePolicy]) -> dict[str, int]:
        """Make the kernel hold exactly ``policies``: reinstall if the fixed ruleset is not
        this one, else read every element set back once and repair what differs.
        Returns counts: ``missing`` and ``stray`` elements, ``reinstalled`` (0/1)."""
        records, policies = self._collision_free(
            [device_elements(p, self.context) for p in policies], list(policies))
        if not self._ruleset_intact():
            self.install_home_records(records, policies)
            return {"missing": 0, "stray": 0, "reinstalled": 1}
        actual = self.nft.read_elements(TABLE, device_sets())
        expected = self._raw_commands(home_element_commands(records))
        missing = sum(len(elements - actual.get(name, set()))
                      for name, elements in expected.items())
        stray = 0
        repair: set[str] = set()
        if missing:  # whose elements are missing (the slow path: per device)
            seen: set[int] = set()
            for record in records:
                fresh = bool(record.profile) and record.profile not in seen
                seen.add(record.profile)
                for name, elements in self._raw(record, with_profile=fresh).items():
                    if elements - actual.get(name, set()):
                        repair.add(record.mac)
        deletes: dict[str, list[RawElement]] = {}
        for name, found in actual.items():
            extra = found - expected.get(name, set())
            if extra:
                deletes[name] = sorted(extra)
                stray += len(extra)
        commands: list[dict[str, Any]] = []
        for record in records:
            if record.mac in repair:
                commands += list(record.fallback) + element_commands(
                    "add", {**record.profile_elements, **record.elements})
        messages = raw_delete_messages(deletes)
        if commands:
            messages += encode_batch(commands, self._layouts)
        if messages:
            self.nft.send_messages(messages)
        self._set_installed(records, policies)
        return {"missing": missing, "stray": stray, "reinstalled": 0}

    @staticmethod
    def _collision_free(records: list[DeviceElements], policies: list[DevicePolicy]
                        ) -> tuple[list[DeviceElements], list[DevicePolicy]]:
        """``records`` (and their ``policies``) without those whose profile id or log mark
        an earlier one took: those devices stay out (closed), each logged as an error."""
        kept, errors = without_collisions(records)
        for why in errors:
            log.error("%s", why)
        if not errors:
            return records, policies
        macs = {r.mac for r in kept}
        return kept, [p for p in policies if p.device.mac.lower() in macs]

    def install_home_records(self, records: list[DeviceElements],
                             policies: Iterable[DevicePolicy] = ()) -> None:
        """``install_home`` for records compiled already (a device whose profile id or log
        mark collides with an earlier one's is left out, closed: ``without_collisions``)."""
        records, policies = self._collision_free(records, list(policies))
        self.nft.apply(compile_fixed_ruleset(self.context))
        self._set_installed([])
        self._apply(self._home_commands(records))
        self._set_installed(records, policies)

    def _ruleset_intact(self) -> bool:
        mark = data_mark(self.context)
        try:
            items = self.nft.read_rules(TABLE)
        except Exception:
            return False
        return any(chain == "forward" and comment == mark for chain, comment in items)

    def _raw(self, record: DeviceElements, *, with_profile: bool
             ) -> dict[str, set[RawElement]]:
        wanted = {**record.elements, **(record.profile_elements if with_profile else {})}
        return self._raw_commands(element_commands("add", wanted))

    def _raw_commands(self, commands: list[dict[str, Any]]) -> dict[str, set[RawElement]]:
        out: dict[str, set[RawElement]] = {}
        for message in encode_batch(commands, self._layouts):
            if message.kind == NFT_MSG_NEWSETELEM:
                name, elements = raw_elements(message.body)
                out.setdefault(name, set()).update(elements)
        return out


def raw_delete_messages(deletes: dict[str, list[RawElement]]) -> list[Any]:
    """Messages deleting elements known only by their raw key (stray elements)."""
    from mudguard.enforce.bytecode import (
        NFT_MSG_DELSETELEM,
        NFTA_LIST_ELEM,
        NFTA_SET_ELEM_KEY,
        NFTA_SET_ELEM_KEY_END,
        NFTA_SET_ELEM_LIST_ELEMENTS,
        NFTA_SET_ELEM_LIST_SET,
        NFTA_SET_ELEM_LIST_TABLE,
        _data,
    )
    from mudguard.enforce.nfnetlink import Message, attr_str, nested

    out: list[Any] = []
    for name, elements in deletes.items():
        for start in range(0, len(elements), 256):
            items = []
            for key, end, _data_value in elements[start:start + 256]:
                attrs = [nested(NFTA_SET_ELEM_KEY, _data(key))]
                if end:
                    attrs.append(nested(NFTA_SET_ELEM_KEY_END, _data(end)))
                items.append(nested(NFTA_LIST_ELEM, *attrs))
            out.append(Message(NFT_MSG_DELSETELEM, 0, b"".join([
                attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE), attr_str(NFTA_SET_ELEM_LIST_SET, name),
                nested(NFTA_SET_ELEM_LIST_ELEMENTS, *items)])))
    return out
