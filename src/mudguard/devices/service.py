"""Device services: the use cases the CLI, the portal and the daemon share.

Theory of operation: a ``DeviceService`` holds the store and the adapters it was
given (MUD fetcher, signature verifier, enforcer, key revoker, secondary
repositories, clock). Each method loads the device, asks ``lifecycle`` for the
outcome (pure), applies the resulting policy to the kernel through the enforcer,
and only then writes the outcome and its events to the store in one transaction
(firewalld's ordering: the database never claims rules the kernel refused). If the
enforcer refuses, nothing is stored and the error propagates (fail closed: the
previous, stricter rules stay).

The services never widen access on their own: a new MUD URL on a known device is
held until ``approve_url``; grants come only from ``grant`` (an owner action) and
each one is an event.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, NoReturn, ParamSpec, Protocol, TypeVar

from mudguard.devices import learning, lifecycle
from mudguard.devices._model import (
    CachedMud,
    Device,
    EventKind,
    GrantRecord,
    Learning,
    MudSource,
    SignatureStatus,
    device_mac,
    normalise_mac,
)
from mudguard.devices.reasons import Reason
from mudguard.devices.repository import Repository, RepositoryMatch, lookup_all
from mudguard.errors import MudguardError, RemoteInputError
from mudguard.identify.record import IdentityRecord
from mudguard.mud import MudFile, parse_mud
from mudguard.policy import DailyWindow, Grant, GrantKind, LifecycleState
from mudguard.store.sqlite import Store

log = logging.getLogger(__name__)
NO_MUD_URL = Reason("no_mud_url", "the device announced no MUD URL and no repository knows it")
"""The reason a device with no MUD URL that no repository knows is given (the portal
translates it, ``portal._reasons``)."""


def _learned_by_other_reason(url: str) -> Reason:
    return Reason("learned_by_other", f"{url} names another device's learned profile", url=url)


class DeviceNotFound(MudguardError):
    """No device with that MAC is known."""

    key = "device_not_found"


class ApprovalError(MudguardError):
    """A new MUD URL could not be approved (its file failed); nothing changed."""

    key = "url_not_approved"


class ProfileError(RemoteInputError):
    """A proposed (learned) profile the owner asked to apply was refused; nothing changed."""

    key = "bad_profile"


class QuarantineExceptionError(RemoteInputError):
    """An owner quarantine exception that names no ACE of the device's MUD file."""

    key = "bad_quarantine_exception"


class GrantError(RemoteInputError):
    """An owner grant that is malformed or not allowed in the device's state."""

    key = "bad_grant"


class Enforcer(Protocol):
    """The kernel side: installs or removes one device's rules (the enforce adapter)."""

    def apply_device(self, device: Device, mud: MudFile | None,
                     grants: Sequence[Grant]) -> None:
        """Install the rules for ``device`` in its state, atomically; raise on refusal."""
        ...

    def remove_device(self, mac: str) -> None:
        """Remove every rule of the device (idempotent)."""
        ...


class KeyRevoker(Protocol):
    """The WiFi key side: revokes a device's own key (the keys adapter)."""

    def revoke(self, mac: str) -> bool:
        """Revoke the device's key; True if it had one."""
        ...


PARSED_MUD_CACHE = 256
"""Distinct parsed MUD files ``cached_mud`` keeps (a home has a few dozen models)."""

EVENT_RETENTION = timedelta(days=180)
ACTIVITY_RETENTION = timedelta(days=8)  # hourly counts: the chart looks a week back at most
"""How long events (which name devices and addresses) are kept."""

Fetch = Callable[[str], bytes]
"""Fetch a MUD file or its signature by https URL (the MUD fetcher)."""

Verify = Callable[[bytes, bytes, datetime], str]
"""Check a detached CMS signature over a MUD file at a time; return the signer or raise."""


P = ParamSpec("P")
R = TypeVar("R")


def _serialised(method: Callable[Concatenate[DeviceService, P], R]
                ) -> Callable[Concatenate[DeviceService, P], R]:
    """Run a service operation under the service's lock: the daemon's workers and the
    portal's threads never interleave two read-decide-write sequences on one device."""
    @functools.wraps(method)
    def locked(self: DeviceService, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


@dataclass(frozen=True, slots=True)
class Maintenance:
    """What one ``maintain()`` pass did."""

    expired_grants: int
    out_of_support: list[Device]
    refreshed: list[Device]
    pruned_events: int = 0
    learning_ended: tuple[Device, ...] = ()


@dataclass(frozen=True, slots=True)
class ResetInstructions:
    """What the owner is told after forgetting or transferring a device."""

    mac: str
    key_revoked: bool | None  # None: no key service was available (revocation recorded)
    steps: tuple[str, ...]
    documentation: str | None = None


@dataclass(slots=True)
class DeviceService:
    """The device use cases. ``clock`` returns the current UTC time."""

    store: Store
    fetch: Fetch | None = None
    verify: Verify | None = None
    enforcer: Enforcer | None = None
    keys: KeyRevoker | None = None
    repositories: Sequence[Repository] = ()
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Learn, then lock: only where something records the flows (the daemon's conntrack
    # watcher); elsewhere a device without a MUD file gets the home default at once.
    learns: bool = False
    lan_prefixes: tuple[str, ...] = ()  # the home's LAN, for the learner
    gateway_ips: tuple[str, ...] = ()  # the gateway's addresses (my-controller)
    identify: Callable[[Device, Sequence[str]], tuple[str | None, str | None]] | None = None
    """(maker, kind) of a device from what it told DHCP and the names it resolved while
    learned (``identify.live``); at the end of learning they fill what is still unknown,
    before the proposal is written (its ``mfg-name`` then says whose cloud it talks to)."""
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _schedule_seen: dict[int, bool] = field(default_factory=dict, repr=False, compare=False)
    """Whether each scheduled grant was in its window at the last ``apply_schedules``."""
    _parsed: dict[tuple[str, str], MudFile | None] = field(default_factory=dict, repr=False,
                                                          compare=False)
    """Parsed cached MUD files by (URL, SHA-256 of the bytes): ``cached_mud`` parses each
    distinct file once, not once per device and per call (start-up, maintenance)."""
    _parsed_lock: threading.Lock = field(default_factory=threading.Lock, repr=False,
                                         compare=False)

    # -- reading -----------------------------------------------------------------------

    def device(self, mac: str) -> Device:
        """The device, or ``DeviceNotFound``."""
        device = self.store.get_device(mac)
        if device is None:
            raise DeviceNotFound(f"no device {normalise_mac(mac)}")
        return device

    def active_grants(self, mac: str) -> list[GrantRecord]:
        """The device's grants that have not expired (a scheduled one also outside its
        window: it is the owner's standing decision)."""
        now = self.clock()
        return [g for g in self.store.list_grants(mac) if not g.grant.expired(now)]

    def active_grants_by_mac(self) -> dict[str, list[GrantRecord]]:
        """``active_grants`` of every device, by MAC (one store query, not one per
        device: start-up restores thousands)."""
        now = self.clock()
        out: dict[str, list[GrantRecord]] = {}
        for record in self.store.list_grants():
            if not record.grant.expired(now):
                out.setdefault(record.mac, []).append(record)
        return out

    def cached_muds(self, devices: Iterable[Device]) -> dict[str, MudFile | None]:
        """``cached_mud`` of each device, by MAC: each distinct MUD URL read from the store
        and hashed once, not once per device."""
        stored: dict[str, tuple[bytes, str] | None] = {}
        out: dict[str, MudFile | None] = {}
        for device in devices:
            url, wanted = device.mud_url, device.profile_hash
            out[device.mac] = None
            if url is None or wanted is None:
                continue
            if url not in stored:
                cached = self.store.get_mud(url)
                stored[url] = None if cached is None \
                    else (cached.data, hashlib.sha256(cached.data).hexdigest())
            found = stored[url]
            if found is not None and found[1] == wanted:
                out[device.mac] = self._parsed_file(url, wanted, found[0])
        return out

    def cached_mud(self, device: Device) -> MudFile | None:
        """The parsed MUD file the device's profile was built from, if cached."""
        if device.mud_url is None or device.profile_hash is None:
            return None
        cached = self.store.get_mud(device.mud_url)
        if cached is None or hashlib.sha256(cached.data).hexdigest() != device.profile_hash:
            return None
        return self._parsed_file(device.mud_url, device.profile_hash, cached.data)

    def _parsed_file(self, url: str, digest: str, data: bytes) -> MudFile | None:
        """``data`` (whose SHA-256 is ``digest``) parsed, once per (URL, digest)."""
        key = (url, digest)  # the URL and the very bytes
        with self._parsed_lock:
            if key in self._parsed:
                return self._parsed[key]  # a MudFile is immutable: shared safely
        mud = parse_mud(data, expected_url=url).mud
        with self._parsed_lock:
            while len(self._parsed) >= PARSED_MUD_CACHE:
                del self._parsed[next(iter(self._parsed))]  # the oldest first
            self._parsed[key] = mud
        return mud

    # -- persistence with kernel first -------------------------------------------------

    def _commit(self, outcome: lifecycle.Outcome, mud: MudFile | None = None, *,
                enforce: bool = True, cache: CachedMud | None = None,
                released: Sequence[Device] = ()) -> Device:
        """Enforce ``outcome`` (unless told not to), then store it, its events and the
        devices it ``released`` addresses from, in one transaction. The enforcer takes
        addresses from their previous holders in the device's own batch."""
        device = outcome.device
        if enforce and self.enforcer is not None:
            if mud is None and cache is None:
                mud = self.cached_mud(device)
            grants = [g.grant for g in self.active_grants(device.mac)] \
                if self.store.get_device(device.mac) else []
            self.enforcer.apply_device(device, mud, grants)
        now = self.clock()
        with self.store.transaction():
            if cache is not None:  # only a profile that is now enforced replaces the cache
                self.store.put_mud(cache)
            for other in released:
                self.store.save_device(other)
            self.store.save_device(device)
            for notice in outcome.notices:
                self.store.add_event(notice.kind, now, device.mac, notice.details)
        return device

    # -- discovery ---------------------------------------------------------------------

    @_serialised
    def observe(self, *, mac: str, ip: str | None = None, hostname: str | None = None,
                mud_url: str | None = None, source: MudSource | None = None,
                manufacturer: str | None = None, model: str | None = None,
                kind: str | None = None) -> Device:
        """A sighting: record the device and, if it is new or its first MUD URL just
        arrived, decide its access (profile, repository, or the home default).

        ``manufacturer``, ``model`` and ``kind`` (what ``mudguard.identify`` inferred)
        fill only what the device's record does not know yet.

        Raises ``MudUrlError`` for a MUD URL RFC 8520 forbids (nothing changes, but
        the rejection is recorded as an event); ``MacError`` for a MAC that cannot name
        a device (malformed, all-zero, broadcast, multicast), before anything is read.
        """
        key = device_mac(mac)
        before = self.store.get_device(key)
        now = self.clock()
        try:
            outcome = lifecycle.on_seen(before, mac=key, now=now, ip=ip, hostname=hostname,
                                        mud_url=mud_url, source=source)
        except lifecycle.MudUrlError as exc:
            if before is not None:
                self.store.add_event(EventKind.URL_REJECTED, now, key,
                                     {"reason": exc.reason, "source": source and source.value})
            raise
        device = outcome.device
        if manufacturer and not device.manufacturer:
            device = replace(device, manufacturer=manufacturer)
        if model and not device.model:
            device = replace(device, model=model)
        if kind and not device.kind:
            device = replace(device, kind=kind)
        outcome = lifecycle.Outcome(device, outcome.notices)
        released = lifecycle.addresses_moving(device, self._holders(device))
        needs_decision = device.state is LifecycleState.NEW or (
            device.mud_url is not None and device.profile_hash is None
            and (before is None or before.mud_url != device.mud_url))
        if not needs_decision:
            # A new address must reach the kernel: the rules match the device's
            # addresses, so a renewed lease elsewhere would otherwise be dropped.
            # The enforcer takes it from its previous holder in the same batch.
            moved = bool(released) or (before is not None and (
                before.ipv4, before.ipv6) != (device.ipv4, device.ipv6))
            if device.pending_mud_url is not None and (
                    before is None or before.pending_mud_url != device.pending_mud_url):
                return self._judge_new_url(outcome, released, enforce=moved)
            if outcome.changed or before != device or released:
                return self._commit(outcome, enforce=moved, released=released)
            return device
        # No rules for the addresses yet (a NEW device has none installed, so the
        # default-deny of the ruleset applies), but their previous holders lose them
        # now, not once the decision (a MUD fetch away) is enforced. Then store the
        # sighting and decide.
        self._narrow_in_kernel(released)
        self._commit(outcome, enforce=False, released=released)
        return self.decide(key)

    @_serialised
    def add_device(self, *, mac: str, mud_url: str | None = None,
                   source: MudSource = MudSource.MANUAL, manufacturer: str | None = None,
                   model: str | None = None, name: str | None = None) -> Device:
        """The owner adds a device (typed in, from its QR label or its certificate).

        Same rules as any sighting: a first MUD URL is taken and its profile applied;
        a different MUD URL on a known device waits for ``approve_url``.
        """
        device = self.observe(mac=mac, mud_url=mud_url, source=source if mud_url else None,
                              manufacturer=manufacturer, model=model)
        if (manufacturer and manufacturer != device.manufacturer) or (
                model and model != device.model):
            # The owner's label outranks a maker inferred from traffic (mudguard.identify).
            device = self._commit(lifecycle.Outcome(replace(
                device, manufacturer=manufacturer or device.manufacturer,
                model=model or device.model), ()), enforce=False)
        return self.rename(device.mac, name) if name is not None else device

    @_serialised
    def rename(self, mac: str, name: str | None) -> Device:
        """Set (or clear, with None or "") the owner's name for the device."""
        device = self.device(mac)
        clean = "".join(c for c in name or "" if c.isprintable()).strip()[:64] or None
        if clean == device.name:
            return device
        outcome = lifecycle.Outcome(replace(device, name=clean), (
            lifecycle.Notice(EventKind.RENAMED, {"name": clean}),))
        return self._commit(outcome, enforce=False)

    def _holders(self, device: Device) -> list[Device]:
        """The stored devices holding one of ``device``'s addresses (itself included)."""
        held = set(device.ipv4) | set(device.ipv6)
        return list({d.mac: d for address in sorted(held)
                     for d in self.store.devices_holding(address)}.values())

    def _narrow_in_kernel(self, released: Sequence[Device]) -> None:
        """Enforce each device that lost addresses (kernel only; ``_commit`` stores them).

        A NEW device has no rules installed: there is nothing to narrow.
        """
        if self.enforcer is None:
            return
        for other in released:
            if other.state not in (LifecycleState.NEW, LifecycleState.FORGOTTEN):
                grants = [g.grant for g in self.active_grants(other.mac)]
                self.enforcer.apply_device(other, self.cached_mud(other), grants)

    @_serialised
    def lease_ended(self, mac: str, ip: str) -> Device | None:
        """The DHCP server says the device's lease of ``ip`` ended (released or expired):
        the address leaves the device at once, kernel first, then the store.

        Returns the device (unchanged if it no longer held the address), or None if
        the MAC is unknown.
        """
        device = self.store.get_device(normalise_mac(mac))
        if device is None:
            return None
        outcome = lifecycle.on_lease_ended(device, ip=ip, now=self.clock())
        if not outcome.changed:
            return device
        enforce = device.state not in (LifecycleState.NEW, LifecycleState.FORGOTTEN)
        return self._commit(outcome, enforce=enforce)

    @_serialised
    def set_key(self, mac: str, key_id: str | None) -> Device:
        """Record the WiFi key bound to the device (a station on WiFi is a sighting:
        an unknown MAC becomes a new device and gets its decision)."""
        if self.store.get_device(mac) is None:
            self.observe(mac=mac)
        device = self.device(mac)
        if device.key_id == key_id:
            return device
        outcome = lifecycle.Outcome(replace(device, key_id=key_id), (
            lifecycle.Notice(EventKind.KEY_BOUND, {"key_id": key_id}),))
        return self._commit(outcome, enforce=False)

    def tell(self, kind: EventKind, details: dict[str, Any], mac: str | None = None) -> None:
        """Record an event from another part of the gateway (keys, watcher). A MAC the
        store does not know is kept in the details, not as the event's device."""
        known = mac is not None and self.store.get_device(mac) is not None
        extra = {} if known or mac is None else {"mac": mac}
        self.store.add_event(kind, self.clock(), mac if known else None, {**details, **extra})

    # -- onboarding decisions ----------------------------------------------------------

    @_serialised
    def decide(self, mac: str) -> Device:
        """Work out and enforce the device's access from its MUD URL, a secondary
        repository, or the home default."""
        device = self.device(mac)
        settings = self.store.get_settings()
        now = self.clock()
        if device.mud_url is not None:
            return self._onboard_url(device, device.mud_url)
        errors: list[str] = []
        match = lookup_all(self.repositories, mac=device.mac, manufacturer=device.manufacturer,
                           model=device.model, errors=errors, hostname=device.hostname)
        if match is not None:
            return self._onboard_repository(device, match)
        why: str = NO_MUD_URL
        if errors:
            detail = "; ".join(errors)[:300]
            why = Reason("no_mud_url.failed",
                         f"{NO_MUD_URL} ({len(errors)} repositories failed: {detail})",
                         count=len(errors), detail=detail)
        if device.state in (LifecycleState.LEARNING, LifecycleState.PROPOSED):
            return self._commit(lifecycle.Outcome(device))  # learning goes on
        if self.learns and settings.learning_days > 0 and device.profile_hash is None \
                and device.state in (LifecycleState.NEW, LifecycleState.DEFAULT):
            return self._start_learning(device, why)
        return self._commit(lifecycle.on_no_mud(device, why=why, settings=settings, now=now))

    def _start_learning(self, device: Device, why: str) -> Device:
        settings = self.store.get_settings()
        now = self.clock()
        until = learning.learning_until(now, settings)
        started = self._commit(lifecycle.start_learning(device, why=why, until=until,
                                                        settings=settings, now=now))
        if started.state is LifecycleState.LEARNING:
            self.store.start_learning(started.mac, now, until)
        return started

    def _onboard_repository(self, device: Device, match: RepositoryMatch) -> Device:
        entry = match.entry
        device = replace(device, end_of_support=entry.end_of_support or device.end_of_support,
                         manufacturer=device.manufacturer or entry.manufacturer,
                         model=device.model or entry.model)
        if match.mud_data is not None:
            result = parse_mud(match.mud_data)
            if result.mud is None:
                return self._no_mud(device, Reason(
                    "repository_invalid",
                    f"the repository's MUD file for it is invalid ({match.repository})",
                    repository=match.repository))
            url = result.mud.mud_url
            if self._learned_by_other(url, device.mac):
                return self._no_mud(device, Reason(
                    "repository_learned_by_other", "the repository's MUD file for it names "
                    f"another device's learned profile ({match.repository})",
                    repository=match.repository))
            device = replace(device, mud_url=url, mud_source=MudSource.REPOSITORY)
            return self._apply_profile(device, result.mud, match.mud_data, match.signature,
                                       supported=entry.supported)
        if entry.mud_url is not None:
            device = replace(device, mud_url=entry.mud_url, mud_source=MudSource.REPOSITORY)
            return self._onboard_url(device, entry.mud_url, supported=entry.supported)
        return self._no_mud(device, Reason(
            "repository_no_mud", f"{match.repository} knows the device but has no MUD file",
            repository=match.repository),
                            supported=entry.supported)

    def _no_mud(self, device: Device, why: str, supported: bool = True) -> Device:
        now = self.clock()
        outcome = lifecycle.on_no_mud(device, why=why, settings=self.store.get_settings(),
                                      now=now)
        if not supported or outcome.device.end_of_support is not None:
            forced = lifecycle.check_support(
                replace(outcome.device, end_of_support=now if not supported
                        else outcome.device.end_of_support), now)
            outcome = lifecycle.Outcome(forced.device, outcome.notices + forced.notices)
        return self._commit(outcome)

    def _load(self, url: str) -> tuple[bytes, bytes | None, datetime]:
        """The MUD file, its signature and when they were fetched (a fresh cached copy,
        or fetched now). Nothing is cached here: see ``_apply_profile``."""
        now = self.clock()
        cached = self.store.get_mud(url)
        if cached is not None and cached.fresh(now):
            return cached.data, cached.signature, cached.fetched_at
        if self.fetch is None:
            raise MudguardError("no MUD fetcher is configured")
        data = self.fetch(url)
        parsed = parse_mud(data, expected_url=url).mud
        signature = None
        if parsed is not None and parsed.mud_signature:
            signature = self.fetch(parsed.mud_signature)
        return data, signature, now

    def _learned_by_other(self, url: str, mac: str) -> str | None:
        """The MAC of another device whose owner-approved learned profile ``url`` names."""
        return next((d.mac for d in self.store.list_devices() if d.mac != mac
                     and d.mud_url == url and d.mud_source is MudSource.LEARNED), None)

    def _onboard_url(self, device: Device, url: str, *, supported: bool = True) -> Device:
        if self._learned_by_other(url, device.mac):
            # A learned profile is one device's, approved by the owner for it alone: a
            # device announcing its URL (a forged or copied one) never gets it.
            return self._no_mud(device, _learned_by_other_reason(url))
        try:
            data, signature, fetched_at = self._load(url)
        except Exception as exc:  # network or server trouble: tell, keep safe
            return self._no_mud(device, Reason(
                "fetch_failed", f"the MUD file at {url} could not be fetched: {exc}",
                url=url, detail=str(exc)))
        result = parse_mud(data, expected_url=url)
        if result.mud is None:
            first = result.errors[0] if result.errors else "unusable"
            return self._no_mud(device, Reason(
                "mud_invalid", f"the MUD file at {url} is invalid: {first}", url=url,
                detail=str(first)))
        return self._apply_profile(device, result.mud, data, signature, supported=supported,
                                   fetched_at=fetched_at)

    def _check_signature(self, data: bytes, signature: bytes | None
                         ) -> tuple[SignatureStatus, str | None]:
        if signature is None:
            return SignatureStatus.UNSIGNED, None
        if self.verify is None:
            return SignatureStatus.INVALID, "no signature verifier is configured"
        try:
            return SignatureStatus.SIGNED_VALID, self.verify(data, signature, self.clock())
        except Exception as exc:  # any failure of the check is an invalid signature
            return SignatureStatus.INVALID, str(exc)[:200]

    def _apply_profile(self, device: Device, mud: MudFile, data: bytes,
                       signature: bytes | None, *, supported: bool = True,
                       checked: tuple[SignatureStatus, str | None] | None = None,
                       notices: tuple[lifecycle.Notice, ...] = (),
                       fetched_at: datetime | None = None) -> Device:
        status, signer = checked or self._check_signature(data, signature)
        now = self.clock()
        eos = device.end_of_support if supported else now
        new_hash = hashlib.sha256(data).hexdigest()
        outcome = lifecycle.on_profile(
            device, mud, profile_hash=new_hash, signature=status,
            signer=signer if status is SignatureStatus.SIGNED_VALID else None,
            settings=self.store.get_settings(), now=now, end_of_support=eos)
        told = tuple(lifecycle.Notice(n.kind, {**n.details, "detail": signer})
                     if n.kind is EventKind.SIGNATURE_INVALID else n for n in outcome.notices)
        outcome = lifecycle.Outcome(outcome.device, notices + told)
        if outcome.device.profile_hash != new_hash:  # refused: the enforced profile stays
            return self._commit(outcome)
        cache = CachedMud(url=mud.mud_url, data=data, signature=signature,
                          fetched_at=fetched_at or now,
                          cache_validity_hours=mud.cache_validity_hours)
        return self._commit(outcome, mud, cache=cache)

    def _refused(self, status: SignatureStatus) -> bool:
        return status is SignatureStatus.INVALID or (
            status is SignatureStatus.UNSIGNED and not self.store.get_settings().allow_unsigned)

    @_serialised
    def refresh(self, mac: str) -> Device:
        """Re-fetch (when the cache expired) and re-apply the device's profile. A learned
        profile is not published anywhere: it is re-applied from the cache, never fetched."""
        device = self.device(mac)
        if device.mud_url is None:
            return self.decide(mac)
        if device.mud_source is MudSource.LEARNED:
            return self._reapply_learned(device)
        return self._onboard_url(device, device.mud_url)

    # -- learned profiles --------------------------------------------------------------

    @_serialised
    def apply_learned(self, mac: str, data: bytes) -> Device:
        """The owner approved a profile learned from the device's traffic (``profile
        learn``): check it, enforce it and make it the device's profile.

        The device then has ``mud_source`` LEARNED and signature status
        OWNER_APPROVED; the file is cached under its own ``mud-url`` (never fetched).
        A MUD URL the device announces later waits for ``approve_url``. Raises
        ``ProfileError`` (nothing changed) for an invalid file or a ``mud-url`` that
        another device uses.
        """
        device = self.device(mac)
        result = parse_mud(data)
        if result.mud is None:
            why = "; ".join(str(e) for e in result.errors[:5])[:600]
            raise ProfileError(f"the proposed profile is invalid: {why}; nothing changed")
        mud = result.mud
        others = [d.mac for d in self.store.list_devices()
                  if d.mac != device.mac and mud.mud_url in (d.mud_url, d.pending_mud_url)]
        if others:
            raise ProfileError(f"the proposed profile's mud-url {mud.mud_url} is another "
                               f"device's ({others[0]}): learn it with its own --mud-url; "
                               "nothing changed")
        now = self.clock()
        new_hash = hashlib.sha256(data).hexdigest()
        learned = replace(device, mud_url=mud.mud_url, mud_source=MudSource.LEARNED)
        outcome = lifecycle.on_profile(learned, mud, profile_hash=new_hash,
                                       signature=SignatureStatus.OWNER_APPROVED, signer=None,
                                       settings=self.store.get_settings(), now=now)
        updated = outcome.device
        if updated.state is LifecycleState.PROFILED:
            updated = replace(updated, reasons=(Reason(
                "learned_approved",
                f"profile learned from its traffic, approved by the owner ({mud.mud_url})",
                url=mud.mud_url),))
        # The profile-applied/-changed event says where it came from (the portal names
        # every event kind; a learned profile is one more source of the same event).
        learned_from = {"source": MudSource.LEARNED.value, "approved_by": "owner",
                        "previous_mud_url": device.mud_url}
        told = tuple(lifecycle.Notice(n.kind, {**n.details, **learned_from})
                     if n.kind in (EventKind.PROFILE_APPLIED, EventKind.PROFILE_CHANGED)
                     else n for n in outcome.notices)
        cache = CachedMud(url=mud.mud_url, data=data, signature=None, fetched_at=now,
                          cache_validity_hours=mud.cache_validity_hours)
        applied = self._commit(lifecycle.Outcome(updated, told), mud, cache=cache)
        if (device.mud_source is MudSource.LEARNED and device.mud_url
                and device.mud_url != mud.mud_url):
            self.store.delete_mud(device.mud_url)  # the replaced proposal is nobody's now
        return applied

    def _reapply_learned(self, device: Device) -> Device:
        assert device.mud_url is not None
        cached = self.store.get_mud(device.mud_url)
        mud = self.cached_mud(device)
        if cached is None or mud is None:
            return self._no_mud(device, Reason(
                "learned_lost", "its learned profile is no longer in the cache"))
        # Nothing to re-fetch: the owner's approval does not expire, so the copy is
        # renewed (the daemon's refresh loop then leaves it alone).
        return self._commit(lifecycle.Outcome(device), mud,
                            cache=replace(cached, fetched_at=self.clock()))

    # -- learn, then lock ----------------------------------------------------------------

    def record_flows(self, mac: str, records: Sequence[learning.FlowRecord]) -> int:
        """Add flow records of a LEARNING device (the daemon's conntrack watcher); how
        many were new. Any other device: nothing (0)."""
        device = self.store.get_device(mac)
        if device is None or device.state is not LifecycleState.LEARNING:
            return 0
        return self.store.add_learned_flows(device.mac, [list(r) for r in records],
                                            learning.MAX_FLOWS)

    @_serialised
    def start_learning(self, mac: str) -> Device:
        """The owner asks to learn a device on the home default, or one locked to a
        learned profile (that profile is dropped: the home default applies until the
        new one is locked). Raises ``LifecycleError`` for a device with a maker's
        profile or in another state, and where learning is off (no recorder, or 0
        learning days)."""
        device = self.device(mac)
        relearn = device.state is LifecycleState.PROFILED and \
            device.mud_source is MudSource.LEARNED
        if not relearn and (device.state is not LifecycleState.DEFAULT
                            or device.profile_hash is not None):
            raise lifecycle.LifecycleError(f"{device.mac} is {device.state.value}: only a "
                                           "device on the home default or locked to a "
                                           "learned profile can be learned")
        settings = self.store.get_settings()
        if not self.learns or settings.learning_days <= 0:
            # Nothing would record its connections: it would "learn" nothing.
            raise lifecycle.LifecycleError("learning is off on this gateway ([devices] "
                                           "learning = true and learning days above 0)")
        if relearn:
            url = device.mud_url
            device = self._commit(lifecycle.unlock_learned(device, settings=settings,
                                                           now=self.clock()))
            if url and not any(d.mud_url == url for d in self.store.list_devices()):
                self.store.delete_mud(url)  # the owner's approval of it is withdrawn
        return self._start_learning(device, Reason("owner_learns",
                                                   "the owner asked to learn it"))

    @_serialised
    def end_learning(self, mac: str) -> Device:
        """End the device's learning period (its time is up, or the owner ends it early):
        build the proposal from its flows; PROPOSED (or DEFAULT when nothing was seen).
        With ``lock_automatically`` the proposal is locked at once."""
        device = self.device(mac)
        record = self.store.get_learning(device.mac)
        if device.state is not LifecycleState.LEARNING or record is None:
            raise lifecycle.LifecycleError(f"{device.mac} is not learning")
        now = self.clock()
        settings = self.store.get_settings()
        device = self._identified(device, record)
        proposal = learning.propose(record, device, now=now, lan_prefixes=self.lan_prefixes,
                                    gateway_ips=self.gateway_ips)
        self.store.set_proposal(device.mac, proposal)
        ended = self._commit(lifecycle.end_learning(device, proposal_ready=proposal is not None,
                                                    settings=settings, now=now))
        if proposal is None:
            self.store.delete_learning(device.mac)
        elif settings.lock_automatically:
            return self.lock_learned(device.mac)
        return ended

    @_serialised
    def record_identity(self, mac: str, record: IdentityRecord) -> bool:
        """Keep the daemon's latest identification of a known device (decision,
        confidences, clues) for the owner to see; False for an unknown MAC."""
        return self.store.set_identity(device_mac(mac), self.clock(), record.dumps())

    def identity_record(self, mac: str) -> IdentityRecord | None:
        """The device's stored identification (None: none yet, or unreadable)."""
        found = self.store.get_identity(device_mac(mac))
        return IdentityRecord.loads(found[1]) if found else None

    @_serialised
    def identified(self, mac: str, *, maker: str | None = None, kind: str | None = None,
                   replaces_maker: str | None = None,
                   replaces_kind: str | None = None) -> Device | None:
        """Identification (``identify.live``) became more certain of a known device:
        store ``maker`` where the device has none or has the one identification stored
        before (``replaces_maker``), never over a label's or a device with a MUD URL
        (its file names the maker; a learned profile's does not count); the same for
        ``kind``. None for an unknown MAC."""
        device = self.store.get_device(device_mac(mac))
        if device is None:
            return None
        found = device
        own_file = device.mud_url is not None and device.mud_source is not MudSource.LEARNED
        if maker and not own_file and device.mud_source is not MudSource.QR \
                and device.manufacturer in (None, replaces_maker):
            found = replace(found, manufacturer=maker)
        if kind and device.kind in (None, replaces_kind):
            found = replace(found, kind=kind)
        if found == device:
            return device
        return self._commit(lifecycle.Outcome(found, ()), enforce=False)

    def _identified(self, device: Device, record: Learning) -> Device:
        """The device with the maker and kind its learned traffic tells, where unknown."""
        if self.identify is None or (device.manufacturer and device.kind):
            return device
        try:
            maker, kind = self.identify(device, learning.learned_names(record))
        except Exception:  # identification is a courtesy: learning ends all the same
            log.exception("identifying %s from its learned traffic failed", device.mac)
            return device
        found = replace(device, manufacturer=device.manufacturer or maker,
                        kind=device.kind or kind)
        if found == device:
            return device
        return self._commit(lifecycle.Outcome(found, ()), enforce=False)

    def proposal(self, mac: str) -> bytes | None:
        """The learned profile waiting for the owner, if any."""
        record = self.store.get_learning(mac)
        return record.proposal if record is not None else None

    @_serialised
    def lock_learned(self, mac: str) -> Device:
        """The owner locks the device to its learned profile (a LEARNING device's
        period ends now). Raises ``LifecycleError`` if nothing was learned."""
        device = self.device(mac)
        if device.state is LifecycleState.LEARNING:
            device = self.end_learning(mac)
            if device.state is not LifecycleState.PROPOSED:
                return device  # locked automatically, or nothing learned
        proposal = self.proposal(device.mac)
        if device.state is not LifecycleState.PROPOSED or proposal is None:
            raise lifecycle.LifecycleError(f"{device.mac} has no learned profile to lock")
        locked = self.apply_learned(device.mac, proposal)
        self.store.delete_learning(device.mac)
        return locked

    @_serialised
    def keep_default(self, mac: str) -> Device:
        """The owner keeps the home default instead of learning or of the proposal."""
        device = self.device(mac)
        kept = self._commit(lifecycle.keep_default(device, settings=self.store.get_settings(),
                                                   now=self.clock()))
        self.store.delete_learning(device.mac)
        return kept

    @_serialised
    def maintain_learning(self) -> tuple[Device, ...]:
        """End the learning periods that are due (``maintain`` and the daemon's learning
        timer); the devices whose learning ended."""
        return self._end_due_learning(self.clock())

    def _end_due_learning(self, now: datetime) -> tuple[Device, ...]:
        ended = []
        for record in self.store.list_learning():
            device = self.store.get_device(record.mac)
            if device is not None and device.state is LifecycleState.LEARNING \
                    and record.until <= now:
                ended.append(self.end_learning(record.mac))
        return tuple(ended)

    @_serialised
    def approve_url(self, mac: str) -> Device:
        """The owner approved the device's new MUD URL: fetch, check and apply its profile.

        If the new file cannot be fetched, is invalid or its signature is refused,
        nothing changes (the URL stays pending, the old profile enforced), the
        failure is recorded, and ``ApprovalError`` says why.
        """
        device = self.device(mac)
        approved = lifecycle.approve_url(device, self.clock())
        url = approved.device.mud_url or ""
        if self._learned_by_other(url, device.mac):
            self._refuse_approval(device, EventKind.FETCH_FAILED,
                                  _learned_by_other_reason(url))
        try:
            data, signature, fetched_at = self._load(url)
        except Exception as exc:  # network or server trouble
            self._refuse_approval(device, EventKind.FETCH_FAILED, Reason(
                "url.fetch_failed", f"the new MUD file at {url} could not be fetched: {exc}",
                detail=str(exc)))
        result = parse_mud(data, expected_url=url)
        if result.mud is None:
            first = result.errors[0] if result.errors else "unusable"
            self._refuse_approval(device, EventKind.FETCH_FAILED, Reason(
                "url.invalid", f"the new MUD file at {url} is invalid: {first}",
                detail=str(first)))
        status, signer = self._check_signature(data, signature)
        if self._refused(status):
            detail = signer or status.value
            self._refuse_approval(device, EventKind.SIGNATURE_INVALID, Reason(
                "url.bad_signature", f"the new MUD file's signature is refused: {detail}",
                detail=detail))
        assert result.mud is not None
        return self._apply_profile(approved.device, result.mud, data, signature,
                                   checked=(status, signer), notices=approved.notices,
                                   fetched_at=fetched_at)

    def _judge_new_url(self, outcome: lifecycle.Outcome, released: Sequence[Device], *,
                       enforce: bool) -> Device:
        """A device announced a new MUD URL (held as pending in ``outcome``): accept it
        without the owner if it is an acceptable update (same base as its accepted
        URL, file signed by its pinned signer: draft-ietf-iotops-mud-acceptable-urls);
        otherwise it waits for ``approve_url`` and the url-changed event says why."""
        device = outcome.device
        url = device.pending_mud_url
        assert url is not None
        why = lifecycle.url_update_problem(device, url)
        accepted: tuple[MudFile, bytes, bytes | None, datetime,
                        tuple[SignatureStatus, str | None]] | None = None
        if why is None:
            why, accepted = self._fetch_acceptable(device, url)
        if accepted is None:
            told = tuple(lifecycle.Notice(n.kind, {**n.details, "held_because": why})
                         if n.kind is EventKind.URL_CHANGED else n for n in outcome.notices)
            return self._commit(lifecycle.Outcome(device, told), enforce=enforce,
                                released=released)
        self._commit(outcome, enforce=enforce, released=released)
        auto = lifecycle.accept_url(device, self.clock())
        mud, data, signature, fetched_at, checked = accepted
        return self._apply_profile(auto.device, mud, data, signature, checked=checked,
                                   notices=auto.notices, fetched_at=fetched_at)

    def _fetch_acceptable(self, device: Device, url: str) -> tuple[
            str | None, tuple[MudFile, bytes, bytes | None, datetime,
                              tuple[SignatureStatus, str | None]] | None]:
        """Fetch and check the new URL's file: (None, the file) if its signer is the
        pinned one, else (why not, None)."""
        if self._learned_by_other(url, device.mac):
            return _learned_by_other_reason(url), None
        try:
            data, signature, fetched_at = self._load(url)
        except Exception as exc:  # network or server trouble: the owner decides later
            return Reason("url.fetch_failed", f"the new MUD file could not be fetched: {exc}",
                          detail=str(exc)), None
        result = parse_mud(data, expected_url=url)
        if result.mud is None:
            first = result.errors[0] if result.errors else "unusable"
            return Reason("url.invalid", f"the new MUD file is invalid: {first}",
                          detail=str(first)), None
        status, signer = self._check_signature(data, signature)
        why = lifecycle.signer_problem(device, status, signer)
        if why is not None:
            return why, None
        return None, (result.mud, data, signature, fetched_at, (status, signer))

    def _refuse_approval(self, device: Device, kind: EventKind, why: str) -> NoReturn:
        self.store.add_event(kind, self.clock(), device.mac,
                             {"reason": why, "pending": device.pending_mud_url})
        raise ApprovalError(why + "; nothing changed")

    @_serialised
    def check_support(self) -> list[Device]:
        """Move every device past its end-of-support date to OUT_OF_SUPPORT."""
        moved = []
        for device in self.store.list_devices():
            outcome = lifecycle.check_support(device, self.clock())
            if outcome.changed:
                moved.append(self._commit(outcome))
        return moved

    # -- owner grants ------------------------------------------------------------------

    @_serialised
    def grant(self, mac: str, kind: GrantKind, *, host: str | None = None,
              port: int | None = None, protocol: int | None = None,
              expires: datetime | None = None, schedule: str | None = None) -> GrantRecord:
        """Add an owner grant (validated), enforce it, and record a GRANTED event.

        A ``PAUSE`` grant cuts the device's Internet (the LAN and the gateway's basic
        services stay) until ``expires``, or daily in ``schedule`` ("21:30-07:00 ZONE")."""
        device = self.device(mac)
        now = self.clock()
        grant = validate_grant(Grant(kind=kind, host=host, port=port, protocol=protocol,
                                     expires=expires, schedule=schedule), now)
        if device.state in (LifecycleState.FORGOTTEN, LifecycleState.QUARANTINED):
            raise GrantError(f"{device.mac} is {device.state.value}: release it first")
        if self.enforcer is not None:
            grants = [g.grant for g in self.active_grants(device.mac)] + [grant]
            self.enforcer.apply_device(device, self.cached_mud(device), grants)
        with self.store.transaction():
            record = self.store.add_grant(device.mac, grant, now)
            self.store.add_event(EventKind.GRANTED, now, device.mac, record.as_dict())
        return record

    @_serialised
    def revoke_grant(self, mac: str, grant_id: int) -> None:
        """Remove one grant and re-enforce the device without it."""
        device = self.device(mac)
        grants = self.store.list_grants(device.mac)
        if not any(g.id == grant_id for g in grants):
            raise GrantError(f"{device.mac} has no grant {grant_id}")
        if self.enforcer is not None:
            now = self.clock()
            keep = [g.grant for g in grants if g.id != grant_id and not g.grant.expired(now)]
            self.enforcer.apply_device(device, self.cached_mud(device), keep)
        with self.store.transaction():
            self.store.delete_grant(device.mac, grant_id)
            self.store.add_event(EventKind.GRANT_REVOKED, self.clock(), device.mac,
                                 {"id": grant_id})

    @_serialised
    def expire_grants(self) -> int:
        """Drop expired grants (re-enforcing their devices); returns how many."""
        now = self.clock()
        count = 0
        for record in self.store.list_grants():
            if record.grant.expired(now):
                device = self.store.get_device(record.mac)
                if device is not None and self.enforcer is not None:
                    keep = [g.grant for g in self.store.list_grants(record.mac)
                            if g.id != record.id and not g.grant.expired(now)]
                    self.enforcer.apply_device(device, self.cached_mud(device), keep)
                with self.store.transaction():
                    self.store.delete_grant(record.mac, record.id)
                    self.store.add_event(EventKind.GRANT_EXPIRED, now, record.mac,
                                         record.as_dict())
                count += 1
        return count

    @_serialised
    def apply_schedules(self) -> tuple[str, ...]:
        """Re-enforce each device whose scheduled grants (a bedtime pause) came into or
        left their window since the last call; returns their MACs. The daemon's upkeep
        calls it every minute, so a window opens in the kernel within that delay."""
        return self._apply_schedules()

    @_serialised
    def rezone_schedules(self, old_zone: str, new_zone: str) -> int:
        """The owner's time zone changed from ``old_zone`` to ``new_zone``: every daily
        schedule read in ``old_zone`` keeps its times of day in ``new_zone`` (a bedtime
        stays the owner's evening), re-enforced at once; returns how many moved. A
        schedule in another zone (given with its own) is left as it is."""
        if old_zone == new_zone:
            return 0
        moved = 0
        with self.store.transaction():
            for record in self.store.list_grants():
                if record.grant.schedule is None:
                    continue
                try:
                    window = DailyWindow.parse(record.grant.schedule)
                except ValueError:  # a zone this system no longer knows: left as it is
                    continue
                if window.zone == old_zone:
                    self.store.set_grant_schedule(record.id, str(window.in_zone(new_zone)))
                    moved += 1
        if moved:
            self._apply_schedules()
        return moved

    def _apply_schedules(self) -> tuple[str, ...]:
        now = self.clock()
        changed: set[str] = set()
        for record in self.store.list_grants():
            if record.grant.schedule is None or record.grant.expired(now):
                continue
            active = record.grant.active(now)
            if self._schedule_seen.get(record.id) is not active:
                changed.add(record.mac)
            self._schedule_seen[record.id] = active
        for mac in sorted(changed):
            device = self.store.get_device(mac)
            if device is not None and self.enforcer is not None:
                self.enforcer.apply_device(device, self.cached_mud(device),
                                           [g.grant for g in self.active_grants(mac)])
        return tuple(sorted(changed))

    # -- quarantine (called by the watcher and the owner) ------------------------------

    @_serialised
    def quarantine(self, mac: str, reason: str) -> Device:
        """Restrict the device to what quarantine allows, with the reason."""
        return self._commit(lifecycle.quarantine(self.device(mac), reason=reason,
                                                 now=self.clock()))

    @_serialised
    def quarantine_exception(self, mac: str, ace_name: str, *, add: bool) -> Device:
        """Add (or remove) an owner's quarantine exception: an ACE of the device's MUD
        file that stays open while it is quarantined, besides those the file names
        (draft-richardson-shg-mud-quarantined-access). Enforced at once if it is
        quarantined. Raises ``QuarantineExceptionError`` (nothing changed) for a name
        that is no ACE of its enforced MUD file, or one that is not an exception."""
        device = self.device(mac)
        name = ace_name.strip()
        present = name in device.quarantine_exceptions
        if add and not present:
            mud = self.cached_mud(device)
            if mud is None:
                raise QuarantineExceptionError(
                    f"{device.mac} has no MUD profile: an exception names one of its ACEs")
            aces = {ace.name for acl in mud.acls for ace in acl.aces}
            if name not in aces:
                raise QuarantineExceptionError(
                    f"no ACE {name[:64]!r} in {device.mac}'s MUD file (it has: "
                    f"{', '.join(sorted(aces))[:400]}); nothing changed")
            kept = (*device.quarantine_exceptions, name)
        elif not add and present:
            kept = tuple(n for n in device.quarantine_exceptions if n != name)
        else:
            raise QuarantineExceptionError(
                f"{name[:64]!r} is {'already' if add else 'not'} a quarantine exception of "
                f"{device.mac}; nothing changed")
        outcome = lifecycle.Outcome(replace(device, quarantine_exceptions=kept), (
            lifecycle.Notice(EventKind.QUARANTINE_EXCEPTION,
                             {"ace": name, "action": "added" if add else "removed",
                              "exceptions": list(kept)}),))
        return self._commit(outcome, enforce=device.state is LifecycleState.QUARANTINED)

    @_serialised
    def release(self, mac: str) -> Device:
        """The owner releases a quarantined device."""
        device = self.device(mac)
        return self._commit(lifecycle.release(device, settings=self.store.get_settings(),
                                              now=self.clock(), mud=self.cached_mud(device)))

    @_serialised
    def trust(self, mac: str) -> Device:
        """The owner's own computer or phone: not restricted."""
        return self._commit(lifecycle.trust(self.device(mac), now=self.clock()))

    @_serialised
    def untrust(self, mac: str) -> Device:
        """Withdraw trust: back to what the device's profile allows."""
        device = self.device(mac)
        return self._commit(lifecycle.untrust(device, settings=self.store.get_settings(),
                                              now=self.clock(), mud=self.cached_mud(device)))

    # -- end of use --------------------------------------------------------------------

    @_serialised
    def forget(self, mac: str, *, transfer: bool = False) -> ResetInstructions:
        """End of use: remove its rules, revoke its key, delete its personal data.

        Returns the steps the owner should take to reset the device. With
        ``transfer`` the device is being given to someone else (same removal).
        """
        device = self.device(mac)
        mud = self.cached_mud(device)
        if self.enforcer is not None:
            self.enforcer.remove_device(device.mac)
        revoked: bool | None = None
        if self.keys is not None:
            revoked = self.keys.revoke(device.mac)
        now = self.clock()
        with self.store.transaction():
            self.store.delete_device(device.mac)
            if device.mud_url and not any(d.mud_url == device.mud_url
                                          for d in self.store.list_devices()):
                self.store.delete_mud(device.mud_url)  # no other device's rules use it
            kind = EventKind.TRANSFERRED if transfer else EventKind.FORGOTTEN
            # Home-wide event: no MAC, name or address survives the forget.
            self.store.add_event(kind, now, None, {
                "key": "revoked" if revoked else
                ("none" if revoked is False else "revocation recorded; no key service"),
            })
        return ResetInstructions(mac=device.mac, key_revoked=revoked,
                                 steps=_reset_steps(device, transfer),
                                 documentation=mud.documentation if mud else None)

    # -- upkeep ------------------------------------------------------------------------

    @_serialised
    def maintain(self) -> Maintenance:
        """Periodic upkeep (the daemon runs it every few minutes): drop expired grants,
        move devices past their end of support to LAN only, re-fetch profiles whose
        cache-validity ran out (RFC 8520 §3.5), end learning periods that are due,
        and delete events older than
        ``EVENT_RETENTION`` (personal data kept no longer than useful). A failed
        re-fetch keeps the enforced profile and is told as an event."""
        now = self.clock()
        expired = self.expire_grants()
        self.apply_schedules()
        moved = self.check_support()
        refreshed: list[Device] = []
        for device in self.store.list_devices():
            if device.mud_url is None or device.profile_hash is None or device.state in (
                    LifecycleState.QUARANTINED, LifecycleState.FORGOTTEN):
                continue
            cached = self.store.get_mud(device.mud_url)
            if cached is None or not cached.fresh(now):
                refreshed.append(self.refresh(device.mac))
        pruned = self.store.prune_events(now - EVENT_RETENTION)
        self.store.prune_activity(now - ACTIVITY_RETENTION)
        return Maintenance(expired_grants=expired, out_of_support=moved, refreshed=refreshed,
                           pruned_events=pruned, learning_ended=self._end_due_learning(now))


def _reset_steps(device: Device, transfer: bool) -> tuple[str, ...]:
    steps = [
        "Its network access and its own WiFi key have been removed from this gateway.",
        "Factory-reset the device (usually: hold its reset button for 10-30 seconds "
        "while it is powered, until its light blinks), so it forgets this home's WiFi.",
        "Remove it from the maker's app or cloud account so its data is no longer "
        "linked to you.",
    ]
    if transfer:
        steps.append("Give the new owner the device only after the reset; it will join "
                     "their network as a new device.")
    return tuple(steps)


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*"
                       r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_grant(grant: Grant, now: datetime) -> Grant:
    """Check an owner grant; return it with its host normalised or raise ``GrantError``."""
    if grant.expires is not None and grant.expires <= now:
        raise GrantError("the expiry is in the past")
    if grant.port is not None and not 1 <= grant.port <= 65535:
        raise GrantError("a port must be 1-65535")
    if grant.protocol is not None and grant.protocol not in (6, 17):
        raise GrantError("protocol must be 6 (tcp) or 17 (udp)")
    if grant.schedule is not None:
        try:
            grant = replace(grant, schedule=str(DailyWindow.parse(grant.schedule)))
        except ValueError as exc:
            raise GrantError(str(exc)) from None
    if grant.kind in (GrantKind.LAN, GrantKind.INTERNET, GrantKind.PAUSE):
        if grant.host is not None or grant.port is not None:
            raise GrantError(f"a {grant.kind.value} grant takes no host or port")
        return grant
    if not grant.host:
        raise GrantError(f"a {grant.kind.value} grant needs a host")
    host = grant.host.strip().lower().rstrip(".")
    try:
        host = str(ipaddress.ip_network(host, strict=False))
    except ValueError:
        if not _HOSTNAME.match(host):
            raise GrantError(f"not a host name or address: {grant.host[:64]!r}") from None
    return replace(grant, host=host)
