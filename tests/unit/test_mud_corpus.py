"""Every real MUD file of the shared corpus gets the verdict the standard gives it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudguard.mud import parse_mud

DRAFT = "draft-era container name"
UNSW = [
    "HueBulbMud", "NetatmoCameraMud", "NetatmoWeatherStationMud", "SmartThingsMud",
    "amazonEchoMud", "awairAirQualityMud", "belkincameraMud", "blipcareBPmeterMud",
    "canaryCameraMud", "chromecastUltraMud", "dropcamMud", "hellobarbieMud", "hpprinterMud",
    "ihomepowerplugMud", "lifxbulbMud", "nestsmokesensorMud", "pixstarphotoframeMud",
    "ringdoorbellMud", "samsungsmartcamMud", "tplinkcameraMud", "tplinkplugMud",
    "tribyspeakerMud", "wemomotionMud", "wemoswitchMud", "withingsbabymonitorMud",
    "withingscardioMud", "withingssleepsensorMud",
]

# (file, usable, draft-era, the errors (exact) or a warning that must be among the findings)
VERDICTS: list[tuple[str, bool, bool, list[str] | str | None]] = [
    ("rfc/brother-DCP-L2540DW.json", True, False, None),
    # RFC 8520: systeminfo "SHOULD NOT exceed 60 characters": a warning, not an error
    # (the YANG leaf is an unbounded string; yangson accepts these files too).
    ("rfc/mudmaker-cloud-service.json", True, False, "longer than 60 characters (75)"),
    ("rfc/mudmaker-my-controller.json", True, False, "longer than 60 characters (65)"),
    ("rfc/mudmaker-same-manufacturer.json", True, False, "longer than 60 characters (87)"),
    ("rfc/nist-mudfile-controllerclass-test.json", True, False, None),
    ("rfc/nist-mudfile-dhcptest.json", True, False, None),
    # A member of a module we do not implement (and the file does not list as an extension).
    ("rfc/nist-mudfile-dns-test.json", True, False,
     "mud.reporter: member of a module mudguard does not implement"),
    ("rfc/nist-mudfile-local-and-same-mfg-test.json", True, False, None),
    ("rfc/nist-mudfile-local-networks-test.json", True, False, None),
    ("rfc/nist-mudfile-mfg-test.json", True, False, None),
    ("rfc/nist-otherman.json", True, False, None),
    ("rfc/nist-sensor.json", True, False, None),
    ("rfc/osmud-ieft-draft.json", True, False, None),
    ("rfc/osmud-lightbulb2000.json", True, True, DRAFT),
    ("signed/Luminaire_150.json", True, False, None),
    # An IPv4 address where the ipv6 match needs an IPv6 prefix: RFC 8519's
    # destination-ipv6-network is inet:ipv6-prefix, so the ACE has no meaning.
    ("unsw/augustdoorbellcamMud.json", False, True,
     ["acls.acl[2].aces.ace[2].matches.ipv6.destination-ipv6-network: expected an IPv6 "
      "prefix like 2001:db8::/32, got '192.168.1.1'"]),
    *((f"unsw/{name}.json", True, True, DRAFT) for name in UNSW),
]


def test_table_covers_the_whole_corpus(corpus: Path) -> None:
    on_disk = {str(p.relative_to(corpus / "mud")) for p in (corpus / "mud").rglob("*.json")}
    assert on_disk == {row[0] for row in VERDICTS}


@pytest.mark.parametrize(("name", "usable", "draft", "detail"), VERDICTS,
                         ids=[row[0] for row in VERDICTS])
def test_corpus_verdict(corpus: Path, name: str, usable: bool, draft: bool,
                        detail: list[str] | str | None) -> None:
    result = parse_mud((corpus / "mud" / name).read_bytes())
    assert result.ok is usable
    if usable:
        assert result.mud is not None
        assert result.mud.draft_era is draft
        assert result.errors == ()
        if detail is None:
            assert not [w for w in result.warnings if "draft" in w.message]
        else:
            assert isinstance(detail, str)
            assert any(detail in str(w) for w in result.warnings), result.warnings
    else:
        assert result.mud is None
        assert [str(e) for e in result.errors] == detail
        if draft:
            assert any(DRAFT in str(w) for w in result.warnings)


DRAFT_FILES = [f"unsw/{n}.json" for n in UNSW] + ["rfc/osmud-lightbulb2000.json"]


@pytest.mark.parametrize("name", DRAFT_FILES)
def test_draft_era_files_are_normalised_to_rfc_form(corpus: Path, name: str) -> None:
    """Normalised output re-parses as an RFC 8520 file with no draft-era warning."""
    first = parse_mud((corpus / "mud" / name).read_bytes())
    assert first.mud is not None
    again = parse_mud(first.mud.to_json())
    assert again.errors == ()
    assert again.mud is not None and not again.mud.draft_era
    # The draft controller classes (urn:ietf:params:mud:gateway …) are data, kept as written.
    assert not [w for w in again.warnings
                if "draft-era" in w.message and "controller class" not in w.message]
    assert again.mud.acls == first.mud.acls
    assert again.mud.from_device_policy == first.mud.from_device_policy


@pytest.mark.parametrize("name", [row[0] for row in VERDICTS if row[1]])
def test_round_trip_is_stable(corpus: Path, name: str) -> None:
    mud = parse_mud((corpus / "mud" / name).read_bytes()).mud
    assert mud is not None
    again = parse_mud(mud.to_json()).mud
    assert again is not None
    assert again.to_json() == mud.to_json()
