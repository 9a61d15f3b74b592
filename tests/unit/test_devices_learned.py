"""The owner approves a learned profile (issue #6): ``DeviceService.apply_learned``, the
``apply-profile`` request and ``mudguard device apply-profile``, over a real SQLite store
and a profile really learned (``profile learn``) from a corpus capture."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.daemon.control import MAX_REQUEST, ControlServer
from mudguard.devices import CachedMud, EventKind, MudSource
from mudguard.devices import SignatureStatus as Sig
from mudguard.devices.requests import RequestError, handle_request
from mudguard.devices.service import (
    ApprovalError,
    DeviceNotFound,
    DeviceService,
    ProfileError,
)
from mudguard.mud import MAX_MUD_BYTES
from mudguard.policy import LifecycleState as S
from mudguard.store import Store

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MAC = "5c:cf:7f:07:ae:fb"  # the SmarterCoffee machine of the corpus captures
OTHER = "02:00:5e:00:53:02"
runner = CliRunner()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def proposal(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MUD file learned by ``profile learn`` from a real SmarterCoffee capture."""
    out = tmp_path_factory.mktemp("learned") / "coffee.json"
    capture = corpus / "pcap" / "smartercoffee" / "Setup-A-1-STA.pcap"
    result = runner.invoke(app, ["profile", "learn", str(capture), "--device", MAC,
                                 "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path: Path, clock: Clock) -> Iterator[DeviceService]:
    store = Store(tmp_path / "m.db")
    service = DeviceService(store=store, clock=clock)
    service.observe(mac=MAC, ip="192.0.2.10", hostname="coffee")
    yield service
    store.close()


def kinds(svc: DeviceService, mac: str = MAC) -> list[EventKind]:
    return [e.kind for e in svc.store.list_events(mac)]


def maker_file(corpus: Path) -> tuple[str, bytes]:
    data = (corpus / "mud/rfc/mudmaker-cloud-service.json").read_bytes()
    return json.loads(data)["ietf-mud:mud"]["mud-url"], data


def test_learned_profile_is_applied_and_owner_approved(svc: DeviceService,
                                                        proposal: Path) -> None:
    before = svc.device(MAC)
    assert before.state is S.DEFAULT
    data = proposal.read_bytes()
    url = json.loads(data)["ietf-mud:mud"]["mud-url"]
    d = svc.apply_learned(MAC, data)
    assert d.state is S.PROFILED and d.mud_url == url
    assert d.mud_source is MudSource.LEARNED and d.signature_status is Sig.OWNER_APPROVED
    assert d.signer is None and "approved by the owner" in d.reasons[0]
    assert svc.store.get_device(MAC) == d
    mud = svc.cached_mud(d)  # what the daemon enforces at restore
    assert mud is not None and mud.mud_url == url
    applied = [e for e in svc.store.list_events(MAC) if e.kind is EventKind.PROFILE_APPLIED]
    assert [e.details["source"] for e in applied] == ["learned"]
    assert applied[0].details["approved_by"] == "owner"
    assert d.as_dict()["signature_status"] == "owner_approved"
    assert d.as_dict()["mud_source"] == "learned"


@pytest.mark.parametrize("data, why", [
    (b"not json at all", "invalid"),
    (b'{"ietf-mud:mud": {"mud-version": 1}}', "invalid"),
    (b"[]", "invalid"),
    (b"\xff\xfe\x00", "invalid"),
])
def test_invalid_proposal_is_refused_and_changes_nothing(svc: DeviceService, data: bytes,
                                                         why: str) -> None:
    before, events = svc.device(MAC), len(svc.store.list_events())
    with pytest.raises(ProfileError, match=why) as info:
        svc.apply_learned(MAC, data)
    assert "nothing changed" in str(info.value)
    assert svc.device(MAC) == before and len(svc.store.list_events()) == events


def test_http_mud_url_in_proposal_is_refused(svc: DeviceService, proposal: Path) -> None:
    doc = json.loads(proposal.read_bytes())
    doc["ietf-mud:mud"]["mud-url"] = "http://learned.example.com/coffee.json"
    before = svc.device(MAC)
    with pytest.raises(ProfileError):
        svc.apply_learned(MAC, json.dumps(doc).encode())
    assert svc.device(MAC) == before


def test_another_devices_mud_url_is_refused(svc: DeviceService, corpus: Path) -> None:
    url, data = maker_file(corpus)
    svc.store.put_mud(CachedMud(url=url, data=data, fetched_at=NOW))
    other = svc.observe(mac=OTHER, ip="192.0.2.11", mud_url=url, source=MudSource.DHCP4)
    assert other.state is S.PROFILED
    before = svc.device(MAC)
    # The owner's learned file may not replace the cache another device's rules come from.
    with pytest.raises(ProfileError, match="another device"):
        svc.apply_learned(MAC, data)
    assert svc.device(MAC) == before
    assert svc.cached_mud(svc.device(OTHER)) is not None


def test_unknown_device_is_refused(svc: DeviceService, proposal: Path) -> None:
    with pytest.raises(DeviceNotFound):
        svc.apply_learned("02:00:5e:00:53:99", proposal.read_bytes())


def test_announced_url_waits_for_the_owner(svc: DeviceService, proposal: Path,
                                           corpus: Path) -> None:
    learned = svc.apply_learned(MAC, proposal.read_bytes())
    url, data = maker_file(corpus)
    svc.store.put_mud(CachedMud(url=url, data=data, fetched_at=NOW))
    # Within the first-URL grace and from the device itself: still held, never silent.
    held = svc.observe(mac=MAC, ip="192.0.2.10", mud_url=url, source=MudSource.DHCP4)
    assert held.pending_mud_url == url and held.mud_url == learned.mud_url
    assert held.mud_source is MudSource.LEARNED and held.profile_hash == learned.profile_hash
    assert kinds(svc)[-1] is EventKind.URL_CHANGED
    approved = svc.approve_url(MAC)
    assert approved.mud_url == url and approved.mud_source is MudSource.DHCP4
    assert approved.signature_status is Sig.UNSIGNED and approved.state is S.PROFILED
    assert approved.profile_hash != learned.profile_hash


def test_refresh_never_fetches_a_learned_profile(tmp_path: Path, clock: Clock,
                                                 proposal: Path) -> None:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        raise OSError("no network in this test")

    with Store(tmp_path / "m.db") as store:
        svc = DeviceService(store=store, clock=clock, fetch=fetch)
        svc.observe(mac=MAC, ip="192.0.2.10")
        applied = svc.apply_learned(MAC, proposal.read_bytes())
        clock.now = NOW + timedelta(days=30)  # far past its cache-validity
        report = svc.maintain()
        assert [d.mac for d in report.refreshed] == [MAC]
        assert fetched == []
        after = svc.device(MAC)
        assert after.profile_hash == applied.profile_hash and after.state is S.PROFILED
        assert EventKind.FETCH_FAILED not in kinds(svc)
        assert applied.mud_url is not None
        cached = store.get_mud(applied.mud_url)
        assert cached is not None and cached.fresh(clock.now)  # renewed, not refetched
        assert svc.maintain().refreshed == []


def test_reapplying_replaces_the_old_proposal(svc: DeviceService, proposal: Path) -> None:
    first = svc.apply_learned(MAC, proposal.read_bytes())
    doc = json.loads(proposal.read_bytes())
    doc["ietf-mud:mud"]["mud-url"] = "https://learned.example.com/coffee-v2.json"
    second = svc.apply_learned(MAC, json.dumps(doc).encode())
    assert second.mud_url != first.mud_url and EventKind.PROFILE_CHANGED in kinds(svc)
    assert first.mud_url is not None and svc.store.get_mud(first.mud_url) is None
    assert svc.cached_mud(second) is not None


def test_forget_removes_the_learned_profile(svc: DeviceService, proposal: Path) -> None:
    d = svc.apply_learned(MAC, proposal.read_bytes())
    assert d.mud_url is not None
    svc.forget(MAC)
    assert svc.store.get_device(MAC) is None and svc.store.get_mud(d.mud_url) is None


def test_request_apply_profile(svc: DeviceService, proposal: Path) -> None:
    reply = handle_request(svc, {"op": "apply-profile", "mac": MAC,
                                 "mud": proposal.read_text()})
    assert reply["device"]["mud_source"] == "learned"
    assert reply["device"]["signature_status"] == "owner_approved"


@pytest.mark.parametrize("mud", [None, "", 5, ["x"], "x" * (2 << 20), "\ud800"])
def test_request_apply_profile_bad_field(svc: DeviceService, mud: object) -> None:
    before = svc.device(MAC)
    with pytest.raises(RequestError):
        handle_request(svc, {"op": "apply-profile", "mac": MAC, "mud": mud})
    assert svc.device(MAC) == before


def test_cli_apply_profile_on_the_database(tmp_path: Path, proposal: Path) -> None:
    db = tmp_path / "state" / "mudguard.db"
    with Store(db) as store:
        DeviceService(store=store).observe(mac=MAC, ip="192.0.2.10")
    result = runner.invoke(app, ["device", "apply-profile", MAC, str(proposal), "--json",
                                 "--db", str(db)])
    assert result.exit_code == 0, result.output
    device = json.loads(result.stdout)["device"]
    assert device["state"] == "profiled" and device["mud_source"] == "learned"
    assert "not running" in result.stderr  # recorded; enforced when the daemon starts
    with Store(db) as store:
        stored = store.get_device(MAC)
        assert stored is not None and DeviceService(store=store).cached_mud(stored)


@pytest.mark.parametrize("content, key", [
    (b"{not json", "bad_profile"),
    (b'{"ietf-mud:mud": {}}', "bad_profile"),
    (None, "io"),
])
def test_cli_apply_profile_refuses_bad_files(tmp_path: Path, content: bytes | None,
                                             key: str) -> None:
    db = tmp_path / "state" / "mudguard.db"
    with Store(db) as store:
        before = DeviceService(store=store).observe(mac=MAC, ip="192.0.2.10")
    path = tmp_path / "proposal.json"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(app, ["device", "apply-profile", MAC, str(path), "--db", str(db)])
    assert result.exit_code == 1 and f"({key})" in result.output, result.output
    with Store(db) as store:
        assert store.get_device(MAC) == before


class Daemon:
    """The daemon's real control server on ``control.sock`` beside the database, on an
    event loop in a thread (service calls run in worker threads, as in the daemon)."""

    def __init__(self, db: Path) -> None:
        self.store = Store(db)
        self.service = DeviceService(store=self.store)
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(db.parent / "control.sock", self.service,
                                    lambda fn: asyncio.to_thread(fn))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.store.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    db = tmp_path / "state" / "mudguard.db"
    db.parent.mkdir()
    running = Daemon(db)
    running.service.observe(mac=MAC, ip="192.0.2.10")
    yield running
    running.close()


def test_cli_apply_profile_through_the_daemon(daemon: Daemon, proposal: Path) -> None:
    db = daemon.store.path
    result = runner.invoke(app, ["device", "apply-profile", MAC, str(proposal), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "owner_approved" in result.output and "not running" not in result.output
    assert daemon.service.device(MAC).mud_source is MudSource.LEARNED


def test_cli_apply_profile_of_20_kib_goes_through_the_daemon(daemon: Daemon, proposal: Path,
                                                              tmp_path: Path) -> None:
    doc = json.loads(proposal.read_bytes())
    acl = doc["ietf-access-control-list:acls"]["acl"][0]
    first = acl["aces"]["ace"][0]
    copies = [{**first, "name": f"copy-{i}"} for i in range(200)]
    acl["aces"]["ace"] = [*acl["aces"]["ace"], *copies]  # far above the old 16 KiB line
    larger = tmp_path / "larger.json"
    larger.write_text(json.dumps(doc))
    result = runner.invoke(app, ["device", "apply-profile", MAC, str(larger),
                                 "--db", str(daemon.store.path)])
    assert result.exit_code == 0, result.output
    assert daemon.service.device(MAC).signature_status is Sig.OWNER_APPROVED


def test_cli_apply_profile_larger_than_a_mud_file_is_refused(daemon: Daemon, proposal: Path,
                                                              tmp_path: Path) -> None:
    # Any request the daemon would refuse is already larger than a MUD file may be.
    assert MAX_REQUEST > 2 * MAX_MUD_BYTES
    doc = json.loads(proposal.read_bytes())
    doc["ietf-mud:mud"]["systeminfo"] = "x" * (MAX_MUD_BYTES + 1)
    big = tmp_path / "big.json"
    big.write_text(json.dumps(doc))
    before = daemon.service.device(MAC)
    result = runner.invoke(app, ["device", "apply-profile", MAC, str(big),
                                 "--db", str(daemon.store.path)])
    assert result.exit_code == 1 and "nothing changed" in result.output, result.output
    assert daemon.service.device(MAC) == before


def test_a_device_announcing_anothers_learned_url_does_not_get_it(svc: DeviceService,
                                                                  proposal: Path) -> None:
    victim = svc.apply_learned(MAC, proposal.read_bytes())
    assert victim.mud_url is not None
    # A new device (or one forging DHCP option 161) names the learned profile's URL.
    hostile = svc.observe(mac=OTHER, ip="192.0.2.11", mud_url=victim.mud_url,
                          source=MudSource.DHCP4)
    assert hostile.state is S.DEFAULT and hostile.profile_hash is None
    assert svc.cached_mud(hostile) is None
    assert EventKind.NO_MUD in kinds(svc, OTHER)
    # Forgetting it leaves the learned profile the other device's rules come from.
    svc.forget(OTHER)
    assert svc.cached_mud(svc.device(MAC)) is not None
    assert svc.device(MAC) == victim


def test_approving_anothers_learned_url_is_refused(svc: DeviceService, proposal: Path,
                                                   corpus: Path) -> None:
    victim = svc.apply_learned(MAC, proposal.read_bytes())
    assert victim.mud_url is not None
    url, data = maker_file(corpus)
    svc.store.put_mud(CachedMud(url=url, data=data, fetched_at=NOW))
    svc.observe(mac=OTHER, ip="192.0.2.11", mud_url=url, source=MudSource.DHCP4)
    held = svc.observe(mac=OTHER, mud_url=victim.mud_url, source=MudSource.LLDP)
    assert held.pending_mud_url == victim.mud_url
    with pytest.raises(ApprovalError, match="another device's learned profile"):
        svc.approve_url(OTHER)
    assert svc.device(OTHER) == held and svc.device(MAC) == victim
    assert svc.cached_mud(victim) is not None
