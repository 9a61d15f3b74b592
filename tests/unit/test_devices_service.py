"""Device services over a real SQLite store and real repository folders."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mudguard.devices import CachedMud, EventKind, HomeDefault, MudSource, Settings
from mudguard.devices import SignatureStatus as Sig
from mudguard.devices.lifecycle import LifecycleError, MudUrlError
from mudguard.devices.repository import FolderRepository, RepositoryError, parse_index
from mudguard.devices.service import DeviceNotFound, DeviceService, GrantError, validate_grant
from mudguard.policy import Grant, GrantKind
from mudguard.policy import LifecycleState as S
from mudguard.store import Store

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MAC = "02:00:5e:00:53:01"
URL = "https://iot-device.example.com/dnsname"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path: Path, clock: Clock) -> DeviceService:
    store = Store(tmp_path / "m.db")
    yield DeviceService(store=store, clock=clock)
    store.close()


def cache(svc: DeviceService, corpus: Path, name: str = "mudmaker-cloud-service.json",
          **changes: object) -> bytes:
    doc = json.loads((corpus / "mud/rfc" / name).read_bytes())
    doc["ietf-mud:mud"].update(changes)
    data = json.dumps(doc).encode()
    url = doc["ietf-mud:mud"]["mud-url"]
    svc.store.put_mud(CachedMud(url=url, data=data, fetched_at=NOW, cache_validity_hours=48))
    return data


def kinds(svc: DeviceService, mac: str | None = MAC) -> list[EventKind]:
    return [e.kind for e in svc.store.list_events(mac)]


def test_dhcp_sighting_with_cached_profile_is_profiled(svc: DeviceService, corpus: Path) -> None:
    cache(svc, corpus)
    d = svc.observe(mac=MAC.upper(), ip="192.0.2.10", hostname="plug", mud_url=URL,
                    source=MudSource.DHCP4)
    assert d.state is S.PROFILED and d.signature_status is Sig.UNSIGNED
    assert d.profile_hash and svc.cached_mud(d) is not None
    assert svc.store.get_device(MAC) == d
    assert kinds(svc)[:2] == [EventKind.JOINED, EventKind.PROFILE_APPLIED]
    # The same sighting again stores nothing new.
    before = len(svc.store.list_events())
    svc.observe(mac=MAC, ip="192.0.2.10", hostname="plug", mud_url=URL, source=MudSource.DHCP4)
    assert len(svc.store.list_events()) == before


def test_cached_mud_is_parsed_once_per_file_and_follows_the_cache(
        svc: DeviceService, corpus: Path) -> None:
    """Devices sharing a profile share one parsed file (the daemon asks for each device
    at start-up and at every maintenance); a changed cache still decides what is
    returned: a device whose profile is no longer the cached bytes gets nothing."""
    cache(svc, corpus)
    first = svc.observe(mac=MAC, ip="192.0.2.10", mud_url=URL, source=MudSource.DHCP4)
    second = svc.observe(mac="02:00:5e:00:53:02", ip="192.0.2.11", mud_url=URL,
                         source=MudSource.DHCP4)
    parsed = svc.cached_mud(first)
    assert parsed is not None and parsed.mud_url == URL
    assert svc.cached_mud(first) is parsed and svc.cached_mud(second) is parsed
    data = cache(svc, corpus, **{"systeminfo": "a newer file"})
    assert svc.cached_mud(first) is None  # its enforced bytes are no longer cached
    newer = replace(first, profile_hash=hashlib.sha256(data).hexdigest())
    fresh = svc.cached_mud(newer)
    assert fresh is not None and fresh is not parsed and fresh.systeminfo == "a newer file"


def test_restore_reads_each_file_once_and_every_grant_in_one_query(
        svc: DeviceService, corpus: Path, clock: Clock) -> None:
    """What start-up reads for every device (``cached_muds``, ``active_grants_by_mac``)
    equals the per-device reads, in a number of store queries that does not grow with
    the devices: one grants query, one read per distinct MUD URL."""
    cache(svc, corpus)
    other = "https://bms.example.com/.well-known/mud/lightbulb2000"
    stale = cache(svc, corpus, "osmud-lightbulb2000.json")
    devices = [svc.observe(mac=f"02:00:5e:00:53:{i:02x}", ip=f"192.0.2.{10 + i}",
                           mud_url=URL if i % 2 else other, source=MudSource.DHCP4)
               for i in range(1, 13)]
    devices.append(svc.observe(mac="02:00:5e:00:53:40", ip="192.0.2.64"))  # no MUD URL
    cache(svc, corpus, "osmud-lightbulb2000.json", **{"systeminfo": "a newer file"})
    assert any(d.profile_hash == hashlib.sha256(stale).hexdigest() for d in devices)
    svc.grant(devices[0].mac, GrantKind.LAN)
    svc.grant(devices[0].mac, GrantKind.INTERNET, expires=NOW + timedelta(hours=1))
    svc.grant(devices[3].mac, GrantKind.INTERNET, expires=NOW + timedelta(hours=3))
    clock.now = NOW + timedelta(hours=2)
    queries: list[str] = []
    svc.store._db.set_trace_callback(queries.append)
    try:
        muds = svc.cached_muds(devices)
        grants = svc.active_grants_by_mac()
    finally:
        svc.store._db.set_trace_callback(None)
    assert sum(q.lstrip().upper().startswith("SELECT") for q in queries) == 3
    assert muds == {d.mac: svc.cached_mud(d) for d in devices}
    assert sum(m is None for m in muds.values()) == 7  # the stale file's six, no URL
    assert {mac: [g.id for g in found] for mac, found in grants.items()} == {
        d.mac: [g.id for g in svc.active_grants(d.mac)] for d in devices
        if svc.active_grants(d.mac)}
    assert [g.grant.kind for g in grants[devices[0].mac]] == [GrantKind.LAN]


def test_unsigned_refused_by_home_setting(svc: DeviceService, corpus: Path) -> None:
    svc.store.save_settings(Settings(allow_unsigned=False))
    cache(svc, corpus)
    d = svc.observe(mac=MAC, mud_url=URL)
    assert d.state is S.DEFAULT and EventKind.SIGNATURE_INVALID in kinds(svc)


def test_no_fetcher_and_no_repository_gives_default_and_asks(svc: DeviceService) -> None:
    d = svc.observe(mac=MAC, mud_url="https://mud.example.com/unknown.json")
    assert d.state is S.DEFAULT and "could not be fetched" in d.reasons[0]
    d2 = svc.observe(mac="02:00:5e:00:53:02", ip="192.0.2.11")
    assert d2.state is S.DEFAULT
    assert EventKind.NO_MUD in kinds(svc, d2.mac)


def test_non_https_url_is_refused_and_recorded_for_known_devices(svc: DeviceService) -> None:
    with pytest.raises(MudUrlError):
        svc.observe(mac=MAC, mud_url="http://mud.example.com/x.json")
    assert svc.store.get_device(MAC) is None  # nothing stored for an unknown device
    svc.observe(mac=MAC, ip="192.0.2.10")
    with pytest.raises(MudUrlError):
        svc.observe(mac=MAC, mud_url="http://mud.example.com/x.json")
    assert kinds(svc)[-1] is EventKind.URL_REJECTED
    assert svc.device(MAC).mud_url is None


def test_url_change_needs_approval(svc: DeviceService, corpus: Path) -> None:
    cache(svc, corpus)
    first = svc.observe(mac=MAC, mud_url=URL)
    other = cache(svc, corpus, "mudmaker-my-controller.json")
    other_url = json.loads(other)["ietf-mud:mud"]["mud-url"]
    held = svc.observe(mac=MAC, mud_url=other_url, source=MudSource.LLDP)
    assert held.profile_hash == first.profile_hash and held.pending_mud_url == other_url
    assert kinds(svc)[-1] is EventKind.URL_CHANGED
    approved = svc.approve_url(MAC)
    assert approved.mud_url == other_url and approved.pending_mud_url is None
    assert approved.profile_hash != first.profile_hash and approved.state is S.PROFILED
    with pytest.raises(LifecycleError):
        svc.approve_url(MAC)


def test_out_of_support_profile(svc: DeviceService, corpus: Path) -> None:
    cache(svc, corpus, **{"is-supported": False})
    d = svc.observe(mac=MAC, mud_url=URL)
    assert d.state is S.OUT_OF_SUPPORT and "LAN" in d.reasons[0]
    assert EventKind.OUT_OF_SUPPORT in kinds(svc)


def write_repo(folder: Path, corpus: Path, entries: list[dict[str, object]]) -> FolderRepository:
    folder.mkdir()
    (folder / "cam.json").write_bytes((corpus / "mud/rfc/nist-sensor.json").read_bytes())
    (folder / "index.json").write_text(json.dumps({"entries": entries}))
    return FolderRepository(folder)


def test_folder_repository_by_model_and_oui(svc: DeviceService, corpus: Path,
                                            tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", corpus, [
        {"manufacturer": "Acme", "model": "Cam 2", "mud_file": "cam.json"},
        {"oui": "02:00:5e", "mud_file": "cam.json", "end_of_support": "2026-01-01"},
    ])
    svc.repositories = [repo]
    d = svc.observe(mac="06:00:00:00:00:01", manufacturer="ACME", model="cam  2")
    assert d.state is S.PROFILED and d.mud_source is MudSource.REPOSITORY
    by_oui = svc.observe(mac=MAC)
    assert by_oui.state is S.OUT_OF_SUPPORT and "2026-01-01" in by_oui.reasons[0]


def test_repository_saying_unsupported_without_mud_file(svc: DeviceService, corpus: Path,
                                                        tmp_path: Path) -> None:
    svc.repositories = [write_repo(tmp_path / "r", corpus,
                                   [{"oui": "02-00-5E", "supported": False}])]
    d = svc.observe(mac=MAC)
    assert d.state is S.OUT_OF_SUPPORT


def test_folder_repository_refuses_paths_outside(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text("{}")
    repo = write_repo(tmp_path / "r", corpus, [{"oui": "02:00:5e", "mud_file": "../secret.json"}])
    with pytest.raises(RepositoryError, match="inside"):
        repo.lookup(mac=MAC, manufacturer=None, model=None)


def test_broken_repository_is_skipped(svc: DeviceService, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.json").write_text("{not json")
    svc.repositories = [FolderRepository(bad)]
    d = svc.observe(mac=MAC)
    assert d.state is S.DEFAULT and "repositories failed" in d.reasons[0]


@pytest.mark.parametrize("index, findings", [
    ({"entries": [{"oui": "zz"}]}, 1),
    ({"entries": [{"model": "x"}]}, 1),
    ({"entries": [{"oui": "02:00:5e", "mud_url": "http://x.example/"}]}, 1),
    ({"entries": [{"oui": "02:00:5e", "end_of_support": "soon"}]}, 1),
    ({"entries": ["text", 5, None]}, 3),
    ({"entries": [{"oui": "02:00:5e", "supported": "no"}]}, 1),
])
def test_index_bad_entries_are_skipped(index: dict[str, object], findings: int) -> None:
    entries, found = parse_index(json.dumps(index).encode())
    assert entries == [] and len(found) == findings


@pytest.mark.parametrize("raw", [b"[]", b"{}", b"\xff\xfe", b"x" * (5 * 1024 * 1024)])
def test_unusable_index(raw: bytes) -> None:
    with pytest.raises(RepositoryError):
        parse_index(raw)


def test_grants_lifecycle(svc: DeviceService, clock: Clock) -> None:
    svc.observe(mac=MAC, ip="192.0.2.10")
    lan = svc.grant(MAC, GrantKind.LAN)
    svc_grant = svc.grant(MAC, GrantKind.SERVICE, host="Time.Example.com.", port=123,
                          protocol=17, expires=NOW + timedelta(hours=1))
    assert svc_grant.grant.host == "time.example.com"
    assert [g.id for g in svc.active_grants(MAC)] == [lan.id, svc_grant.id]
    clock.now = NOW + timedelta(hours=2)
    assert [g.id for g in svc.active_grants(MAC)] == [lan.id]
    assert svc.expire_grants() == 1
    svc.revoke_grant(MAC, lan.id)
    assert svc.store.list_grants(MAC) == []
    assert kinds(svc)[-4:] == [EventKind.GRANTED, EventKind.GRANTED, EventKind.GRANT_EXPIRED,
                               EventKind.GRANT_REVOKED]
    with pytest.raises(GrantError):
        svc.revoke_grant(MAC, lan.id)


def test_no_grants_while_quarantined(svc: DeviceService) -> None:
    svc.observe(mac=MAC)
    svc.quarantine(MAC, "scanning the LAN")
    with pytest.raises(GrantError, match="quarantined"):
        svc.grant(MAC, GrantKind.INTERNET)
    assert svc.release(MAC).state is S.DEFAULT


@pytest.mark.parametrize("grant, why", [
    (Grant(kind=GrantKind.SERVICE), "needs a host"),
    (Grant(kind=GrantKind.SERVICE, host="bad host;rm -rf"), "not a host"),
    (Grant(kind=GrantKind.SERVICE, host="a.example", port=70000), "port"),
    (Grant(kind=GrantKind.LAN, host="a.example"), "no host"),
    (Grant(kind=GrantKind.INTERNET, expires=NOW - timedelta(seconds=1)), "past"),
    (Grant(kind=GrantKind.DENY, host="a.example", protocol=1), "protocol"),
])
def test_bad_grants(grant: Grant, why: str) -> None:
    with pytest.raises(GrantError, match=why):
        validate_grant(grant, NOW)


def test_grant_accepts_prefixes() -> None:
    g = validate_grant(Grant(kind=GrantKind.DENY, host="198.51.100.7/24"), NOW)
    assert g.host == "198.51.100.0/24"


def test_forget_deletes_personal_data(svc: DeviceService, corpus: Path) -> None:
    cache(svc, corpus)
    svc.observe(mac=MAC, ip="192.0.2.10", hostname="cam", mud_url=URL)
    svc.grant(MAC, GrantKind.LAN)
    steps = svc.forget(MAC)
    assert steps.key_revoked is None and any("reset" in s.lower() for s in steps.steps)
    assert steps.documentation == "https://iot-device.example.com/doc/dnsname"
    assert svc.store.get_device(MAC) is None
    assert svc.store.list_grants(MAC) == [] and svc.store.list_events(MAC) == []
    everything = json.dumps([e.as_dict() for e in svc.store.list_events()])
    assert MAC not in everything and "192.0.2.10" not in everything and "cam" not in everything
    assert kinds(svc, None)[-1] is EventKind.FORGOTTEN
    with pytest.raises(DeviceNotFound):
        svc.forget(MAC)


def test_transfer_is_recorded(svc: DeviceService) -> None:
    svc.observe(mac=MAC)
    steps = svc.forget(MAC, transfer=True)
    assert "new owner" in steps.steps[-1]
    assert kinds(svc, None)[-1] is EventKind.TRANSFERRED


def test_home_default_setting_is_told(svc: DeviceService) -> None:
    svc.store.save_settings(Settings(home_default=HomeDefault.LAN))
    d = svc.observe(mac=MAC)
    assert "LAN only" in d.reasons[1]


def test_check_support_over_time(svc: DeviceService, corpus: Path, tmp_path: Path,
                                 clock: Clock) -> None:
    svc.repositories = [write_repo(tmp_path / "r", corpus,
                                   [{"oui": "02:00:5e", "mud_file": "cam.json",
                                     "end_of_support": "2027-01-01"}])]
    assert svc.observe(mac=MAC).state is S.PROFILED
    assert svc.check_support() == []
    clock.now = datetime(2027, 1, 2, tzinfo=UTC)
    moved = svc.check_support()
    assert [d.state for d in moved] == [S.OUT_OF_SUPPORT]


def test_load_repositories_from_config(tmp_path: Path, corpus: Path) -> None:
    from mudguard.devices.repository import HttpsRepository, load_repositories

    write_repo(tmp_path / "r", corpus, [])
    repos = load_repositories(["https://repo.example.com/index.json", str(tmp_path / "r")],
                              fetch=lambda url: b"")
    assert isinstance(repos[0], HttpsRepository) and isinstance(repos[1], FolderRepository)
    for bad, why in (("http://repo.example.com/i.json", "only https"),
                     (str(tmp_path / "missing"), "no such folder")):
        with pytest.raises(RepositoryError, match=why):
            load_repositories([bad], fetch=None)
    with pytest.raises(RepositoryError, match="fetcher"):
        load_repositories(["https://repo.example.com/index.json"], fetch=None)


# -- signatures with the real verifier and the corpus's signed Luminaire file ---------------

LUMINAIRE = "https://luminaire.example.com/Luminaire_150"


def luminaire_service(svc: DeviceService, corpus: Path, clock: Clock, *,
                      tamper: bool = False) -> None:
    from mudguard.app import signature_verifier

    folder = corpus / "mud/signed"
    data = (folder / "Luminaire_150.json").read_bytes()
    if tamper:
        data = data.replace(b"MUD-enabled Luminaire", b"MUD-enabled Luminairf")
    clock.now = datetime(2019, 1, 1, tzinfo=UTC)  # before its certificates expired
    svc.store.put_mud(CachedMud(url=LUMINAIRE, data=data, fetched_at=clock.now,
                                signature=(folder / "Luminaire_150.p7s").read_bytes()))
    svc.verify = signature_verifier(folder / "luminaire-cacert.pem")


def test_signed_profile_is_valid_with_its_signer(svc: DeviceService, corpus: Path,
                                                 clock: Clock) -> None:
    luminaire_service(svc, corpus, clock)
    d = svc.observe(mac=MAC, mud_url=LUMINAIRE, source=MudSource.CERT)
    assert d.state is S.PROFILED and d.signature_status is Sig.SIGNED_VALID
    assert d.signer


def test_tampered_signed_profile_is_refused(svc: DeviceService, corpus: Path,
                                            clock: Clock) -> None:
    luminaire_service(svc, corpus, clock, tamper=True)
    d = svc.observe(mac=MAC, mud_url=LUMINAIRE)
    assert d.state is S.DEFAULT and d.signature_status is Sig.INVALID
    assert d.profile_hash is None and "signature" in d.reasons[0]
    event = next(e for e in svc.store.list_events(MAC) if e.kind is EventKind.SIGNATURE_INVALID)
    assert event.details["detail"]  # the verifier's reason is told


def test_failed_approval_changes_nothing(svc: DeviceService, corpus: Path) -> None:
    from mudguard.devices.service import ApprovalError

    cache(svc, corpus)
    before = svc.observe(mac=MAC, mud_url=URL)
    held = svc.observe(mac=MAC, mud_url="https://iot-device.example.com/unreachable")
    with pytest.raises(ApprovalError, match="nothing changed"):
        svc.approve_url(MAC)  # no cached copy and no fetcher: cannot fetch
    after = svc.device(MAC)
    assert after == held and after.profile_hash == before.profile_hash
    assert after.pending_mud_url == "https://iot-device.example.com/unreachable"
    assert kinds(svc)[-1] is EventKind.FETCH_FAILED


def test_maintain_expires_moves_and_refreshes(svc: DeviceService, corpus: Path,
                                              clock: Clock) -> None:
    cache(svc, corpus)
    svc.observe(mac=MAC, mud_url=URL)
    svc.grant(MAC, GrantKind.INTERNET, expires=NOW + timedelta(hours=1))
    assert svc.maintain().refreshed == []  # everything fresh
    clock.now = NOW + timedelta(hours=49)  # past the grant and the 48 h cache-validity
    report = svc.maintain()
    assert report.expired_grants == 1 and report.out_of_support == []
    # No fetcher here: the re-fetch fails, the enforced profile stays and it is told.
    assert [d.state for d in report.refreshed] == [S.PROFILED]
    assert svc.device(MAC).profile_hash is not None
    assert kinds(svc)[-1] is EventKind.FETCH_FAILED


def test_a_moved_lease_leaves_the_old_holder(svc: DeviceService) -> None:
    other = "02:00:5e:00:53:02"
    svc.observe(mac=MAC, ip="192.0.2.10")
    svc.observe(mac=MAC, ip="192.0.2.20")  # renewed with another address
    assert svc.device(MAC).ipv4 == ("192.0.2.20",)
    svc.observe(mac=other, ip="192.0.2.20", source=MudSource.DHCP4)
    assert svc.device(MAC).ipv4 == () and svc.device(other).ipv4 == ("192.0.2.20",)


def test_reapplying_a_cached_profile_does_not_extend_its_validity(
        svc: DeviceService, corpus: Path, clock: Clock) -> None:
    cache(svc, corpus)  # fetched at NOW
    clock.now = NOW + timedelta(hours=10)
    svc.observe(mac=MAC, mud_url=URL)
    cached = svc.store.get_mud(URL)
    assert cached is not None and cached.fetched_at == NOW


def test_concurrent_owner_and_discovery_calls(svc: DeviceService) -> None:
    import threading

    macs = [f"02:00:5e:00:54:{i:02x}" for i in range(20)]
    errors: list[BaseException] = []

    def discovery() -> None:
        try:
            for round_ in range(5):
                for i, mac in enumerate(macs):
                    svc.observe(mac=mac, ip=f"192.0.2.{100 + (i + round_) % 50}")
        except BaseException as exc:
            errors.append(exc)

    def owner() -> None:
        try:
            for mac in macs:
                for _ in range(200):  # bounded wait until discovery created it
                    if svc.store.get_device(mac) is not None:
                        break
                    threading.Event().wait(0.005)
                svc.grant(mac, GrantKind.LAN)
                svc.rename(mac, "thing")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=discovery), threading.Thread(target=owner),
               threading.Thread(target=discovery)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    devices = svc.store.list_devices()
    assert len(devices) == 20 and all(d.name == "thing" for d in devices)
    assert len(svc.store.list_grants()) == 20
    held = [a for d in devices for a in d.ipv4]
    assert len(held) == len(set(held))  # no address held by two devices
