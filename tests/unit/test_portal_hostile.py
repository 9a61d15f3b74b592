"""A hostile MUD corpus (``tests/data/portal/hostile``) renders safely: every string a
MUD file carries reaches the page escaped, whatever the field, size or type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mudguard.devices import EventKind
from mudguard.discovery.qr import QrRecord
from mudguard.labels import label_png
from tests.unit.test_portal_support import DATA, mud_document, page_csrf, portal

CORPUS = sorted((DATA / "hostile").glob("*.json"))
OUR_SCRIPT = '<script src="/static/app.js" defer></script>'


def _assert_inert(html: str) -> None:
    """No markup from the file survived: only our own script tag, no handlers, no js: links."""
    assert html.count("<script") == 1 and OUR_SCRIPT in html
    lowered = html.lower()
    assert "<img src=x" not in lowered and "<svg onload" not in lowered
    # Quoted attribute values are inert text once escaped; look at the markup around them.
    markup = re.sub(r'"[^"]*"', '""', html)
    assert not re.search(r"<[^>]+\son\w+\s*=", markup), "an event handler attribute leaked"
    assert 'href="javascript:' not in lowered
    assert "{{7*7}}" not in html or "49" not in html.split("{{7*7}}")[0][-5:]


def _serve(st, path: Path) -> str:  # type: ignore[no-untyped-def]
    url = st.server.url("/" + path.name)
    body = path.read_text(encoding="utf-8").replace("{MUD_URL}", url)
    st.server.files["/" + path.name] = (body.encode("utf-8"), "application/mud+json")
    return url


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 8


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_hostile_file_renders_inert_everywhere(tmp_path: Path, path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve(st, path)
        token = page_csrf(client, "/onboard")
        preview = client.post("/onboard/check", data={"csrf": token, "mud_url": url,
                                                       "mac": "00:11:22:33:44:55"})
        assert preview.status_code == 200
        _assert_inert(preview.text)
        report = client.get("/report", params={"mud_url": url})
        assert report.status_code == 200
        _assert_inert(report.text)
        api = client.get("/api/report", params={"mud_url": url})
        assert api.status_code == 200 and api.headers["content-type"] == "application/json"
        if api.json()["usable"]:
            done = client.post("/onboard/accept", data={"csrf": token, "mud_url": url,
                                                         "mac": "00:11:22:33:44:55"})
            assert done.status_code == 200
            _assert_inert(done.text)
            for page in ("/devices", "/devices/00:11:22:33:44:55",
                         "/devices/00:11:22:33:44:55/report", "/alerts"):
                response = client.get(page)
                assert response.status_code == 200, page
                _assert_inert(response.text)


def test_script_in_every_string_is_usable_and_shown_as_text(tmp_path: Path) -> None:
    """The worst file still parses: its strings are shown, as text."""
    with portal(tmp_path) as (client, st, _):
        url = _serve(st, DATA / "hostile" / "script-in-usable-fields.json")
        report = client.get("/report", params={"mud_url": url})
        assert "Example smart bulb" not in report.text
        assert "&lt;script&gt;alert(&#34;mud&#34;)&lt;/script&gt;" in report.text
        assert "javascript:alert" in report.text  # shown as text, not as a link


def test_hostile_label_fields_are_escaped(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve(st, DATA / "hostile" / "script-in-text-fields.json")
        label = label_png(QrRecord(mud_url=url, company='"><script>alert(1)</script>',
                                   model="<img src=x onerror=alert(2)>"))
        token = page_csrf(client, "/onboard")
        preview = client.post("/onboard/check", data={"csrf": token},
                              files={"label": ("l.png", label, "image/png")})
        assert preview.status_code == 200
        _assert_inert(preview.text)
        assert 'value="&#34;&gt;&lt;script&gt;' in preview.text


def test_hostile_device_supplied_names_are_escaped(tmp_path: Path) -> None:
    """A device chooses its DHCP hostname: it must not script the owner's pages."""
    with portal(tmp_path) as (client, st, _):
        st.services.devices.observe(mac="00:11:22:33:44:77",
                                    hostname='<script>alert(1)</script>"><img src=x onerror=1>',
                                    manufacturer="<img src=x onerror=alert(2)>")
        st.services.devices.tell(EventKind.VIOLATION, {
            "reason": "<script>alert(4)</script>",
            "evidence": [{"direction": "out", "src": "<img src=x onerror=alert(5)>",
                          "dst": "<script>alert(6)</script>", "remote_name": '"><svg onload=1>',
                          "dst_port": "<b>23</b>", "protocol": "<i>6</i>"}]},
            "00:11:22:33:44:77")
        st.services.devices.quarantine("00:11:22:33:44:77", "<script>alert(3)</script>")
        for page in ("/devices", "/devices/00:11:22:33:44:77", "/alerts"):
            response = client.get(page)
            assert response.status_code == 200, page
            _assert_inert(response.text)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/devices").text


def test_hostile_file_as_a_new_mud_url_renders_inert(tmp_path: Path) -> None:
    """A device announcing a hostile file as its new MUD URL: the pending page is safe."""
    with portal(tmp_path) as (client, st, _):
        url = st.server.url("/good.json")
        st.server.put_json("/good.json", mud_document(url))
        st.services.onboard(url=url, mac="00:11:22:33:44:55")
        for path in CORPUS:
            hostile = _serve(st, path)
            device = st.services.devices.observe(mac="00:11:22:33:44:55", mud_url=hostile)
            assert device.mud_url == url  # nothing changes without the owner
            page = client.get("/devices/00:11:22:33:44:55/pending")
            assert page.status_code == 200, path.name
            _assert_inert(page.text)
