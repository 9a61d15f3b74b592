"""What the portal asks of the gateway: the device services plus onboarding preview,
alerts, reports and WiFi keys.

Theory of operation: ``PortalServices`` wraps the shared ``DeviceService`` (the same
object the CLI and the daemon use) and adds the read-mostly views the owner's pages
need. It never imports an adapter: the MUD fetcher, the signature verifier, the
enforcer and the key issuer are whatever the composition root passed in.

Preview never writes: fetching and checking a MUD file for the owner to read grants
nothing and stores nothing. Only ``onboard`` (the owner's explicit "accept") goes
through ``DeviceService.observe`` and, when the device already announced another
URL, ``approve_url``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from mudguard.devices import (
    Device,
    DeviceEvent,
    EventKind,
    GrantRecord,
    HomeDefault,
    MudSource,
    Settings,
    SignatureStatus,
    device_mac,
    normalise_mac,
)
from mudguard.devices._model import Learning
from mudguard.devices.activity import DestinationActivity, activity_buckets, group_by_destination
from mudguard.devices.identity import Identity, device_identity, signer_organisation
from mudguard.devices.lifecycle import MudUrlError, check_mud_url
from mudguard.devices.service import DeviceService, ResetInstructions
from mudguard.devices.transparency import TransparencyChecker
from mudguard.devices.wiring import check_time_zone, owner_zone
from mudguard.errors import MudguardError, RemoteInputError
from mudguard.identify.knowledge import KnowledgeBase, OuiRegistry
from mudguard.keys.core import WifiCredentials
from mudguard.mud import Finding, MudFile, parse_mud
from mudguard.policy import (
    DeviceFacts,
    DevicePolicy,
    GrantKind,
    HomeContext,
    LifecycleState,
    decide,
)
from mudguard.portal._incidents import (
    DISMISSABLE,
    AlertKind,
    Incident,
    IncidentBook,
    _address_names,
    evidence_flows,
    open_incidents,
)
from mudguard.portal._tls import TlsView, tls_view
from mudguard.portal._transparency import TransparencyView, transparency_view

T = TypeVar("T")

MAX_NAME = 64
FETCH_ERROR_KEYS = frozenset({"bad_url", "blocked_address", "ca_bundle", "content_type", "dns",
                              "http_status", "not_https", "protocol", "redirect", "timeout",
                              "too_large"})  # ``mud.fetch.FetchError.key``; else "other"
MAX_ALERT_EVENTS = 20_000  # the newest events the alerts start from (then: only new ones)
MAX_ALERT_BATCHES = 100  # of 10,000 new events each, per call
MAX_TLS_EVENTS = 500  # a device's newest events searched for its last TLS outcome
ALERT_KINDS = frozenset({EventKind.VIOLATION, EventKind.QUARANTINED})
DECISION_KINDS = frozenset({EventKind.RELEASED, EventKind.FORGOTTEN})


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedKey:
    """A device's own WiFi key: what its QR code carries, and the key's id."""

    credentials: WifiCredentials
    key_id: str | None = None


class KeyIssuer(Protocol):
    """The WiFi key side: gives a device its own passphrase (the keys adapter)."""

    def issue(self, mac: str) -> IssuedKey:
        """Create (or replace) the device's own key."""
        ...


class PortalError(RemoteInputError):
    """An owner request the portal refuses; ``key`` is the stable error key."""

    def __init__(self, key: str, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason
        self.fields = fields


@dataclass(frozen=True, slots=True, kw_only=True)
class MudPreview:
    """A fetched and checked MUD file, before the owner decides."""

    url: str
    mud: MudFile | None
    findings: tuple[Finding, ...] = ()
    signature: SignatureStatus = SignatureStatus.UNKNOWN
    signer: str | None = None
    signature_detail: str | None = None
    signature_error: str | None = None  # stable key, e.g. "mud_signature_expired"
    fetch_error: str | None = None
    fetch_error_key: str | None = None  # the fetcher's key ("dns", "timeout", …), for words

    @property
    def usable(self) -> bool:
        """True when the file parsed and the signature is not forged."""
        return self.mud is not None and self.signature is not SignatureStatus.INVALID


@dataclass(frozen=True, slots=True, kw_only=True)
class Onboarded:
    """The result of accepting a device: its record and its own WiFi key (if issued)."""

    device: Device
    credentials: WifiCredentials | None
    key_error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """A violation or quarantine the owner should decide about (one event; the portal
    now shows ``Incident``s, which group them)."""

    event: DeviceEvent
    device: Device | None
    open: bool  # no decision since


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowBucket:
    """Allowed and blocked flows of one device in one time slot."""

    start: datetime
    allowed: int
    blocked: int


@dataclass(slots=True)
class PortalServices:
    """The services behind every page and API call."""

    devices: DeviceService
    keys: KeyIssuer | None = None
    clock: Callable[[], datetime] | None = None
    run: Callable[[Callable[[], Any]], Any] | None = None
    """Runs a change serialised with the daemon's other service calls (its worker);
    None: the portal's own changes are serialised among themselves."""
    oui: OuiRegistry | None = None  # the MAC prefix registry (``load_oui_registry``)
    knowledge: KnowledgeBase | None = None  # tells module makers from device makers
    settings_changed: Callable[[], Any] | None = None
    """Called (serialised, like the change) after the owner saves the settings: the
    daemon re-enforces the devices on the home default at once."""
    time_zone: str | None = None
    """The zone daily schedules are read in; None: the gateway's own (``local_zone``)."""
    controllers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The controller classes the owner mapped to addresses (``[mud] controllers``)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _book: IncidentBook | None = field(default=None, repr=False)
    _book_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    transparency: TransparencyChecker | None = None
    """The daemon's RFC 9472 SBOM checker (what it retrieved shows in the report)."""

    def _serial(self, change: Callable[[], T]) -> T:
        if self.run is not None:
            result: T = self.run(change)
            return result
        with self._lock:
            return change()

    # -- owner changes (through the shared device service, one at a time) -------------

    def grant(self, mac: str, kind: GrantKind, **fields: Any) -> GrantRecord:
        """Give the device an extra permission (``DeviceService.grant``)."""
        return self._serial(lambda: self.devices.grant(mac, kind, **fields))

    def revoke_grant(self, mac: str, grant_id: int) -> None:
        """Take a permission back."""
        self._serial(lambda: self.devices.revoke_grant(mac, grant_id))

    def release(self, mac: str) -> Device:
        """Release a quarantined device."""
        return self._serial(lambda: self.devices.release(mac))

    def approve_url(self, mac: str) -> Device:
        """Approve the MUD URL the device announced."""
        return self._serial(lambda: self.devices.approve_url(mac))

    # -- learn, then lock (issue #16) ----------------------------------------------------

    def learning(self, device: Device) -> Learning | None:
        """The device's learning record (period, flows, proposal), if it has one."""
        return self.devices.store.get_learning(device.mac)

    def start_learning(self, mac: str) -> Device:
        """Learn a device on the home default (again)."""
        return self._serial(lambda: self.devices.start_learning(mac))

    def end_learning(self, mac: str) -> Device:
        """End the device's learning now: its proposal is made (PROPOSED)."""
        return self._serial(lambda: self.devices.end_learning(mac))

    def lock_learned(self, mac: str) -> Device:
        """Lock the device to its learned profile (source ``learned``, owner approved)."""
        return self._serial(lambda: self.devices.lock_learned(mac))

    def keep_default(self, mac: str) -> Device:
        """Keep the home default; what was learned is forgotten."""
        return self._serial(lambda: self.devices.keep_default(mac))

    def trust(self, mac: str) -> Device:
        """One of the owner's own computers or phones: not restricted."""
        return self._serial(lambda: self.devices.trust(mac))

    def untrust(self, mac: str) -> Device:
        """Back to what the device's profile allows."""
        return self._serial(lambda: self.devices.untrust(mac))

    def forget(self, mac: str, *, transfer: bool = False) -> ResetInstructions:
        """End of use: remove access, key and data; the reset steps."""
        return self._serial(lambda: self.devices.forget(mac, transfer=transfer))

    def known_models(self, limit: int = 500) -> list[tuple[str, str]]:
        """(maker and model, MUD URL) of every device kind the gateway's repositories
        name with a MUD URL, sorted, for "check before buying"; a repository that cannot
        be read now is skipped (its lookups report it during onboarding)."""
        found: dict[str, str] = {}
        for repository in self.devices.repositories:
            try:
                entries = repository.known_devices()
            except (MudguardError, OSError, ValueError):
                continue
            for entry in entries:
                if entry.mud_url and entry.manufacturer and entry.model:
                    found.setdefault(f"{entry.manufacturer} {entry.model}"[:120], entry.mud_url)
        return sorted(found.items(), key=lambda item: item[0].casefold())[:limit]

    def wifi_name(self) -> str | None:
        """The home WiFi's name (``[wifi] ssid`` of the configuration), when known."""
        ssid = getattr(self.keys, "ssid", None)
        return ssid if isinstance(ssid, str) else None

    def save_settings(self, *, home_default: str, signed_only: bool,
                      learning_days: float | None = None,
                      lock_automatically: bool | None = None,
                      time_zone: str | None = None) -> Settings:
        """Store the home default, whether unsigned MUD files are refused and, when
        given, how long a device without a MUD file is learned and whether its learned
        profile is locked without asking, and the owner's time zone ("system": the
        gateway's own; ``ValueError`` for one this gateway does not know) (the daemon
        follows a new home default after the change)."""
        zone = None if time_zone in (None, "system") else check_time_zone(str(time_zone))
        def change() -> Settings:
            current = self.devices.store.get_settings()
            updated = replace(current, home_default=HomeDefault(home_default),
                              allow_unsigned=not signed_only)
            if learning_days is not None:
                updated = replace(updated, learning_days=learning_days)
            if lock_automatically is not None:
                updated = replace(updated, lock_automatically=lock_automatically)
            if time_zone is not None:
                updated = replace(updated, time_zone=zone)
            self.devices.store.save_settings(updated)
            self.devices.rezone_schedules(owner_zone(current), owner_zone(updated))
            if self.settings_changed is not None:
                self.settings_changed()
            return updated
        return self._serial(change)

    def zone(self) -> str:
        """The owner's time zone (IANA name) for times shown and daily schedules: their
        setting, else the gateway's (``TZ``, else the ``/etc/localtime`` link, else UTC)."""
        return self.time_zone or owner_zone(self.devices.store.get_settings())

    def now(self) -> datetime:
        """The current time (the device service's clock unless one was given)."""
        return (self.clock or self.devices.clock)()

    # -- devices ---------------------------------------------------------------------

    def list_devices(self) -> list[Device]:
        """Every device the gateway knows, newest first."""
        devices = self.devices.store.list_devices()
        return sorted(devices, key=lambda d: (d.last_seen or d.first_seen or self.now()),
                      reverse=True)

    def device(self, mac: str) -> Device:
        """One device (``DeviceNotFound``/``MacError`` otherwise)."""
        return self.devices.device(mac)

    def events(self, mac: str, limit: int = 200) -> list[DeviceEvent]:
        """The device's most recent events, newest first."""
        events = self.devices.store.list_events(self.devices.device(mac).mac, limit=100_000)
        return list(reversed(events[-limit:]))

    def rename(self, mac: str, name: str) -> Device:
        """Give the device the owner's name for it."""
        clean = name.strip()
        if not clean or len(clean) > MAX_NAME or not clean.isprintable():
            raise PortalError("bad_name", f"a name must be 1 to {MAX_NAME} printable "
                              "characters")

        return self._serial(lambda: self.devices.rename(mac, clean))

    def identity(self, device: Device, mud: MudFile | None = None) -> Identity:
        """Who made the device and which model it is, and how the gateway knows
        (``device_identity``: MUD file, label, recorded, OUI)."""
        return device_identity(device, mud if mud is not None else self.mud_for(device),
                               oui_registry=self.oui, knowledge=self.knowledge)

    def identities(self, devices: list[Device]) -> dict[str, Identity]:
        """``identity`` of each device, by MAC."""
        return {device.mac: self.identity(device) for device in devices}

    def mud_for(self, device: Device) -> MudFile | None:
        """The MUD file the device's profile was built from (from the cache)."""
        return self.devices.cached_mud(device)

    def device_report(self, device: Device, mud: MudFile) -> Report:
        """The report for a known device, with what the SBOM check retrieved."""
        report = build_report(mud, device.signature_status, device.signer,
                              self.identity(device, mud))
        if report.tls is not None:  # RFC 9761: what the gateway last saw of its TLS
            events = self.devices.store.list_events(device.mac, limit=MAX_TLS_EVENTS,
                                                    newest=True)
            report = replace(report, tls=tls_view(mud, events))
        found = self.transparency.result(device) if self.transparency else None
        if found is None:
            return report
        return replace(report, transparency=transparency_view(
            mud, retrieved=found.retrieved, retrieval_error=found.error))

    # -- alerts ----------------------------------------------------------------------

    def incidents(self) -> list[Incident]:
        """Every alert as an incident (one per device and kind while it lasts): open
        ones first, then the decided ones (history).

        The incidents are kept between calls: each call reads only the events that came
        since (the first reads the newest ``MAX_ALERT_EVENTS``)."""
        store = self.devices.store
        with self._book_lock:
            newest = store.list_events(limit=1, newest=True)
            book = self._book
            if book is None or (newest and newest[-1].id < book.last_id) or \
                    (not newest and book.last_id):
                book = self._book = IncidentBook(  # first call, or the events were reset
                    gateways=frozenset(self.devices.gateway_ips))
                batches = [store.list_events(limit=MAX_ALERT_EVENTS, newest=True)]
            else:
                batches = []
                for _ in range(MAX_ALERT_BATCHES):
                    batch = store.list_events(after_id=book.last_id if not batches
                                              else batches[-1][-1].id, limit=10_000)
                    if not batch:
                        break
                    batches.append(batch)
            devices = {d.mac: d for d in store.list_devices()}
            for batch in batches:
                book.feed(batch, devices)
            return book.incidents(devices)

    def alerts(self, limit: int = 200) -> list[Incident]:
        """The incidents, open ones first, at most ``limit`` (``open`` until decided)."""
        return self.incidents()[:limit]

    def open_alert_count(self) -> int:
        """How many alerts await the owner: exactly the open incidents the page lists."""
        return len(open_incidents(self.incidents()))

    def dismiss_alert(self, mac: str, kind: AlertKind) -> Device:
        """The owner saw the alert: it leaves the open list (and stays in the history).

        Raises:
            PortalError: ``not_dismissable`` for a quarantine (it needs a decision).
        """
        if kind not in DISMISSABLE:
            raise PortalError("not_dismissable", f"a {kind.value} alert needs a decision",
                              kind=kind.value)

        def change() -> Device:
            device = self.devices.device(mac)
            self.devices.tell(EventKind.ALERT_DISMISSED, {"alert": kind.value}, device.mac)
            return device

        return self._serial(change)

    def profile_policy(self, mud: MudFile, mac: str | None = None) -> DevicePolicy:
        """What a device with this MUD file would be allowed once accepted (onboarding
        preview): the profiled state's rules, no grants."""
        facts = DeviceFacts(mac=(mac or "00:00:00:00:00:00").lower(), mud_url=mud.mud_url,
                            state=LifecycleState.PROFILED)
        return decide(facts, mud, (), HomeContext(lan_prefixes=(), gateway_addresses=()),
                      now=self.now())

    def effective_policy(self, device: Device) -> DevicePolicy:
        """What the device may do now: its state's rules with the owner's active grants
        (the same ``decide()`` the enforcer runs)."""
        facts = DeviceFacts(mac=device.mac.lower(), ipv4=tuple(device.ipv4),
                            ipv6=tuple(device.ipv6), mud_url=device.mud_url,
                            state=device.state, name=device.name)
        grants = [g.grant for g in self.devices.active_grants(device.mac)]
        home_default = self.devices.store.get_settings().home_default.value
        return decide(facts, self.mud_for(device), grants,
                      HomeContext(lan_prefixes=(), gateway_addresses=()),
                      home_default="lan" if home_default == "lan" else "internet",
                      now=self.now())

    def keep_quarantined(self, mac: str) -> Device:
        """The owner looked at the evidence and keeps the device quarantined."""
        def change() -> Device:
            device = self.devices.device(mac)
            if device.state is not LifecycleState.QUARANTINED:
                raise PortalError("not_quarantined", f"{device.mac} is not quarantined",
                                  mac=device.mac)
            self.devices.tell(EventKind.STATE_CHANGED,
                              {"to": device.state.value, "decision": "kept"}, device.mac)
            return device

        return self._serial(change)

    # -- flows -----------------------------------------------------------------------

    def flow_history(self, mac: str, *, hours: int = 24, buckets: int = 12
                     ) -> list[FlowBucket]:
        """Allowed vs blocked flows over the last ``hours``, from the device's events.

        Allowed: the daemon's hourly counts of the connections the kernel accepted
        (conntrack, the store's ``activity`` rows). Blocked: the drop log's summaries,
        as events (a watcher's alert is not counted again: its flows were drops already
        in the summaries, or allowed connections):
        a ``violation`` event counts ``details["count"]`` blocked flows (1 when
        absent), an alert with ``details["evidence"]`` (the watcher's flows) at least
        that many; any event may carry ``flows_allowed``/``flows_blocked`` counts.
        """
        now = self.now()
        span = timedelta(hours=hours) / buckets
        start = now - timedelta(hours=hours)
        device = self.devices.device(mac)
        allowed, _blocked = activity_buckets(self.devices.store.list_activity(device.mac,
                                                                              start),
                                             start=start, span=span, buckets=buckets)
        blocked = [0] * buckets
        for event in self.devices.store.list_events(device.mac, limit=100_000):
            if not start <= event.at <= now or _watcher_alert(event):
                continue
            index = min(buckets - 1, int((event.at - start) / span))
            allowed[index] += _count(event.details.get("flows_allowed"))
            extra = _count(event.details.get("flows_blocked"))
            if event.kind in ALERT_KINDS:
                extra = max(extra, len(evidence_flows(event)))
            if event.kind is EventKind.VIOLATION:
                extra = max(extra, _count(event.details.get("count"), default=1))
            blocked[index] += extra
        return [FlowBucket(start=start + span * i, allowed=allowed[i], blocked=blocked[i])
                for i in range(buckets)]

    def recent_activity(self, mac: str, *, hours: int = 24,
                        limit: int = 20) -> list[DestinationActivity]:
        """What the device talked to in the last ``hours``, one line per destination
        (its allowed and blocked counts and last time), the most recent first: the
        daemon's hourly counts (a LAN device by its name, the gateway marked)."""
        device = self.devices.device(mac)
        since = self.now() - timedelta(hours=hours)
        counts = self.devices.store.list_activity(device.mac, since)
        names = _address_names(self.devices.store.list_devices())
        gateway = set(self.devices.gateway_ips)
        return [replace(line, destination=names[line.destination])
                if line.destination in names
                else replace(line, gateway=True) if line.destination in gateway else line
                for line in group_by_destination(counts, since=since, limit=limit)]

    # -- onboarding ------------------------------------------------------------------

    def preview(self, url: str) -> MudPreview:
        """Fetch and check the MUD file at ``url`` for the owner to read (stores nothing).

        Raises:
            PortalError: ``bad_mud_url`` for a URL RFC 8520 forbids.
        """
        try:
            url = check_mud_url(url)
        except MudUrlError as exc:
            raise PortalError("bad_mud_url", str(exc)) from exc
        fetch = self.devices.fetch
        if fetch is None:
            raise PortalError("no_fetcher", "this gateway has no MUD fetcher configured")
        try:
            data = fetch(url)
        except Exception as exc:  # network, TLS, size, status: all the server's problem
            key = getattr(exc, "key", None)
            return MudPreview(url=url, mud=None, fetch_error=_short(exc),
                              fetch_error_key=key if key in FETCH_ERROR_KEYS else "other")
        result = parse_mud(data, expected_url=url)
        if result.mud is None:
            return MudPreview(url=url, mud=None, findings=result.findings)
        status, signer, detail, key = self._signature(result.mud, data)
        return MudPreview(url=url, mud=result.mud, findings=result.findings,
                          signature=status, signer=signer, signature_detail=detail,
                          signature_error=key)

    def _signature(self, mud: MudFile, data: bytes
                   ) -> tuple[SignatureStatus, str | None, str | None, str | None]:
        """(status, signer, detail, error key) for the file's detached signature."""
        if not mud.mud_signature:
            return SignatureStatus.UNSIGNED, None, None, None
        fetch, verify = self.devices.fetch, self.devices.verify
        if fetch is None or verify is None:
            return (SignatureStatus.INVALID, None, "no signature verifier is configured",
                    "mud_signature_unverifiable")
        try:
            signature = fetch(mud.mud_signature)
        except Exception as exc:  # the file says it is signed: a missing signature is bad
            return (SignatureStatus.INVALID, None,
                    f"the signature could not be fetched: {_short(exc)}",
                    "mud_signature_unavailable")
        try:
            return SignatureStatus.SIGNED_VALID, verify(data, signature, self.now()), None, None
        except Exception as exc:  # expired, untrusted, forged: the reason is on the error
            reason = getattr(exc, "reason", None)
            key = f"mud_signature_{getattr(reason, 'value', 'invalid')}"
            return SignatureStatus.INVALID, None, _short(exc), key

    def onboard(self, *, url: str, mac: str, name: str | None = None,
                manufacturer: str | None = None, model: str | None = None) -> Onboarded:
        """The owner accepted: record the device with its MUD URL, enforce its profile,
        and issue its own WiFi key.

        Raises:
            PortalError: ``bad_mud_url``; ``mac_in_use`` when the MAC is a known device
                with another MUD URL; ``MacError`` for a bad MAC.
        """
        mac = device_mac(mac)  # before anything: a label may name no device's MAC
        try:
            url = check_mud_url(url)
        except MudUrlError as exc:
            raise PortalError("bad_mud_url", str(exc)) from exc
        def accept() -> Device:
            self._refuse_takeover(mac, url)
            device = self.devices.add_device(mac=mac, mud_url=url, source=MudSource.QR,
                                             manufacturer=manufacturer, model=model)
            if device.pending_mud_url == url:  # the owner accepting is the approval
                device = self.devices.approve_url(device.mac)
            return device

        device = self._serial(accept)
        if name:
            device = self.rename(device.mac, name)
        if self.keys is None:
            return Onboarded(device=device, credentials=None,
                             key_error="no WiFi key service is configured on this gateway")
        try:
            issued = self.keys.issue(device.mac)
        except MudguardError as exc:
            return Onboarded(device=device, credentials=None, key_error=_short(exc))
        device = self._serial(lambda: self.devices.set_key(device.mac, issued.key_id))
        return Onboarded(device=device, credentials=issued.credentials)

    def _refuse_takeover(self, mac: str, url: str) -> None:
        """A label (device-supplied) naming the MAC of a device that already has another
        MUD URL must not replace that device's profile and WiFi key: that change is
        approved on the device's own page (a URL it announced), or after forgetting it."""
        known = self.devices.store.get_device(normalise_mac(mac))
        if (known is not None and known.state is not LifecycleState.FORGOTTEN
                and known.mud_url not in (None, url) and known.pending_mud_url != url):
            raise PortalError("mac_in_use", f"{known.mac} is already a known device with "
                              "another MUD file", mac=known.mac, name=known.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """Where a device sends data: a DNS name, and its company/country when known."""

    name: str
    company: str  # "its maker" or "unknown"
    country: str  # always "unknown" unless derivable (it is not, from a name alone)


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """The device report ("label"): what an owner should know before and after buying."""

    url: str
    manufacturer: str | None
    model: str | None
    documentation: str | None
    supported: bool
    last_update: datetime
    firmware: str | None
    software: str | None
    destinations: tuple[Destination, ...]
    signature: SignatureStatus
    signer: str | None  # the signer's organisation (its certificate's O=)
    systeminfo: str | None
    draft_era: bool
    transparency: TransparencyView | None = None
    tls: TlsView | None = None  # RFC 9761 (D)TLS profile: declared / fits / deviates
    signer_subject: str | None = None  # the signer certificate's full name (details)
    identity_source: str | None = None  # where the maker came from (IdentitySource)


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryLine:
    """Repeats of one event in a row, as one line of a device's history."""

    event: DeviceEvent  # the newest of them
    count: int
    first_at: datetime

    @property
    def at(self) -> datetime:
        """When it last happened."""
        return self.event.at


def collapse_history(events: list[DeviceEvent], limit: int = 20) -> list[HistoryLine]:
    """Newest-first events as history lines: consecutive events of the same kind and
    reason become one line ("Blocked traffic ×20, last 14:02"), at most ``limit``."""
    lines: list[HistoryLine] = []
    for event in events:
        if lines:
            last = lines[-1]
            if (last.event.kind is event.kind
                    and last.event.details.get("reason") == event.details.get("reason")):
                lines[-1] = HistoryLine(event=last.event, count=last.count + 1,
                                        first_at=event.at)
                continue
        if len(lines) >= limit:
            break
        lines.append(HistoryLine(event=event, count=1, first_at=event.at))
    return lines


def build_report(mud: MudFile, signature: SignatureStatus, signer: str | None,
                 identity: Identity | None = None) -> Report:
    """The report for one MUD file (pure): the maker and model from ``identity`` when
    given (a device's), else the file's own; never the MUD server's host name."""
    host = (urlsplit(mud.mud_url).hostname or "").lower()
    maker_domain = _registrable(host)
    destinations = []
    for name in sorted(mud.dns_names()):
        company = "maker" if maker_domain and _registrable(name) == maker_domain else "unknown"
        destinations.append(Destination(name=name, company=company, country="unknown"))
    maker, model = mud.mfg_name, mud.model_name
    source = None
    if identity is not None:
        maker, model = identity.maker, identity.model
        source = identity.source.value if identity.source else None
    return Report(url=mud.mud_url, manufacturer=maker, model=model,
                  documentation=mud.documentation,
                  supported=mud.is_supported, last_update=mud.last_update,
                  firmware=mud.firmware_rev, software=mud.software_rev,
                  destinations=tuple(destinations), signature=signature,
                  signer=signer_organisation(signer), systeminfo=mud.systeminfo,
                  draft_era=mud.draft_era, signer_subject=signer, identity_source=source,
                  transparency=transparency_view(mud), tls=tls_view(mud))


def _registrable(host: str) -> str:
    """The last two labels of a host name: a deliberately simple "same company" test.

    Without the public-suffix list this over-matches under two-label suffixes
    (``co.uk``); it is only used to say "its maker", never to grant anything.
    """
    labels = [p for p in host.lower().rstrip(".").split(".") if p]
    return ".".join(labels[-2:]) if len(labels) >= 2 else ""


def _watcher_alert(event: DeviceEvent) -> bool:
    """A watcher's alert (``kind``: scan, flood, …), not one of the drop log's summaries."""
    return event.kind is EventKind.VIOLATION and "kind" in event.details


def _count(value: object, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return max(0, min(value, 1_000_000))


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
