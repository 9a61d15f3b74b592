"""RFC 9761 (D)TLS profiles in MUD files: parsing, validation, cross-check with yangson."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mudguard.mud import Direction, Severity, parse_mud
from mudguard.mud.tls_profile import TlsProfile, is_grease, is_grease_alpn, is_grease_psk_mode

KEY = "ietf-acl-tls:client-profiles"
DATA = Path(__file__).resolve().parents[1] / "data" / "mud-extensions"
VENDORED = Path(__file__).resolve().parents[2] / "src" / "mudguard" / "mud" / "yang"
EXAMPLE = DATA / "rfc9761-tls-profile.json"
PROFILE0 = ("ietf-access-control-list:acls", "acl", 0, "aces", "ace", 0, "matches", KEY)


def example() -> dict[str, Any]:
    """The hand-written RFC 9761 example (tests/data/mud-extensions)."""
    doc: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return doc


def with_profile(profile: object) -> dict[str, Any]:
    """The example with its first ACE's client-profiles replaced by one entry."""
    doc = example()
    ace = doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]
    ace["matches"][KEY] = {"tls-dtls-profile": [profile]}
    return doc


def with_container(container: object) -> dict[str, Any]:
    doc = example()
    doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]["matches"][KEY] = container
    return doc


def warnings(doc: dict[str, Any]) -> list[str]:
    return [str(f) for f in parse_mud(json.dumps(doc)).findings
            if f.severity is Severity.WARNING]


def test_the_example_parses_with_both_profiles() -> None:
    result = parse_mud(EXAMPLE.read_bytes())
    assert result.ok and result.mud is not None
    assert result.mud.tls_profile_supported is True
    aces = result.mud.tls_profiled_aces()
    assert [a.name for a in aces] == ["cl0-frdev", "cl1-frdev"]
    assert aces[0].matches.tls_profiles == (TlsProfile(
        name="profile1", tls_versions=("tls13",), cipher_suites=(4865, 4866),
        extension_types=(10, 11, 13, 16, 24), supported_groups=(29,)),)
    assert aces[1].matches.tls_profiles[0].dtls_versions == ("dtls12", "dtls13")
    assert aces[1].matches.tls_profiles[0].application_protocols == ("coap",)
    assert not any("not understood" in w for w in warnings(example()))


def test_every_leaf_list_round_trips() -> None:
    profile = {"name": "all-of-it", "supported-tls-version": ["tls12", "tls13"],
               "supported-dtls-version": ["dtls13"], "cipher-suite": [4865, 49199],
               "extension-type": [0, 16, 43], "accept-list-ta-cert": ["MIIB"],
               "spki-pin-set": ["AAEC"], "certificate-authority": ["CN=Example Root"],
               "supported-group": [29, 23], "signature-algorithm-cert": [1027],
               "signature-algorithm": [2052, 1027], "application-protocol": ["mqtt", "h2"],
               "psk-key-exchange-mode": [1], "cert-compression-algorithm": [2]}
    mud = parse_mud(json.dumps(with_profile(profile))).mud
    assert mud is not None
    parsed = mud.tls_profiled_aces()[0].matches.tls_profiles[0]
    assert parsed.accept_list_ta_cert == (bytes.fromhex("308201"),)
    assert parsed.spki_pin_sets == (b"\x00\x01\x02",)
    assert parsed.to_json() == profile
    again = parse_mud(json.dumps(mud.to_json())).mud
    assert again is not None and again.tls_profiled_aces()[0].matches.tls_profiles == (parsed,)


BAD: list[tuple[str, object, str]] = [
    ("TLS 1.0", {"name": "p", "supported-tls-version": ["tls10"]},
     "expected one of tls12, tls13, got 'tls10'"),
    ("a DTLS version as TLS", {"name": "p", "supported-tls-version": ["dtls13"]},
     "expected one of tls12, tls13"),
    ("cipher suite above 16 bits", {"name": "p", "cipher-suite": [70000]},
     "expected a cipher suite (0..65535), got 70000"),
    ("cipher suite as a string", {"name": "p", "cipher-suite": ["4865"]},
     "expected a cipher suite"),
    ("cipher suite as a boolean", {"name": "p", "cipher-suite": [True]}, "expected a cipher"),
    ("GREASE cipher suite", {"name": "p", "cipher-suite": [0x2A2A]}, "GREASE value"),
    ("GREASE extension", {"name": "p", "extension-type": [0xFAFA]}, "GREASE value"),
    ("GREASE group", {"name": "p", "supported-group": [0x0A0A]}, "GREASE value"),
    ("GREASE PSK mode", {"name": "p", "psk-key-exchange-mode": [0x0B]}, "GREASE value"),
    ("GREASE ALPN", {"name": "p", "application-protocol": ["\x1a\x1a"]}, "control char"),
    ("PSK mode above 8 bits", {"name": "p", "psk-key-exchange-mode": [256]},
     "expected a PSK key exchange mode (0..255)"),
    ("duplicate value", {"name": "p", "cipher-suite": [4865, 4865]}, "duplicate value 4865"),
    ("leaf-list as a scalar", {"name": "p", "cipher-suite": 4865},
     "expected a list (YANG leaf-list)"),
    ("name with a space", {"name": "my profile"}, "no space or special character"),
    ("name too long", {"name": "p" * 65}, "expected 1..64"),
    ("no name", {"cipher-suite": [4865]}, "missing: the key of the tls-dtls-profile list"),
    ("unknown member", {"name": "p", "ja3": "abc"}, "unknown member of tls-dtls-profile"),
    ("plural spelling of the RFC example", {"name": "p", "supported-tls-versions": ["tls13"]},
     "unknown member of tls-dtls-profile"),
    ("empty ALPN", {"name": "p", "application-protocol": [""]}, "expected an ALPN"),
    ("bad base64", {"name": "p", "spki-pin-set": ["not base64!"]}, "not valid base64"),
]


@pytest.mark.parametrize(("what", "profile", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_broken_profile_is_ignored_with_a_warning_and_the_ace_kept(
        what: str, profile: object, message: str) -> None:
    result = parse_mud(json.dumps(with_profile(profile)))
    assert result.ok, what  # never a reason to refuse the file
    assert result.mud is not None
    ace = result.mud.policy_aces(Direction.FROM_DEVICE)[0]
    assert ace.name == "cl0-frdev" and ace.matches.tls_profiles == ()  # ignored
    assert ace.matches.transport is not None  # the port match is still enforced
    found = [w for w in warnings(with_profile(profile)) if "(TLS profile ignored)" in w]
    assert any(message in w for w in found), found
    assert all(w.startswith("acls.acl[0].aces.ace[0].matches.client-profiles."
                            "tls-dtls-profile[0]") for w in found)


CONTAINERS: list[tuple[str, object, str]] = [
    ("RFC example's singular container", {"tls-dtls-profiles": []}, "unknown member"),
    ("not an object", [1], "expected an object"),
    ("duplicate names", {"tls-dtls-profile": [{"name": "a"}, {"name": "a"}]},
     "duplicate key 'a'"),
    ("too many profiles", {"tls-dtls-profile": [{"name": f"p{i}"} for i in range(17)]},
     "at most 16"),
]


@pytest.mark.parametrize(("what", "container", "message"), CONTAINERS,
                         ids=[c[0] for c in CONTAINERS])
def test_a_broken_container_is_ignored(what: str, container: object, message: str) -> None:
    doc = with_container(container)
    result = parse_mud(json.dumps(doc))
    assert result.ok and result.mud is not None, what
    assert [a.name for a in result.mud.tls_profiled_aces()] == ["cl1-frdev"]
    assert any(message in w for w in warnings(doc)), warnings(doc)


def test_a_profile_on_an_ace_without_transport_is_not_observed() -> None:
    doc = example()
    del doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]["matches"]["tcp"]
    mud = parse_mud(json.dumps(doc)).mud
    assert mud is not None and [a.name for a in mud.tls_profiled_aces()] == ["cl1-frdev"]
    assert any("without tcp or udp" in w for w in warnings(doc))


def test_the_rfc_examples_string_boolean_is_read_with_a_warning() -> None:
    doc = example()
    doc["ietf-mud:mud"]["ietf-mud-tls:is-tls-dtls-profile-supported"] = "true"
    mud = parse_mud(json.dumps(doc)).mud
    assert mud is not None and mud.tls_profile_supported is True
    assert any("RFC 7951 §6.9" in w for w in warnings(doc))
    doc["ietf-mud:mud"]["ietf-mud-tls:is-tls-dtls-profile-supported"] = 3
    result = parse_mud(json.dumps(doc))
    assert result.ok and result.mud is not None and result.mud.tls_profile_supported is None


def test_a_file_without_the_extension_has_no_profile() -> None:
    doc = example()
    for ace in doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"]:
        del ace["matches"][KEY]
    del doc["ietf-mud:mud"]["ietf-mud-tls:is-tls-dtls-profile-supported"]
    mud = parse_mud(json.dumps(doc)).mud
    assert mud is not None and mud.tls_profiled_aces() == ()
    assert mud.tls_profile_supported is None


def test_grease_code_points() -> None:
    assert [v for v in range(0x10000) if is_grease(v)] == [0x0A0A + 0x1010 * i
                                                            for i in range(16)]
    assert [v for v in range(256) if is_grease_psk_mode(v)] == [
        0x0B, 0x2A, 0x49, 0x68, 0x87, 0xA6, 0xC5, 0xE4]
    assert is_grease_alpn("\x3a\x3a") and not is_grease_alpn("h2")


# -- cross-check with yangson against the vendored modules --------------------------------

yangson = pytest.importorskip("yangson")
from yangson.enumerations import ContentType, ValidationScope  # noqa: E402
from yangson.exceptions import YangsonException  # noqa: E402

PYANG_DIR = Path(sys.prefix) / "share" / "yang" / "modules" / "ietf"
ACL_FEATURES = ["match-on-eth", "match-on-ipv4", "match-on-ipv6", "match-on-tcp",
                "match-on-udp", "match-on-icmp", "eth", "ipv4", "ipv6", "mixed-eth-ipv4",
                "mixed-eth-ipv6", "mixed-eth-ipv4-ipv6"]
MODULES: list[tuple[str, str, str, list[str]]] = [
    ("ietf-mud", "2019-01-28", "implement", []),
    ("ietf-mud-tls", "2025-04-09", "implement", []),
    ("ietf-acl-tls", "2025-04-09", "implement", ["match-on-tls-dtls"]),
    ("iana-tls-profile", "2025-04-09", "import", []),
    ("ietf-access-control-list", "2019-03-04", "implement", ACL_FEATURES),
    ("ietf-acldns", "2019-01-28", "implement", []),
    ("ietf-packet-fields", "2019-03-04", "import", []),
    ("ietf-ethertypes", "2019-03-04", "import", []),
    ("ietf-inet-types", "2013-07-15", "import", []),
    ("ietf-yang-types", "2013-07-15", "import", []),
    ("ietf-interfaces", "2018-02-20", "implement", []),
]


@pytest.fixture(scope="module")
def yang() -> Any:
    """ietf-mud and the ACL modules with the vendored RFC 9761 modules, in yangson."""
    modules = []
    for name, revision, conformance, features in MODULES:
        entry: dict[str, Any] = {"name": name, "revision": revision,
                                 "namespace": f"urn:ietf:params:xml:ns:yang:{name}",
                                 "conformance-type": conformance}
        if features:
            entry["feature"] = features
        modules.append(entry)
    library = {"ietf-yang-library:modules-state": {"module-set-id": "mudguard-tls",
                                                    "module": modules}}
    return yangson.DataModel(json.dumps(library), [str(VENDORED), str(PYANG_DIR)])


def yang_accepts(model: Any, document: object) -> bool:
    try:
        model.from_raw(document).validate(ValidationScope.all, ContentType.all)
    except YangsonException:
        return False
    return True


def test_yangson_accepts_the_example_and_its_normalised_form(yang: Any) -> None:
    assert yang_accepts(yang, example())
    mud = parse_mud(EXAMPLE.read_bytes()).mud
    assert mud is not None and yang_accepts(yang, mud.to_json())


# Where mudguard is stricter than the YANG types, and why (everything else must agree).
STRICTER = {
    "GREASE cipher suite": "RFC 9761 §5 prose: no GREASE value in a profile",
    "GREASE extension": "same",
    "GREASE group": "same",
    "GREASE PSK mode": "same",
    "GREASE ALPN": "hardening: control characters in owner-facing text",
    "name with a space": "RFC 9761 prose on the name leaf; the YANG type has no pattern",
    "empty ALPN": "RFC 7301: a protocol ID is 1..255 bytes; the YANG type is any string",
}


@pytest.mark.parametrize(("what", "profile", "_message"), BAD, ids=[b[0] for b in BAD])
def test_yangson_rejects_what_mudguard_ignores(yang: Any, what: str, profile: object,
                                               _message: str) -> None:
    assert yang_accepts(yang, with_profile(profile)) is (what in STRICTER)


@pytest.mark.parametrize(("what", "container", "_message"), CONTAINERS,
                         ids=[c[0] for c in CONTAINERS])
def test_yangson_rejects_the_broken_containers(yang: Any, what: str, container: object,
                                               _message: str) -> None:
    expected = what == "too many profiles"  # mudguard's own bound, not a YANG rule
    assert yang_accepts(yang, with_container(container)) is expected


def test_yangson_rejects_the_string_boolean_mudguard_reads(yang: Any) -> None:
    doc = example()
    doc["ietf-mud:mud"]["ietf-mud-tls:is-tls-dtls-profile-supported"] = "true"
    assert not yang_accepts(yang, doc)  # mudguard reads it with a warning (RFC's example)
    fixed = parse_mud(json.dumps(doc)).mud
    assert fixed is not None and yang_accepts(yang, fixed.to_json())


def test_mud_show_names_the_watched_profiles() -> None:
    from tests.unit.test_mud_cli import run

    code, out = run("show", str(EXAMPLE))
    assert code == 0
    assert "TLS profile: mud-7500-profile/cl0-frdev: TLS 1.3 · 0x1301 0x1302 " \
           "(ClientHellos watched)" in out
    assert "cl1-frdev: DTLS 1.2, DTLS 1.3 · 0x1301 0xc0ae · ALPN coap" in out
