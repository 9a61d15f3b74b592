"""The daemon's OpenMetrics/Prometheus endpoint (``[metrics] listen``).

Theory of operation. Two kinds of numbers:

- **State, read at scrape time** by ``StateCollector``: devices by lifecycle state (one
  ``GROUP BY`` on the store), devices enforced, rules and DNS sets installed (from the
  enforcer's own record of what it installed: the ruleset is never read back from the
  kernel on a scrape, PLATFORM.md), the DNS guard's counters (queries, answers, fills,
  failures: the guard counts them anyway), WiFi keys by kind (the key ring), and the
  drops and deviation alerts counted per device here.
- **Events, counted where they happen**, only where that is cheap: the latency of every
  kernel batch (``TimedNft`` around ``Nft.apply``), of every DNS set fill and its
  elements (``TimedFiller`` around the DNS server's filler), MUD fetch errors by reason
  (``counting_fetch``), dropped packets and alerts (``count_drop``, ``count_alert``),
  hostapd's key decisions.

Device labels are MACs (a device the daemon no longer enforces keeps its short device
id); their number is bounded by ``MAX_DEVICES``. The endpoint listens only on loopback
or the gateway's LAN address (the configuration refuses anything else): it names every
device of the home.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as CounterMetric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mudguard.enforce.bytecode import SetLayout
from mudguard.enforce.nft import Nft, NftCommand
from mudguard.errors import MudguardError
from mudguard.policy import LifecycleState, device_id

log = logging.getLogger(__name__)

MAX_DEVICES = 4096
KERNEL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0)
FILL_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                0.1)
DNS_COUNTERS = {  # DnsGuard counter -> (metric name, help)
    "queries": ("mudguard_dns_queries", "DNS queries from LAN devices."),
    "answered": ("mudguard_dns_answers", "Answers sent to LAN devices (after any set fill)."),
    "forwarded": ("mudguard_dns_upstream_queries", "Queries forwarded to the upstream."),
    "cache_hits": ("mudguard_dns_cache_hits", "Queries answered from the guard's cache."),
    "fills": ("mudguard_dns_set_fills", "Answers that put addresses into a device's sets."),
    "fill_failures": ("mudguard_dns_set_fill_failures",
                      "Set fills the kernel refused (answered SERVFAIL)."),
    "servfail": ("mudguard_dns_servfail", "SERVFAIL answers (upstream timeout or failure)."),
    "formerr": ("mudguard_dns_formerr", "FORMERR answers to malformed queries."),
    "dropped": ("mudguard_dns_dropped", "Packets dropped unanswered (malformed, forged)."),
    "rejected_addresses": ("mudguard_dns_rejected_addresses",
                           "Answer addresses not inserted (LAN, gateway or private)."),
}


class DeviceCounts(Protocol):
    """The store's count of devices by state."""

    def count_by_state(self) -> dict[LifecycleState, int]:
        """How many devices are in each state."""


class InstalledRecord(Protocol):
    """The enforcer's record of what it installed."""

    def installed(self) -> Mapping[str, Any]:
        """By MAC."""


class KeyRecords(Protocol):
    """The WiFi key ring."""

    def records(self) -> Sequence[Any]:
        """Every key record (each with ``entry.is_onboarding``)."""


class MetricsError(MudguardError):
    """The metrics endpoint cannot listen where it is configured to."""

    key = "metrics_failed"


class GatewayMetrics:
    """Every metric of one daemon, in its own registry (never the process-wide one).

    ``watch(...)`` names the state to read at scrape time; the ``count_*`` and
    ``counting_*`` helpers are the hooks the composition root wires in.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.kernel_update_seconds = Histogram(
            "mudguard_kernel_update_seconds",
            "Time to apply one nftables batch (a device's update, a fill, the home).",
            buckets=KERNEL_BUCKETS, registry=self.registry)
        self.kernel_update_failures = CounterMetric(
            "mudguard_kernel_update_failures", "nftables batches the kernel refused.",
            registry=self.registry)
        self.dns_fill_seconds = Histogram(
            "mudguard_dns_set_fill_seconds",
            "Time the DNS guard holds an answer to put its addresses into the sets.",
            buckets=FILL_BUCKETS, registry=self.registry)
        self.dns_elements_inserted = CounterMetric(
            "mudguard_dns_set_elements_inserted",
            "Set elements (device, address) the DNS guard inserted or refreshed.",
            registry=self.registry)
        self.fetch_errors = CounterMetric(
            "mudguard_mud_fetch_errors", "MUD file and signature fetches that failed, by why.",
            ["reason"], registry=self.registry)
        self.key_decisions = CounterMetric(
            "mudguard_wifi_key_decisions", "hostapd key events judged by the binding rule.",
            ["outcome"], registry=self.registry)
        self._lock = threading.Lock()
        self._drops: Counter[str] = Counter()
        self._alerts: Counter[tuple[str, str]] = Counter()
        self.collector = StateCollector(self)
        self.registry.register(self.collector)

    def watch(self, *, store: DeviceCounts | None = None,
              enforcer: InstalledRecord | None = None, guard: Any = None,
              keys: KeyRecords | None = None) -> None:
        """Name the state the collector reads at each scrape (None: not exported)."""
        self.collector.store = store
        self.collector.enforcer = enforcer
        self.collector.guard = guard
        self.collector.keys = keys

    # -- hooks ----------------------------------------------------------------------------

    def count_drop(self, event: Any) -> None:
        """One packet a device's policy dropped (``FlowEvent``; the event loop)."""
        with self._lock:
            if event.device_id in self._drops or len(self._drops) < MAX_DEVICES:
                self._drops[event.device_id] += 1

    def count_alert(self, alert: Any) -> None:
        """One deviation alert (``Alert``: a scan, a flood, a deviation)."""
        key = (alert.device_id, str(alert.kind))
        with self._lock:
            if key in self._alerts or len(self._alerts) < MAX_DEVICES:
                self._alerts[key] += 1

    def counting_drops(self, inner: Callable[[Any], None]) -> Callable[[Any], None]:
        """``inner`` (the watcher's ``on_event``), counting each drop first."""
        def on_event(event: Any) -> None:
            self.count_drop(event)
            inner(event)
        return on_event

    def counting_alerts(self, inner: Callable[[Any], None]) -> Callable[[Any], None]:
        """``inner`` (the watcher's ``on_alert``), counting each alert first."""
        def on_alert(alert: Any) -> None:
            self.count_alert(alert)
            inner(alert)
        return on_alert

    def counting_fetch(self, inner: Callable[[str], bytes]) -> Callable[[str], bytes]:
        """``inner`` (the MUD fetcher), counting its failures by ``FetchError.key``."""
        def fetch(url: str) -> bytes:
            try:
                return inner(url)
            except Exception as exc:
                self.fetch_errors.labels(reason=str(getattr(exc, "key", "other"))).inc()
                raise
        return fetch

    def counting_decisions(self, inner: Callable[[Any, Any], None] | None
                           ) -> Callable[[Any, Any], None]:
        """``inner`` (``WifiKeys.on_decision``), counting each decision by its outcome."""
        def on_decision(event: Any, decision: Any) -> None:
            self.key_decisions.labels(outcome=str(decision.outcome.value)).inc()
            if inner is not None:
                inner(event, decision)
        return on_decision

    def drops(self) -> dict[str, int]:
        """Dropped packets so far, by device id (a copy)."""
        with self._lock:
            return dict(self._drops)

    def alerts(self) -> dict[tuple[str, str], int]:
        """Deviation alerts so far, by (device id, kind) (a copy)."""
        with self._lock:
            return dict(self._alerts)


class StateCollector(Collector):
    """Reads the gateway's state at scrape time (never the kernel's ruleset)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.store: DeviceCounts | None = None
        self.enforcer: InstalledRecord | None = None
        self.guard: Any = None
        self.keys: KeyRecords | None = None

    def collect(self) -> Iterator[Metric]:
        """Every state family; a source that fails is logged and left out of this scrape."""
        for part in (self._devices, self._enforced, self._dns, self._keys, self._watch):
            try:
                yield from part()
            except Exception:
                log.exception("metrics: %s failed", part.__name__)

    def _devices(self) -> Iterator[Metric]:
        if self.store is None:
            return
        counts = self.store.count_by_state()
        family = GaugeMetricFamily("mudguard_devices", "Devices by lifecycle state.",
                                   labels=["state"])
        for state in LifecycleState:
            family.add_metric([state.value], counts.get(state, 0))
        yield family

    def _installed(self) -> Mapping[str, Any]:
        """The enforcer's record; copied again if the worker changed it mid-copy."""
        assert self.enforcer is not None
        for _ in range(3):
            try:
                return self.enforcer.installed()
            except RuntimeError:  # "dictionary changed size during iteration"
                continue
        return self.enforcer.installed()

    def _enforced(self) -> Iterator[Metric]:
        if self.enforcer is None:
            return
        installed = self._installed()
        yield GaugeMetricFamily("mudguard_devices_enforced",
                                "Devices whose rules are in the kernel.", value=len(installed))
        rule_count = getattr(self.enforcer, "rule_count", None)
        if rule_count is not None:  # policy as data: the fixed ruleset and its elements
            yield GaugeMetricFamily("mudguard_rules_installed",
                                    "nftables rules: the fixed ruleset's and the fallback "
                                    "devices' chains' (the enforcer's record).",
                                    value=rule_count())
            yield GaugeMetricFamily("mudguard_elements_installed",
                                    "Set and map elements of the devices and their profiles "
                                    "(the enforcer's record; DNS answers not counted).",
                                    value=self.enforcer.element_count())  # type: ignore[attr-defined]
            yield GaugeMetricFamily("mudguard_dns_sets_installed",
                                    "DNS-filled nftables sets the devices' rules use.",
                                    value=self.enforcer.dns_set_count())  # type: ignore[attr-defined]
            return
        yield GaugeMetricFamily("mudguard_rules_installed",
                                "nftables rules in the devices' chains (the enforcer's record).",
                                value=sum(sum(r.rule_counts) for r in installed.values()))
        sets = {(r.table, name) for r in installed.values() for name in r.dns_sets}
        yield GaugeMetricFamily("mudguard_dns_sets_installed",
                                "DNS-filled nftables sets the devices' rules use.",
                                value=len(sets))

    def _dns(self) -> Iterator[Metric]:
        if self.guard is None:
            return
        counters = self.guard.counters
        for field, (name, help_text) in DNS_COUNTERS.items():
            yield CounterMetricFamily(name, help_text, value=int(getattr(counters, field)))

    def _keys(self) -> Iterator[Metric]:
        if self.keys is None:
            return
        records = self.keys.records()
        onboarding = sum(1 for r in records if r.entry.is_onboarding)
        family = GaugeMetricFamily("mudguard_wifi_keys",
                                   "Per-device WiFi keys hostapd admits, by kind.",
                                   labels=["kind"])
        family.add_metric(["bound"], len(records) - onboarding)
        family.add_metric(["onboarding"], onboarding)
        yield family

    def _watch(self) -> Iterator[Metric]:
        macs = {}
        if self.enforcer is not None:
            macs = {device_id(mac): mac for mac in self._installed()}
        drops = CounterMetricFamily("mudguard_dropped_packets",
                                    "Packets a device's policy dropped, by device.",
                                    labels=["device"])
        for dev_id, count in sorted(self.metrics.drops().items()):
            drops.add_metric([macs.get(dev_id, dev_id)], count)
        yield drops
        alerts = CounterMetricFamily("mudguard_deviation_alerts",
                                     "Deviation alerts (each quarantines), by device and kind.",
                                     labels=["device", "kind"])
        for (dev_id, kind), count in sorted(self.metrics.alerts().items()):
            alerts.add_metric([macs.get(dev_id, dev_id), kind], count)
        yield alerts


class TimedNft(Nft):
    """``Nft`` that times every applied batch into ``mudguard_kernel_update_seconds``."""

    def __init__(self, metrics: GatewayMetrics | None = None, *, netlink: bool = True) -> None:
        """``metrics`` may be set later (``Nft.in_namespace`` builds with none)."""
        super().__init__(netlink=netlink)
        self.metrics = metrics

    def apply(self, commands: Sequence[NftCommand], *, check_only: bool = False,
              set_types: dict[str, SetLayout] | None = None) -> None:
        """``Nft.apply``, timed (checks and empty batches are not counted)."""
        metrics = self.metrics
        if metrics is None or check_only or not commands:
            super().apply(commands, check_only=check_only, set_types=set_types)
            return
        start = time.perf_counter()
        try:
            super().apply(commands, set_types=set_types)
        except Exception:
            metrics.kernel_update_failures.inc()
            raise
        metrics.kernel_update_seconds.observe(time.perf_counter() - start)


class TimedFiller:
    """A DNS set filler that times each fill and counts its elements (same interface)."""

    def __init__(self, inner: Any, metrics: GatewayMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.inline_ok = bool(getattr(inner, "inline_ok", False))

    def fill(self, commands: Sequence[Any]) -> None:
        """Apply through the inner filler (raises as it does); time and count it."""
        start = time.perf_counter()
        self.inner.fill(commands)
        self.metrics.dns_fill_seconds.observe(time.perf_counter() - start)
        self.metrics.dns_elements_inserted.inc(sum(len(c.elements) for c in commands))


class MetricsServer:
    """The HTTP endpoint (prometheus-client's WSGI server in its own thread)."""

    def __init__(self, registry: CollectorRegistry, address: str, port: int) -> None:
        self.registry = registry
        self.address = address
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def bound_port(self) -> int:
        """The port it listens on (the configured one, or the kernel's pick for 0)."""
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    async def start(self) -> None:
        """Bind and serve; ``MetricsError`` if the address is taken or not ours."""
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(self.port, self.address,
                                                           registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"metrics: cannot listen on {self.address} port {self.port}: "
                               f"{exc.strerror or exc}; change metrics.listen") from exc
        log.info("metrics on http://%s:%d/metrics", self.address, self.bound_port)

    async def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        server, self._server = self._server, None
        await asyncio.get_running_loop().run_in_executor(None, server.shutdown)
        server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
