"""The device report's RFC 9761 line, EN and FR, over the real portal stack: declared
before anything is seen, "observed OK" after a fitting ClientHello, "deviation" with
its reasons (rendered from catalogue keys) after one that does not fit."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mudguard.devices import EventKind
from mudguard.mud import parse_mud
from mudguard.portal._tls import tls_view
from tests.unit.test_portal_support import mud_document, portal, text_of

MAC = "00:11:22:33:44:56"
PROFILE = {"tls-dtls-profile": [{"name": "bulb-stack", "supported-tls-version": ["tls13"],
                                 "cipher-suite": [4865, 4866],
                                 "application-protocol": ["mqtt"]}]}
AT = datetime(2026, 1, 15, 12, 30, tzinfo=UTC)


def profiled_document(url: str) -> dict[str, Any]:
    doc = mud_document(url, extensions=["ietf-mud-tls"],
                       **{"ietf-mud-tls:is-tls-dtls-profile-supported": True})
    ace = doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"][0]
    ace["matches"]["ietf-acl-tls:client-profiles"] = PROFILE
    return doc


DEVIATION = {"ace": "from-bulb/cloud", "fits": False, "profile": "bulb-stack",
             "reason": "offered TLS 1.0; ALPN h2 instead of mqtt", "deviations": [
                 {"kind": "version", "offered": ["TLS 1.0"], "allowed": ["TLS 1.3"]},
                 {"kind": "alpn", "offered": ["h2"], "allowed": ["mqtt"]},
                 {"kind": "made-up", "offered": ["<script>"], "allowed": []}]}


def test_the_report_says_declared_then_fits_then_deviates(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = st.server.url("/tls-bulb.json")
        st.server.put_json("/tls-bulb.json", profiled_document(url))
        st.services.onboard(url=url, mac=MAC)
        words = text_of(client.get(f"/devices/{MAC}/report").text)
        assert "TLS profile (RFC 9761)" in words
        assert "TLS profile declared by its maker, not observed yet" in words
        assert "from-bulb/cloud: TLS 1.3 · 0x1301 0x1302 · ALPN mqtt" in words

        st.store.add_event(EventKind.TLS_OBSERVED, AT, MAC,
                           {"ace": "from-bulb/cloud", "fits": True, "reason": "",
                            "deviations": []})
        words = text_of(client.get(f"/devices/{MAC}/report").text)
        assert "TLS profile declared; observed, and it fits (last seen 2026-01-15 12:30)" \
            in words
        api = client.get(f"/api/devices/{MAC}/report").json()["report"]["tls"]
        assert api["status"] == "fits" and api["ace"] == "from-bulb/cloud"

        st.store.add_event(EventKind.TLS_DEVIATION, AT, MAC, DEVIATION)
        page = client.get(f"/devices/{MAC}/report")
        words = text_of(page.text)
        assert "declared; observed, and it does not fit" in words
        assert "offered TLS 1.0 (its profile: TLS 1.3)" in words
        assert "application protocol (ALPN) h2 instead of mqtt" in words
        assert "<script>" not in page.text  # an unknown kind is never shown
        french = text_of(client.get(f"/devices/{MAC}/report?lang=fr").text)
        assert "Profil TLS déclaré ; observé, et non conforme" in french
        assert "a proposé TLS 1.0 (son profil : TLS 1.3)" in french
        assert "protocole applicatif (ALPN) h2 au lieu de mqtt" in french


def test_before_buying_the_profile_is_declared(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = st.server.url("/tls-cam.json")
        st.server.put_json("/tls-cam.json", profiled_document(url))
        words = text_of(client.get("/report", params={"mud_url": url, "lang": "fr"}).text)
        assert "Profil TLS déclaré par son fabricant, pas encore observé" in words


def test_a_file_without_a_profile_has_no_tls_line(tmp_path: Path) -> None:
    mud = parse_mud(mud_document("https://mud.example.com/plain.json")).mud
    assert mud is not None and tls_view(mud) is None
    with portal(tmp_path) as (client, st, _):
        url = st.server.url("/plain.json")
        st.server.put_json("/plain.json", mud_document(url))
        assert "TLS profile" not in text_of(client.get("/report",
                                                       params={"mud_url": url}).text)
