"""The owner's pages over the real stack: onboarding by label or URL, decline, devices,
permissions, alerts and their decisions, forget, reports, languages."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

from PIL import Image

from mudguard.devices import EventKind
from mudguard.discovery.qr import QrRecord
from mudguard.labels import label_png, qr_png
from mudguard.policy import LifecycleState
from tests.unit.test_portal_support import mud_document, page_csrf, portal, text_of

MAC = "00:11:22:33:44:55"


def _serve_bulb(st, path: str = "/bulb.json", **changes: object) -> str:  # type: ignore[no-untyped-def]
    url = st.server.url(path)
    st.server.put_json(path, mud_document(url, **changes))
    return url


def test_onboarding_by_uploading_the_label(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st)
        label = label_png(QrRecord(mud_url=url, company="Example Lighting", model="LB-2000",
                                   mac=MAC))
        token = page_csrf(client, "/onboard")
        preview = client.post("/onboard/check", data={"csrf": token, "mud_url": "", "mac": ""},
                              files={"label": ("label.png", label, "image/png")})
        assert preview.status_code == 200, text_of(preview.text)[:400]
        words = text_of(preview.text)
        assert "may send to api.example.com (HTTPS)" in words
        assert "Not signed" in words
        assert f'value="{MAC}"' in preview.text  # the label's MAC, ready to accept
        assert st.store.list_devices() == []  # looking grants nothing
        done = client.post("/onboard/accept", data={"csrf": token, "mud_url": url, "mac": MAC,
                                                     "name": "Hall bulb",
                                                     "maker": "Example Lighting"})
        assert done.status_code == 200
        device = st.store.get_device(MAC)
        assert device is not None and device.state is LifecycleState.PROFILED
        assert device.name == "Hall bulb" and device.mud_source.value == "qr"
        # Its own WiFi key: in hostapd's PSK file, bound to its MAC, shown once as a QR.
        psk_line = [ln for ln in st.psk_file.read_text().splitlines() if MAC in ln]
        assert len(psk_line) == 1
        passphrase = psk_line[0].split()[-1]
        assert passphrase in done.text and 'src="data:image/png;base64,' in done.text
        assert "mudguard-home" in done.text


def test_onboarding_by_typing_the_url_and_declining(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st)
        token = page_csrf(client, "/onboard")
        preview = client.post("/onboard/check", data={"csrf": token, "mud_url": url,
                                                       "mac": "00-11-22-33-44-55"})
        assert preview.status_code == 200 and f'value="{MAC}"' in preview.text
        declined = client.post("/onboard/decline", data={"csrf": token})
        assert "nothing was granted" in declined.text
        assert st.store.list_devices() == []
        assert not st.psk_file.exists() or MAC not in st.psk_file.read_text()


def test_onboarding_errors_are_explained(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        token = page_csrf(client, "/onboard")
        cases = [
            ({"mud_url": "http://mud.example.com/x.json"}, None, "must start with https"),
            ({"mud_url": ""}, None, "Choose a label photo"),
            ({"mud_url": st.server.url("/bulb.json"), "mac": "zz"}, None, "not a MAC"),
            ({}, ("x.png", qr_png("https://mud.example.com/x"), "image/png"), "not a MUD label"),
            ({}, ("x.png", b"GIF89a not really", "image/gif"), "not a picture"),
        ]
        blank = io.BytesIO()
        Image.new("L", (120, 120), 255).save(blank, format="PNG")
        cases.append(({}, ("x.png", blank.getvalue(), "image/png"), "No QR code"))
        for data, upload, expected in cases:
            files = {"label": upload} if upload else None
            response = client.post("/onboard/check", data={"csrf": token, **data}, files=files)
            assert response.status_code == 400, (data, text_of(response.text)[:300])
            assert expected in response.text, (expected, text_of(response.text)[:600])


def test_unreachable_or_invalid_mud_file_cannot_be_accepted(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        token = page_csrf(client, "/onboard")
        missing = client.post("/onboard/check", data={"csrf": token,
                                                       "mud_url": st.server.url("/none.json")})
        assert "cannot be used" in missing.text and "/onboard/accept" not in missing.text
        st.server.files["/broken.json"] = (b'{"ietf-mud:mud": 5}', "application/mud+json")
        broken = client.post("/onboard/check", data={"csrf": token,
                                                      "mud_url": st.server.url("/broken.json")})
        assert "cannot be used" in broken.text and "/onboard/accept" not in broken.text


def test_device_page_permissions_and_chart(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st)
        st.services.onboard(url=url, mac=MAC, name="Bulb")
        now = st.services.now()
        st.store.add_event(EventKind.VIOLATION, now - timedelta(hours=1), MAC,
                           {"peer": "203.0.113.9", "port": 23, "count": 4})
        st.store.add_activity(MAC, now - timedelta(hours=2), {"api.example.com": (12, 0)})
        page = client.get(f"/devices/{MAC}")
        words = text_of(page.text)
        assert "12 allowed, 4 blocked connections in the last 24 h" in words
        assert "api.example.com 12 0" in words
        assert page.text.count('class="bar-blocked"') == 12
        token = page_csrf(client, f"/devices/{MAC}")
        added = client.post(f"/devices/{MAC}/grants", data={
            "csrf": token, "kind": "service", "host": "updates.example.com", "port": "443",
            "protocol": "tcp", "expires": "1d"})
        assert added.status_code == 200
        grants = st.services.devices.active_grants(MAC)
        assert [(g.grant.host, g.grant.port, g.grant.protocol) for g in grants] == \
            [("updates.example.com", 443, 6)]
        assert grants[0].grant.expires is not None
        assert "updates.example.com:443" in text_of(added.text)
        bad = client.post(f"/devices/{MAC}/grants", data={"csrf": token, "kind": "root"})
        assert bad.status_code == 400
        revoked = client.post(f"/devices/{MAC}/grants/{grants[0].id}/revoke",
                              data={"csrf": token})
        assert revoked.status_code == 200 and st.services.devices.active_grants(MAC) == []
        renamed = client.post(f"/devices/{MAC}/rename", data={"csrf": token, "name": "Desk"})
        assert "Desk" in renamed.text
        history = text_of(renamed.text)
        assert "Permission given" in history and "Permission removed" in history
        assert "Renamed" in history and "Joined the network" in history


def test_alert_decisions_release_and_keep(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st)
        st.services.onboard(url=url, mac=MAC, name="Bulb")
        st.store.add_event(EventKind.VIOLATION, st.services.now(), MAC,
                           {"peer": "198.51.100.7", "port": 23, "reason": "telnet scan"})
        st.services.devices.quarantine(MAC, "tried telnet to 198.51.100.7")
        listing = client.get("/devices")
        assert "Quarantined" in listing.text and "1 alert needs you" in listing.text
        alerts = client.get("/alerts")
        words = text_of(alerts.text)
        assert "198.51.100.7" in words and "telnet scan" in words
        token = page_csrf(client, "/alerts")
        kept = client.post(f"/devices/{MAC}/keep", data={"csrf": token, "from": "alerts"})
        assert kept.url.path == "/alerts" and "needs a decision" not in kept.text
        assert st.store.get_device(MAC).state is LifecycleState.QUARANTINED
        st.services.devices.quarantine(MAC, "again")  # no-op: already quarantined
        st.store.add_event(EventKind.VIOLATION, st.services.now(), MAC, {"peer": "x"})
        assert any(a.open for a in st.services.alerts())
        released = client.post(f"/devices/{MAC}/release", data={"csrf": token,
                                                                 "from": "alerts"})
        assert released.url.path == "/alerts"
        assert st.store.get_device(MAC).state is LifecycleState.PROFILED
        assert not any(a.open for a in st.services.alerts())
        refused = client.post(f"/devices/{MAC}/keep", data={"csrf": token})
        assert refused.status_code == 409


def test_forget_removes_device_key_and_shows_reset_steps(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st)
        st.services.onboard(url=url, mac=MAC)
        assert MAC in st.psk_file.read_text()
        token = page_csrf(client, f"/devices/{MAC}")
        done = client.post(f"/devices/{MAC}/forget", data={"csrf": token})
        assert done.status_code == 200 and "Factory-reset" in done.text
        assert st.store.get_device(MAC) is None
        assert MAC not in st.psk_file.read_text()  # its WiFi key no longer works
        assert client.get(f"/devices/{MAC}").status_code == 404


def test_transfer_is_recorded_as_a_transfer(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC)
        token = page_csrf(client, f"/devices/{MAC}")
        done = client.post(f"/devices/{MAC}/forget", data={"csrf": token, "transfer": "1"})
        assert "new owner" in done.text
        kinds = [e.kind for e in st.store.list_events()]
        assert EventKind.TRANSFERRED in kinds


def test_reports_before_purchase_and_for_a_device(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st, **{"is-supported": False})
        before = client.get("/report", params={"mud_url": url})
        words = text_of(before.text)
        for expected in ("Example Lighting", "LB-2000", "No longer supported",
                         "api.example.com", "its maker", "unknown", "2026-01-15",
                         "Office of the Privacy Commissioner of Canada",
                         "Canadian Centre for Cyber Security",
                         "consumer protection office", "When you stop using it"):
            assert expected in words, expected
        assert st.store.list_devices() == []
        st.services.onboard(url=url, mac=MAC)
        device = client.get(f"/devices/{MAC}/report")
        assert "Example Lighting" in device.text and "Before you buy" in device.text
        st.services.devices.observe(mac="00:11:22:33:44:66")
        none = client.get("/devices/00:11:22:33:44:66/report")
        assert "no report" in none.text


def test_french_by_accept_language_and_by_switch(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st)
        st.services.onboard(url=url, mac=MAC)
        french = client.get("/devices", headers={"Accept-Language": "fr-CA,fr;q=0.9,en;q=0.5"})
        assert "Vos appareils" in french.text and 'lang="fr"' in french.text
        switched = client.get("/devices?lang=fr")
        assert "mg_lang=fr" in switched.headers["set-cookie"]
        assert "Vos appareils" in client.get("/devices").text  # remembered by the cookie
        report = client.get("/report", params={"mud_url": url})
        assert "Commissariat à la protection de la vie privée du Canada" in report.text
        assert "Your devices" in client.get("/devices?lang=en").text


def test_accessible_forms_and_phone_markup(tmp_path: Path) -> None:
    """Every input, select and file field has a label; the page declares a viewport."""
    import re

    with portal(tmp_path) as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC)
        for path in ("/onboard", f"/devices/{MAC}", "/report"):
            html = client.get(path).text
            assert 'name="viewport"' in html
            ids = set(re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', html))
            labelled = set(re.findall(r'<label for="([^"]+)"', html))
            visible = {m for m in re.findall(r'<(input|select)([^>]*)>', html)
                       if 'type="hidden"' not in m[1]}
            assert len(visible) == len(ids), path  # every visible control has an id ...
            assert ids <= labelled, (path, ids - labelled)  # ... and a label
        onboard = client.get("/onboard").text
        assert 'accept="image/*"' in onboard and 'capture="environment"' in onboard


def test_a_new_mud_url_waits_and_shows_what_would_change(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st)
        st.services.onboard(url=url, mac=MAC)
        wider_url = st.server.url("/bulb-v2.json")
        wider = mud_document(wider_url)
        aces = wider["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"]
        aces.append({"name": "telemetry", "matches": {
            "ipv4": {"protocol": 17, "ietf-acldns:dst-dnsname": "telemetry.example.net"},
            "udp": {"destination-port": {"operator": "eq", "port": 5683}}},
            "actions": {"forwarding": "accept"}})
        st.server.put_json("/bulb-v2.json", wider)
        device = st.services.devices.observe(mac=MAC, mud_url=wider_url)
        assert device.pending_mud_url == wider_url and device.mud_url == url
        page = client.get(f"/devices/{MAC}")
        assert "waiting for your approval" in page.text
        diff = text_of(client.get(f"/devices/{MAC}/pending").text)
        assert "It would newly be allowed to may send to telemetry.example.net (UDP port 5683)" \
            in diff
        assert "keeps its current, stricter profile" in diff
        token = page_csrf(client, f"/devices/{MAC}/pending")
        client.post(f"/devices/{MAC}/approve", data={"csrf": token})
        device = st.store.get_device(MAC)
        assert device.mud_url == wider_url and device.pending_mud_url is None
        assert client.get(f"/devices/{MAC}/pending", follow_redirects=False).status_code == 303


def test_trust_and_untrust(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC)
        token = page_csrf(client, f"/devices/{MAC}")
        trusted = client.post(f"/devices/{MAC}/trust", data={"csrf": token})
        assert "Trusted" in trusted.text
        assert st.store.get_device(MAC).state is LifecycleState.TRUSTED
        client.post(f"/devices/{MAC}/trust", data={"csrf": token, "undo": "1"})
        assert st.store.get_device(MAC).state is LifecycleState.PROFILED


def test_onboarding_records_the_key_id_on_the_device(tmp_path: Path) -> None:
    with portal(tmp_path) as (_, st, _):
        done = st.services.onboard(url=_serve_bulb(st), mac=MAC, name="Bulb")
        device = st.store.get_device(MAC)
        assert device.key_id and device.key_id.startswith("dev-")
        assert f"keyid={device.key_id} {MAC}" in st.psk_file.read_text()
        assert done.device.key_id == device.key_id
        # A second onboarding replaces the key: one line per device, never two.
        st.services.onboard(url=_serve_bulb(st), mac=MAC)
        assert st.psk_file.read_text().count(MAC) == 1


def test_alert_evidence_from_the_watcher_is_shown_and_counted(tmp_path: Path) -> None:
    """The watcher's ``Alert.as_dict()`` evidence (flows) as event details: a table on the
    alerts page, blocked flows in the chart counted once with the drop log; junk is skipped."""
    with portal(tmp_path) as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=MAC)
        flows = [{"device_id": "d1", "direction": "out", "src": "192.0.2.10",
                  "dst": f"192.0.2.{20 + i}", "protocol": 6, "src_port": 40000 + i,
                  "dst_port": 23, "icmp_type": None, "icmp_code": None, "mac": MAC,
                  "remote_name": None} for i in range(5)]
        st.services.devices.tell(EventKind.VIOLATION, {
            "kind": "scan", "reason": "scanned 5 LAN hosts on port 23",
            "evidence": [*flows, "junk", {"direction": "in"}]}, MAC)
        st.services.devices.quarantine(MAC, "scanned 5 LAN hosts on port 23")
        alerts = client.get("/alerts")
        assert alerts.status_code == 200
        words = text_of(alerts.text)
        assert "192.0.2.24:23" in words and "scanned 5 LAN hosts" in words
        # The daemon also summarised those drops (the drop log): counted once, not twice.
        st.services.devices.tell(EventKind.VIOLATION, {"count": 5, "evidence": flows}, MAC)
        page = client.get(f"/devices/{MAC}")
        assert "0 allowed, 5 blocked connections" in text_of(page.text)
        st.services.devices.tell(EventKind.VIOLATION, {"evidence": "not a list"}, MAC)
        st.services.devices.tell(EventKind.VIOLATION, {"evidence": {"a": 1}}, MAC)
        assert client.get("/alerts").status_code == 200
        assert client.get(f"/devices/{MAC}").status_code == 200
