"""RFC 9472 transparency container: parsing, validation, and the cross-check with yangson."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mudguard.mud import Severity, parse_mud
from mudguard.mud.transparency import LocalScheme, SbomEntry, Transparency, is_link
from tests.unit.test_mud_parse import base

KEY = "ietf-mud-transparency:transparency"
DATA = Path(__file__).resolve().parents[1] / "data" / "mud-extensions"
VENDORED = Path(__file__).resolve().parents[2] / "src" / "mudguard" / "mud" / "yang"


def with_transparency(container: object, *, listed: bool = True) -> dict[str, Any]:
    """The base file carrying ``container`` (and the extension name when ``listed``)."""
    doc = base()
    doc["ietf-mud:mud"][KEY] = container
    if listed:
        doc["ietf-mud:mud"]["extensions"] = ["transparency"]
    return doc


def messages(doc: dict[str, Any], severity: Severity = Severity.ERROR) -> list[str]:
    return [f"{f.where}: {f.message}" for f in parse_mud(doc).findings
            if f.severity is severity]


GOOD: list[tuple[dict[str, Any], Transparency]] = [
    ({"sbom-local-well-known": "https"}, Transparency(local_well_known=LocalScheme.HTTPS)),
    ({"sbom-local-well-known": "ietf-mud-transparency:coap"},
     Transparency(local_well_known=LocalScheme.COAP)),
    ({"sboms": [{"version-info": "1.2", "sbom-url": "https://x.example.com/sbom.json"},
                {"version-info": "1.1"}],
      "vuln-url": ["https://x.example.com/csaf.json"]},
     Transparency(sboms=(SbomEntry(version_info="1.2", url="https://x.example.com/sbom.json"),
                         SbomEntry(version_info="1.1")),
                  vuln_urls=("https://x.example.com/csaf.json",))),
    ({"sbom-contact-uri": "mailto:psirt@example.com",
      "vuln-contact-uri": "tel:+1-415-555-1212",
      "sbom-archive-list": "https://x.example.com/archive.json"},
     Transparency(sbom_contact_uri="mailto:psirt@example.com",
                  vuln_contact_uri="tel:+1-415-555-1212",
                  sbom_archive_list="https://x.example.com/archive.json")),
    ({}, Transparency()),
]


@pytest.mark.parametrize(("container", "expected"), GOOD)
def test_each_case_is_parsed(container: dict[str, Any], expected: Transparency) -> None:
    result = parse_mud(with_transparency(container))
    assert result.mud is not None, messages(with_transparency(container))
    assert result.mud.transparency == expected


T = "mud.transparency"
BAD: list[tuple[object, str]] = [
    ("https", f"{T}: expected an object, got a string"),
    ({"sbom-local-well-known": "ftp"}, f"{T}.sbom-local-well-known: expected one of http, "
     "https, coap, coaps (identities of mudtx:local-type), got 'ftp'"),
    ({"sbom-local-well-known": "mudtx:https"}, f"{T}.sbom-local-well-known: expected one of "
     "http, https, coap, coaps (identities of mudtx:local-type), got 'mudtx:https'"),
    ({"sbom-local-well-known": 1}, f"{T}.sbom-local-well-known: expected a string, got a number"),
    ({"sbom-local-well-known": "https", "sbom-contact-uri": "tel:+1-415-555-1212"},
     f"{T}: choice sbom-retrieval-method takes one case, got local-well-known, "
     "sbom-contact-info"),
    ({"vuln-url": ["https://a.example/v"], "vuln-contact-uri": "tel:+1-415-555-1212"},
     f"{T}: choice vuln-retrieval-method takes one case, got cloud, vuln-contact-info"),
    ({"vuln-url": "https://a.example/v"},
     f"{T}.vuln-url: expected a list (YANG leaf-list), got a string"),
    ({"sbom-contact-uri": "ftp://a.example/x"}, f"{T}.sbom-contact-uri: scheme 'ftp' refused "
     "(RFC 9472: a contact URI must be tel, http, https or mailto)"),
    ({"sboms": [{"sbom-url": "https://a.example/s"}]},
     f"{T}.sboms[0].version-info: missing: the key of the sboms list"),
    ({"sboms": [{"version-info": "1"}, {"version-info": "1"}]},
     f"{T}.sboms[1].version-info: duplicate key '1' in the sboms list"),
    ({"sboms": [{"version-info": "1", "url": "https://a.example/s"}]},
     f"{T}.sboms[0].url: unknown member of an sboms entry"),
    ({"sboms": {"version-info": "1"}}, f"{T}.sboms: expected a list, got an object"),
    ({"sbom-archive-list": "not a uri"}, f"{T}.sbom-archive-list: expected a URI (inet:uri), "
     "got 'not a uri'"),
    ({"vuln-url": ["https://a.example/v", "https://a.example/v"]},
     f"{T}.vuln-url[1]: duplicate value 'https://a.example/v' in a leaf-list"),
    ({"vuln-urls": ["https://a.example/v"]},
     f"{T}.vuln-urls: unknown member of the transparency container (RFC 9472)"),
]


@pytest.mark.parametrize(("container", "error"), BAD)
def test_bad_containers_are_ignored_with_a_warning_at_their_path(
        container: object, error: str) -> None:
    """A container mudguard cannot read never costs the device its profile: the file is
    kept (the container changes no access), the container dropped, the problem named."""
    doc = with_transparency(container)
    assert f"{error} (transparency ignored)" in messages(doc, Severity.WARNING)
    assert not messages(doc)
    result = parse_mud(doc).mud
    assert result is not None and result.transparency is None


def test_a_member_of_another_module_inside_is_a_warning() -> None:
    doc = with_transparency({"sbom-local-well-known": "http", "example-x:extra": 1})
    assert messages(doc, Severity.WARNING)[-1] == (
        f"{T}.extra: member of a module mudguard does not implement; ignored")
    result = parse_mud(doc).mud
    assert result is not None and result.transparency is not None


def test_a_document_url_of_another_scheme_is_kept_as_text_with_a_warning() -> None:
    doc = with_transparency({"vuln-url": ["javascript:alert(1)"],
                             "sboms": [{"version-info": "1", "sbom-url": "ftp://a.example/s"}]})
    warnings = messages(doc, Severity.WARNING)
    assert (f"{T}.vuln-url[0]: scheme 'javascript': shown as text, never fetched "
            "(mudguard fetches and links only http and https URLs)") in warnings
    assert any(w.startswith(f"{T}.sboms[0].sbom-url: scheme 'ftp'") for w in warnings)
    mud = parse_mud(doc).mud
    assert mud is not None and mud.transparency is not None
    assert mud.transparency.vuln_urls == ("javascript:alert(1)",)
    assert not is_link("javascript:alert(1)") and is_link("HTTPS://a.example/v")


def test_the_container_is_read_only_when_the_extension_is_listed() -> None:
    doc = with_transparency({"sbom-local-well-known": "ftp"}, listed=False)
    result = parse_mud(doc)
    assert result.mud is not None and result.mud.transparency is None
    assert "mud.transparency: member of a module mudguard does not " \
           "implement; not enforced" in messages(doc, Severity.WARNING)


def test_published_means_the_sbom_itself_can_be_read() -> None:
    assert Transparency(local_well_known=LocalScheme.HTTP).software_list_published
    assert Transparency(sboms=(SbomEntry(version_info="1", url="https://a/s"),)
                        ).software_list_published
    assert not Transparency(sboms=(SbomEntry(version_info="1"),)).software_list_published
    assert not Transparency(sbom_contact_uri="tel:+1").software_list_published


def test_the_rfc_examples_in_the_test_data_parse() -> None:
    files = sorted(DATA.glob("rfc9472-*.json"))
    assert len(files) == 3
    for path in files:
        result = parse_mud(path.read_bytes())
        assert result.mud is not None and result.mud.transparency is not None, path
    cloud = parse_mud((DATA / "rfc9472-cloud-sbom-vuln-url.json").read_bytes()).mud
    assert cloud is not None and cloud.transparency is not None
    assert cloud.transparency.vuln_urls == ("https://iotd.example.com/info/modelX/csaf.json",)


def test_the_normalised_json_keeps_the_container() -> None:
    doc = with_transparency({"sbom-local-well-known": "https"})
    mud = parse_mud(doc).mud
    assert mud is not None
    again = parse_mud(json.dumps(mud.to_json())).mud
    assert again is not None and again.transparency == mud.transparency


# -- cross-check with yangson against the vendored ietf-mud-transparency module --------

yangson = pytest.importorskip("yangson")
from yangson.enumerations import ContentType, ValidationScope  # noqa: E402
from yangson.exceptions import YangsonException  # noqa: E402

PYANG_DIR = Path(sys.prefix) / "share" / "yang" / "modules" / "ietf"
MODULES = [("ietf-mud", "2019-01-28", "implement"),
           ("ietf-mud-transparency", "2023-10-10", "implement"),
           ("ietf-access-control-list", "2019-03-04", "implement"),
           ("ietf-acldns", "2019-01-28", "implement"),
           ("ietf-packet-fields", "2019-03-04", "import"),
           ("ietf-ethertypes", "2019-03-04", "import"),
           ("ietf-inet-types", "2013-07-15", "import"),
           ("ietf-yang-types", "2013-07-15", "import"),
           ("ietf-interfaces", "2018-02-20", "implement")]
ACL_FEATURES = ["match-on-eth", "match-on-ipv4", "match-on-ipv6", "match-on-tcp",
                "match-on-udp", "match-on-icmp", "eth", "ipv4", "ipv6", "mixed-eth-ipv4",
                "mixed-eth-ipv6", "mixed-eth-ipv4-ipv6"]


@pytest.fixture(scope="module")
def yang() -> Any:
    """ietf-mud with the vendored ietf-mud-transparency module, in yangson."""
    modules = []
    for name, revision, conformance in MODULES:
        entry: dict[str, Any] = {"name": name, "revision": revision,
                                 "namespace": f"urn:ietf:params:xml:ns:yang:{name}",
                                 "conformance-type": conformance}
        if name == "ietf-access-control-list":
            entry["feature"] = ACL_FEATURES
        modules.append(entry)
    library = {"ietf-yang-library:modules-state": {"module-set-id": "mudguard-tx",
                                                    "module": modules}}
    return yangson.DataModel(json.dumps(library), [str(VENDORED), str(PYANG_DIR)])


def yang_accepts(model: Any, document: object) -> bool:
    try:
        model.from_raw(document).validate(ValidationScope.all, ContentType.all)
    except YangsonException:
        return False
    return True


@pytest.mark.parametrize(("container", "_expected"), GOOD)
def test_yangson_accepts_what_mudguard_accepts(yang: Any, container: dict[str, Any],
                                               _expected: Transparency) -> None:
    assert yang_accepts(yang, with_transparency(container))


@pytest.mark.parametrize(("container", "_error"), BAD)
def test_yangson_rejects_what_mudguard_rejects(yang: Any, container: object,
                                               _error: str) -> None:
    # Where mudguard is stricter than the YANG types, by design: contact URIs follow the
    # RFC's prose (tel, http, https, mailto); yangson does not check the inet:uri pattern.
    doc = with_transparency(container)
    stricter = "ftp://" in json.dumps(container) or "not a uri" in json.dumps(container)
    assert yang_accepts(yang, doc) is stricter
