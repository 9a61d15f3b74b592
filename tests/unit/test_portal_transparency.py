"""The device report's RFC 9472 lines, EN and FR, over the real portal stack."""

from __future__ import annotations

import html
from pathlib import Path

from mudguard.mud import parse_mud
from mudguard.portal._transparency import Link, transparency_view
from tests.unit.test_portal_support import mud_document, portal, text_of

MAC = "00:11:22:33:44:55"
KEY = "ietf-mud-transparency:transparency"
CSAF = "https://psirt.example.com/lb-2000/csaf.json"
SBOM_URL = "https://www.example.com/lb-2000/sbom.spdx.json"


def _serve(st, path: str, container: object) -> str:  # type: ignore[no-untyped-def]
    url = st.server.url(path)
    st.server.put_json(path, mud_document(url, **{"extensions": ["transparency"],
                                                  KEY: container}))
    return url


def test_the_report_says_the_software_list_is_published_and_links_the_vulnerabilities(
        tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve(st, "/bulb.json", {"sboms": [{"version-info": "2.1", "sbom-url": SBOM_URL}],
                                        "vuln-url": [CSAF]})
        st.services.onboard(url=url, mac=MAC)
        page = client.get(f"/devices/{MAC}/report")
        words = text_of(page.text)
        assert f"Software list published yes, {SBOM_URL}" in words
        assert f"Known vulnerabilities {CSAF}" in words
        assert f'<a href="{CSAF}" rel="noopener noreferrer nofollow">' in page.text
        french = text_of(client.get(f"/devices/{MAC}/report?lang=fr").text)
        assert f"Liste des logiciels publiée oui, {SBOM_URL}" in french
        assert f"Vulnérabilités connues {CSAF}" in french


def test_before_buying_a_device_that_gives_its_own_list_and_a_contact(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve(st, "/cam.json", {"sbom-local-well-known": "https",
                                       "vuln-contact-uri": "mailto:psirt@example.com"})
        words = text_of(client.get("/report", params={"mud_url": url}).text)
        assert "Software list published yes, the device itself gives it" in words
        assert "Known vulnerabilities ask psirt@example.com" in words


def test_a_file_without_the_extension_publishes_nothing(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = st.server.url("/plain.json")
        st.server.put_json("/plain.json", mud_document(url))
        words = text_of(client.get("/report", params={"mud_url": url, "lang": "fr"}).text)
        assert "Liste des logiciels publiée non" in words
        assert "Vulnérabilités connues non publiées par son fabricant" in words
        page = client.get("/report", params={"mud_url": url, "lang": "en"})
        assert "Software list published no" in text_of(page.text)


def test_the_view_shows_contacts_without_their_scheme() -> None:
    doc = mud_document("https://mud.example.com/x.json",
                       **{"extensions": ["transparency"],
                          KEY: {"sbom-contact-uri": "tel:+1-415-555-1212"}})
    mud = parse_mud(doc).mud
    assert mud is not None
    view = transparency_view(mud, retrieved=True)
    assert not view.published and view.retrieved is None  # nothing published to retrieve
    assert view.sbom_contact == Link(href="tel:+1-415-555-1212", text="+1-415-555-1212")


def test_the_report_says_whether_mudguard_retrieved_the_list(tmp_path: Path) -> None:
    from mudguard.devices.transparency import TransparencyChecker
    from mudguard.mud.fetch import fetch_local_sbom, fetch_transparency_bytes

    with portal(tmp_path) as (client, st, _):
        sbom = st.server.url("/sbom.json")
        st.server.files["/sbom.json"] = (b'{"bomFormat": "CycloneDX"}',
                                         "application/vnd.cyclonedx+json")
        url = _serve(st, "/bulb.json", {"sboms": [{"version-info": "2.1", "sbom-url": sbom}]})
        st.services.onboard(url=url, mac=MAC)
        fetching = st.server.fetch_config()
        checker = TransparencyChecker(
            fetch_cloud=lambda u: fetch_transparency_bytes(u, config=fetching),
            fetch_device=lambda a, s: fetch_local_sbom(a, s, config=fetching),
            clock=st.services.now)
        st.services.transparency = checker
        device = st.store.get_device(MAC)
        mud = st.services.mud_for(device)
        assert device is not None and mud is not None
        outcome = checker.check(device, mud)
        assert outcome is not None and outcome.retrieved
        words = text_of(client.get(f"/devices/{MAC}/report").text)
        assert f"Software list published yes, {sbom} (mudguard retrieved it)" in words
        french = html.unescape(text_of(client.get(f"/devices/{MAC}/report?lang=fr").text))
        assert f"Liste des logiciels publiée oui, {sbom} (mudguard l'a récupérée)" in french
        st.server.files.pop("/sbom.json")
        checker.check(device, mud)
        words = text_of(client.get(f"/devices/{MAC}/report?lang=en").text)
        assert "(mudguard could not retrieve it: " in words and "404" in words


def test_a_url_that_is_not_http_is_shown_as_text_never_linked(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve(st, "/odd.json", {"vuln-url": ["javascript:alert(1)", CSAF]})
        page = client.get("/report", params={"mud_url": url})
        assert "Known vulnerabilities javascript:alert(1), " + CSAF in text_of(page.text)
        assert 'href="javascript:' not in page.text
        assert f'<a href="{CSAF}"' in page.text
