"""The metrics endpoint: scraped over HTTP on loopback and read back with prometheus-client's
own parsers (Prometheus text and OpenMetrics), from a real store, DNS guard and key ring."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import dns.message
import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from mudguard.daemon.config import ConfigError, parse_config
from mudguard.daemon.metrics import GatewayMetrics, MetricsError, MetricsServer
from mudguard.dns.core import DnsGuard, GuardConfig
from mudguard.keys.core import ONBOARDING_MAC, KeyRecord, PskEntry
from mudguard.keys.ring import KeyRing
from mudguard.mud.fetch import FetchError
from mudguard.policy import LifecycleState, device_id
from mudguard.store import Device, Store
from mudguard.watch import Alert, FlowEvent
from mudguard.watch.nflog import Direction

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
PLUG, CAMERA = "02:00:5e:00:53:01", "02:00:5e:00:53:02"


def _scrape(port: int, accept: str = "text/plain") -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=5) as response:  # loopback only
        return str(response.read().decode())


def _samples(text: str, parser=text_string_to_metric_families) -> dict[tuple[str, tuple], float]:  # type: ignore[no-untyped-def]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parser(text) for s in family.samples}


@pytest.fixture
def metrics(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "mudguard.db")
    store.save_device(Device(mac=PLUG, state=LifecycleState.PROFILED, first_seen=NOW))
    store.save_device(Device(mac=CAMERA, state=LifecycleState.QUARANTINED, first_seen=NOW))
    store.save_device(Device(mac="02:00:5e:00:53:03", state=LifecycleState.PROFILED,
                             first_seen=NOW))
    ring = KeyRing(tmp_path / "keys.db")
    ring.add(KeyRecord(entry=PskEntry(keyid="k1", mac=PLUG, passphrase="p" * 12, vlan=0),
                       device=PLUG, created_at=1.0))
    ring.add(KeyRecord(entry=PskEntry(keyid="k2", mac=ONBOARDING_MAC, passphrase="q" * 12,
                                      vlan=0), device="new", created_at=2.0))
    guard = DnsGuard(GuardConfig(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",)))
    for name in ("a.example.com", "b.example.com"):
        guard.handle_query(dns.message.make_query(name, "A").to_wire(), ("192.0.2.10", 5353), 1.0)
    gm = GatewayMetrics()
    gm.watch(store=store, guard=guard, keys=ring)
    yield gm
    store.close()
    ring.close()


def test_scrape_parses_with_prometheus_client_and_counts_the_home(metrics: GatewayMetrics) -> None:
    for _ in range(3):
        metrics.count_drop(FlowEvent(device_id=device_id(CAMERA), direction=Direction.FROM_DEVICE,
                                     family=4, src="192.0.2.11", dst="203.0.113.5", protocol=6))
    metrics.count_alert(Alert(device_id=device_id(CAMERA), kind="scan", reason="a scan", at=1.0,
                              evidence=()))

    def refused(url: str) -> bytes:
        raise FetchError(key="tls_failed", url=url, reason="bad certificate")

    with pytest.raises(FetchError):
        metrics.counting_fetch(refused)("https://mud.example.com/x.json")
    metrics.kernel_update_seconds.observe(0.004)

    server = MetricsServer(metrics.registry, "127.0.0.1", 0)
    asyncio.run(server.start())
    try:
        text = _scrape(server.bound_port)
        openmetrics = _scrape(server.bound_port, "application/openmetrics-text; version=1.0.0")
    finally:
        asyncio.run(server.stop())
    got = _samples(text)
    assert got[("mudguard_devices", (("state", "profiled"),))] == 2
    assert got[("mudguard_devices", (("state", "quarantined"),))] == 1
    assert got[("mudguard_devices", (("state", "new"),))] == 0
    assert got[("mudguard_wifi_keys", (("kind", "bound"),))] == 1
    assert got[("mudguard_wifi_keys", (("kind", "onboarding"),))] == 1
    assert got[("mudguard_dns_queries_total", ())] == 2
    assert got[("mudguard_dns_upstream_queries_total", ())] == 2
    # Not enforced here: the label is the device id (the daemon names it by MAC).
    assert got[("mudguard_dropped_packets_total", (("device", device_id(CAMERA)),))] == 3
    assert got[("mudguard_deviation_alerts_total",
                (("device", device_id(CAMERA)), ("kind", "scan")))] == 1
    assert got[("mudguard_mud_fetch_errors_total", (("reason", "tls_failed"),))] == 1
    assert got[("mudguard_kernel_update_seconds_count", ())] == 1
    assert got[("mudguard_kernel_update_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("mudguard_kernel_update_seconds_bucket", (("le", "0.0025"),))] == 0
    assert "# EOF" in openmetrics
    strict = _samples(openmetrics, openmetrics_families)
    assert strict[("mudguard_devices", (("state", "profiled"),))] == 2
    assert strict[("mudguard_dns_queries_total", ())] == 2


def test_a_failing_source_leaves_the_others_in_the_scrape(metrics: GatewayMetrics,
                                                           tmp_path: Path) -> None:
    broken = Store(tmp_path / "other.db")
    broken.close()  # every query now fails
    metrics.collector.store = broken
    got = _samples(generate_latest(metrics.registry).decode())
    assert ("mudguard_devices", (("state", "profiled"),)) not in got
    assert got[("mudguard_dns_queries_total", ())] == 2


GATEWAY = """
[gateway]
lan_interface = "br-lan"
lan_prefixes = ["192.0.2.0/24"]
addresses = ["192.0.2.1"]
"""


@pytest.mark.parametrize(("listen", "expected"), [
    ("127.0.0.1:9469", ("127.0.0.1", 9469)),
    ("[::1]:9469", ("::1", 9469)),
    ("192.0.2.1:9100", ("192.0.2.1", 9100)),
])
def test_metrics_listen_on_loopback_or_the_lan_address(listen: str, expected: tuple) -> None:  # type: ignore[type-arg]
    config = parse_config(GATEWAY + f'[metrics]\nlisten = "{listen}"\n')
    assert config.metrics_listen == expected


def test_metrics_are_off_by_default() -> None:
    assert parse_config(GATEWAY).metrics_listen is None


@pytest.mark.parametrize(("listen", "complaint"), [
    ("0.0.0.0:9469", "neither a loopback address nor one of gateway.addresses"),
    ("[::]:9469", "neither a loopback address"),
    ("203.0.113.9:9469", "neither a loopback address"),
    ("127.0.0.1", "is not ADDRESS:PORT"),
    ("127.0.0.1:70000", "is not ADDRESS:PORT"),
    ("localhost:9469", "is not ADDRESS:PORT"),
])
def test_metrics_listen_refuses_other_addresses(listen: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_config(GATEWAY + f'[metrics]\nlisten = "{listen}"\n')


def test_the_grafana_dashboard_names_only_metrics_the_endpoint_exports(
        metrics: GatewayMetrics) -> None:
    import json
    import re

    metrics.count_drop(FlowEvent(device_id="d", direction=Direction.FROM_DEVICE, family=4,
                                 src="192.0.2.11", dst="203.0.113.5", protocol=6))
    metrics.count_alert(Alert(device_id="d", kind="scan", reason="r", at=1.0, evidence=()))
    metrics.fetch_errors.labels(reason="x").inc()
    metrics.key_decisions.labels(outcome="bound").inc()
    from mudguard.enforce import Enforcer, Nft
    from mudguard.policy import HomeContext

    metrics.collector.enforcer = Enforcer(Nft(), HomeContext(  # nothing applied: no device
        lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",),
        lan_interface="br-lan", wan_interface=""))
    exported = set(_samples(generate_latest(metrics.registry).decode()))
    names = {name for name, _labels in exported}
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" /
                            "grafana-mudguard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bmudguard_[a-z0-9_]+", e)}
    assert used and used <= names, used - names


def test_a_taken_port_is_a_clear_error(metrics: GatewayMetrics) -> None:
    first = MetricsServer(metrics.registry, "127.0.0.1", 0)
    asyncio.run(first.start())
    try:
        second = MetricsServer(metrics.registry, "127.0.0.1", first.bound_port)
        with pytest.raises(MetricsError, match=f"cannot listen on 127.0.0.1 port "
                           f"{first.bound_port}: .*change metrics.listen"):
            asyncio.run(second.start())
    finally:
        asyncio.run(first.stop())
