"""The shipped knowledge base: a sample of makers' domains and model names decided as
the daemon would (one clue, no OUI), and guards on the data itself (it loads, its
patterns are compiled once and bounded, a platform is never named as a maker)."""

from __future__ import annotations

import json
import re
import time
from importlib import resources
from typing import Any

import pytest

from mudguard.identify.capture import load_knowledge
from mudguard.identify.decide import Clue, identify
from mudguard.identify.knowledge import KnowledgeBase, KnowledgeError

DEVICE = bytes.fromhex("00005e005301")  # documentation MAC (RFC 7042); no OUI registry
PLATFORM_WORDS = ("tuya", "ewelink", "coolkit", "espressif", "evrythng", "miio",
                  "smart life", "google cast")


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_knowledge()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    text = resources.files("mudguard.identify").joinpath("knowledge.json").read_text(
        encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@pytest.mark.parametrize(("field", "value", "maker", "kind"), [
    ("dns_name", "eu.mydlink.com", "D-Link", None),
    ("dns_name", "sp.myedimax.com", "Edimax", None),
    ("dns_name", "emea.lightify-api.org", "OSRAM", "hub"),
    ("dns_name", "messaging.awair.is", "Awair", "sensor"),
    ("dns_name", "global.quickconnect.to", "Synology", "nas"),
    ("dns_name", "ipc.tplinkcloud.com", "TP-Link", "camera"),
    ("dns_name", "bridge.meethue.com", "Philips", "hub"),
    ("dns_name", "my.tado.com", "tado", "thermostat"),
    ("dns_name", "xmpp.samsungsmartcam.com", "Samsung", "camera"),
    ("dns_name", "avs-alexa-eu.amazon.com", "Amazon", "speaker"),
    ("hostname", "DCS-932L", "D-Link", "camera"),
    ("hostname", "DSP-W215", "D-Link", "plug"),
    ("hostname", "DCH-S150", "D-Link", "sensor"),
    ("upnp_model", "IC-3115W", "Edimax", "camera"),
    ("hostname", "SP-2101W", "Edimax", "plug"),
    ("ssdp_type", "urn:Belkin:device:sensor:1", "Belkin", "sensor"),
    ("ssdp_type", "urn:Belkin:device:insight:1", "Belkin", "plug"),
    ("ssdp_type", "urn:Belkin:device:bridge:1", "Belkin", "hub"),
    ("hostname", "WBS04", "Withings", "scale"),
    ("hostname", "Tapo_Plug_1A2B", "TP-Link", "plug"),
    ("hostname", "Tapo_C200_AB12", "TP-Link", "camera"),
    ("mdns_txt", "ty=Brother HL-L2350DW series", "Brother", "printer"),
    ("upnp_model", "HP OfficeJet Pro 9010", "HP", "printer"),
    ("mdns_txt", "ty=EPSON ET-2750 Series", "Epson", "printer"),
    ("mdns_txt", "model=DS918+", "Synology", "nas"),
    ("hostname", "NAS1A2B3C", "QNAP", "nas"),
    ("hostname", "shellyplug-s-7C87CE", "Shelly", "plug"),
    ("hostname", "shellyht-ABCDEF", "Shelly", "sensor"),
    ("hostname", "roborock-vacuum-s5_miap9A2B", "Roborock", "vacuum"),
    ("hostname", "yeelink-light-color1_miio1234", "Yeelight", "bulb"),
    ("hostname", "ihoment_H6159_A1B2", "Govee", "bulb"),
    ("hostname", "LGwebOSTV", "LG", "tv"),
    ("hostname", "VMC4030P", "Netgear/Arlo", "camera"),
    ("user_agent", "Dalvik/2.1.0 (Linux; U; Android 9; AFTMM Build/PS7233)", "Amazon", "tv"),
])
def test_a_makers_domain_or_model_name_identifies_it(kb: KnowledgeBase, field: str,
                                                      value: str, maker: str,
                                                      kind: str | None) -> None:
    result = identify(DEVICE, [Clue(field, value, 1)], kb, None)
    assert result.manufacturer is not None and maker.lower() in result.manufacturer.lower()
    if kind is not None:
        assert result.kind == kind


@pytest.mark.parametrize(("field", "value", "platform"), [
    ("dns_name", "a1.tuyaus.com", "Tuya"),
    ("dns_name", "a3.tuyain.com", "Tuya"),
    ("dns_name", "eu-disp.coolkit.cc", "eWeLink"),
    ("mdns_service", "_ewelink._tcp", "eWeLink"),
    ("dns_name", "api.evrythng.com", "EVRYTHNG"),
    ("hostname", "chuangmi-plug-m1_miio1234", "Mi Home"),
])
def test_a_platform_is_named_as_the_platform_never_the_maker(
        kb: KnowledgeBase, field: str, value: str, platform: str) -> None:
    result = identify(DEVICE, [Clue(field, value, 1)], kb, None)
    assert result.platform is not None and platform in result.platform
    assert result.manufacturer is None or platform.lower() not in result.manufacturer.lower()


def test_a_lookalike_name_claims_nothing(kb: KnowledgeBase) -> None:
    # the label boundary: a suffix matches whole labels only; model numbers need a boundary
    assert identify(DEVICE, [Clue("dns_name", "notmydlink.com", 1)], kb, None
                    ).manufacturer is None
    assert identify(DEVICE, [Clue("hostname", "ABCDCS-932L9", 1)], kb, None
                    ).manufacturer is None
    assert identify(DEVICE, [Clue("hostname", "my-laptop_miio", 1)], kb, None).platform is None


def test_an_app_asking_for_the_hue_cloud_is_not_called_a_bridge(kb: KnowledgeBase) -> None:
    result = identify(DEVICE, [Clue("dns_name", "www.meethue.com", 1)], kb, None)
    assert not any(e.supports.get("kind") == "hub" for e in result.evidence
                   if e.source == "dns")


def test_every_pattern_is_compiled_once_at_load(kb: KnowledgeBase) -> None:
    assert all(isinstance(rule.pattern, re.Pattern) for rule in kb.rules)
    before = [id(rule.pattern) for rule in kb.rules]
    kb.match("hostname", "DCS-932L")
    assert [id(rule.pattern) for rule in kb.rules] == before


_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[*+](?:[^()\\]|\\.)*\)[*+{]")


def test_every_pattern_is_bounded(raw: dict[str, Any], kb: KnowledgeBase) -> None:
    patterns = [r["re"] for r in raw["rules"]]
    patterns += [r["re"] for r in raw["platform_ouis"] + raw["oui_makers"]]
    for source in patterns:
        assert len(source) <= 400, source
        assert not _NESTED_QUANTIFIER.search(source), f"nested quantifier in {source!r}"
    # and hostile values of the longest length any clue keeps are matched quickly
    hostile = ["a" * 4000, "-" * 4000, "DCS-" * 1000, "shelly" + "1" * 3994,
               "a-" * 2000 + "_miap", "=" + " " * 3999, "urn:Belkin:device:" * 200]
    started = time.monotonic()
    for value in hostile:
        for field in ("hostname", "mdns_txt", "upnp_model", "ssdp_type", "user_agent"):
            kb.match(field, value)
    assert time.monotonic() - started < 5.0


def test_the_nested_quantifier_guard_catches_one() -> None:
    assert _NESTED_QUANTIFIER.search(r"^(a+)+$")
    assert not _NESTED_QUANTIFIER.search(r"^(?:DCS|DSP)-\d{3,4}")


def test_no_platform_is_a_maker(raw: dict[str, Any], kb: KnowledgeBase) -> None:
    platforms = {p for _, p in kb.platform_ouis}
    makers: set[str] = set()
    for rule in kb.rules:
        platforms |= {v for a, v in rule.claims if a == "platform"}
        makers |= {v for a, v in rule.claims if a == "manufacturer"}
    for domain in kb.domains.values():
        platforms |= {v for a, v in domain.claims if a == "platform"}
        makers |= {v for a, v in domain.claims if a == "manufacturer"}
    for _, claims in kb.oui_makers:
        makers |= {v for a, v in claims if a == "manufacturer"}
    assert not platforms & makers
    for maker in makers:
        assert not any(word in maker.lower() for word in PLATFORM_WORDS), maker


def test_each_domain_suffix_is_written_once(raw: dict[str, Any]) -> None:
    suffixes = [d["suffix"].lower() for d in raw["domains"]]
    assert len(suffixes) == len(set(suffixes))
    assert all(re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", s) for s in suffixes)


def test_a_rule_naming_an_unknown_kind_is_refused(raw: dict[str, Any]) -> None:
    bad = dict(raw, rules=[*raw["rules"], {"fields": ["hostname"], "re": "^x",
                                           "kind": "toaster"}])
    with pytest.raises(KnowledgeError):
        KnowledgeBase.from_mapping(bad)
