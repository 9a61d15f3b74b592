"""The gateway daemon's event loop: everything that happens on the home network, in order.

Theory of operation. One asyncio loop owns the sockets (DNS guard, dnsmasq's hook
socket, the control socket, the watcher's NFLOG socket); one worker thread carries out
every device service call (fetch, verify, decide, compile, enforce, store), so device
changes are serialised and a slow MUD server never stalls DNS answers.

- A DHCP lease (dnsmasq's ACK read off the LAN interface, and dnsmasq's hook) or an
  LLDP frame on a LAN port becomes a ``Sighting``; the intake hands it to
  ``DeviceService.observe``, which fetches the MUD file, checks its signature, decides
  and enforces, then stores.
- Every enforcement goes through ``GuardedEnforcer``: after the kernel accepted a
  device's rules, the DNS guard learns the device's addresses and allowed names (so its
  next lookup fills the right sets) and the event log tells the new state.
- Every dropped packet (NFLOG) is counted per device; every ``violation_period`` one
  ``violation`` event per device with drops is stored, with a few flows as evidence (the
  portal's flow history and recent peers).
- A watcher alert (NFLOG drops → deviation tracker) is stored with its evidence and
  quarantines the device through the same service (re-enforced at once).
- A profiled device's ClientHello (RFC 9761: ``watch.tls_listener``) is judged against
  its MUD file's (D)TLS profile: stored once per ACE as fitting or deviating (with the
  reason); repeated deviations quarantine it like other deviations.
- A device seen using another DNS resolver (``watch.resolvers``, RFC 9726) is told
  once per server as a ``dns-elsewhere`` event with its explanation; no quarantine.
- A port that joins the LAN bridge (or whose isolation is turned off) is isolated as
  soon as the kernel announces it (``LanPortWatcher``), before its first device can be
  onboarded; the maintenance pass isolates every port again as a backstop.
- Every minute, expired owner grants are dropped, devices past their end of support
  move to LAN only, and MUD files past their cache-validity are fetched again.
- At start-up every stored device's policy is re-derived and reconciled with the kernel
  before any socket opens; the ``inet mudguard`` tables are left in place at shutdown, so
  a restart never opens a window of unfiltered access.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from mudguard.daemon.activity import ActivityLog
from mudguard.daemon.config import ConfigError, GatewayConfig
from mudguard.daemon.dns_grants import GrantJournal
from mudguard.daemon.events import EventLog
from mudguard.daemon.learning import LearningRecorder
from mudguard.daemon.reload import pinned_settings, plan_reload
from mudguard.daemon.sd_notify import notify
from mudguard.daemon.violations import Tally, ViolationLog
from mudguard.devices import Device, EventKind
from mudguard.devices.service import ACTIVITY_RETENTION, DeviceService
from mudguard.devices.transparency import TransparencyChecker
from mudguard.discovery.announce_sniff import AnnouncementSniffer
from mudguard.discovery.dhcp import DhcpHookListener
from mudguard.discovery.dhcp_sniff import DhcpSniffer
from mudguard.discovery.lldp import LldpListener
from mudguard.discovery.neighbour import NeighbourWatcher
from mudguard.discovery.sighting import Intake, Sighting
from mudguard.dns.core import AddSetElements, DnsGuard
from mudguard.enforce import Enforcer, LanPortWatcher, facts_of
from mudguard.enforce.conntrack_acct import enable_conntrack_accounting
from mudguard.enforce.data_gateway import DataGatewayEnforcer
from mudguard.identify.live import LiveIdentifier
from mudguard.mud import Direction, MudFile
from mudguard.policy import (
    DevicePolicy,
    Grant,
    HomeContext,
    HomeDefault,
    LifecycleState,
    decide,
    device_id,
)
from mudguard.watch import Alert, DeviationTracker, FlowEvent
from mudguard.watch.resolvers import ResolverUse, describe_use
from mudguard.watch.tls import TlsObservation, judge

log = logging.getLogger(__name__)


def release_memory() -> None:
    """Collect cyclic garbage, then hand the heap's free memory back to the system
    (glibc's ``malloc_trim``; nothing elsewhere). A restore of thousands of devices
    leaves tens of megabytes freed but held by the allocator."""
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


T = TypeVar("T")
MAX_TLS_TOLD = 4096  # distinct TLS outcomes stored per run before forgetting them


class Service(Protocol):
    """A part of the daemon with a life cycle on the event loop (DNS, portal, watcher)."""

    async def start(self) -> None:
        """Start serving."""

    async def stop(self) -> None:
        """Stop serving and release everything."""


class Child(Protocol):
    """A real daemon the gateway runs as a child process (dnsmasq, hostapd)."""

    def start(self) -> None:
        """Start it; raise if it does not come up."""

    def stop(self) -> None:
        """Stop it (idempotent)."""


class GuardedEnforcer:
    """The enforcer the device services use: kernel first, then DNS guard and event log.

    Thread-safe: the service worker and the portal's threads may both call it.
    """

    def __init__(self, enforcer: Enforcer | DataGatewayEnforcer, guard: DnsGuard,
                 events: EventLog, *,
                 tracker: DeviationTracker | None = None) -> None:
        self.enforcer = enforcer
        self.guard = guard
        self.events = events
        self.tracker = tracker
        self.on_policy: Callable[[DevicePolicy], None] | None = None
        """Told every policy fed to the DNS guard (e.g. the watcher's DNS names)."""
        self.home_default: HomeDefault | None = None
        """The home default devices without a MUD file get (the owner may change it while
        the daemon runs); None: the one the enforcer was built with."""
        self.on_removed: Callable[[str], None] | None = None
        self.on_device: Callable[[Device], None] | None = None
        """Told every device whose rules were just installed (e.g. the learning recorder)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.refill: Callable[[Sequence[AddSetElements]], None] | None = None
        """Policy as data: adds the DNS guard's grants again (its filler) after a device's
        rules changed and its DNS-answer elements were deleted."""
        self.fill: Callable[[Sequence[AddSetElements]], None] | None = None
        """The chains design: the DNS guard's filler (grants restored at start)."""
        self._lock = threading.RLock()

    def apply_device(self, device: Device, mud: MudFile | None,
                     grants: Sequence[Grant]) -> None:
        """Install the device's rules atomically, then feed the DNS guard and tell.

        The DNS guard first stops granting under the addresses that change hands (a
        moved lease), so no answer fills an element for the previous holder while the
        kernel batch deletes its elements.
        """
        with self._lock:
            addresses = (*device.ipv4, *device.ipv6)
            self._on_loop(lambda: self.guard.before_update(device.mac.lower(), addresses))
            if self.home_default is None:
                policy = self.enforcer.apply_device(device, mud, grants)
            else:
                policy = decide(facts_of(device), mud, grants, self.enforcer.context,
                                home_default=self.home_default, now=datetime.now(UTC))
                self.enforcer.apply_policy(policy, mud=mud, grants=grants)
            self._on_loop(lambda: self._after(policy, device))
        if self.on_device is not None:
            self.on_device(device)
        self.events.device(device)

    def remove_device(self, mac: str) -> None:
        """Remove the device's rules and forget it in the DNS guard."""
        with self._lock:
            self.enforcer.remove_device(mac)
            self._on_loop(lambda: self.guard.remove_device(mac.lower()))
        if self.on_removed is not None:
            self.on_removed(mac)
        self.events.emit("removed", mac=mac)

    def _after(self, policy: DevicePolicy, device: Device) -> None:
        self._feed_guard(policy)
        self._refill(policy.device.mac.lower())
        # Released from quarantine (by the portal, the CLI or the control socket): the
        # watcher must be able to alert about this device again.
        dev_id = device_id(device.mac)
        if (self.tracker is not None and device.state is not LifecycleState.QUARANTINED
                and self.tracker.alerted(dev_id)):
            self.tracker.release(dev_id)

    def _refill(self, mac: str) -> None:
        """Policy as data: the device's DNS answers went with its old rules; add its
        unexpired grants back under the new ones (names it may still resolve only)."""
        if not isinstance(self.enforcer, DataGatewayEnforcer) \
                or not self.enforcer.take_dns_reset(mac) or self.refill is None:
            return
        now = self.loop.time() if self.loop is not None else time.monotonic()
        commands = self.guard.grants_of(mac, now)
        if not commands:
            return
        try:
            self.refill(commands)
        except Exception as exc:  # fail closed: the device asks again
            log.warning("DNS guard: re-granting %s's answers: %s", mac, exc)

    def restore_dns(self, commands: Sequence[AddSetElements]) -> None:
        """At start: the DNS guard's restored grants into the kernel. Under the data design
        the kernel's DNS answers become exactly these (a previous run's others, granted
        under rules since changed, are deleted); under chains they are added."""
        if isinstance(self.enforcer, DataGatewayEnforcer):
            self.enforcer.replace_dns_answers(commands)
        elif commands and self.fill is not None:
            self.fill(commands)

    def _feed_guard(self, policy: DevicePolicy) -> None:
        try:
            self.guard.apply_policy(policy)
        except ValueError as exc:  # an address another device still holds
            log.warning("DNS guard: %s: %s", policy.device.mac, exc)
        if self.on_policy is not None:
            self.on_policy(policy)

    def _on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the event loop (the guard's only thread) and wait for it."""
        loop = self.loop
        if loop is None or not loop.is_running():
            fn()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
            return
        done = threading.Event()

        def call() -> None:
            try:
                fn()
            finally:
                done.set()

        loop.call_soon_threadsafe(call)
        done.wait(5.0)


def home_policies(service: DeviceService, context: HomeContext
                  ) -> tuple[list[Device], list[DevicePolicy]]:
    """Every stored device (not forgotten) and its policy decided now, against ``context``
    with all of them in it (the owner's home default, active grants, cached MUD files):
    what a start enforces."""
    devices = [d for d in service.store.list_devices()
               if d.state is not LifecycleState.FORGOTTEN]
    context = dataclasses.replace(context, devices=tuple(facts_of(d) for d in devices))
    settings = service.store.get_settings()
    now = service.clock()
    # One store query for the grants and one read per distinct MUD file, not N.
    grants_of = service.active_grants_by_mac()
    muds = service.cached_muds(devices)
    policies: list[DevicePolicy] = []
    for device in devices:
        grants = [g.grant for g in grants_of.get(device.mac, ())]
        policies.append(decide(facts_of(device), muds[device.mac], grants,
                               context, home_default=settings.home_default.value, now=now))
    return devices, policies


@dataclass(slots=True)
class Gateway:
    """The running gateway: wired by ``mudguard.app.build_gateway``."""

    service: DeviceService
    enforcer: GuardedEnforcer
    intake: Intake
    events: EventLog
    hook_listener: DhcpHookListener
    lldp_listeners: list[LldpListener] = field(default_factory=list)
    dhcp_sniffer: DhcpSniffer | None = None
    # mDNS/SSDP announcements → the live identifier (maker and kind, shown to the owner)
    announcements: AnnouncementSniffer | None = None
    identifier: LiveIdentifier | None = None
    identify_period: float = 5.0
    neighbours: NeighbourWatcher | None = None
    lan_ports: LanPortWatcher | None = None
    children: list[Child] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    maintenance_period: float = 60.0
    violation_period: float = 10.0
    violations: ViolationLog = field(default_factory=ViolationLog)
    activity: ActivityLog | None = None  # allowed connections (the watcher's conntrack)
    learning: LearningRecorder | None = None  # learn, then lock ([devices] learning)
    learning_period: float = 5.0
    transparency: TransparencyChecker | None = None  # RFC 9472 SBOM retrieval
    dns_grants: GrantJournal | None = None  # the DNS guard's grants, kept across restarts
    # RFC 9761: (mac, ace, outcome) already stored this run (one event per kind of outcome)
    _tls_told: set[tuple[str, str, str]] = field(default_factory=set)
    tls_alert: Callable[[Alert], None] | None = None  # on_alert, counted by the metrics
    config: GatewayConfig | None = None  # what it runs with (a reload compares with it)
    read_config: Callable[[], GatewayConfig] | None = None  # SIGHUP re-reads it (the file)
    _sbom_worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="sbom"))
    _worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="svc"))
    _loop: asyncio.AbstractEventLoop | None = None

    # -- the service worker ---------------------------------------------------------------

    async def call(self, fn: Callable[[], T]) -> T:
        """Run a blocking service call in the worker (serialised with all the others)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, fn)

    def run_in_worker(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the service worker and wait for its result (from another thread:
        the portal's). Its exception is raised here."""
        return self._worker.submit(fn).result()

    def submit(self, what: str, fn: Callable[[], Any]) -> None:
        """Run ``fn`` in the service worker, from any thread; a failure is logged and
        told as an ``error`` event."""
        self._submit(what, fn)

    def _submit(self, what: str, fn: Callable[[], Any]) -> None:
        def guarded() -> None:
            try:
                fn()
            except Exception as exc:  # a failure of one event must not stop the gateway
                log.exception("%s failed", what)
                self.events.emit("error", message=f"{what}: {type(exc).__name__}: {exc}"[:300])

        self._worker.submit(guarded)

    # -- start-up --------------------------------------------------------------------------

    def restore(self) -> None:
        """Close the LAN (the base, unless it is in already), then re-derive every stored
        device's policy and make the kernel match, device batch by device batch."""
        enforcer = self.enforcer.enforcer
        started = time.monotonic()
        if enforcer.close_lan():  # before anything else: no device unrestricted meanwhile
            self.events.emit("lan-closed", ms=round((time.monotonic() - started) * 1000, 1),
                             message="base installed: devices wait for their policies")
        changed, what = enable_conntrack_accounting()  # identification's server-packet cap
        if changed:
            log.info("%s", what)
        elif "=1 already" not in what:
            log.warning("%s: web identification logs more server packets", what)
        devices, policies = home_policies(self.service, enforcer.context)
        report = enforcer.reconcile(policies)
        for policy in policies:
            self.enforcer._feed_guard(policy)
        restored = self._restore_dns_grants()
        for device in devices:
            self.events.device(device)
            if device.state is LifecycleState.NEW:  # stopped mid-onboarding: decide now
                self._submit(f"onboarding of {device.mac}",
                             functools.partial(self.service.decide, device.mac))
        self.events.emit("restored", devices=len(devices),
                         ruleset="data" if isinstance(enforcer, DataGatewayEnforcer)
                         else "chains",
                         reinstalled=report.reinstalled_table, repaired=len(report.repaired),
                         dns_grants=restored, seconds=round(time.monotonic() - started, 2))

    def _restore_dns_grants(self) -> int:
        """The DNS guard's stored grants the current policy still gives, back in the guard
        and the kernel (``GrantJournal.restore``); how many. Without a journal, under the
        data design, the kernel's DNS answers of a previous run are deleted (no record
        says which the current policy gives). A failure is logged: devices ask again."""
        try:
            if self.dns_grants is not None:
                return self.dns_grants.restore(self.enforcer)
            self.enforcer.restore_dns([])
        except Exception as exc:
            log.exception("restoring the DNS grants failed")
            self.events.emit("error", message=f"DNS grants: {type(exc).__name__}: {exc}"[:300])
        return 0

    def follow_home_default(self) -> None:
        """If the owner changed the home default, re-enforce every device on it now
        (service worker; after each control request and at each maintenance)."""
        wanted: HomeDefault = \
            "lan" if self.service.store.get_settings().home_default.value == "lan" \
            else "internet"
        if wanted == self.enforcer.home_default:
            return
        self.enforcer.home_default = wanted
        for device in self.service.store.list_devices():
            if device.state in (LifecycleState.DEFAULT, LifecycleState.LEARNING,
                                LifecycleState.PROPOSED):
                grants = [g.grant for g in self.service.active_grants(device.mac)]
                self.enforcer.apply_device(device, self.service.cached_mud(device), grants)
        self.events.emit("home-default", value=wanted)

    async def call_then_follow(self, fn: Callable[[], T]) -> T:
        """``call`` for owner requests: a changed home default applies at once."""
        try:
            return await self.call(fn)
        finally:
            await self.call(self.follow_home_default)

    def reload(self) -> None:
        """Re-read the configuration (SIGHUP, ``systemctl reload``; service worker).

        A file that cannot be read or does not parse is refused with a ``reload-refused``
        event; the running configuration stays. Otherwise the changed settings the file
        pins apply now (devices they concern are re-enforced), the chores' periods change,
        and changed keys that need a restart are named in the ``reload`` event and keep
        their running values (``daemon/reload.py``). No rule is dropped.
        """
        if self.read_config is None or self.config is None:
            return
        try:
            new = self.read_config()
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            self.events.emit("reload-refused", message=str(exc)[:500])
            return
        plan = plan_reload(self.config, new)
        store = self.service.store
        settings = store.get_settings()
        wanted = pinned_settings(settings, plan.config)
        if wanted != settings:
            store.save_settings(wanted)
        self.maintenance_period = plan.config.maintenance_seconds
        self.violation_period = plan.config.report_seconds
        self.learning_period = plan.config.learning_flush_seconds
        self.config = plan.config
        self.follow_home_default()
        self.events.emit("reload", applied=list(plan.applied),
                         needs_restart=list(plan.needs_restart),
                         message="configuration re-read (no rule dropped)")

    def on_sighting(self, sighting: Sighting) -> None:
        """A discovery source saw a device: record and onboard it in the worker."""
        self.events.emit("sighting", mac=sighting.mac, ip=sighting.ip,
                         source=sighting.source.value, mud_url=sighting.mud_url)
        self._submit(f"sighting of {sighting.mac}", lambda: self.intake.on_sighting(sighting))

    def on_alert(self, alert: Alert) -> None:
        """The watcher saw a device deviate: quarantine it (re-enforced at once)."""

        def quarantine() -> None:
            mac = alert.mac or self._mac_of(alert.device_id)
            self.events.emit("alert", mac=mac, device_id=alert.device_id, kind=alert.kind,
                             message=alert.reason)
            if mac is None:
                log.warning("alert for unknown device %s: %s", alert.device_id, alert.reason)
                return
            self.service.store.add_event(
                EventKind.VIOLATION, self.service.clock(), mac,
                {"kind": alert.kind, "reason": alert.reason, "reason_key": alert.reason_key,
                 "reason_fields": dict(alert.reason_fields), "count": len(alert.evidence),
                 "evidence": [e.as_dict() for e in alert.evidence]})
            # the device's "why" keeps the watcher's key too, worded from it by the portal
            self.events.device(self.service.quarantine(mac, alert.why()))

        self._submit(f"quarantine of {alert.device_id}", quarantine)

    def on_dns_elsewhere(self, use: ResolverUse) -> None:
        """The watcher saw a device use another DNS resolver (once per server): tell the
        owner why its named peers may fail (RFC 9726). Not a quarantine."""

        def record() -> None:
            mac = self._mac_of(use.device_id)
            self.events.emit("dns-elsewhere", mac=mac, **describe_use(use))
            if mac is not None:
                self.service.store.add_event(EventKind.DNS_ELSEWHERE, self.service.clock(),
                                             mac, use.as_dict())

        self._submit(f"DNS use of {use.device_id}", record)

    def on_tls(self, observation: TlsObservation) -> None:
        """The kernel logged a profiled device's ClientHello (RFC 9761): judge it against
        the device's MUD file on the worker. A fit is stored once per ACE and run
        (``tls-observed``); a deviation once per ACE and reason (``tls-deviation``, with
        the ClientHello as evidence) and counted every time: ``Thresholds.tls_deviations``
        of them quarantine the device (``on_alert``)."""

        def judge_it() -> None:
            mac = self._mac_of(observation.device_id)
            if mac is None:
                return
            device = self.service.store.get_device(mac)
            mud = self.service.cached_mud(device) if device is not None else None
            if mud is None:
                return
            outcome = judge(observation, mud)
            if outcome.verdict is None:
                return
            kind = EventKind.TLS_DEVIATION if outcome.deviates else EventKind.TLS_OBSERVED
            key = (mac, outcome.ace, outcome.reason)
            if key not in self._tls_told:
                if len(self._tls_told) >= MAX_TLS_TOLD:
                    self._tls_told.clear()
                self._tls_told.add(key)
                self.service.store.add_event(kind, self.service.clock(), mac,
                                             outcome.as_dict())
                self.events.emit(kind.value, mac=mac, ace=outcome.ace,
                                 message=outcome.reason or "fits its profile")
            tracker = self.enforcer.tracker
            if outcome.deviates and tracker is not None:
                sample = FlowEvent(device_id=observation.device_id,
                                   direction=Direction.FROM_DEVICE, family=observation.family,
                                   src=observation.src, dst=observation.dst,
                                   protocol=observation.protocol,
                                   src_port=observation.src_port,
                                   dst_port=observation.dst_port, mac=mac)
                for alert in tracker.observe_tls(sample, outcome.reason, time.monotonic()):
                    (self.tls_alert or self.on_alert)(alert)

        self._submit(f"TLS observation of {observation.device_id}", judge_it)

    def _mac_of(self, dev_id: str) -> str | None:
        for device in self.service.store.list_devices():
            if device_id(device.mac) == dev_id:
                return device.mac
        return None

    def on_drop(self, event: FlowEvent) -> None:
        """The watcher saw a dropped packet (event loop): count it for the owner."""
        self.violations.add(event)

    async def _record_violations(self) -> None:
        """Every ``violation_period``: one ``violation`` event per device that had drops,
        and every device's allowed and blocked counts per destination (``activity``)."""
        while True:
            await asyncio.sleep(self.violation_period)
            tallies = self.violations.drain()
            allowed = self.activity.drain() if self.activity is not None else {}
            if tallies:
                self._submit("recording violations",
                             functools.partial(self._store_drops, tallies))
            if tallies or allowed:
                self._submit("recording activity",
                             functools.partial(self._store_activity, allowed, tallies))

    def _store_activity(self, allowed: dict[str, dict[str, int]],
                        tallies: dict[str, Tally]) -> None:
        """Add the period's counts to the devices' hourly activity rows."""
        macs = {device_id(d.mac): d.mac for d in self.service.store.list_devices()}
        now = self.service.clock()
        for dev_id in {*allowed, *tallies}:
            mac = macs.get(dev_id)
            if mac is None:
                continue
            counts: dict[str, tuple[int, int]] = {
                name: (n, 0) for name, n in allowed.get(dev_id, {}).items()}
            tally = tallies.get(dev_id)
            for name, n in (tally.by_destination.items() if tally is not None else ()):
                counts[name] = (counts.get(name, (0, 0))[0], n)
            self.service.store.add_activity(mac, now, counts)

    def _store_drops(self, tallies: dict[str, Tally]) -> None:
        macs = {device_id(d.mac): d.mac for d in self.service.store.list_devices()}
        now = self.service.clock()
        for dev_id, tally in tallies.items():
            mac = macs.get(dev_id)
            if mac is None:
                continue
            self.service.store.add_event(
                EventKind.VIOLATION, now, mac,
                {"count": tally.count, "evidence": [e.as_dict() for e in tally.evidence],
                 "destinations": dict(sorted(tally.by_destination.items(),
                                             key=lambda item: -item[1])[:10])})
            self.events.emit("drops", mac=mac, count=tally.count,
                             flows=[e.describe() for e in tally.evidence[:3]])

    async def _record_learning(self, recorder: LearningRecorder) -> None:
        """Every ``learning_period``: the learning devices' recorded connections go to the
        database and learning periods that are due end (their proposals are told)."""
        def flush() -> None:
            for device in recorder.flush(self.service):
                self.events.emit("learning-ended", mac=device.mac, state=device.state.value)

        while True:
            self._submit("recording learned flows", flush)
            await asyncio.sleep(self.learning_period)

    async def _maintain(self) -> None:
        """Every ``maintenance_period``: drop expired grants, open and close the daily
        windows of scheduled grants (a bedtime pause), move devices past their end
        of support to LAN only, refresh expired MUD files (each re-enforces at once),
        isolate LAN bridge ports that appeared since."""
        while True:
            await asyncio.sleep(self.maintenance_period)
            self._submit("expiring grants", self.service.expire_grants)
            self._submit("paused schedules", self.service.apply_schedules)
            self._submit("home default", self.follow_home_default)

            def support() -> None:
                for device in self.service.check_support():
                    self.events.device(device)

            self._submit("end-of-support check", support)
            self._submit("MUD file refresh", self._refresh_expired)
            # Learning periods end even when the recorder is off ([devices] learning
            # switched off while devices were learning): their proposals still come.
            self._submit("learning periods", self.service.maintain_learning)
            self._submit("activity retention", functools.partial(
                self.service.store.prune_activity,
                self.service.clock() - ACTIVITY_RETENTION))
            self._submit("LAN port isolation", self.enforcer.enforcer.isolate_lan_ports)
            self._submit("SBOM check", self._check_transparency)

    def _refresh_expired(self) -> None:
        """Re-fetch the MUD files whose cache-validity ran out (RFC 8520 ``cache-validity``)
        and re-apply them; a failed fetch keeps the enforced profile (the service's rule)."""
        now = self.service.clock()
        for device in self.service.store.list_devices():
            if device.mud_url is None or device.state in (LifecycleState.FORGOTTEN,
                                                          LifecycleState.QUARANTINED):
                continue
            cached = self.service.store.get_mud(device.mud_url)
            if cached is None or not cached.fresh(now):
                self.service.refresh(device.mac)

    def _check_transparency(self) -> None:
        """Hand the profiled devices whose MUD file publishes an SBOM with no fresh
        outcome to the SBOM worker (RFC 9472): fetching never holds up the service
        worker, and each is asked at most once per cache-validity."""
        checker = self.transparency
        if checker is None:
            return
        for device in self.service.store.list_devices():
            if device.state in (LifecycleState.FORGOTTEN, LifecycleState.QUARANTINED):
                continue
            mud = self.service.cached_mud(device)
            if mud is not None and checker.claim(device, mud):
                self._sbom_worker.submit(self._check_one, checker, device, mud)

    def _check_one(self, checker: TransparencyChecker, device: Device, mud: MudFile) -> None:
        try:
            outcome = checker.check(device, mud)
        except Exception:  # one device's SBOM must not stop the others
            log.exception("SBOM check of %s failed", device.mac)
            return
        if outcome is not None:
            self.events.emit("sbom", mac=device.mac, retrieved=outcome.retrieved,
                             source=outcome.source, error=outcome.error)

    def _lldp_readable(self, listener: LldpListener) -> None:
        info = listener.receive(timeout=0.05)
        if info is not None:
            if self.identifier is not None:
                self.identifier.on_lldp(info.mac, info.system_name)
            self.on_sighting(info.sighting())

    def _neighbours_readable(self) -> None:
        """IPv6 neighbour entries on the LAN: addresses of known devices (the intake
        never creates a device from one, nor moves an address another device holds)."""
        if self.neighbours is None:
            return
        self.neighbours.drain(lambda sighting: self._submit(
            f"neighbour entry of {sighting.mac}",
            functools.partial(self.intake.on_sighting, sighting)))

    def _lan_ports_readable(self) -> None:
        """The kernel announced links: isolate the LAN bridge's new (or un-isolated)
        ports now, off the loop (``bridge`` runs as a process) and not behind the
        service worker's queue (a slow MUD fetch must not delay it)."""
        if self.lan_ports is None or self._loop is None:
            return
        ports = self.lan_ports.pending()
        if ports == []:
            return
        future = self._loop.run_in_executor(None, self.lan_ports.isolate, ports)
        future.add_done_callback(self._told_isolated)

    def _told_isolated(self, done: asyncio.Future[list[str]]) -> None:
        if not done.cancelled() and done.exception() is None and done.result():
            self.events.emit("lan-ports-isolated", ports=done.result())

    def _sniffer_readable(self) -> None:
        """DHCP frames on the LAN: a lease dnsmasq just ACKed is onboarded now, without
        waiting for its hook (whose later copy the intake drops as unchanged)."""
        if self.dhcp_sniffer is not None:
            self.dhcp_sniffer.drain(self.on_sighting)

    def _announcements_readable(self) -> None:
        """mDNS/SSDP frames on the LAN (event loop): clues for the live identifier. Past
        the sniffer's budget per second, reading stops until the next second."""
        sniffer, loop = self.announcements, self._loop
        if sniffer is None or loop is None:
            return
        wait = sniffer.drain()
        if wait is not None:
            loop.remove_reader(sniffer.fileno())
            loop.call_later(wait, self._resume_announcements, sniffer)

    def _resume_announcements(self, sniffer: AnnouncementSniffer) -> None:
        """The next second: read announcements again (unless the gateway stopped)."""
        if self._loop is not None and self.announcements is sniffer and not sniffer.closed:
            self._loop.add_reader(sniffer.fileno(), self._announcements_readable)

    async def _identify_live(self, identifier: LiveIdentifier) -> None:
        """Every ``identify_period``: store the makers and kinds that became more certain,
        and each changed identification with its clues (decided on the loop, bounded per
        pass; stored on the service worker)."""
        while True:
            await asyncio.sleep(self.identify_period)
            for update in identifier.updates():
                self.submit(f"identification of {update.mac}", functools.partial(
                    self.service.identified, update.mac, maker=update.maker,
                    kind=update.kind, replaces_maker=update.replaces_maker,
                    replaces_kind=update.replaces_kind))
            for mac, record in identifier.decisions():
                self.submit(f"identification record of {mac}", functools.partial(
                    self.service.record_identity, mac, record))

    def _hook_readable(self) -> None:
        sighting = self.hook_listener.receive(timeout=0.05)
        if sighting is not None:
            self.on_sighting(sighting)

    # -- run -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start everything, serve until ``stop`` is set (or SIGTERM/SIGINT), then stop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        stop = stop or asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if self.read_config is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGHUP, self._submit, "reload", self.reload)
        await self.call(self.restore)  # kernel matches the database before any socket opens
        self.enforcer.loop = loop
        started: list[Service] = []
        try:
            for part in self.services:
                await part.start()
                started.append(part)
            loop.add_reader(self.hook_listener.fileno(), self._hook_readable)
            for listener in self.lldp_listeners:
                loop.add_reader(listener.fileno(), self._lldp_readable, listener)
            if self.dhcp_sniffer is not None:
                loop.add_reader(self.dhcp_sniffer.fileno(), self._sniffer_readable)
            if self.announcements is not None:
                loop.add_reader(self.announcements.fileno(), self._announcements_readable)
            if self.neighbours is not None:
                loop.add_reader(self.neighbours.fileno(), self._neighbours_readable)
            if self.lan_ports is not None:
                loop.add_reader(self.lan_ports.fileno(), self._lan_ports_readable)
                self._lan_ports_readable()  # what was announced during the start-up
            for child in self.children:
                await self.call(child.start)
            periodic = [asyncio.create_task(self._maintain()),
                        asyncio.create_task(self._record_violations())]
            if self.learning is not None:
                periodic.append(asyncio.create_task(self._record_learning(self.learning)))
            if self.identifier is not None:
                periodic.append(asyncio.create_task(self._identify_live(self.identifier)))
            if self.dns_grants is not None:
                periodic.append(asyncio.create_task(self.dns_grants.run()))
            # Start-up's objects (parsed YANG, compiled rules, libraries) never die: keep
            # them out of the collector's full passes, which otherwise stall a lease
            # ~0.2 s now and then (measured: bench/bench_lease_to_rules.py). Start-up's
            # garbage goes first (frozen, it would be kept for good), and the heap it
            # freed goes back to the system (bench/bench_daemon_budget.py).
            release_memory()
            gc.freeze()
            self.events.emit("ready", message="gateway running",
                             frozen_objects=gc.get_freeze_count())
            notify("READY=1")  # systemd (Type=notify): enforcing and serving
            await stop.wait()
            for task in periodic:
                task.cancel()
        finally:
            self.events.emit("stopping", message="stopping (rules stay in force)")
            notify("STOPPING=1")
            with contextlib.suppress(Exception):
                loop.remove_reader(self.hook_listener.fileno())
            for listener in self.lldp_listeners:
                with contextlib.suppress(Exception):
                    loop.remove_reader(listener.fileno())
                listener.close()
            if self.dhcp_sniffer is not None:
                with contextlib.suppress(Exception):
                    loop.remove_reader(self.dhcp_sniffer.fileno())
                self.dhcp_sniffer.close()
            if self.announcements is not None:
                with contextlib.suppress(Exception):
                    loop.remove_reader(self.announcements.fileno())
                self.announcements.close()
            if self.neighbours is not None:
                with contextlib.suppress(Exception):
                    loop.remove_reader(self.neighbours.fileno())
                self.neighbours.close()
            if self.lan_ports is not None:
                with contextlib.suppress(Exception):
                    loop.remove_reader(self.lan_ports.fileno())
                self.lan_ports.close()
            for child in reversed(self.children):
                try:
                    child.stop()
                except Exception:
                    log.exception("stopping %s failed", type(child).__name__)
            for part in reversed(started):
                try:
                    await part.stop()
                except Exception:
                    log.exception("stopping %s failed", type(part).__name__)
            if self.dns_grants is not None:
                try:
                    self.dns_grants.flush()  # the DNS server stopped: the last grants
                except Exception:
                    log.exception("storing the DNS grants failed")
            self._sbom_worker.shutdown(wait=False, cancel_futures=True)  # time-bounded fetches
            self._worker.shutdown(wait=True, cancel_futures=True)
            self.hook_listener.close()
            self.events.emit("stopped")
