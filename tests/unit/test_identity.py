"""Identity (issue #15): the maker and model from the MUD file, the label, the
certificate, what was recorded, or the MAC's OUI (never a module maker); the signer as
its organisation's name; the report never names the MUD host as the maker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from mudguard.devices import Device, MudSource, SignatureStatus
from mudguard.devices.identity import (
    Identity,
    IdentitySource,
    device_identity,
    dn_attribute,
    oui_maker,
    signer_organisation,
)
from mudguard.discovery.qr import QrRecord
from mudguard.identify.capture import load_knowledge
from mudguard.identify.knowledge import OuiRegistry
from mudguard.mud import MudFile, parse_mud
from mudguard.policy import LifecycleState
from mudguard.portal._services import build_report
from tests.unit.test_portal_support import mud_document, portal, text_of

# A few lines in Wireshark's manuf format (the registry the gateway loads).
MANUF = ("00:17:88\tPhilipsL\tPhilips Lighting BV\n"
         "08:3A:8D\tEspressi\tEspressif Inc.\n"
         "D0:73:D5\tLifiLabs\tLIFI LABS MANAGEMENT PTY LTD\n")
KB = load_knowledge()
OUI = OuiRegistry.from_manuf(MANUF)
URL = "https://mud.example.com/bulb.json"


def _mud(**changes: object) -> MudFile:
    import json

    mud = parse_mud(json.dumps(mud_document(URL, **changes)).encode(), expected_url=URL).mud
    assert mud is not None
    return mud


def _device(mac: str = "d0:73:d5:01:02:03", **fields: object) -> Device:
    return Device(mac=mac, state=LifecycleState.PROFILED, **fields)  # type: ignore[arg-type]


def test_a_signed_mud_file_names_the_maker_and_model_first() -> None:
    mud = _mud(**{"mfg-name": "LIFX", "model-name": "A19"})
    signed = _device(signature_status=SignatureStatus.SIGNED_VALID, manufacturer="Guess")
    assert device_identity(signed, mud, oui_registry=OUI, knowledge=KB) == \
        Identity("LIFX", "A19", IdentitySource.MUD_SIGNED)
    unsigned = _device(signature_status=SignatureStatus.UNSIGNED)
    maker, model, source = device_identity(unsigned, mud, oui_registry=OUI, knowledge=KB)
    assert (maker, model, source) == ("LIFX", "A19", IdentitySource.MUD)


def test_label_then_certificate_then_recorded_then_oui() -> None:
    device = _device(manufacturer="Inferred Co")
    mud = _mud()  # no mfg-name in the file
    mud = MudFile(**{**{f: getattr(mud, f) for f in mud.__dataclass_fields__},
                     "mfg_name": None, "model_name": None})
    label = QrRecord(mud_url=URL, company="LIFX", product="Mini")
    assert device_identity(device, mud, label=label, oui_registry=OUI, knowledge=KB) == \
        Identity("LIFX", "Mini", IdentitySource.LABEL)
    cert = SimpleNamespace(subject="CN=bulb-0001,O=Acme Lights\\, Inc.,C=FR")
    assert device_identity(device, None, cert=cert, oui_registry=OUI, knowledge=KB) == \
        Identity("Acme Lights, Inc.", None, IdentitySource.CERTIFICATE)
    assert device_identity(device, None, oui_registry=OUI, knowledge=KB).source is \
        IdentitySource.IDENTIFIED
    scanned = _device(manufacturer="LIFX", mud_source=MudSource.QR)
    assert device_identity(scanned, None).source is IdentitySource.LABEL
    bare = _device()
    assert device_identity(bare, None, oui_registry=OUI, knowledge=KB) == \
        Identity("LIFI LABS MANAGEMENT", None, IdentitySource.OUI)


def test_a_module_maker_or_a_random_mac_is_never_the_maker() -> None:
    assert oui_maker("08:3a:8d:00:00:01", OUI, KB) is None  # Espressif: the platform
    assert oui_maker("02:17:88:00:00:01", OUI, KB) is None  # locally administered
    assert oui_maker("00:17:88:00:00:01", OUI, KB) == "Philips Lighting"
    espressif = _device(mac="08:3a:8d:00:00:01")
    assert device_identity(espressif, None, oui_registry=OUI, knowledge=KB) == \
        Identity(None, None, None)


def test_the_signer_is_its_organisation_not_the_raw_name() -> None:
    assert signer_organisation("CN=LIFX MUD signing,O=LIFX Labs,C=AU") == "LIFX Labs"
    assert signer_organisation("CN=Only A Common Name") == "Only A Common Name"
    assert signer_organisation("O=Foo\\, Bar,CN=x") == "Foo, Bar"
    assert signer_organisation("an unnamed signer") == "an unnamed signer"
    assert signer_organisation(None) is None and signer_organisation("") is None
    assert dn_attribute("CN=a,OU=b", "O") is None


def test_the_report_names_the_maker_not_the_mud_host_and_the_signer_by_organisation(
        ) -> None:
    mud = _mud()
    mud = MudFile(**{**{f: getattr(mud, f) for f in mud.__dataclass_fields__},
                     "mfg_name": None})
    report = build_report(mud, SignatureStatus.SIGNED_VALID, "CN=s,O=LIFX Labs,C=AU")
    assert report.manufacturer is None  # was "mud.example.com"
    assert report.signer == "LIFX Labs" and report.signer_subject == "CN=s,O=LIFX Labs,C=AU"
    identity = Identity("LIFX", "A19", IdentitySource.OUI)
    with_device = build_report(mud, SignatureStatus.UNSIGNED, None, identity)
    assert (with_device.manufacturer, with_device.model, with_device.identity_source) == \
        ("LIFX", "A19", "oui")


def test_pages_and_api_show_the_maker_from_the_oui_and_its_source(tmp_path: Path) -> None:
    mac = "d0:73:d5:01:02:03"
    with portal(tmp_path) as (client, st, _):
        st.services.oui, st.services.knowledge = OUI, KB
        st.store.save_device(Device(mac=mac, state=LifecycleState.DEFAULT,
                                    first_seen=datetime.now(UTC)))
        words = text_of(client.get("/devices").text)
        assert "LIFI LABS MANAGEMENT" in words and "Unknown" not in words
        page = text_of(client.get(f"/devices/{mac}").text)
        assert "LIFI LABS MANAGEMENT (from its network address)" in page
        api = client.get(f"/api/devices/{mac}").json()
        assert api["identity"] == {"maker": "LIFI LABS MANAGEMENT", "model": None,
                                   "source": "oui"}
        assert client.get("/api/devices").json()[0]["identity"]["source"] == "oui"
