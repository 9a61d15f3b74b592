"""The background SBOM check: what it asks, how often (cache-validity), what it keeps.

The cloud case fetches from the real loopback HTTPS server of the fetch tests; the
device case asks the real device fetcher for a loopback "device", which it refuses
before any packet (a device's success is in tests/netns/test_sbom_local.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mudguard.devices import Device
from mudguard.devices.transparency import TransparencyChecker
from mudguard.mud import MudFile, parse_mud
from mudguard.mud.fetch import FetchConfig, fetch_local_sbom, fetch_transparency_bytes
from mudguard.policy import LifecycleState
from tests.unit.test_mud_fetch import NAME, Server, config
from tests.unit.test_mud_parse import base
from tests.unit.test_transparency_fetch import SBOM
from tests.unit.test_transparency_fetch import server as server

MAC = "00:11:22:33:44:55"
KEY = "ietf-mud-transparency:transparency"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def mud_with(container: object, validity: int = 24) -> MudFile:
    doc = base()
    doc["ietf-mud:mud"].update({"extensions": ["transparency"], KEY: container,
                                "cache-validity": validity})
    mud = parse_mud(doc).mud
    assert mud is not None
    return mud


def device_for(mud: MudFile, ipv4: tuple[str, ...] = ("192.0.2.10",)) -> Device:
    return Device(mac=MAC, state=LifecycleState.PROFILED, mud_url=mud.mud_url, ipv4=ipv4)


@pytest.fixture
def checker(server: Server) -> Iterator[tuple[TransparencyChecker, Clock, list[Any]]]:
    clock = Clock()
    asked: list[Any] = []
    cfg = config(server)

    def cloud(url: str) -> bytes:
        asked.append(url)
        return fetch_transparency_bytes(url, config=cfg)

    def device(address: Any, scheme: str) -> bytes:
        asked.append((str(address), scheme))
        return fetch_local_sbom(address, scheme, config=FetchConfig(connect_timeout=0.5,
                                                                    total_timeout=1.0),
                                port=9)

    yield TransparencyChecker(fetch_cloud=cloud, fetch_device=device, clock=clock), clock, asked


def test_a_cloud_sbom_is_retrieved_once_per_cache_validity(
        checker: tuple[TransparencyChecker, Clock, list[Any]], server: Server) -> None:
    check, clock, asked = checker
    url = server.url("/sbom.spdx.json")
    mud = mud_with({"sboms": [{"version-info": "1", "sbom-url": url}]}, validity=24)
    device = device_for(mud)
    assert check.due(device, mud)
    outcome = check.check(device, mud)
    assert outcome is not None and outcome.retrieved and outcome.error is None
    assert outcome.sha256 == hashlib.sha256(SBOM).hexdigest() and outcome.size == len(SBOM)
    assert check.result(device) == outcome and asked == [url]
    clock.now += timedelta(hours=23)
    assert not check.due(device, mud)
    clock.now += timedelta(hours=1)
    assert check.due(device, mud)


def test_a_failure_is_kept_with_its_reason(
        checker: tuple[TransparencyChecker, Clock, list[Any]], server: Server) -> None:
    check, _clock, _asked = checker
    mud = mud_with({"sboms": [{"version-info": "1", "sbom-url": server.url("/missing")}]})
    outcome = check.check(device_for(mud), mud)
    assert outcome is not None and not outcome.retrieved
    assert outcome.error is not None and "404" in outcome.error and outcome.sha256 is None


def test_the_device_itself_is_asked_at_its_own_address(
        checker: tuple[TransparencyChecker, Clock, list[Any]]) -> None:
    check, _clock, asked = checker
    mud = mud_with({"sbom-local-well-known": "https"})
    device = device_for(mud, ipv4=("127.0.0.1",))
    outcome = check.check(device, mud)
    assert asked == [("127.0.0.1", "https")]
    assert outcome is not None and not outcome.retrieved
    assert outcome.source == "https://127.0.0.1/.well-known/sbom"
    assert outcome.error is not None and "not a device's address" in outcome.error


def test_nothing_to_ask_is_never_due(
        checker: tuple[TransparencyChecker, Clock, list[Any]]) -> None:
    check, _clock, asked = checker
    cases = [mud_with({"sbom-contact-uri": "tel:+1-415-555-1212"}),
             mud_with({"sboms": [{"version-info": "1", "sbom-url": f"http://{NAME}/s"}]}),
             mud_with({"vuln-url": ["https://a.example/v"]})]
    for mud in cases:
        assert not check.due(device_for(mud), mud)
        assert check.check(device_for(mud), mud) is None
    local = mud_with({"sbom-local-well-known": "http"})
    assert not check.due(device_for(local, ipv4=()), local)  # no address known yet
    assert asked == []


def test_an_outcome_is_for_one_mud_file(
        checker: tuple[TransparencyChecker, Clock, list[Any]], server: Server) -> None:
    check, _clock, _asked = checker
    mud = mud_with({"sboms": [{"version-info": "1", "sbom-url": server.url("/sbom.spdx.json")}]})
    check.check(device_for(mud), mud)
    moved = Device(mac=MAC, state=LifecycleState.PROFILED, mud_url="https://other.example/x")
    assert check.result(moved) is None


def test_a_device_being_asked_is_not_claimed_twice(
        checker: tuple[TransparencyChecker, Clock, list[Any]], server: Server) -> None:
    check, _clock, _asked = checker
    mud = mud_with({"sboms": [{"version-info": "1", "sbom-url": server.url("/sbom.spdx.json")}]})
    device = device_for(mud)
    assert check.claim(device, mud)
    assert not check.claim(device, mud)  # queued, not yet asked
    check.check(device, mud)
    assert not check.claim(device, mud)  # asked: fresh for its cache-validity
