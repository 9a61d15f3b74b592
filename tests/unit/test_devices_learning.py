"""Learn, then lock (issue #16): the LEARNING/PROPOSED lifecycle, the bounded flow records
in a real SQLite store, the proposal from the profile learner, and the owner's choices
through requests and the CLI."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.devices import Device, EventKind, MudSource, Settings, learning
from mudguard.devices import SignatureStatus as Sig
from mudguard.devices import lifecycle as lc
from mudguard.devices.requests import handle_request
from mudguard.devices.service import DeviceService
from mudguard.errors import BugError
from mudguard.mud import describe_policy, parse_mud
from mudguard.policy import DeviceFacts, HomeContext, decide
from mudguard.policy import LifecycleState as S
from mudguard.store import Store
from mudguard.store._schema import MIGRATIONS, SCHEMA_VERSION

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MAC = "02:00:5e:00:53:01"
IP = "192.168.1.20"
SETTINGS = Settings()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


# -- the pure lifecycle -------------------------------------------------------------------

def test_no_mud_starts_learning_with_its_end_and_the_owner_is_told() -> None:
    until = NOW + timedelta(days=3)
    out = lc.start_learning(Device(mac=MAC), why="no MUD URL", until=until,
                            settings=SETTINGS, now=NOW)
    assert out.device.state is S.LEARNING
    assert "2026-11-29 10:00 UTC" in out.device.reasons[1]
    kinds = [n.kind for n in out.notices]
    assert kinds == [EventKind.NO_MUD, EventKind.STATE_CHANGED]
    assert out.notices[0].details["learning_until"] == until.isoformat()


@pytest.mark.parametrize("state", [S.QUARANTINED, S.TRUSTED, S.OUT_OF_SUPPORT])
def test_a_device_in_another_decided_state_is_not_learned(state: S) -> None:
    out = lc.start_learning(Device(mac=MAC, state=state), why="x", until=NOW, settings=SETTINGS,
                            now=NOW)
    assert out.device.state is state


def test_a_profiled_device_is_never_learned() -> None:
    device = Device(mac=MAC, state=S.PROFILED, profile_hash="ab")
    assert lc.start_learning(device, why="x", until=NOW, settings=SETTINGS,
                             now=NOW).device.state is S.PROFILED
    with pytest.raises(BugError):
        lc.transition(device, S.LEARNING, (), NOW)


def test_end_of_learning_proposes_or_falls_back_to_the_default() -> None:
    learning_device = Device(mac=MAC, state=S.LEARNING)
    proposed = lc.end_learning(learning_device, proposal_ready=True, settings=SETTINGS, now=NOW)
    assert proposed.device.state is S.PROPOSED and "--lock" in proposed.device.reasons[0]
    empty = lc.end_learning(learning_device, proposal_ready=False, settings=SETTINGS, now=NOW)
    assert empty.device.state is S.DEFAULT and "no traffic" in empty.device.reasons[0]
    with pytest.raises(lc.LifecycleError):
        lc.end_learning(Device(mac=MAC, state=S.DEFAULT), proposal_ready=True,
                        settings=SETTINGS, now=NOW)


def test_the_owner_keeps_the_default_from_learning_or_proposed_only() -> None:
    for state in (S.LEARNING, S.PROPOSED):
        kept = lc.keep_default(Device(mac=MAC, state=state), settings=SETTINGS, now=NOW)
        assert kept.device.state is S.DEFAULT and "kept" in kept.device.reasons[0]
    with pytest.raises(lc.LifecycleError):
        lc.keep_default(Device(mac=MAC, state=S.PROFILED), settings=SETTINGS, now=NOW)


def test_a_learning_device_that_announces_a_mud_url_takes_it() -> None:
    device = Device(mac=MAC, state=S.LEARNING, first_seen=NOW)
    out = lc.on_seen(device, mac=MAC, now=NOW, mud_url="https://mud.example.com/p.json")
    assert out.device.mud_url == "https://mud.example.com/p.json"


@pytest.mark.parametrize("state", [S.LEARNING, S.PROPOSED])
def test_learning_and_proposed_are_enforced_as_the_home_default(state: S) -> None:
    context = HomeContext(lan_prefixes=("192.168.1.0/24",), gateway_addresses=("192.168.1.1",))
    facts = DeviceFacts(mac=MAC, ipv4=(IP,), state=state)
    default = decide(replace(facts, state=S.DEFAULT), None, (), context, now=NOW)
    got = decide(facts, None, (), context, now=NOW)
    assert got.rules == default.rules and got.reasons == default.reasons


# -- the service over a real store --------------------------------------------------------

@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path: Path, clock: Clock) -> DeviceService:
    store = Store(tmp_path / "m.db")
    yield DeviceService(store=store, clock=clock, learns=True,
                        lan_prefixes=("192.168.1.0/24",), gateway_ips=("192.168.1.1",))
    store.close()


def flows(device: Device) -> list[learning.FlowRecord]:
    names = {"203.0.113.10": "cloud.example.com"}
    out = [learning.flow_record(device, family=4, src=IP, dst="203.0.113.10", protocol=6,
                                dst_port=443, name_of=names.get),
           learning.flow_record(device, family=4, src=IP, dst="192.168.1.1", protocol=17,
                                dst_port=53, name_of=names.get),
           learning.flow_record(device, family=4, src="192.168.1.30", dst=IP, protocol=6,
                                dst_port=80, name_of=names.get)]
    assert all(r is not None for r in out)
    assert learning.flow_record(device, family=4, src="192.168.1.30", dst="192.168.1.31",
                                protocol=6, dst_port=80) is None
    return [r for r in out if r is not None]


def test_a_device_without_mud_is_learned_then_proposed_then_locked(
        svc: DeviceService, clock: Clock) -> None:
    device = svc.observe(mac=MAC, ip=IP)
    assert device.state is S.LEARNING
    record = svc.store.get_learning(MAC)
    assert record is not None and record.until == NOW + timedelta(days=3)
    assert svc.record_flows(MAC, flows(device)) == 3
    assert svc.record_flows(MAC, flows(device)) == 0  # distinct flows only
    clock.now = NOW + timedelta(days=2)
    assert svc.maintain().learning_ended == ()
    clock.now = NOW + timedelta(days=3, minutes=1)
    ended = svc.maintain().learning_ended
    assert [d.state for d in ended] == [S.PROPOSED]
    proposal = svc.proposal(MAC)
    assert proposal is not None
    mud = parse_mud(proposal).mud
    assert mud is not None and mud.mud_url == learning.learned_url(MAC)
    words = " ".join(line for lines in describe_policy(mud).values() for line in lines)
    assert "cloud.example.com" in words and "203.0.113.10" not in words
    assert svc.record_flows(MAC, flows(device)) == 0  # no longer learning
    locked = handle_request(svc, {"op": "learn", "mac": MAC, "action": "lock"})
    d = locked["device"]
    assert (d["state"], d["mud_source"], d["signature_status"]) == (
        "profiled", MudSource.LEARNED.value, Sig.OWNER_APPROVED.value)
    assert locked["learning"] is None and svc.store.get_learning(MAC) is None
    assert svc.store.get_mud(learning.learned_url(MAC)) is not None


def test_lock_automatically_locks_at_the_end_without_asking(svc: DeviceService,
                                                            clock: Clock) -> None:
    svc.store.save_settings(replace(svc.store.get_settings(), lock_automatically=True,
                                    learning_days=0.5))
    device = svc.observe(mac=MAC, ip=IP)
    svc.record_flows(MAC, flows(device))
    clock.now = NOW + timedelta(hours=13)
    (locked,) = svc.maintain().learning_ended
    assert locked.state is S.PROFILED and locked.mud_source is MudSource.LEARNED


def test_the_owner_ends_early_or_keeps_the_default(svc: DeviceService) -> None:
    device = svc.observe(mac=MAC, ip=IP)
    svc.record_flows(MAC, flows(device))
    shown = handle_request(svc, {"op": "learn", "mac": MAC, "action": "end-now"})
    assert shown["device"]["state"] == "proposed" and shown["learning"]["flows"] == 3
    assert shown["learning"]["proposal"]
    kept = handle_request(svc, {"op": "learn", "mac": MAC, "action": "keep-default"})
    assert kept["device"]["state"] == "default" and kept["learning"] is None
    with pytest.raises(lc.LifecycleError):
        handle_request(svc, {"op": "learn", "mac": MAC, "action": "lock"})
    again = handle_request(svc, {"op": "learn", "mac": MAC, "action": "start"})
    assert again["device"]["state"] == "learning"


def test_a_device_on_the_default_is_not_learned_again_by_a_later_lease(
        svc: DeviceService) -> None:
    """Learning is on by default: the owner's "keep the home default" stands across
    leases, and devices already on the default when learning was turned on (an upgrade
    from a gateway that did not learn) are not learned behind the owner's back."""
    device = svc.observe(mac=MAC, ip=IP)
    svc.record_flows(MAC, flows(device))
    assert svc.end_learning(MAC).state is S.PROPOSED
    assert svc.keep_default(MAC).state is S.DEFAULT
    renewed = svc.observe(mac=MAC, ip="192.168.1.21")
    assert renewed.state is S.DEFAULT and svc.store.get_learning(MAC) is None
    older = "02:00:5e:00:53:02"
    svc.learns = False  # the gateway before the upgrade
    assert svc.observe(mac=older, ip="192.168.1.22").state is S.DEFAULT
    svc.learns = True
    assert svc.observe(mac=older, ip="192.168.1.23").state is S.DEFAULT
    assert svc.store.get_learning(older) is None


def test_nothing_seen_ends_on_the_default(svc: DeviceService) -> None:
    svc.observe(mac=MAC, ip=IP)
    assert svc.end_learning(MAC).state is S.DEFAULT
    assert svc.store.get_learning(MAC) is None


def test_learning_is_off_without_a_recorder_or_with_zero_days(svc: DeviceService) -> None:
    svc.store.save_settings(replace(svc.store.get_settings(), learning_days=0))
    assert svc.observe(mac=MAC, ip=IP).state is S.DEFAULT
    svc.learns = False
    svc.store.save_settings(Settings())
    assert svc.observe(mac="02:00:5e:00:53:02").state is S.DEFAULT


def test_flow_records_are_bounded_per_device(svc: DeviceService) -> None:
    device = svc.observe(mac=MAC, ip=IP)
    many = [learning.flow_record(device, family=4, src=IP, dst=f"203.0.113.{i % 250}",
                                 protocol=17, dst_port=1000 + i) for i in range(600)]
    assert svc.record_flows(MAC, [r for r in many if r is not None]) == learning.MAX_FLOWS
    record = svc.store.get_learning(MAC)
    assert record is not None
    assert (len(record.flows), record.dropped) == (learning.MAX_FLOWS, 600 - learning.MAX_FLOWS)


def test_forget_drops_the_learning_record(svc: DeviceService) -> None:
    svc.observe(mac=MAC, ip=IP)
    svc.forget(MAC)
    assert svc.store.list_learning() == []


def test_settings_round_trip_and_bad_values(svc: DeviceService) -> None:
    s = handle_request(svc, {"op": "settings", "learning_days": 7, "lock_automatically": True})
    assert s["settings"]["learning_days"] == 7.0 and s["settings"]["lock_automatically"]
    assert svc.store.get_settings().learning_days == 7.0
    from mudguard.devices.requests import RequestError

    for bad in (-1, 400, "3", True):
        with pytest.raises(RequestError):
            handle_request(svc, {"op": "settings", "learning_days": bad})


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    db.execute("INSERT INTO devices (mac, state) VALUES (?, 'default')", (MAC,))
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.get_device(MAC) is not None and store.list_learning() == []


def test_cli_learn_end_now_then_lock(tmp_path: Path) -> None:
    db = tmp_path / "home.db"
    with Store(db) as store:
        svc = DeviceService(store=store, learns=True, lan_prefixes=("192.168.1.0/24",))
        device = svc.observe(mac=MAC, ip=IP)
        svc.record_flows(MAC, flows(device))
    runner = CliRunner()
    shown = runner.invoke(app, ["device", "learn", MAC, "--db", str(db)])
    assert shown.exit_code == 0 and "learning" in shown.output and "3 distinct" in shown.output
    ended = runner.invoke(app, ["device", "learn", MAC, "--end-now", "--db", str(db)])
    assert ended.exit_code == 0, ended.output
    assert "proposed" in ended.output and "cloud.example.com" in ended.output
    locked = runner.invoke(app, ["device", "learn", MAC, "--lock", "--json", "--db", str(db)])
    assert locked.exit_code == 0, locked.output
    assert json.loads(locked.stdout)["device"]["state"] == "profiled"
    twice = runner.invoke(app, ["device", "learn", MAC, "--lock", "--db", str(db)])
    assert twice.exit_code == 1 and "no learned profile" in twice.output


# -- the daemon's recorder (event loop side, then the worker's flush) ----------------------

def test_the_recorder_names_and_records_a_learning_devices_connections(
        svc: DeviceService, clock: Clock) -> None:
    from mudguard.daemon.learning import LearningRecorder
    from mudguard.watch.conntrack import ConnEvent

    recorder = LearningRecorder()
    device = svc.observe(mac=MAC, ip=IP)
    recorder.follow(device)  # the enforcer just installed its (home default) rules
    recorder.on_answer(IP, "Cloud.Example.com.", ("203.0.113.10",))
    recorder.on_answer("192.168.1.99", "other.example.net", ("203.0.113.11",))  # not learning
    for event in (ConnEvent(family=4, src=IP, dst="203.0.113.10", protocol=6, src_port=40000,
                            dst_port=443),
                  ConnEvent(family=4, src=IP, dst="203.0.113.10", protocol=6, src_port=40001,
                            dst_port=443),  # the same flow again
                  ConnEvent(family=4, src="192.168.1.99", dst="203.0.113.11", protocol=6,
                            src_port=1, dst_port=443)):
        recorder.on_connection(event)
    assert recorder.flush(svc) == []
    record = svc.store.get_learning(MAC)
    assert record is not None
    assert record.flows == (("from-device", 4, 6, IP, "203.0.113.10", 443,
                             "cloud.example.com"),)
    clock.now = NOW + timedelta(days=4)
    (ended,) = recorder.flush(svc)
    assert ended.state is S.PROPOSED
    recorder.on_connection(ConnEvent(family=4, src=IP, dst="203.0.113.12", protocol=17,
                                     src_port=5, dst_port=123))
    recorder.flush(svc)  # no longer learning: nothing recorded, nothing pending
    assert svc.store.get_learning(MAC).flows == record.flows  # type: ignore[union-attr]


def test_a_repository_match_comes_before_learning(svc: DeviceService, tmp_path: Path,
                                                 corpus: Path) -> None:
    from mudguard.devices.repository import FolderRepository

    folder = tmp_path / "repository"
    folder.mkdir()
    data = (corpus / "mud/rfc/mudmaker-cloud-service.json").read_bytes()
    (folder / "plug.json").write_bytes(data)
    (folder / "index.json").write_text(json.dumps({"entries": [
        {"manufacturer": "Example Inc", "model": "Plug 1", "mud_file": "plug.json"}]}))
    svc.repositories = [FolderRepository(folder)]
    known = svc.observe(mac=MAC, ip=IP, manufacturer="Example Inc", model="Plug 1")
    assert known.state is S.PROFILED and svc.store.get_learning(MAC) is None
    unknown = svc.observe(mac="02:00:5e:00:53:02", manufacturer="Example Inc", model="Plug 2")
    assert unknown.state is S.LEARNING


def test_only_a_learned_profile_is_set_aside_to_learn_again() -> None:
    locked = Device(mac=MAC, state=S.PROFILED, mud_url=learning.learned_url(MAC),
                    mud_source=MudSource.LEARNED, profile_hash="ab",
                    signature_status=Sig.OWNER_APPROVED)
    out = lc.unlock_learned(locked, settings=SETTINGS, now=NOW)
    assert out.device.state is S.DEFAULT
    assert (out.device.mud_url, out.device.profile_hash, out.device.signature_status) == (
        None, None, Sig.UNKNOWN)
    assert [n.kind for n in out.notices] == [EventKind.STATE_CHANGED]
    maker = replace(locked, mud_url="https://mud.example.com/p.json",
                    mud_source=MudSource.DHCP4)
    with pytest.raises(lc.LifecycleError):
        lc.unlock_learned(maker, settings=SETTINGS, now=NOW)
    with pytest.raises(lc.LifecycleError):
        lc.unlock_learned(replace(locked, state=S.QUARANTINED), settings=SETTINGS, now=NOW)


def test_a_locked_device_learns_again_and_locks_again(svc: DeviceService) -> None:
    device = svc.observe(mac=MAC, ip=IP)
    svc.record_flows(MAC, flows(device))
    svc.lock_learned(MAC)
    again = svc.start_learning(MAC)
    assert again.state is S.LEARNING and again.mud_url is None
    assert svc.store.get_mud(learning.learned_url(MAC)) is None
    svc.record_flows(MAC, flows(again))
    relocked = svc.lock_learned(MAC)
    assert (relocked.state, relocked.mud_source) == (S.PROFILED, MudSource.LEARNED)
