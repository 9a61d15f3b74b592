"""Acceptable MUD URL updates (draft-ietf-iotops-mud-acceptable-urls-00 §5), trust on
first use: the real device service over a real SQLite store, MUD files really signed
(CMS, a test PKI) and checked by the real verifier the daemon uses."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from mudguard.app import signature_verifier
from mudguard.devices import CachedMud, Device, EventKind, MudSource, lifecycle
from mudguard.devices import SignatureStatus as Sig
from mudguard.devices.service import DeviceService
from mudguard.mud.signature import sign_mud
from mudguard.policy import LifecycleState as S
from mudguard.store import Store
from tests.pki import Issued, make_cert

MAC = "02:00:5e:00:53:21"
BASE = "https://mud.maker.example/lamp/"
SIGNER_NAME = "mud-signer.maker.example"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Maker:
    """A manufacturer's PKI: two trusted CAs, signing certificates, signed files."""

    def __init__(self, folder: Path) -> None:
        self.root = make_cert("maker root CA", ca=True)
        self.other_root = make_cert("another trusted CA", ca=True)
        self.signer = make_cert(SIGNER_NAME, issuer=self.root)
        roots = folder / "roots.pem"
        roots.write_bytes(b"".join(r.cert.public_bytes(serialization.Encoding.PEM)
                                   for r in (self.root, self.other_root)))
        self.roots = roots


@pytest.fixture
def maker(tmp_path: Path) -> Maker:
    return Maker(tmp_path)


@pytest.fixture
def svc(tmp_path: Path, maker: Maker) -> Any:
    store = Store(tmp_path / "m.db")
    service = DeviceService(store=store, clock=Clock(),
                            verify=signature_verifier(maker.roots))
    yield service
    store.close()


def publish(svc: DeviceService, corpus: Path, url: str, signer: Issued | None) -> str:
    """Serve (in the fresh cache) the corpus cloud-service file at ``url``, signed by
    ``signer`` (None: unsigned); return the URL."""
    doc = json.loads((corpus / "mud/rfc/mudmaker-cloud-service.json").read_bytes())
    doc["ietf-mud:mud"]["mud-url"] = url
    doc["ietf-mud:mud"]["systeminfo"] = f"lamp firmware at {url}"
    signature = None
    if signer is not None:
        doc["ietf-mud:mud"]["mud-signature"] = url.removesuffix(".json") + ".p7s"
    data = json.dumps(doc).encode()
    if signer is not None:
        signature = sign_mud(data, signer.key, signer.cert)
    svc.store.put_mud(CachedMud(url=url, data=data, signature=signature,
                                fetched_at=svc.clock(), cache_validity_hours=48))
    return url


def url_events(svc: DeviceService) -> list[dict[str, Any]]:
    return [{"kind": e.kind, **e.details} for e in svc.store.list_events(MAC)
            if e.kind in (EventKind.URL_CHANGED, EventKind.URL_APPROVED)]


def onboard(svc: DeviceService, corpus: Path, maker: Maker) -> Device:
    first = publish(svc, corpus, BASE + "v1.json", maker.signer)
    device = svc.observe(mac=MAC, ip="192.0.2.21", mud_url=first, source=MudSource.DHCP4)
    assert device.state is S.PROFILED and device.signature_status is Sig.SIGNED_VALID
    assert device.pinned_signer == device.signer and device.root_mud_url == first
    return device


def test_same_base_and_same_signer_is_accepted_with_the_reason(
        svc: DeviceService, corpus: Path, maker: Maker) -> None:
    first = onboard(svc, corpus, maker)
    new = publish(svc, corpus, BASE + "v2.json", maker.signer)
    d = svc.observe(mac=MAC, mud_url=new, source=MudSource.DHCP4)
    assert d.mud_url == new and d.pending_mud_url is None
    assert d.profile_hash != first.profile_hash and d.state is S.PROFILED
    assert d.root_mud_url == new and d.pinned_signer == first.pinned_signer
    approved = url_events(svc)[-1]
    assert approved["kind"] is EventKind.URL_APPROVED and approved["by"] == "acceptable-url"
    assert BASE in approved["reason"] and "same signer" in approved["reason"]
    # The new file is the root now: the next update is judged against it.
    newer = publish(svc, corpus, BASE + "v3.json", maker.signer)
    assert svc.observe(mac=MAC, mud_url=newer).mud_url == newer


def test_a_url_accepted_before_is_a_rollback_and_waits(
        svc: DeviceService, corpus: Path, maker: Maker) -> None:
    first = onboard(svc, corpus, maker)
    new = publish(svc, corpus, BASE + "v2.json", maker.signer)
    assert svc.observe(mac=MAC, mud_url=new).past_root_urls == (first.mud_url, new)
    back = svc.observe(mac=MAC, mud_url=first.mud_url)  # same base, same signer, but old
    assert back.mud_url == new and back.pending_mud_url == first.mud_url
    assert "possible rollback" in url_events(svc)[-1]["held_because"]


def test_a_quarantined_device_never_changes_its_url_alone(
        svc: DeviceService, corpus: Path, maker: Maker) -> None:
    first = onboard(svc, corpus, maker)
    svc.quarantine(MAC, "suspect traffic")
    new = publish(svc, corpus, BASE + "v2.json", maker.signer)
    held = svc.observe(mac=MAC, mud_url=new)
    assert held.mud_url == first.mud_url and held.pending_mud_url == new
    assert "quarantined" in url_events(svc)[-1]["held_because"]


def test_a_renewed_signing_certificate_keeps_the_identity(
        svc: DeviceService, corpus: Path, maker: Maker) -> None:
    onboard(svc, corpus, maker)
    renewed = make_cert(SIGNER_NAME, issuer=maker.root)  # new key, same name, same CA
    new = publish(svc, corpus, BASE + "v2.json", renewed)
    assert svc.observe(mac=MAC, mud_url=new).mud_url == new


@pytest.mark.parametrize(("case", "why"), [
    ("other base", "is not under https://mud.maker.example/lamp/"),
    ("other signer", "not by"),
    ("same name, other CA", "not by"),
    ("unsigned", "unsigned"),
])
def test_anything_else_waits_for_the_owner_with_the_reason(
        svc: DeviceService, corpus: Path, maker: Maker, case: str, why: str) -> None:
    first = onboard(svc, corpus, maker)
    if case == "other base":
        new = publish(svc, corpus, "https://mud.maker.example/camera/v1.json", maker.signer)
    elif case == "other signer":
        new = publish(svc, corpus, BASE + "v2.json",
                      make_cert("camera-signer.maker.example", issuer=maker.root))
    elif case == "same name, other CA":
        new = publish(svc, corpus, BASE + "v2.json",
                      make_cert(SIGNER_NAME, issuer=maker.other_root))
    else:
        new = publish(svc, corpus, BASE + "v2.json", None)
    held = svc.observe(mac=MAC, mud_url=new, source=MudSource.DHCP4)
    assert held.mud_url == first.mud_url and held.pending_mud_url == new
    assert held.profile_hash == first.profile_hash  # the old profile stays enforced
    changed = url_events(svc)[-1]
    assert changed["kind"] is EventKind.URL_CHANGED and why in changed["held_because"]
    # The owner can still approve it (approve-url, as before).
    assert svc.approve_url(MAC).mud_url == new


def test_no_trust_on_first_use_when_the_first_file_is_unsigned(
        svc: DeviceService, corpus: Path, maker: Maker) -> None:
    first = publish(svc, corpus, BASE + "v1.json", None)
    d = svc.observe(mac=MAC, mud_url=first)
    assert d.state is S.PROFILED and d.pinned_signer is None
    new = publish(svc, corpus, BASE + "v2.json", maker.signer)
    held = svc.observe(mac=MAC, mud_url=new)
    assert held.pending_mud_url == new and held.mud_url == first
    assert "no signed MUD file has been accepted" in url_events(svc)[-1]["held_because"]


def test_an_owner_approval_pins_the_approved_files_signer(
        svc: DeviceService, corpus: Path, maker: Maker) -> None:
    onboard(svc, corpus, maker)
    camera = make_cert("camera-signer.maker.example", issuer=maker.root)
    moved = publish(svc, corpus, "https://mud.maker.example/lamp2/v1.json", camera)
    svc.observe(mac=MAC, mud_url=moved)
    approved = svc.approve_url(MAC)
    assert approved.pinned_signer is not None and "camera-signer" in approved.pinned_signer
    assert approved.root_mud_url == moved
    # From now on the camera signer's files under lamp2/ are acceptable, the old one's not.
    new = publish(svc, corpus, "https://mud.maker.example/lamp2/v2.json", camera)
    assert svc.observe(mac=MAC, mud_url=new).mud_url == new
    old = publish(svc, corpus, "https://mud.maker.example/lamp2/v3.json", maker.signer)
    assert svc.observe(mac=MAC, mud_url=old).pending_mud_url == old


@pytest.mark.parametrize(("url", "base"), [
    ("https://example.com/hello/there/file.json", "https://example.com/hello/there/"),
    ("https://example.com/a/b.json?next=/x/y", "https://example.com/a/"),
    ("https://example.com/a/b.json#/frag/x", "https://example.com/a/"),
    ("https://example.com/file.json", "https://example.com/"),
])
def test_url_base_is_up_to_the_last_slash_of_the_path(url: str, base: str) -> None:
    assert lifecycle.url_base(url) == base


def test_pure_checks_name_each_reason() -> None:
    pinned = Device(mac=MAC, mud_url=BASE + "v1.json", pinned_signer="CN=s (CA key 01)",
                    root_mud_url=BASE + "v1.json")
    assert lifecycle.url_update_problem(pinned, BASE + "v2.json") is None
    assert "not under" in (lifecycle.url_update_problem(
        pinned, "https://mud.maker.example/lamp-v2.json") or "")
    assert "no signed MUD file" in (lifecycle.url_update_problem(
        Device(mac=MAC, mud_url=BASE + "v1.json"), BASE + "v2.json") or "")
    assert lifecycle.signer_problem(pinned, Sig.SIGNED_VALID, "CN=s (CA key 01)") is None
    assert "not by" in (lifecycle.signer_problem(pinned, Sig.SIGNED_VALID,
                                                 "CN=s (CA key 02)") or "")
    assert "not valid" in (lifecycle.signer_problem(pinned, Sig.INVALID, "bad digest") or "")


def test_the_pin_survives_a_restart_and_an_old_database_is_migrated(tmp_path: Path) -> None:
    from mudguard.store._schema import MIGRATIONS

    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.executescript(MIGRATIONS[0])
    raw.execute("INSERT INTO devices (mac, state) VALUES (?, 'profiled')", (MAC,))
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with Store(path) as store:  # schema 1 → current: the device keeps, with no pin
        old = store.get_device(MAC)
        assert old is not None and (old.pinned_signer, old.root_mud_url) == (None, None)
        assert old.past_root_urls == () and old.quarantine_exceptions == ()
        store.save_device(Device(mac=MAC, pinned_signer="CN=s (CA key 01)",
                                 root_mud_url=BASE + "v1.json",
                                 last_seen=datetime.now(UTC) - timedelta(days=1)))
    with Store(path) as store:
        again = store.get_device(MAC)
        assert again is not None and again.pinned_signer == "CN=s (CA key 01)"
        assert again.root_mud_url == BASE + "v1.json"


def test_the_drafts_own_example_urls_from_the_corpus(svc: DeviceService, maker: Maker) -> None:
    # tests/data/mud-extensions: the draft's example root URL .../hello/there/file.json
    # and its acceptable revision .../hello/there/revision2.json, signed here.
    folder = Path(__file__).parents[1] / "data" / "mud-extensions"
    urls = []
    for name in ("acceptable-urls-root.json", "acceptable-urls-revision2.json"):
        data = (folder / name).read_bytes()
        url = json.loads(data)["ietf-mud:mud"]["mud-url"]
        svc.store.put_mud(CachedMud(url=url, data=data, fetched_at=svc.clock(),
                                    signature=sign_mud(data, maker.signer.key,
                                                       maker.signer.cert)))
        urls.append(url)
    assert svc.observe(mac=MAC, mud_url=urls[0]).signature_status is Sig.SIGNED_VALID
    assert svc.observe(mac=MAC, mud_url=urls[1]).mud_url == urls[1]
