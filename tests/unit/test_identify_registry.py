"""Home Assistant's discovery matchers: the importer, the matching, and what the
decision makes of them, on synthetic clues and packets built here."""

from __future__ import annotations

import fnmatch
import json
import zipfile
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSRR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from mudguard.identify.capture import load_knowledge, scan_captures
from mudguard.identify.decide import Clue, identify
from mudguard.identify.knowledge import KnowledgeBase, KnowledgeError, OuiRegistry
from mudguard.identify.parse import parse_mdns, parse_upnp_description
from mudguard.identify.registry import DiscoveryRegistry, Glob, glob_match, registry_matches
from mudguard.identify.registry_import import (
    PLATFORMS,
    RegistryImportError,
    build_registry,
    literal_assignment,
    main,
    read_wheel,
    render,
)

FIXTURE = Path(__file__).parents[1] / "data" / "ha-registry"
SHIPPED = (Path(__file__).parents[2] / "src" / "mudguard" / "identify"
           / "discovery_registry.json")
MANUF = ("# test registry\n"
         "5C:CF:7F\tEspressi\tEspressif Inc.\n"
         "50:14:79\tiRobot\tiRobot Corporation\n"
         "D0:73:D5\tLifiLabs\tLifi Labs Management Pty Ltd\n")


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_knowledge()


@pytest.fixture(scope="module")
def oui() -> OuiRegistry:
    return OuiRegistry.from_manuf(MANUF)


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def fixture_wheel(tmp_path: Path, name: str = "homeassistant-2025.4.4-py3-none-any.whl",
                  dhcp: str | None = None) -> Path:
    wheel = tmp_path / name
    with zipfile.ZipFile(wheel, "w") as archive:
        for file in ("dhcp.py", "zeroconf.py", "ssdp.py", "integrations.json"):
            text = (FIXTURE / file).read_text("utf-8")
            if file == "dhcp.py" and dhcp is not None:
                text = dhcp
            archive.writestr(f"homeassistant/generated/{file}", text)
    return wheel


# --- the importer -------------------------------------------------------------------

def test_importer_reproduces_the_fixture_output(tmp_path: Path) -> None:
    out = tmp_path / "registry.json"
    assert main([str(fixture_wheel(tmp_path)), "-o", str(out)]) == 0
    assert out.read_text("utf-8") == (FIXTURE / "expected.json").read_text("utf-8")


def test_importer_parses_and_never_executes_the_generated_files(tmp_path: Path) -> None:
    # the fixture's dhcp.py starts with `raise RuntimeError(...)`: reading it still works
    texts, version = read_wheel(fixture_wheel(tmp_path))
    assert "raise RuntimeError" in texts["dhcp"] and version == "2025.4.4"
    assert literal_assignment(texts["dhcp"], "DHCP")[1] == {"domain": "lifx",
                                                            "macaddress": "D073D5*"}
    code_not_data = texts["dhcp"].replace('DHCP: Final[list[dict[str, str | bool]]] = [',
                                          'DHCP = __import__("os").system("true") or [')
    with pytest.raises(ValueError):
        literal_assignment(code_not_data, "DHCP")


def test_importer_refuses_odd_input(tmp_path: Path) -> None:
    assert main([str(fixture_wheel(tmp_path, name="other-1.0-py3-none-any.whl")),
                 "-o", str(tmp_path / "x.json")]) == 1
    bad_mac = (FIXTURE / "dhcp.py").read_text("utf-8").replace('"D073D5*"', '"D073D5"')
    assert main([str(fixture_wheel(tmp_path, dhcp=bad_mac)), "-o",
                 str(tmp_path / "y.json")]) == 1
    assert not (tmp_path / "y.json").exists()
    with pytest.raises(RegistryImportError):
        literal_assignment("X = 1\n", "DHCP")


def test_shipped_registry_has_provenance_is_small_and_compiles() -> None:
    text = SHIPPED.read_text("utf-8")
    data = json.loads(text)
    about = data["_about"]
    assert about["version"] and about["url"].startswith("https://pypi.org/project/homeassistant/")
    assert about["licence"].startswith("Apache-2.0")
    assert len(text.encode()) < 300_000
    assert render(data) == text  # as the importer writes it: not edited by hand
    registry = DiscoveryRegistry.from_mapping(data)
    assert len(registry.dhcp) > 100 and len(registry.zeroconf) > 50 and registry.ssdp
    for domain in ("esphome", "wled", "cast", "dlna_dmr", "homekit_controller"):
        assert registry.integrations[domain].maker is None
    for domain, integration in registry.integrations.items():  # as the importer decides
        assert integration.platform == PLATFORMS.get(domain)
    assert all((i.maker is None) != (i.platform is None)
               for i in registry.integrations.values())


def test_build_registry_maps_brands_and_platforms() -> None:
    texts = {key: (FIXTURE / name).read_text("utf-8") for key, name in
             {"dhcp": "dhcp.py", "zeroconf": "zeroconf.py", "ssdp": "ssdp.py",
              "integrations": "integrations.json"}.items()}
    data = build_registry(texts, "2025.4.4")
    assert data["integrations"]["hue"] == {"name": "Philips Hue", "maker": "Philips"}
    assert data["integrations"]["esphome"]["platform"] == "ESPHome (firmware)"
    assert "maker" not in data["integrations"]["esphome"]


# --- matching -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def small() -> DiscoveryRegistry:
    return DiscoveryRegistry.from_mapping(json.loads((FIXTURE / "expected.json").read_text()))


def says(registry: DiscoveryRegistry, mac_text: str,
         clues: list[tuple[str, str, int | None]]) -> dict[str, tuple[str, str, float]]:
    """integration shown → (source, claimed value, weight)"""
    return {m.says.split(" → ")[1]: (m.source, m.claims[0].value, m.claims[0].weight)
            for m in registry_matches(registry, mac(mac_text), clues)}


def test_dhcp_hostname_pattern_with_its_mac_prefix(small: DiscoveryRegistry) -> None:
    both = says(small, "0c:ae:7d:01:02:03", [("hostname", "Ring-Doorbell-12", 3)])
    assert both == {"Ring": ("registry_dhcp", "Ring", 0.65)}
    # the hostname alone does not satisfy a matcher that also names a MAC prefix
    assert says(small, "02:00:00:01:02:03", [("hostname", "Ring-Doorbell-12", 3)]) == {}
    # a character set in the pattern: k[lps]* is KL/KP/KS, not KX
    assert says(small, "50:91:e3:00:00:01", [("hostname", "KP115", 1)])[
        "TP-Link Smart Home"][0] == "registry_dhcp"
    # nor does the MAC prefix alone, when Home Assistant pairs it with a hostname
    assert says(small, "50:91:e3:00:00:01", [("hostname", "KX115", 1)]) == {}
    assert says(small, "0c:ae:7d:01:02:03", []) == {}
    # a hostname-only matcher, weaker than hostname + MAC
    assert says(small, "02:00:00:00:00:09", [("hostname", "zengge_3f_141_abcd", 1)]) == {
        "Magic Home": ("registry_hostname", "Magic Home", 0.5)}
    assert says(small, "02:00:00:00:00:09", [("hostname", "zengge_3g_141_abcd", 1)]) == {}


def test_mdns_host_name_reads_the_hostname_patterns(small: DiscoveryRegistry) -> None:
    found = registry_matches(small, mac("0c:ae:7d:01:02:03"), [("mdns_host", "Ring-1F2E", 8)])
    assert [(m.source, m.says, m.packet, m.basis) for m in found] == [
        ("registry_dhcp", "mDNS host name ring* and MAC 0CAE7D* → Ring", 8,
         (("mdns_host", "Ring-1F2E"),))]


def test_mac_prefix_alone_names_the_maker(small: DiscoveryRegistry) -> None:
    assert says(small, "d0:73:d5:12:8e:30", []) == {"LIFX": ("registry_mac", "LIFX", 0.55)}


def test_zeroconf_service_name_and_properties(small: DiscoveryRegistry) -> None:
    roomba = says(small, "02:00:00:00:00:01", [("mdns_service", "_amzn-alexa._tcp", 7),
                                               ("mdns_instance", "Roomba-3E0C1A2B", 7)])
    assert roomba == {"iRobot Roomba and Braava": ("registry_zeroconf",
                                                   "iRobot Roomba and Braava", 0.65)}
    assert says(small, "02:00:00:00:00:01", [("mdns_service", "_amzn-alexa._tcp", 7),
                                             ("mdns_instance", "Echo Dot-xyz", 7)]) == {}
    apple = says(small, "02:00:00:00:00:01", [("mdns_service", "_airplay._tcp", 2),
                                              ("mdns_txt", "model=AppleTV6,2", 2)])
    assert apple == {"Apple TV": ("registry_zeroconf", "Apple", 0.65)}
    assert says(small, "02:00:00:00:00:01", [("mdns_service", "_airplay._tcp", 2),
                                             ("mdns_txt", "model=Sonos One", 2)]) == {}
    assert says(small, "02:00:00:00:00:01", [("mdns_service", "_hue._tcp", 2)]) == {
        "Philips Hue": ("registry_zeroconf_type", "Philips", 0.6)}


def test_platform_integrations_name_the_platform_never_the_maker(
        small: DiscoveryRegistry) -> None:
    found = registry_matches(small, mac("02:00:00:00:00:01"),
                             [("mdns_service", "_esphomelib._tcp", 4)])
    assert [(c.attribute, c.value) for m in found for c in m.claims] == [
        ("platform", "ESPHome (firmware)")]


def test_homekit_model_needs_the_hap_service(small: DiscoveryRegistry) -> None:
    clues: list[tuple[str, str, int | None]] = [("mdns_txt", "md=LIFX A19", 5)]
    assert says(small, "02:00:00:00:00:01", clues) == {}
    hap = says(small, "02:00:00:00:00:01", [("mdns_service", "_hap._tcp", 5), *clues])
    assert hap == {"LIFX": ("registry_homekit", "LIFX", 0.65)}
    # first word / before the first hyphen, then wildcard models
    assert "Philips Hue" in says(small, "02:00:00:00:00:01", [
        ("mdns_service", "_hap._tcp", 5), ("mdns_txt", "md=BSB002-EU", 5)])
    assert "Yeelight" in says(small, "02:00:00:00:00:01", [
        ("mdns_service", "_hap._udp", 5), ("mdns_txt", "md=YLDP13YL", 5)])


def test_ssdp_type_and_device_description(small: DiscoveryRegistry) -> None:
    assert says(small, "02:00:00:00:00:01", [
        ("ssdp_type", "urn:schemas-upnp-org:device:ZonePlayer:1", 9)]) == {
        "Sonos": ("registry_ssdp", "Sonos", 0.6)}
    renderer = [("ssdp_type", "urn:schemas-upnp-org:device:MediaRenderer:1", 9)]
    assert says(small, "02:00:00:00:00:01", renderer) == {}  # needs the manufacturer
    assert says(small, "02:00:00:00:00:01", [*renderer, ("upnp_manufacturer", "Denon", 10)]) \
        == {"Denon AVR Network Receivers": ("registry_ssdp", "Denon", 0.6)}


# --- the decision ---------------------------------------------------------------------

def test_registry_weight_sits_between_the_oui_and_explicit_clues(kb: KnowledgeBase) -> None:
    weights = kb.source_weights
    for key in ("registry_dhcp", "registry_mac", "registry_zeroconf", "registry_homekit",
                "registry_ssdp"):
        assert weights["oui"] < weights[key] < weights["vendor_class"] < weights["mdns_txt"]


def test_registry_mac_prefix_replaces_the_oui_maker_claim(kb: KnowledgeBase,
                                                          oui: OuiRegistry) -> None:
    result = identify(mac("d0:73:d5:00:00:01"), [], kb, oui)
    assert result.manufacturer == "LIFX"
    assert [e.source for e in result.evidence][:2] == ["oui", "home_assistant_registry"]
    assert "manufacturer" not in result.evidence[0].supports  # one fact, counted once
    assert result.manufacturer_confidence == pytest.approx(kb.source_weights["registry_mac"])
    paired = identify(mac("0c:ae:7d:00:00:01"), [Clue("hostname", "ringpro1a2b", 4)], kb, oui)
    assert paired.manufacturer == "Ring"
    assert paired.evidence[0].says.startswith('Home Assistant discovery matcher "DHCP hostname')


def test_a_clue_a_rule_already_counted_is_not_counted_again(kb: KnowledgeBase,
                                                             oui: OuiRegistry) -> None:
    without = KnowledgeBase(**{**kb.__dict__, "discovery": None})
    clues = [Clue("mdns_service", "_hue._tcp", 1)]
    alone = identify(mac("00:00:5e:00:53:01"), clues, without)
    both = identify(mac("00:00:5e:00:53:01"), clues, kb)
    assert both.manufacturer_confidence == pytest.approx(alone.manufacturer_confidence)
    # the hostname rule names iRobot: the registry's hostname + MAC match adds nothing,
    # and the OUI (the MAC's own fact) still counts
    roomba = identify(mac("50:14:79:00:00:01"), [Clue("hostname", "iRobot-A1B2C3", 4)], kb, oui)
    assert roomba.manufacturer == "iRobot"
    assert "manufacturer" in roomba.evidence[0].supports


def test_a_prefix_paired_with_a_hostname_is_not_enough(kb: KnowledgeBase) -> None:
    ampak = OuiRegistry.from_manuf("E0:76:D0\tAmpakTec\tAMPAK Technology, Inc.\n")
    result = identify(mac("e0:76:d0:33:bb:85"), [], kb, ampak)  # a photo frame, not a lock
    assert result.manufacturer == "AMPAK"
    assert not any(e.source == "home_assistant_registry" for e in result.evidence)


def test_a_module_makers_prefix_names_no_maker(kb: KnowledgeBase) -> None:
    data = json.loads((FIXTURE / "expected.json").read_text())
    data["dhcp"].append({"d": "ring", "mac": "5CCF7F"})  # an Espressif prefix
    espressif_kb = KnowledgeBase(**{**kb.__dict__,
                                    "discovery": DiscoveryRegistry.from_mapping(data)})
    result = identify(mac("5c:cf:7f:07:ae:fb"), [], espressif_kb, OuiRegistry.from_manuf(MANUF))
    assert result.manufacturer is None
    assert result.platform == "Espressif (Wi-Fi module)"


def test_names_of_one_maker_are_merged(kb: KnowledgeBase) -> None:
    clues = [Clue("mdns_service", "_hue._tcp", 1),
             Clue("mdns_instance", "Philips hue - 1A2B3C", 1)]
    result = identify(mac("02:00:00:00:00:01"), clues, kb)
    # knowledge.json says "Philips Hue (Signify)", the registry "Philips": one maker
    assert result.manufacturer is not None and result.manufacturer.startswith("Philips")
    assert result.manufacturer_confidence > 0.9


def test_esphome_device_is_a_platform(kb: KnowledgeBase) -> None:
    result = identify(mac("02:00:00:00:00:01"), [Clue("mdns_service", "_esphomelib._tcp", 1)],
                      kb)
    assert (result.manufacturer, result.platform) == (None, "ESPHome (firmware)")


@pytest.mark.parametrize(("category", "kind"), [
    ("2", "hub"), ("5", "bulb"), ("6", "lock"), ("7", "plug"), ("8", "plug"),
    ("9", "thermostat"), ("10", "sensor"), ("17", "camera"), ("18", "doorbell"),
    ("26", "speaker"), ("28", "sprinkler"), ("31", "tv"), ("33", "router")])
def test_homekit_accessory_category_gives_the_kind(kb: KnowledgeBase, category: str,
                                                   kind: str) -> None:
    clues = [Clue("mdns_service", "_hap._tcp", 1), Clue("mdns_txt", f"ci={category}", 1)]
    assert identify(mac("02:00:00:00:00:01"), clues, kb).kind == kind


@pytest.mark.parametrize("txt", ["ci=٥", "ci=5.0", "ci=99999", "ci=", "ci=1", "ci=-5"])
def test_odd_or_unknown_homekit_categories_name_no_kind(kb: KnowledgeBase, txt: str) -> None:
    clues = [Clue("mdns_service", "_hap._tcp", 1), Clue("mdns_txt", txt, 1)]
    assert identify(mac("00:00:5e:00:53:01"), clues, kb).kind == "iot"  # _hap alone


def test_a_ci_key_outside_homekit_is_not_a_category(kb: KnowledgeBase) -> None:
    clues = [Clue("mdns_service", "_http._tcp", 1), Clue("mdns_txt", "ci=17", 1)]
    assert identify(mac("00:00:5e:00:53:01"), clues, kb).kind is None


def hap_announcement(src: str, txt: list[bytes]) -> bytes:
    instance = "Living Room._hap._tcp.local"
    answer = [DNSRR(rrname="_hap._tcp.local", type="PTR", rdata=instance),
              DNSRR(rrname=instance, type="TXT", rdata=txt)]
    return bytes(Ether(src=src, dst="01:00:5e:00:00:fb") / IP(src="192.0.2.10", dst="224.0.0.251")
                 / UDP(sport=5353, dport=5353) / DNS(qr=1, aa=1, qd=[], an=answer))


def test_homekit_announcement_from_the_wire(kb: KnowledgeBase) -> None:
    frame = hap_announcement("02:00:00:00:00:05", [b"c#=2", b"md=LIFX A19", b"ci=5", b"sf=0"])
    facts = parse_mdns(frame[42:])
    clues = [Clue(f, v, 1) for f, v in facts]
    result = identify(mac("02:00:00:00:00:05"), clues, kb)
    assert (result.manufacturer, result.kind, result.model) == ("LIFX", "bulb", "LIFX A19")


@pytest.mark.parametrize(("capabilities", "kind"), [("4101", "tv"), ("2052", "speaker")])
def test_google_cast_capabilities_give_tv_or_speaker(kb: KnowledgeBase, capabilities: str,
                                                     kind: str) -> None:
    clues = [Clue("mdns_service", "_googlecast._tcp", 1),
             Clue("mdns_txt", f"ca={capabilities}", 1)]
    result = identify(mac("02:00:00:00:00:01"), clues, kb)
    assert result.kind == kind
    assert result.platform == "Google Cast (protocol)"
    assert result.manufacturer is None  # Cast is in many makers' TVs and speakers


@pytest.mark.parametrize("capabilities", ["²", "٣", "9" * 40, "-1", "0x5", ""])
def test_odd_cast_capabilities_name_no_kind(kb: KnowledgeBase, capabilities: str) -> None:
    clues = [Clue("mdns_service", "_googlecast._tcp", 1),
             Clue("mdns_txt", f"ca={capabilities}", 1)]
    assert identify(mac("00:00:5e:00:53:01"), clues, kb).kind is None


def test_upnp_urns_give_generic_kinds(kb: KnowledgeBase) -> None:
    for urn, kind in (("urn:schemas-upnp-org:device:ZonePlayer:1", "speaker"),
                      ("urn:schemas-upnp-org:device:DigitalSecurityCamera:1", "camera"),
                      ("urn:schemas-upnp-org:device:WLANAccessPointDevice:1", "router"),
                      ("urn:schemas-upnp-org:device:DimmableLight:1", "bulb")):
        assert identify(mac("02:00:00:00:00:01"), [Clue("ssdp_type", urn, 1)], kb).kind == kind


DESCRIPTION = (b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n"
               b'<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device>'
               b"<deviceType>urn:schemas-upnp-org:device:MediaRenderer:1</deviceType>"
               b"<friendlyName>Living room</friendlyName><manufacturer>Denon</manufacturer>"
               b"<modelName>AVR-X1600H</modelName></device></root>")


def test_upnp_description_served_by_the_device(kb: KnowledgeBase, tmp_path: Path) -> None:
    device = "02:00:00:00:00:07"
    frame = bytes(Ether(src=device, dst="02:00:00:00:00:08")
                  / IP(src="192.0.2.30", dst="192.0.2.31")
                  / TCP(sport=60006, dport=40000, flags="PA") / DESCRIPTION)
    capture = tmp_path / "d.pcap"
    with capture.open("wb") as fh:
        dpkt.pcap.Writer(fh).writepkt(frame, ts=1_700_000_000)
    scan = scan_captures([capture])
    clues = scan.devices[mac(device)].clue_list()
    assert ("upnp_manufacturer", "Denon") in [(c.field, c.value) for c in clues]
    result = identify(mac(device), clues, kb)
    assert (result.manufacturer, result.model, result.kind) == ("Denon", "AVR-X1600H", "tv")
    # the registry's Denon match rests on the same manufacturer string: counted once
    # (0.7 is the upnp_manufacturer rule's weight in knowledge.json)
    assert result.manufacturer_confidence == pytest.approx(0.7)


def test_cli_names_the_registry_match_with_its_frame(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from scapy.layers.dhcp import BOOTP, DHCP
    from typer.testing import CliRunner

    from mudguard.cli.main import app

    manuf = tmp_path / "manuf"
    manuf.write_text("0C:AE:7D\tTexasIns\tTexas Instruments\n")  # a module maker's OUI
    monkeypatch.setenv("MUDGUARD_OUI_FILE", str(manuf))
    device = "0c:ae:7d:01:02:03"
    request = bytes(Ether(src=device, dst="ff:ff:ff:ff:ff:ff")
                    / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)
                    / BOOTP(chaddr=mac(device))
                    / DHCP(options=[("message-type", "request"), ("hostname", b"ringpro-4f2a"),
                                    "end"]))
    capture = tmp_path / "dhcp.pcap"
    with capture.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh)
        writer.writepkt(bytes(Ether(src="02:00:00:00:00:09", dst=device) / IP() / UDP()),
                        ts=1_700_000_000)
        writer.writepkt(request, ts=1_700_000_001)
    result = CliRunner().invoke(app, ["identify", str(capture), "--device", device, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["manufacturer"], document["platform"]) == (
        "Ring", "Texas Instruments (Wi-Fi module)")
    registry = next(e for e in document["evidence"]
                    if e["source"] == "home_assistant_registry")
    assert registry["packet"] == 2
    assert "DHCP hostname ring* and MAC 0CAE7D*" in registry["says"]
    assert registry["supports"] == {"manufacturer": "Ring"}


# --- hostile input --------------------------------------------------------------------

def test_upnp_description_parser_is_bounded() -> None:
    assert parse_upnp_description(b"GET / HTTP/1.1\r\n\r\n") == []
    huge = (b"HTTP/1.1 200 OK\r\n\r\n<root xmlns=\"urn:schemas-upnp-org:device-1-0\">"
            b"<manufacturer>" + b"A" * 100_000 + b"</manufacturer>"
            b"<modelName>\x1b[31mred</modelName>")
    facts = dict(parse_upnp_description(huge))
    assert "upnp_manufacturer" not in facts  # an element longer than 256 bytes is skipped
    late = b"HTTP/1.1 200 OK\r\n\r\n" + b" " * 9000 + DESCRIPTION
    assert parse_upnp_description(late) == []  # only the first 8 KB are searched
    assert dict(parse_upnp_description(DESCRIPTION + b"\x1b"))["upnp_model"] == "AVR-X1600H"


def test_huge_txt_and_odd_names_match_nothing_and_stay_bounded(kb: KnowledgeBase) -> None:
    frame = hap_announcement("00:00:5e:00:53:05", [b"md=" + b"*" * 250, b"ci=" + b"9" * 200])
    clues = [Clue(f, v, 1) for f, v in parse_mdns(frame[42:])]
    assert all(len(c.value) <= 128 for c in clues)
    result = identify(mac("00:00:5e:00:53:05"), clues, kb)  # RFC 7042 documentation MAC
    assert result.kind is None or result.kind == "iot"
    # a device's text full of wildcards is text, never a pattern
    registry = kb.discovery
    assert registry is not None
    assert registry_matches(registry, mac("02:00:00:00:00:01"), [
        ("hostname", "*", 1), ("mdns_service", "*", 1), ("mdns_instance", "*", 1),
        ("ssdp_type", "*", 1), ("mdns_txt", "md=*", 1)]) == []


def test_patterns_are_checked_when_loaded() -> None:
    for bad in ("", "x" * 81, "a\nb"):
        with pytest.raises(KnowledgeError):
            Glob.parse(bad)
    data = json.loads((FIXTURE / "expected.json").read_text())
    data["dhcp"].append({"d": "nobody", "mac": "000000"})
    with pytest.raises(KnowledgeError):
        DiscoveryRegistry.from_mapping(data)
    data["dhcp"][-1] = {"d": "lifx", "mac": "XYZ"}
    with pytest.raises(KnowledgeError):
        DiscoveryRegistry.from_mapping(data)


def test_regex_characters_in_patterns_are_literal() -> None:
    assert glob_match("a.b(c", "A.B(C")
    assert not glob_match("a.b(c", "axb(c")
    assert glob_match("x+*", "x+y") and not glob_match("x+*", "xxy")
    assert not glob_match("*a*a*a*a*a*b", "a" * 5000)  # cut at 256 characters, no blow-up


PIECES = st.sampled_from(["a", "b", "c", "-", ".", "*", "?", "[ab]", "[!a]", "[a-c]"])


@settings(max_examples=300, deadline=None)
@given(pattern=st.lists(PIECES, min_size=1, max_size=8).map("".join),
       text=st.text(alphabet="abcABC-.", max_size=12))
def test_glob_agrees_with_fnmatch(pattern: str, text: str) -> None:
    assert glob_match(pattern, text) == fnmatch.fnmatchcase(text.lower(), pattern.lower())
