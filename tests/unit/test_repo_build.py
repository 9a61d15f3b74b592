"""``mudguard repo build|check``: a signed static repository from approved profiles, read
back by the gateway's own repository readers (a folder, and a real HTTPS server on
loopback) so a device matched by maker/model or OUI gets the profile through
``DeviceService.decide`` with its signature verified."""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mudguard.app import signature_verifier
from mudguard.cli.main import app
from mudguard.devices import MudSource
from mudguard.devices import SignatureStatus as Sig
from mudguard.devices.repository import FolderRepository, HttpsRepository, parse_index
from mudguard.devices.service import DeviceService
from mudguard.mud import parse_mud
from mudguard.mud.fetch import FetchConfig, fetch_mud_bytes, fetch_signature_bytes
from mudguard.policy import LifecycleState as S
from mudguard.repo.core import EXPORT_FORMAT, PersonalDataError, SourceError, find_personal
from mudguard.repo.files import build_repository, check_folder, check_url
from mudguard.store import Store
from tests.pki import Issued, make_cert
from tests.unit.test_mud_fetch import LOOPBACK, NAME, QuietServer, to_loopback

NOW = datetime.now(UTC)
BASE = f"https://{NAME}/repo/"
HOME_MAC = "02:00:5e:00:53:01"
runner = CliRunner()


def learned(**mud: Any) -> dict[str, Any]:
    """A profile the way ``profile learn`` writes it: the MAC in the ACL names and
    systeminfo, a cloud name, a home peer already abstracted."""
    doc = {
        "ietf-mud:mud": {
            "mud-version": 1, "mud-url": "https://mudguard.invalid/learned/02005e005301.json",
            "last-update": "2026-11-20T10:00:00Z", "cache-validity": 48, "is-supported": True,
            "systeminfo": f"Profile learned from traffic of {HOME_MAC} at the Smiths' home, "
                          "kitchen",
            "mfg-name": "Example Inc", "model-name": "Plug 1",
            "from-device-policy": {"access-lists": {"access-list": [
                {"name": "mud-02005e005301-v4fr"}]}},
            "to-device-policy": {"access-lists": {"access-list": [
                {"name": "mud-02005e005301-v4to"}]}},
        },
        "ietf-access-control-list:acls": {"acl": [
            {"name": "mud-02005e005301-v4fr", "type": "ipv4-acl-type", "aces": {"ace": [
                {"name": "fr4-0", "matches": {
                    "ipv4": {"protocol": 6, "ietf-acldns:dst-dnsname": "cloud.example.com"},
                    "tcp": {"destination-port": {"operator": "eq", "port": 443},
                            "ietf-mud:direction-initiated": "from-device"}},
                 "actions": {"forwarding": "accept"}},
                {"name": "fr4-1", "matches": {
                    "ietf-mud:mud": {"local-networks": [None]},
                    "ipv4": {"protocol": 17},
                    "udp": {"destination-port": {"operator": "eq", "port": 5353}}},
                 "actions": {"forwarding": "accept"}}]}},
            {"name": "mud-02005e005301-v4to", "type": "ipv4-acl-type", "aces": {"ace": [
                {"name": "to4-0", "matches": {
                    "ipv4": {"protocol": 6, "ietf-acldns:src-dnsname": "cloud.example.com"},
                    "tcp": {"source-port": {"operator": "eq", "port": 443}}},
                 "actions": {"forwarding": "accept"}}]}},
        ]},
    }
    doc["ietf-mud:mud"].update(mud)
    return doc


def with_home_address(doc: dict[str, Any]) -> dict[str, Any]:
    """The learned file naming the home's NAS by address (no LAN prefix was known)."""
    doc = copy.deepcopy(doc)
    ace = doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]
    del ace["matches"]["ipv4"]["ietf-acldns:dst-dnsname"]
    ace["matches"]["ipv4"]["destination-ipv4-network"] = "192.168.1.20/32"
    return doc


def export(doc: dict[str, Any], *, consent: bool = True, **fields: Any) -> dict[str, Any]:
    return {"format": EXPORT_FORMAT, "consent": consent, "mud": doc, **fields}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ca = make_cert("community repository CA", ca=True)
    signer = make_cert("community repository signer", issuer=ca)
    folder = tmp_path_factory.mktemp("pki")
    for name, pem in (("ca.pem", ca.cert_pem()), ("signer.pem", signer.cert_pem()),
                      ("signer.key", signer.key_pem())):
        (folder / name).write_bytes(pem)
    return {"ca": ca, "signer": signer, "dir": folder}


def write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


def build(pki: dict[str, Any], sources: list[Path], out: Path, **kwargs: Any) -> Any:
    signer: Issued = pki["signer"]
    return build_repository(sources, out, base_url=BASE, key=signer.key, cert=signer.cert,
                            now=NOW, **kwargs)


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "approved"
    folder.mkdir()
    write(folder / "plug.json", learned())
    write(folder / "bulb-export.json", export(
        learned(**{"mfg-name": "Bulbs Ltd", "model-name": "B2"}), manufacturer=None,
        model=None, oui="02:00:5f", identify={"vendor_class": ["udhcp 1.30.1"],
                                              "mdns_service": ["_hap._tcp"]}))
    return folder


def test_build_then_check_is_ok_and_nothing_personal_is_published(
        pki: dict[str, Any], sources: Path, tmp_path: Path) -> None:
    result = build(pki, [sources], tmp_path / "repo")
    repo = result.directory
    assert result.entries == 2
    index = json.loads((repo / "index.json").read_bytes())
    entries, findings = parse_index((repo / "index.json").read_bytes())
    assert findings == [] and len(entries) == 2
    plug = next(e for e in index["entries"] if e.get("model") == "Plug 1")
    assert plug["mud_url"] == BASE + plug["mud_file"]
    bulb = next(e for e in index["entries"] if e.get("oui"))
    assert bulb["oui"] == "02:00:5f" and "model" not in bulb
    assert bulb["identify"] == {"mdns_service": ["_hap._tcp"], "vendor_class": ["udhcp 1.30.1"]}
    for entry in index["entries"]:
        data = (repo / entry["mud_file"]).read_bytes()
        assert HOME_MAC.encode() not in data and b"02005e005301" not in data
        mud = parse_mud(data, expected_url=entry["mud_url"]).mud
        assert mud is not None and len(mud.systeminfo or "") <= 60
        assert mud.mud_signature == BASE + entry["signature_file"]
    assert find_personal(index) == []
    report = check_folder(repo, [pki["ca"].cert], NOW)
    assert report.ok, report.errors
    assert report.entries == 2


@pytest.mark.parametrize("target", ["mud", "p7s"])
def test_a_tampered_byte_fails_the_check(pki: dict[str, Any], sources: Path, tmp_path: Path,
                                         target: str) -> None:
    repo = build(pki, [sources], tmp_path / "repo").directory
    entry = json.loads((repo / "index.json").read_bytes())["entries"][0]
    path = repo / entry["mud_file" if target == "mud" else "signature_file"]
    data = bytearray(path.read_bytes())
    if target == "mud":
        data[data.index(b"443")] = ord("8")  # one byte: port 443 becomes 843
    else:
        data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    report = check_folder(repo, [pki["ca"].cert], NOW)
    assert not report.ok
    assert any("signature" in e for e in report.errors)
    if target == "mud":
        assert any("sha256" in e for e in report.errors)


def test_another_trust_anchor_fails_the_check(pki: dict[str, Any], sources: Path,
                                              tmp_path: Path) -> None:
    repo = build(pki, [sources], tmp_path / "repo").directory
    stranger = make_cert("someone else's CA", ca=True)
    report = check_folder(repo, [stranger.cert], NOW)
    assert not report.ok and len(report.errors) == 2


def test_a_home_address_is_refused_with_its_place_and_nothing_is_written(
        pki: dict[str, Any], tmp_path: Path) -> None:
    source = write(tmp_path / "nas.json", with_home_address(learned()))
    out = tmp_path / "repo"
    with pytest.raises(PersonalDataError) as refused:
        build(pki, [source], out)
    message = str(refused.value)
    assert "192.168.1.20/32" in message and "nas.json" in message and "--generalise" in message
    assert not out.exists() and list(tmp_path.glob(".repo.*")) == []


def test_generalise_replaces_a_home_address_by_local_networks(pki: dict[str, Any],
                                                              tmp_path: Path) -> None:
    source = write(tmp_path / "nas.json", with_home_address(learned()))
    result = build(pki, [source], tmp_path / "repo", generalise=True)
    assert any("192.168.1.20/32" in c and "local-networks" in c for c in result.changes)
    entry = json.loads((result.directory / "index.json").read_bytes())["entries"][0]
    data = (result.directory / entry["mud_file"]).read_bytes()
    assert b"192.168.1.20" not in data
    ace = json.loads(data)["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]
    assert ace["matches"]["ietf-mud:mud"] == {"local-networks": [None]}
    assert check_folder(result.directory, [pki["ca"].cert], NOW).ok


@pytest.mark.parametrize("change", ["home-name", "mac-match", "home-prefix"])
def test_other_personal_data_is_refused(pki: dict[str, Any], tmp_path: Path,
                                        change: str) -> None:
    doc = learned()
    ace = doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]
    home: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    if change == "home-name":
        ace["matches"]["ipv4"]["ietf-acldns:dst-dnsname"] = "smiths-nas.home.arpa"
    elif change == "mac-match":
        ace["matches"] = {"eth": {"destination-mac-address": "02:00:5e:00:53:99"}}
        doc["ietf-access-control-list:acls"]["acl"][0]["type"] = "eth-acl-type"
    else:  # the home's public prefix, named by the builder
        del ace["matches"]["ipv4"]["ietf-acldns:dst-dnsname"]
        ace["matches"]["ipv4"]["destination-ipv4-network"] = "203.0.113.7/32"
        home = [ipaddress.ip_network("203.0.113.0/24")]
    source = write(tmp_path / "p.json", doc)
    with pytest.raises(PersonalDataError):
        build(pki, [source], tmp_path / "repo", home=home)
    if change == "mac-match":  # a MAC has no abstraction: refused even when generalising
        with pytest.raises(PersonalDataError, match="MAC"):
            build(pki, [source], tmp_path / "repo", generalise=True)


def test_an_export_without_consent_or_identity_is_refused(pki: dict[str, Any],
                                                          tmp_path: Path) -> None:
    no_consent = write(tmp_path / "a.json", export(learned(), consent=False))
    with pytest.raises(SourceError, match="did not consent"):
        build(pki, [no_consent], tmp_path / "repo")
    anonymous = learned()
    del anonymous["ietf-mud:mud"]["mfg-name"]
    with pytest.raises(SourceError, match="maker and model"):
        build(pki, [write(tmp_path / "b.json", anonymous)], tmp_path / "repo")
    whole_mac = write(tmp_path / "c.json", export(learned(), oui=HOME_MAC))
    with pytest.raises(SourceError, match="never a whole MAC"):
        build(pki, [whole_mac], tmp_path / "repo")
    hostname = write(tmp_path / "d.json", export(learned(), identify={
        "hostname_pattern": ["Smiths-Plug"]}))
    with pytest.raises(SourceError, match="pattern"):
        build(pki, [hostname], tmp_path / "repo")


def test_an_invalid_profile_is_refused(pki: dict[str, Any], tmp_path: Path) -> None:
    doc = learned()
    doc["ietf-mud:mud"]["is-supported"] = "yes"
    with pytest.raises(SourceError, match="not a valid MUD file"):
        build(pki, [write(tmp_path / "x.json", doc)], tmp_path / "repo")


def test_a_rebuild_replaces_the_whole_repository(pki: dict[str, Any], sources: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "repo"
    build(pki, [sources], out)
    (sources / "bulb-export.json").unlink()
    build(pki, [sources], out)
    assert len(list((out / "mud").iterdir())) == 2  # one file and its signature
    bad = write(tmp_path / "nas.json", with_home_address(learned()))
    with pytest.raises(PersonalDataError):
        build(pki, [bad], out)
    assert check_folder(out, [pki["ca"].cert], NOW).ok  # a refused build kept the old one


# -- consumed by the gateway -------------------------------------------------------------

@pytest.fixture
def service(tmp_path: Path, pki: dict[str, Any]) -> Iterator[DeviceService]:
    store = Store(tmp_path / "m.db")
    settings = store.get_settings()
    from dataclasses import replace

    store.save_settings(replace(settings, allow_unsigned=False))
    yield DeviceService(store=store, verify=signature_verifier(pki["dir"] / "ca.pem"),
                        clock=lambda: NOW)
    store.close()


def test_a_folder_repository_gives_the_signed_profile_by_maker_and_model_and_oui(
        pki: dict[str, Any], sources: Path, tmp_path: Path, service: DeviceService) -> None:
    repo = build(pki, [sources], tmp_path / "repo").directory
    service.repositories = [FolderRepository(repo)]
    plug = service.observe(mac="02:00:5e:00:53:01", manufacturer="Example Inc",
                           model="Plug 1")
    assert plug.state is S.PROFILED and plug.mud_source is MudSource.REPOSITORY
    assert plug.signature_status is Sig.SIGNED_VALID  # the folder's .p7s was verified
    assert plug.mud_url == BASE + "mud/example-inc-plug-1.json"
    bulb = service.observe(mac="02:00:5f:12:34:56")  # known by its OUI only
    assert bulb.state is S.PROFILED and bulb.mud_url == BASE + "mud/oui-02-00-5f.json"
    stranger = service.observe(mac="02:00:60:00:00:01", manufacturer="Other", model="X")
    assert stranger.state is S.DEFAULT


def test_a_folder_repository_whose_file_was_tampered_gives_no_profile(
        pki: dict[str, Any], sources: Path, tmp_path: Path, service: DeviceService) -> None:
    repo = build(pki, [sources], tmp_path / "repo").directory
    path = repo / "mud/example-inc-plug-1.json"
    path.write_bytes(path.read_bytes().replace(b'"port": 443', b'"port": 843'))
    service.repositories = [FolderRepository(repo)]
    plug = service.observe(mac="02:00:5e:00:53:01", manufacturer="Example Inc",
                           model="Plug 1")
    assert plug.state is S.DEFAULT and plug.profile_hash is None


class RepoHandler(SimpleHTTPRequestHandler):
    """Static files with the media types a CDN would send for a repository."""

    extensions_map = {".json": "application/json", ".p7s": "application/pkcs7-signature"}

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def https_root(tmp_path: Path, pki: dict[str, Any]) -> Iterator[tuple[Path, int, FetchConfig]]:
    """A real HTTPS server on 127.0.0.1 serving ``root`` (a static web root)."""
    import ssl
    import threading

    root = tmp_path / "www"
    root.mkdir()
    ca: Issued = pki["ca"]
    cert = make_cert(NAME, issuer=ca, dns=(NAME,), ips=("127.0.0.1",))
    (tmp_path / "server.pem").write_bytes(cert.cert_pem() + cert.key_pem())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem")
    server = QuietServer(("127.0.0.1", 0), partial(RepoHandler, directory=str(root)))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    config = FetchConfig(ca_bundle=pki["dir"] / "ca.pem", resolver=to_loopback,
                         unsafe_allow=LOOPBACK, connect_timeout=2.0, total_timeout=5.0)
    try:
        yield root, server.server_address[1], config
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_an_https_repository_gives_the_signed_profile_end_to_end(
        pki: dict[str, Any], sources: Path, service: DeviceService,
        https_root: tuple[Path, int, FetchConfig]) -> None:
    root, port, config = https_root
    base = f"https://{NAME}:{port}/repo/"
    signer: Issued = pki["signer"]
    build_repository([sources], root / "repo", base_url=base, key=signer.key,
                     cert=signer.cert, now=NOW)
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        if url.endswith(".p7s"):
            return fetch_signature_bytes(url, config=config)
        return fetch_mud_bytes(url, config=config)

    report = check_url(base + "index.json", [pki["ca"].cert], NOW, fetch_mud=fetch,
                       fetch_signature=fetch)
    assert report.ok and report.entries == 2, report.errors
    service.fetch = fetch
    service.repositories = [HttpsRepository(base + "index.json", fetch)]
    plug = service.observe(mac="02:00:5e:00:53:01", manufacturer="example inc",
                           model="plug  1")
    assert plug.state is S.PROFILED and plug.signature_status is Sig.SIGNED_VALID
    assert plug.mud_url == base + "mud/example-inc-plug-1.json"
    assert base + "mud/example-inc-plug-1.p7s" in fetched
    bulb = service.observe(mac="02:00:5f:00:00:09")
    assert bulb.state is S.PROFILED and bulb.signature_status is Sig.SIGNED_VALID


def test_cli_build_and_check(pki: dict[str, Any], sources: Path, tmp_path: Path) -> None:
    keys = pki["dir"]
    out = tmp_path / "repo"
    built = runner.invoke(app, ["repo", "build", str(sources), "-o", str(out),
                                "--key", str(keys / "signer.key"),
                                "--cert", str(keys / "signer.pem"), "--base-url", BASE])
    assert built.exit_code == 0, built.output
    assert "2 profiles" in built.output and "renamed" in built.output
    ok = runner.invoke(app, ["repo", "check", str(out), "--ca", str(keys / "ca.pem")])
    assert ok.exit_code == 0 and "ok" in ok.output
    index = out / "index.json"
    index.write_text(index.read_text().replace("02:00:5f", "02:00:5f:00:53:01"))
    bad = runner.invoke(app, ["repo", "check", str(out), "--ca", str(keys / "ca.pem")])
    assert bad.exit_code == 1 and "error" in bad.output
    refused = runner.invoke(app, [
        "repo", "build", str(write(tmp_path / "nas.json", with_home_address(learned()))),
        "-o", str(tmp_path / "r2"), "--key", str(keys / "signer.key"),
        "--cert", str(keys / "signer.pem"), "--base-url", BASE])
    assert refused.exit_code == 1 and "192.168.1.20/32" in refused.output
    assert not (tmp_path / "r2").exists()


def test_a_home_exports_its_approved_learned_profile_only_with_consent(
        pki: dict[str, Any], tmp_path: Path) -> None:
    db = tmp_path / "home.db"
    with Store(db) as store:
        home = DeviceService(store=store, clock=lambda: NOW)
        home.observe(mac=HOME_MAC)
        out = tmp_path / "plug-export.json"
        early = runner.invoke(app, ["device", "export-profile", HOME_MAC, "-o", str(out),
                                    "--consent", "--db", str(db)])
        assert early.exit_code == 1 and "no learned profile" in early.output
        home.apply_learned(HOME_MAC, json.dumps(learned()).encode())
    refused = runner.invoke(app, ["device", "export-profile", HOME_MAC, "-o", str(out),
                                  "--db", str(db)])
    assert refused.exit_code == 1 and "consent" in refused.output and not out.exists()
    done = runner.invoke(app, ["device", "export-profile", HOME_MAC, "-o", str(out), "--consent",
                               "--feature", "vendor_class=udhcp 1.30.1", "--db", str(db)])
    assert done.exit_code == 0, done.output
    exported = json.loads(out.read_bytes())
    assert exported["oui"] == "02:00:5e" and exported["consent"] is True
    assert exported["identify"] == {"vendor_class": ["udhcp 1.30.1"]}
    text = out.read_text()
    assert HOME_MAC not in text and "02005e005301" not in text
    assert len(exported["mud"]["ietf-mud:mud"]["systeminfo"]) <= 60
    repo = build(pki, [out], tmp_path / "repo").directory
    assert check_folder(repo, [pki["ca"].cert], NOW).ok
    with Store(tmp_path / "other.db") as store:
        other = DeviceService(store=store, clock=lambda: NOW,
                              repositories=[FolderRepository(repo)],
                              verify=signature_verifier(pki["dir"] / "ca.pem"))
        plug = other.observe(mac="02:00:5e:77:00:01", manufacturer="Example Inc",
                             model="Plug 1")
        assert plug.state is S.PROFILED and plug.signature_status is Sig.SIGNED_VALID


def test_a_hostname_pattern_with_the_oui_tells_a_makers_models_apart(
        pki: dict[str, Any], tmp_path: Path, service: DeviceService) -> None:
    source = write(tmp_path / "plug3.json", export(
        learned(**{"model-name": "Plug 3"}), manufacturer="Example Inc", model="Plug 3",
        oui="02:00:61", identify={"hostname_pattern": ["Plug-*"]}))
    repo = build(pki, [source], tmp_path / "repo").directory
    service.repositories = [FolderRepository(repo)]
    plug = service.observe(mac="02:00:61:00:00:01", hostname="PLUG-3a9f")
    assert plug.state is S.PROFILED and plug.model == "Plug 3"
    camera = service.observe(mac="02:00:61:00:00:02", hostname="camera-1")  # same maker
    assert camera.state is S.DEFAULT
    stranger = service.observe(mac="02:00:62:00:00:03", hostname="plug-1")  # another OUI
    assert stranger.state is S.DEFAULT


@pytest.mark.parametrize("identify", [
    "Plug-*", ["Plug-*"], {"hostname_pattern": "Plug-*"}, {"hostname_pattern": [1, None]},
    {"hostname_pattern": ["x" * 100 + "*"]}, {"hostname_pattern": ["plug-1"]},
])
def test_a_hostile_identify_in_an_index_is_ignored_never_trusted(identify: Any) -> None:
    from mudguard.devices.repository import match_entry

    raw = {"entries": [{"oui": "02:00:61", "model": "Plug 3", "manufacturer": "Example Inc",
                        "mud_url": "https://r.example/p.json", "identify": identify}]}
    entries, findings = parse_index(json.dumps(raw).encode())
    assert findings == [] and entries[0].hostname_patterns == ()
    assert match_entry(entries, mac="02:00:61:00:00:01", manufacturer=None, model=None,
                       hostname="plug-1") is None
