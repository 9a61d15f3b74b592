"""Every rule of the MUD parser: the path and the message of each finding."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from mudguard.mud import (
    MAX_MUD_BYTES,
    AclType,
    Direction,
    Forwarding,
    PortOperator,
    Severity,
    parse_mud,
)

URL = "https://things.example.com/lamp"


def base() -> dict[str, Any]:
    """A small, fully valid RFC 8520 file: one ACL each way."""
    return {
        "ietf-mud:mud": {
            "mud-version": 1, "mud-url": URL, "last-update": "2024-05-01T10:00:00Z",
            "cache-validity": 24, "is-supported": True, "systeminfo": "A lamp",
            "mfg-name": "Example", "model-name": "lamp-1",
            "from-device-policy": {"access-lists": {"access-list": [{"name": "fr"}]}},
            "to-device-policy": {"access-lists": {"access-list": [{"name": "to"}]}},
        },
        "ietf-access-control-list:acls": {"acl": [
            {"name": "fr", "type": "ipv4-acl-type", "aces": {"ace": [{
                "name": "cloud",
                "matches": {"ipv4": {"protocol": 6,
                                     "ietf-acldns:dst-dnsname": "cloud.example.com"},
                            "tcp": {"destination-port": {"operator": "eq", "port": 443},
                                    "ietf-mud:direction-initiated": "from-device"}},
                "actions": {"forwarding": "accept"}}]}},
            {"name": "to", "type": "ipv4-acl-type", "aces": {"ace": [{
                "name": "cloud",
                "matches": {"ipv4": {"protocol": 6,
                                     "ietf-acldns:src-dnsname": "cloud.example.com"},
                            "tcp": {"source-port": {"operator": "eq", "port": 443}}},
                "actions": {"forwarding": "accept"}}]}},
        ]},
    }


ACE0 = ("ietf-access-control-list:acls", "acl", 0, "aces", "ace", 0)


def edit(doc: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """A copy of ``doc`` with ``value`` set at ``path`` (``DELETE`` removes the member)."""
    out = copy.deepcopy(doc)
    node: Any = out
    for part in path[:-1]:
        node = node[part]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


DELETE = object()


def findings(doc: object, severity: Severity, **kwargs: Any) -> list[str]:
    result = parse_mud(json.dumps(doc), **kwargs)
    return [str(f) for f in result.findings if f.severity is severity]


def test_base_is_valid_and_modelled() -> None:
    result = parse_mud(json.dumps(base()), expected_url=URL)
    assert result.findings == ()
    mud = result.mud
    assert mud is not None
    assert (mud.mud_version, mud.mud_url, mud.cache_validity_hours) == (1, URL, 24)
    assert mud.from_device_policy == ("fr",) and mud.to_device_policy == ("to",)
    ace = mud.policy_aces(Direction.FROM_DEVICE)[0]
    assert ace.action is Forwarding.ACCEPT
    assert ace.matches.ip is not None and ace.matches.ip.dst_dnsname == "cloud.example.com"
    assert ace.matches.transport is not None
    assert ace.matches.transport.direction_initiated is Direction.FROM_DEVICE
    port = ace.matches.transport.dst_port
    assert port is not None and port.operator is PortOperator.EQ and port.port == 443
    assert mud.dns_names() == frozenset({"cloud.example.com"})


MUD = ("ietf-mud:mud",)
TCP0 = (*ACE0, "matches", "tcp")
IP0 = (*ACE0, "matches", "ipv4")

# (where to change, new value, the exact error expected)
ERRORS: list[tuple[tuple[str | int, ...], object, str]] = [
    ((*TCP0, "destination-port", "port"), 70000,
     "acls.acl[0].aces.ace[0].matches.tcp.destination-port.port: expected 0..65535, got 70000"),
    ((*TCP0, "destination-port", "port"), "443",
     "acls.acl[0].aces.ace[0].matches.tcp.destination-port.port: "
     "expected an integer 0..65535, got '443'"),
    ((*TCP0, "destination-port", "operator"), "lt",
     "acls.acl[0].aces.ace[0].matches.tcp.destination-port.operator: "
     "expected eq, neq, lte or gte, got 'lt'"),
    ((*TCP0, "destination-port"), {"lower-port": 9000, "upper-port": 8000},
     "acls.acl[0].aces.ace[0].matches.tcp.destination-port: lower-port 9000 is above "
     "upper-port 8000"),
    ((*TCP0, "destination-port"), {"operator": "neq", "lower-port": 1, "upper-port": 2},
     "acls.acl[0].aces.ace[0].matches.tcp.destination-port.operator: a port range and an "
     "operator are alternatives (RFC 8519), got operator 'neq'"),
    ((*TCP0, "destination-port"), {"port": 1, "lower-port": 1, "upper-port": 2},
     "acls.acl[0].aces.ace[0].matches.tcp.destination-port: a port range and an operator "
     "are alternatives (RFC 8519)"),
    ((*TCP0, "destination-port"), {"operator": "eq"},
     "acls.acl[0].aces.ace[0].matches.tcp.destination-port.port: missing (mandatory)"),
    ((*TCP0, "ietf-mud:direction-initiated"), "sideways",
     "acls.acl[0].aces.ace[0].matches.tcp.direction-initiated: expected from-device or "
     "to-device, got 'sideways'"),
    ((*TCP0, "window-sizes"), 1,
     "acls.acl[0].aces.ace[0].matches.tcp.window-sizes: unknown member of the transport match"),
    ((*IP0, "protocol"), 17,
     "acls.acl[0].aces.ace[0].matches.ipv4.protocol: protocol 17 contradicts the tcp match"),
    ((*IP0, "dscp"), 64, "acls.acl[0].aces.ace[0].matches.ipv4.dscp: expected 0..63, got 64"),
    ((*IP0, "destination-ipv4-network"), "2001:db8::/32",
     "acls.acl[0].aces.ace[0].matches.ipv4.destination-ipv4-network: expected an IPv4 prefix "
     "like 192.0.2.0/24, got '2001:db8::/32'"),
    ((*IP0, "destination-ipv4-network"), "192.0.2.0/33",
     "acls.acl[0].aces.ace[0].matches.ipv4.destination-ipv4-network: expected an IPv4 "
     "prefix, got '192.0.2.0/33'"),
    ((*IP0, "ietf-acldns:dst-dnsname"), "bad name!.example",
     "acls.acl[0].aces.ace[0].matches.ipv4.dst-dnsname: expected a DNS name (inet:host), "
     "got 'bad name!.example'"),
    ((*IP0, "hop"), 1, "acls.acl[0].aces.ace[0].matches.ipv4.hop: unknown member of the "
     "ipv4 match"),
    ((*ACE0, "matches", "udp"), {"destination-port": {"port": 53}},
     "acls.acl[0].aces.ace[0].matches: tcp and udp matches are alternatives "
     "(RFC 8519 choice l4)"),
    ((*ACE0, "matches", "ipv6"), {"protocol": 6},
     "acls.acl[0].aces.ace[0].matches: ipv4 and ipv6 matches are alternatives "
     "(RFC 8519 choice l3)"),
    ((*ACE0, "matches", "ingress-interface"), "eth0",
     "acls.acl[0].aces.ace[0].matches: interface matches have no meaning in a MUD file"),
    ((*ACE0, "matches", "ietf-mud:mud"), {"same-manufacturer": True},
     "acls.acl[0].aces.ace[0].matches.mud.same-manufacturer: expected [null] (YANG empty), "
     "got true"),
    ((*ACE0, "matches", "ietf-mud:mud"), {"colleague": [None]},
     "acls.acl[0].aces.ace[0].matches.mud.colleague: unknown MUD match"),
    ((*ACE0, "matches", "eth"), {"source-mac-address": "00:11:22:33:44"},
     "acls.acl[0].aces.ace[0].matches.eth.source-mac-address: expected a MAC address, "
     "got '00:11:22:33:44'"),
    ((*ACE0, "actions", "forwarding"), "allow",
     "acls.acl[0].aces.ace[0].actions.forwarding: expected accept, drop or reject, got 'allow'"),
    ((*ACE0, "actions"), DELETE,
     "acls.acl[0].aces.ace[0].actions: missing: every ACE needs actions.forwarding"),
    ((*ACE0, "name"), DELETE, "acls.acl[0].aces.ace[0].name: missing (mandatory)"),
    (("ietf-access-control-list:acls", "acl", 0, "type"), "ipv5-acl-type",
     "acls.acl[0].type: expected one of eth-acl-type, ipv4-acl-type, ipv6-acl-type, "
     "mixed-eth-ipv4-acl-type, mixed-eth-ipv4-ipv6-acl-type, mixed-eth-ipv6-acl-type, "
     "got 'ipv5-acl-type'"),
    # ACL type versus matches (RFC 8519 §4.1).
    (("ietf-access-control-list:acls", "acl", 0, "type"), "ipv6-acl-type",
     "acls.acl[0].aces.ace[0].matches.ipv4: an ipv4 match in an ACL of type ipv6-acl-type"),
    (("ietf-access-control-list:acls", "acl", 1, "name"), "fr",
     "acls.acl[1].name: ACL name 'fr' is not unique"),
    ((*MUD, "mud-version"), 2, "mud.mud-version: only MUD version 1 exists (RFC 8520 §3.1), "
     "got 2"),
    ((*MUD, "mud-url"), "http://things.example.com/lamp",
     "mud.mud-url: MUD URLs must use https (RFC 8520 §3.3), got "
     "'http://things.example.com/lamp'"),
    ((*MUD, "mud-url"), DELETE, "mud.mud-url: missing (mandatory)"),
    ((*MUD, "last-update"), "yesterday",
     "mud.last-update: expected a date-and-time like 2019-01-28T12:00:00Z, got 'yesterday'"),
    ((*MUD, "last-update"), "2024-02-30T10:00:00Z",
     "mud.last-update: not a real date and time: '2024-02-30T10:00:00Z'"),
    ((*MUD, "is-supported"), "yes", "mud.is-supported: expected true or false, got 'yes'"),
    ((*MUD, "cache-validity"), 0, "mud.cache-validity: expected 1..168, got 0"),
    ((*MUD, "cache-validity"), 169, "mud.cache-validity: expected 1..168, got 169"),
    ((*MUD, "mfg-name"), "Ex\x1bample", "mud.mfg-name: control characters are not allowed"),
    ((*MUD, "colour"), "red", "mud.colour: unknown member of the ietf-mud:mud container"),
    ((*MUD, "extensions"), ["x" * 41], "mud.extensions[0]: expected 1..40 characters, got 41"),
    # Cross-references: the policy names an ACL the file does not define.
    ((*MUD, "from-device-policy", "access-lists", "access-list"), [{"name": "nope"}],
     "mud.from-device-policy.access-lists.access-list[0].name: names ACL 'nope', which the "
     "file does not define"),
    ((*MUD, "from-device-policy", "access-lists", "access-list"),
     [{"name": "fr"}, {"name": "fr"}],
     "mud.from-device-policy.access-lists.access-list[1].name: ACL 'fr' listed twice"),
]


@pytest.mark.parametrize(("path", "value", "expected"), ERRORS, ids=[e[2][:60] for e in ERRORS])
def test_rule_rejects_with_path_and_message(path: tuple[str | int, ...], value: object,
                                            expected: str) -> None:
    doc = edit(base(), path, value)
    result = parse_mud(json.dumps(doc))
    assert result.mud is None and not result.ok
    assert expected in [str(e) for e in result.errors], result.errors


WARNINGS: list[tuple[tuple[str | int, ...], object, str]] = [
    ((*MUD, "systeminfo"), "L" * 61,
     "mud.systeminfo: longer than 60 characters (61); RFC 8520 says it should fit in 60"),
    ((*MUD, "ietf-mud-reporter:reporter"), {"x": 1},
     "mud.reporter: member of a module mudguard does not implement; not enforced"),
    ((*MUD, "extensions"), ["frobnicate"],
     "mud.extensions[0]: extension 'frobnicate' is not understood by mudguard; its members "
     "are reported, not enforced"),
    (IP0, {"protocol": 6, "destination-ipv4-network": "192.0.2.7"},
     "acls.acl[0].aces.ace[0].matches.ipv4.destination-ipv4-network: host address without a "
     "prefix length; normalised to 192.0.2.7/32"),
    ((*TCP0, "destination-port"), {"operator": "eq", "lower-port": 1, "upper-port": 2},
     "acls.acl[0].aces.ace[0].matches.tcp.destination-port.operator: draft-era operator "
     "beside a port range; ignored"),
    ((*ACE0, "matches", "ietf-mud:mud"), {"controller": "urn:ietf:params:mud:gateway"},
     "acls.acl[0].aces.ace[0].matches.mud.controller: draft-era controller class "
     "'urn:ietf:params:mud:gateway': treated as a controller class the owner maps to "
     "addresses (never the gateway as a whole); unmapped, it grants nothing"),
    ((*ACE0, "matches", "ietf-mud:mud"), {"controller": "urn:ietf:params:mud:ntp"},
     "acls.acl[0].aces.ace[0].matches.mud.controller: draft-era controller class "
     "'urn:ietf:params:mud:ntp': the gateway's own service on UDP 123 only"),
    # A class that names the gateway's DNS, in an ACE that says TCP 443: never matches.
    ((*ACE0, "matches", "ietf-mud:mud"), {"controller": "urn:ietf:params:mud:dns"},
     "acls.acl[0].aces.ace[0].matches.mud.controller: urn:ietf:params:mud:dns is the "
     "gateway's service on UDP 53, TCP 53, which the rest of the ACE excludes: the ACE "
     "matches nothing"),
    # Real qualification suites write bare class names (issue #14).
    ((*ACE0, "matches", "ietf-mud:mud"), {"controller": "bacnet"},
     "acls.acl[0].aces.ace[0].matches.mud.controller: controller class 'bacnet' is not an "
     "absolute URI (RFC 8520 wants one); treated as an opaque class the owner maps to "
     "addresses: unmapped, it grants nothing"),
    # dst-dnsname in a to-device ACL names the device's own side (RFC 8520 §8).
    (("ietf-access-control-list:acls", "acl", 1, "aces", "ace", 0, "matches", "ipv4"),
     {"protocol": 6, "ietf-acldns:dst-dnsname": "cloud.example.com"},
     "acls.acl[1].aces.ace[0].matches.ipv4.dst-dnsname: names the device's own side in a "
     "to-device ACL (RFC 8520 §8), not the peer; mudguard never turns it into a peer: the "
     "ACE allows nothing"),
    (IP0, {"protocol": 6, "ietf-acldns:src-dnsname": "cloud.example.com"},
     "acls.acl[0].aces.ace[0].matches.ipv4.src-dnsname: names the device's own side in a "
     "from-device ACL (RFC 8520 §8), not the peer; mudguard never turns it into a peer: the "
     "ACE allows nothing"),
    (IP0, {"protocol": 6, "source-ipv4-network": "198.51.100.0/24"},
     "acls.acl[0].aces.ace[0].matches.ipv4.source-ipv4-network: tests the device's own "
     "address in a from-device ACL, which mudguard does not enforce (the peer is the other "
     "side): the ACE allows nothing"),
    (IP0, {"protocol": 6, "ttl": 64, "ietf-acldns:dst-dnsname": "cloud.example.com"},
     "acls.acl[0].aces.ace[0].matches.ipv4.ttl: a header field mudguard does not enforce: "
     "the ACE allows nothing"),
    ((*TCP0, "flags"), "syn",
     "acls.acl[0].aces.ace[0].matches.tcp.flags: a header field mudguard does not enforce: "
     "the ACE allows nothing"),
    ((*ACE0, "matches", "ietf-mud:mud"), {"manufacturer": "maker.example.com",
                                          "model": "https://maker.example.com/lamp"},
     "acls.acl[0].aces.ace[0].matches.mud.model: a second peer beside "
     "ietf-mud:mud.manufacturer; mudguard does not intersect peers: the ACE allows nothing"),
    (("ietf-access-control-list:acls", "acl", 1), {"name": "spare", "type": "ipv4-acl-type",
                                                   "aces": {"ace": []}},
     "acls.acl[1]: ACL 'spare' is not used by either policy"),
]


@pytest.mark.parametrize(("path", "value", "expected"), WARNINGS,
                         ids=[w[2][:60] for w in WARNINGS])
def test_rule_warns_and_keeps_the_file(path: tuple[str | int, ...], value: object,
                                       expected: str) -> None:
    doc = edit(base(), path, value)
    if path[:3] == ("ietf-access-control-list:acls", "acl", 1) and len(path) == 3:
        doc = edit(doc, (*MUD, "to-device-policy", "access-lists", "access-list"), [])
    result = parse_mud(json.dumps(doc))
    assert expected in [str(w) for w in result.warnings], result.findings
    assert result.ok, result.errors


def test_direction_initiated_only_on_tcp() -> None:
    doc = edit(base(), (*ACE0, "matches"), {
        "ipv4": {"protocol": 17, "ietf-acldns:dst-dnsname": "ntp.example.com"},
        "udp": {"destination-port": {"port": 123}, "ietf-mud:direction-initiated": "from-device"}})
    assert ("acls.acl[0].aces.ace[0].matches.udp.direction-initiated: direction-initiated "
            "applies to tcp only (RFC 8520)") in findings(doc, Severity.ERROR)


def test_dnsname_and_network_are_alternatives() -> None:
    doc = edit(base(), (*IP0, "destination-ipv4-network"), "192.0.2.0/24")
    assert ("acls.acl[0].aces.ace[0].matches.ipv4.dst-dnsname: dst-dnsname together with "
            "destination-ipv4-network: RFC 8520 does not define how they combine"
            ) in findings(doc, Severity.ERROR)


def test_eth_acl_cannot_match_layer_4() -> None:
    doc = edit(base(), ("ietf-access-control-list:acls", "acl", 0, "aces", "ace", 0, "matches"),
               {"eth": {"ethertype": 2054}, "tcp": {"destination-port": {"port": 1}}})
    doc = edit(doc, ("ietf-access-control-list:acls", "acl", 0, "type"), "eth-acl-type")
    assert ("acls.acl[0].aces.ace[0].matches: an eth-acl-type ACL cannot match on layer 4"
            in findings(doc, Severity.ERROR))


def test_mud_url_must_equal_the_fetched_url() -> None:
    """RFC 8520 §3.3: the mud-url in the file equals the URL it was fetched from."""
    errors = findings(base(), Severity.ERROR, expected_url="https://evil.example.net/lamp")
    assert errors == ["mud.mud-url: file says 'https://things.example.com/lamp' but was "
                      "fetched from 'https://evil.example.net/lamp' (RFC 8520 §3.3)"]
    assert parse_mud(json.dumps(base()), expected_url=URL).ok


def test_transparency_extension_is_understood() -> None:
    """RFC 9472: the transparency extension's member is kept, with no warning."""
    sbom = {"sbom-local-well-known": "https"}
    doc = edit(base(), (*MUD, "extensions"), ["transparency"])
    doc = edit(doc, (*MUD, "ietf-mud-transparency:transparency"), sbom)
    result = parse_mud(json.dumps(doc))
    assert result.ok and result.findings == ()
    assert result.mud is not None
    (extension,) = result.mud.extensions
    assert extension.understood and extension.name == "transparency"
    assert extension.data == {"ietf-mud-transparency:transparency": sbom}


def test_unknown_extension_is_reported_not_dropped() -> None:
    doc = edit(base(), (*MUD, "extensions"), ["frobnicate"])
    result = parse_mud(json.dumps(doc))
    assert result.mud is not None
    assert [(e.name, e.understood) for e in result.mud.extensions] == [("frobnicate", False)]


@pytest.mark.parametrize(("data", "expected"), [
    (b"\xff\xfe", "(document): not UTF-8 text (byte 0)"),
    (b"{", "(document): not valid JSON: Expecting property name enclosed in double quotes: "
           "line 1 column 2 (char 1)"),
    (b"[]", "(document): expected a JSON object, got a list"),
    (b'{"a": NaN}', "(document): not valid JSON: NaN is not JSON"),
    (b"[" * 40 + b"]" * 40, "(document): JSON nested deeper than 32 levels"),
    (b"[" * 100_000, "(document): JSON nested deeper than 32 levels"),
    (b" " * (MAX_MUD_BYTES + 1), f"(document): file is {MAX_MUD_BYTES + 1} bytes; the limit "
                                 f"is {MAX_MUD_BYTES}"),
    (b"{}", "mud: missing: a MUD file must have the ietf-mud:mud container"),
])
def test_document_level_rejections(data: bytes, expected: str) -> None:
    result = parse_mud(data)
    assert result.mud is None
    assert expected in [str(e) for e in result.errors]


def test_a_byte_order_mark_is_ignored_with_a_warning() -> None:
    plain = json.dumps(base()).encode()
    result = parse_mud(b"\xef\xbb\xbf" + plain)
    assert result.mud is not None and result.mud == parse_mud(plain).mud
    assert any("byte order mark" in str(f) for f in result.warnings)


def test_every_problem_is_reported_at_once() -> None:
    doc = edit(base(), (*MUD, "cache-validity"), 0)
    doc = edit(doc, (*TCP0, "destination-port", "port"), 70000)
    doc = edit(doc, (*MUD, "is-supported"), "no")
    assert len(findings(doc, Severity.ERROR)) == 3


def draft_file() -> dict[str, Any]:
    """The base file in the draft-era spelling the UNSW generator used."""
    return {
        "ietf-mud:mud": base()["ietf-mud:mud"],
        "ietf-access-control-list:access-lists": {"acl": [
            {"acl-name": "fr", "acl-type": "ipv4-acl", "access-list-entries": {"ace": [{
                "rule-name": "cloud",
                "matches": {"ipv4-acl": {"protocol": 6,
                                         "ietf-acldns:dst-dnsname": "cloud.example.com",
                                         "destination-port-range-or-operator":
                                             {"operator": "range", "lower-port": 443,
                                              "upper-port": 443}}},
                "actions": {"forwarding": "accept"}}]}},
            {"name": "to", "type": "ipv4-acl-type", "aces": {"ace": [{
                "name": "arp",
                "matches": {"eth": {"ethertype": "0x0806"}},
                "actions": {"forwarding": "accept"}}]}},
        ]},
    }


def test_draft_era_spellings_are_normalised_with_warnings() -> None:
    doc = draft_file()
    doc["ietf-access-control-list:access-lists"]["acl"][0]["name"] = (
        doc["ietf-access-control-list:access-lists"]["acl"][0].pop("acl-name"))
    result = parse_mud(json.dumps(doc))
    assert result.ok, result.errors
    assert result.mud is not None and result.mud.draft_era
    warnings = [str(w) for w in result.warnings]
    acl0 = "acls.acl[0]"
    for expected in [
        "access-lists: draft-era container name; normalised to "
        "ietf-access-control-list:acls",
        f"{acl0}.acl-type: draft-era member acl-type; normalised to type",
        f"{acl0}.type: draft-era ACL type 'ipv4-acl'; normalised to ipv4-acl-type",
        f"{acl0}.access-list-entries: draft-era member access-list-entries; normalised to aces",
        f"{acl0}.aces.ace[0].rule-name: draft-era member rule-name; normalised to name",
        f"{acl0}.aces.ace[0].matches.ipv4-acl: draft-era member ipv4-acl; normalised to ipv4",
        f"{acl0}.aces.ace[0].matches.ipv4.destination-port-range-or-operator: draft-era port "
        "match; moved to tcp.destination-port",
        f"{acl0}.aces.ace[0].matches.tcp.destination-port.operator: draft-era 'operator: "
        "range'; normalised to a port range",
        "acls.acl[1].aces.ace[0].matches.eth.ethertype: draft-era hex-string ethertype "
        "'0x0806'; normalised to 2054",
        "acls.acl[1].aces.ace[0].matches.eth: an eth match in an ACL of type ipv4-acl-type "
        "(draft-era mixing; treated as a mixed ACL)",
    ]:
        assert expected in warnings, warnings
    fr, to = result.mud.acls
    assert fr.type is AclType.IPV4 and to.type is AclType.MIXED_ETH_IPV4
    ace = fr.aces[0]
    assert ace.matches.transport is not None and ace.matches.transport.dst_port is not None
    assert ace.matches.transport.dst_port.contains(443)
    assert not ace.matches.transport.dst_port.contains(444)
    assert to.aces[0].matches.eth is not None and to.aces[0].matches.eth.ethertype == 0x0806


def test_draft_port_match_without_protocol_is_an_error() -> None:
    doc = draft_file()
    doc["ietf-access-control-list:access-lists"]["acl"][0]["name"] = "fr"
    del doc["ietf-access-control-list:access-lists"]["acl"][0]["acl-name"]
    ace = doc["ietf-access-control-list:access-lists"]["acl"][0]["access-list-entries"]["ace"][0]
    del ace["matches"]["ipv4-acl"]["protocol"]
    assert ("acls.acl[0].aces.ace[0].matches.ipv4.destination-port-range-or-operator: "
            "draft-era port match without protocol 6 or 17") in findings(doc, Severity.ERROR)


def test_both_acl_containers_is_an_error() -> None:
    doc = base()
    doc["ietf-access-control-list:access-lists"] = {"acl": []}
    assert ("access-lists: both ietf-access-control-list:acls and the draft-era "
            "ietf-access-control-list:access-lists") in findings(doc, Severity.ERROR)


def test_ace_count_is_bounded() -> None:
    doc = base()
    ace = doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]
    doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"] = [
        dict(ace, name=f"a{i}") for i in range(4097)]
    assert "acls.acl[0]: more than 4096 ACEs in one file" in findings(doc, Severity.ERROR)


# -- issue #13 class 4: duplicate member names ------------------------------------------------


def test_duplicate_member_names_are_refused_with_their_path() -> None:
    """``"forwarding": "drop", "forwarding": "accept"`` used to become accept (last wins)."""
    text = json.dumps(base()).replace('"forwarding": "accept"',
                                      '"forwarding": "drop", "forwarding": "accept"', 1)
    result = parse_mud(text)
    assert not result.ok and result.mud is None
    assert [str(e) for e in result.errors] == [
        "acls.acl[0].aces.ace[0].actions.forwarding: member name given more than once; JSON "
        "objects in a MUD file have unique member names (RFC 7951)"]


def test_duplicates_anywhere_are_refused_and_distinct_names_are_not() -> None:
    doc = json.dumps(base())
    twice = doc.replace('"mud-version": 1', '"mud-version": 1, "mud-version": 1', 1)
    assert [e.where for e in parse_mud(twice).errors] == ["mud.mud-version"]
    assert parse_mud(doc).ok


# -- issue #13 class 3: fields mudguard does not enforce are kept, never dropped ----------------


def test_unenforced_fields_survive_normalisation() -> None:
    """A field the model does not enforce stays in ``to_json``: re-parsing the normalised
    file must not give an ACE wider than the original."""
    doc = edit(base(), (*ACE0, "matches", "tcp", "flags"), "syn")
    doc = edit(doc, (*ACE0, "matches", "ipv4", "identification"), 7)
    mud = parse_mud(json.dumps(doc)).mud
    assert mud is not None
    matches = mud.acls[0].aces[0].matches
    assert {(c, k) for c, k, _ in matches.unenforced} == {("tcp", "flags"),
                                                          ("ipv4", "identification")}
    again = parse_mud(mud.to_json()).mud
    assert again is not None and again.acls == mud.acls


def test_an_icmp_match_must_carry_its_familys_protocol() -> None:
    """ICMPv6's 58 in an IPv4 match (or 1 in IPv6) never matches: refused, never
    silently read as the family's own ICMP."""
    doc = edit(base(), (*ACE0, "matches"), {"ipv4": {"protocol": 58}, "icmp": {"type": 8}})
    errors = [str(e) for e in parse_mud(json.dumps(doc)).errors]
    assert errors == ["acls.acl[0].aces.ace[0].matches: protocol 58 contradicts the icmp match "
                      "in IPv4 (expected 1)"]
    fine = edit(base(), (*ACE0, "matches"), {"ipv4": {"protocol": 1}, "icmp": {"type": 8}})
    assert parse_mud(json.dumps(fine)).ok
