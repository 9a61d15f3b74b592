"""Cross-check of mudguard's MUD validator against the official YANG modules (yangson).

What yangson accepts, mudguard accepts, and the other way round, unless the
difference is listed here with the reason. Differences are of three kinds: rules
RFC 8520 / RFC 8519 state in prose that YANG cannot express (mudguard enforces
them), draft-era spellings mudguard normalises (the normalised output is then
checked by yangson), and modules YANG validation does not know (mudguard warns).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mudguard.mud import parse_mud
from tests.unit.test_mud_parse import ACE0, DELETE, IP0, MUD, TCP0, base, edit

yangson = pytest.importorskip("yangson")
from yangson.enumerations import ContentType, ValidationScope  # noqa: E402
from yangson.exceptions import YangsonException  # noqa: E402

YANG_DIR = Path(sys.prefix) / "share" / "yang" / "modules" / "ietf"
ACL_FEATURES = ["match-on-eth", "match-on-ipv4", "match-on-ipv6", "match-on-tcp",
                "match-on-udp", "match-on-icmp", "eth", "ipv4", "ipv6", "mixed-eth-ipv4",
                "mixed-eth-ipv6", "mixed-eth-ipv4-ipv6"]
MODULES = [  # (name, revision, conformance, features): the revisions RFC 8520 was built on
    ("ietf-mud", "2019-01-28", "implement", []),
    ("ietf-access-control-list", "2019-03-04", "implement", ACL_FEATURES),
    ("ietf-acldns", "2019-01-28", "implement", []),
    ("ietf-packet-fields", "2019-03-04", "import", []),
    ("ietf-ethertypes", "2019-03-04", "import", []),
    ("ietf-inet-types", "2013-07-15", "import", []),
    ("ietf-yang-types", "2013-07-15", "import", []),
    # Implemented, because ACEs may refer to interfaces (leafref targets must exist).
    ("ietf-interfaces", "2018-02-20", "implement", []),
]


@pytest.fixture(scope="module")
def yang() -> Any:
    """A yangson data model of ietf-mud with its ACL modules (RFC 7895 YANG library)."""
    if not (YANG_DIR / "ietf-mud.yang").is_file():
        pytest.fail(f"pyang's IETF YANG modules are missing at {YANG_DIR}")
    modules = []
    for name, revision, conformance, features in MODULES:
        entry: dict[str, Any] = {"name": name, "revision": revision,
                                 "namespace": f"urn:ietf:params:xml:ns:yang:{name}",
                                 "conformance-type": conformance}
        if features:
            entry["feature"] = features
        modules.append(entry)
    library = {"ietf-yang-library:modules-state": {"module-set-id": "mudguard-test",
                                                    "module": modules}}
    return yangson.DataModel(json.dumps(library), [str(YANG_DIR)])


def yang_accepts(model: Any, document: object) -> bool:
    """True if yangson finds the JSON instance valid (schema and semantics)."""
    try:
        instance = model.from_raw(document)
        instance.validate(ValidationScope.all, ContentType.all)
    except YangsonException:
        return False
    return True


def corpus_files(corpus: Path) -> list[Path]:
    return sorted((corpus / "mud").rglob("*.json"))


# Corpus files where the raw verdicts differ, and why.
CORPUS_DIFFERENCES = {
    # A member of a module that is not in the YANG library: yangson rejects the file,
    # mudguard reports the member as a warning and never enforces it.
    "nist-mudfile-dns-test.json": (True, False),
    # Draft-era schema (access-lists container): not RFC 8520 JSON, so yangson rejects;
    # mudguard normalises it (its normalised output is checked below).
    **{p: (True, False) for p in [
        "osmud-lightbulb2000.json", "HueBulbMud.json", "NetatmoCameraMud.json",
        "NetatmoWeatherStationMud.json", "SmartThingsMud.json", "amazonEchoMud.json",
        "awairAirQualityMud.json", "belkincameraMud.json", "blipcareBPmeterMud.json",
        "canaryCameraMud.json", "chromecastUltraMud.json", "dropcamMud.json",
        "hellobarbieMud.json", "hpprinterMud.json", "ihomepowerplugMud.json", "lifxbulbMud.json",
        "nestsmokesensorMud.json", "pixstarphotoframeMud.json", "ringdoorbellMud.json",
        "samsungsmartcamMud.json", "tplinkcameraMud.json", "tplinkplugMud.json",
        "tribyspeakerMud.json", "wemomotionMud.json", "wemoswitchMud.json",
        "withingsbabymonitorMud.json", "withingscardioMud.json",
        "withingssleepsensorMud.json"]},
}


def test_corpus_agrees_with_yang(yang: Any, corpus: Path) -> None:
    compared = 0
    for path in corpus_files(corpus):
        raw = path.read_bytes()
        ours = parse_mud(raw).ok
        theirs = yang_accepts(yang, json.loads(raw))
        expected = CORPUS_DIFFERENCES.get(path.name, (theirs, theirs))
        if path.name == "augustdoorbellcamMud.json":
            # Draft-era and broken: both reject (yangson for the container name, mudguard
            # for an IPv4 address in an ipv6 match; the mutation table shows yangson
            # rejects that too).
            expected = (False, False)
        assert (ours, theirs) == expected, path.name
        compared += 1
    assert compared == 43


def test_normalised_output_is_valid_yang(yang: Any, corpus: Path) -> None:
    """Every file mudguard accepts, re-serialised in RFC 8520 form, is valid to yangson."""
    accepted = 0
    for path in corpus_files(corpus):
        result = parse_mud(path.read_bytes())
        if result.mud is None:
            continue
        assert yang_accepts(yang, result.mud.to_json()), path.name
        accepted += 1
    assert accepted == 42


ACL1 = ("ietf-access-control-list:acls", "acl", 1)

# (what, path, new value, (mudguard accepts, yangson accepts), why they differ or None)
MUTATIONS: list[tuple[str, tuple[str | int, ...], object, tuple[bool, bool], str | None]] = [
    ("port 70000", (*TCP0, "destination-port", "port"), 70000, (False, False), None),
    ("port as a string", (*TCP0, "destination-port", "port"), "443", (False, False), None),
    ("operator lt", (*TCP0, "destination-port", "operator"), "lt", (False, False), None),
    ("operator lte", (*TCP0, "destination-port", "operator"), "lte", (True, True), None),
    ("operator neq", (*TCP0, "destination-port", "operator"), "neq", (True, True), None),
    ("port range", (*TCP0, "destination-port"), {"lower-port": 1, "upper-port": 9},
     (True, True), None),
    ("lower above upper", (*TCP0, "destination-port"), {"lower-port": 9, "upper-port": 1},
     (False, False), None),
    ("range with operator neq", (*TCP0, "destination-port"),
     {"operator": "neq", "lower-port": 1, "upper-port": 9}, (False, False), None),
    ("range with operator eq", (*TCP0, "destination-port"),
     {"operator": "eq", "lower-port": 1, "upper-port": 9}, (True, False),
     "UNSW's generator wrote operator eq beside a range; with no port the range is the only "
     "meaning, so mudguard accepts it with a draft-era warning"),
    ("port missing", (*TCP0, "destination-port"), {"operator": "eq"}, (False, False), None),
    ("mud-version 2", (*MUD, "mud-version"), 2, (False, True),
     "RFC 8520 defines version 1 only; the YANG type is a bare uint8"),
    ("http mud-url", (*MUD, "mud-url"), "http://things.example.com/lamp", (False, True),
     "RFC 8520 §3.3: MUD URLs MUST use https; the YANG type is any inet:uri"),
    ("mud-url missing", (*MUD, "mud-url"), DELETE, (False, False), None),
    ("last-update missing", (*MUD, "last-update"), DELETE, (False, False), None),
    ("is-supported missing", (*MUD, "is-supported"), DELETE, (False, False), None),
    ("bad date", (*MUD, "last-update"), "yesterday", (False, False), None),
    ("is-supported yes", (*MUD, "is-supported"), "yes", (False, False), None),
    ("cache-validity 0", (*MUD, "cache-validity"), 0, (False, False), None),
    ("cache-validity 169", (*MUD, "cache-validity"), 169, (False, False), None),
    ("cache-validity absent", (*MUD, "cache-validity"), DELETE, (True, True), None),
    ("long systeminfo", (*MUD, "systeminfo"), "S" * 200, (True, True), None),
    ("control character", (*MUD, "mfg-name"), "Ex\x1bample", (False, True),
     "hardening: owner-facing strings must not carry terminal escapes; YANG allows any string"),
    ("unknown member", (*MUD, "colour"), "red", (False, False), None),
    ("foreign module member", (*MUD, "ietf-mud-reporter:reporter"), {"x": 1}, (True, False),
     "members of modules mudguard does not implement are reported as "
     "warnings and never enforced; yangson rejects modules absent from its library"),
    ("extension name 41", (*MUD, "extensions"), ["x" * 41], (False, False), None),
    ("extension listed", (*MUD, "extensions"), ["frobnicate"], (True, True), None),
    ("policy names a missing ACL", (*MUD, "from-device-policy", "access-lists",
                                    "access-list"), [{"name": "nope"}], (False, False), None),
    ("policy names an ACL twice", (*MUD, "from-device-policy", "access-lists",
                                   "access-list"), [{"name": "fr"}, {"name": "fr"}],
     (False, False), None),
    ("duplicate ACL name", (*ACL1, "name"), "fr", (False, False), None),
    ("ACE without name", (*ACE0, "name"), DELETE, (False, False), None),
    ("forwarding allow", (*ACE0, "actions", "forwarding"), "allow", (False, False), None),
    ("forwarding drop", (*ACE0, "actions", "forwarding"), "drop", (True, True), None),
    ("actions missing", (*ACE0, "actions"), DELETE, (False, False), None),
    ("tcp and udp", (*ACE0, "matches", "udp"), {"destination-port": {"port": 53}},
     (False, False), None),
    ("ipv4 and ipv6", (*ACE0, "matches", "ipv6"), {"protocol": 6}, (False, False), None),
    ("direction-initiated on udp", (*ACE0, "matches"),
     {"ipv4": {"protocol": 17}, "udp": {"ietf-mud:direction-initiated": "from-device"}},
     (False, False), None),
    ("bad direction", (*TCP0, "ietf-mud:direction-initiated"), "sideways", (False, False),
     None),
    ("protocol contradicts tcp", (*IP0, "protocol"), 17, (False, True),
     "RFC 8519 §4.1 prose: the l4 container must agree with the IP protocol; YANG has no must"),
    ("dscp 64", (*IP0, "dscp"), 64, (False, False), None),
    ("bad DNS name", (*IP0, "ietf-acldns:dst-dnsname"), "bad name!.example", (False, False),
     None),
    ("IPv6 prefix in ipv4", IP0, {"destination-ipv4-network": "2001:db8::/32"}, (False, False),
     None),
    ("IPv4 address in ipv6", (*ACE0, "matches"),
     {"ipv6": {"destination-ipv6-network": "192.168.1.1"}}, (False, False), None),
    ("bare host address", IP0, {"destination-ipv4-network": "192.0.2.7"}, (True, False),
     "draft-era generators wrote host addresses; mudguard normalises them to /32 (warning)"),
    ("prefix", IP0, {"destination-ipv4-network": "192.0.2.0/24"}, (True, True), None),
    ("name and prefix together", (*IP0, "destination-ipv4-network"), "192.0.2.0/24",
     (False, True), "RFC 8520 never says how a DNS name and a prefix combine; mudguard "
                    "refuses rather than guessing a wider meaning"),
    ("ipv4 match in an ipv6 ACL", (*ACL1[:2], 0, "type"), "ipv6-acl-type", (False, True),
     "RFC 8519's when-conditions use the absolute path /acls/acl/type, true if any ACL of "
     "the file has the type; mudguard checks each ACL's own type as §4.1 intends"),
    ("both ACLs ipv6 with ipv4 matches", ("ietf-access-control-list:acls", "acl"),
     "BOTH_IPV6", (False, False), None),
    ("bad MAC", (*ACE0, "matches"), {"eth": {"source-mac-address": "00:11:22:33:44"}},
     (False, False), None),
    ("hex-string ethertype", (*ACE0, "matches"), {"eth": {"ethertype": "0x0806"}},
     (True, False), "draft-era generators wrote ethertypes as hex strings; normalised"),
    ("same-manufacturer true", (*ACE0, "matches", "ietf-mud:mud"), {"same-manufacturer": True},
     (False, False), None),
    ("same-manufacturer", (*ACE0, "matches", "ietf-mud:mud"), {"same-manufacturer": [None]},
     (True, True), None),
    ("unknown MUD match", (*ACE0, "matches", "ietf-mud:mud"), {"colleague": [None]},
     (False, False), None),
    ("interface match", (*ACE0, "matches", "ingress-interface"), "eth0", (False, False), None),
]


def mutated(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    doc = base()
    if value == "BOTH_IPV6":
        for acl in doc["ietf-access-control-list:acls"]["acl"]:
            acl["type"] = "ipv6-acl-type"
        return doc
    if value == {"eth": {"ethertype": "0x0806"}} or (
            isinstance(value, dict) and "eth" in value):
        doc = edit(doc, ("ietf-access-control-list:acls", "acl", 0, "type"), "eth-acl-type")
    return edit(doc, path, value)


def test_base_file_is_valid_to_both(yang: Any) -> None:
    assert parse_mud(json.dumps(base())).ok
    assert yang_accepts(yang, base())


@pytest.mark.parametrize(("what", "path", "value", "verdicts", "why"), MUTATIONS,
                         ids=[m[0] for m in MUTATIONS])
def test_mutation_verdicts(yang: Any, what: str, path: tuple[str | int, ...], value: object,
                           verdicts: tuple[bool, bool], why: str | None) -> None:
    doc = mutated(path, value)
    ours = parse_mud(json.dumps(doc)).ok
    theirs = yang_accepts(yang, doc)
    assert (ours, theirs) == verdicts
    assert (ours == theirs) == (why is None), "a difference needs a reason, agreement none"
