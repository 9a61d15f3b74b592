"""A hostile RFC 9238 label that names the MAC of a device already in the home.

The label is device-supplied: accepting it must not replace the existing device's
profile nor reissue its WiFi key (which would hand the label's owner a key bound to
the victim's MAC). The real portal (TestClient over the real stack: store, device
service, key ring, an HTTPS MUD server) is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mudguard.discovery.qr import QrRecord
from mudguard.labels import label_png
from mudguard.policy import LifecycleState
from tests.unit.test_portal_support import mud_document, page_csrf, portal, text_of

CAMERA = "00:11:22:33:44:66"


def _wide(url: str) -> dict[str, Any]:
    doc = mud_document(url, **{"model-name": "Totally a bulb"})
    aces = doc["ietf-access-control-list:acls"]["acl"][0]["aces"]["ace"]
    aces.append({"name": "anything", "matches": {
        "ipv4": {"protocol": 6, "ietf-acldns:dst-dnsname": "exfil.example.net"},
        "tcp": {"destination-port": {"operator": "eq", "port": 8443}}},
        "actions": {"forwarding": "accept"}})
    return doc


def _psk_lines(psk: Path, mac: str) -> list[str]:
    return [ln for ln in psk.read_text().splitlines() if mac in ln] if psk.exists() else []


def test_label_claiming_a_known_devices_mac_changes_nothing(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        camera_url = st.server.url("/camera.json")
        st.server.put_json("/camera.json", mud_document(camera_url))
        st.services.onboard(url=camera_url, mac=CAMERA, name="Camera")
        key_before = _psk_lines(st.psk_file, CAMERA)
        assert len(key_before) == 1
        evil_url = st.server.url("/evil.json")
        st.server.put_json("/evil.json", _wide(evil_url))
        label = label_png(QrRecord(mud_url=evil_url, mac=CAMERA, model="Totally a bulb"))
        token = page_csrf(client, "/onboard")
        preview = client.post("/onboard/check", data={"csrf": token, "mud_url": "", "mac": ""},
                              files={"label": ("label.png", label, "image/png")})
        assert preview.status_code == 200
        done = client.post("/onboard/accept", data={"csrf": token, "mud_url": evil_url,
                                                     "mac": CAMERA, "name": "New bulb"})
        assert done.status_code == 409, text_of(done.text)[:300]
        assert "already a known device" in text_of(done.text)
        camera = st.store.get_device(CAMERA)
        assert camera is not None and camera.mud_url == camera_url
        assert camera.pending_mud_url is None and camera.name == "Camera"
        assert camera.state is LifecycleState.PROFILED
        assert _psk_lines(st.psk_file, CAMERA) == key_before  # its key was not reissued


def test_the_api_refuses_the_same_takeover(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        camera_url = st.server.url("/camera.json")
        st.server.put_json("/camera.json", mud_document(camera_url))
        st.services.onboard(url=camera_url, mac=CAMERA)
        evil_url = st.server.url("/evil.json")
        st.server.put_json("/evil.json", _wide(evil_url))
        login = client.post("/api/session", json={"username": "owner",
                                                   "password": "correct horse battery staple"})
        headers = {"X-CSRF-Token": login.json()["csrf_token"]}
        answer = client.post("/api/onboard", headers=headers,
                             json={"mud_url": evil_url, "mac": CAMERA.upper()})
        assert answer.status_code == 409, answer.text
        assert "mac_in_use" in answer.text
        camera = st.store.get_device(CAMERA)
        assert camera is not None and camera.mud_url == camera_url


def test_a_label_still_onboards_a_device_seen_without_a_mud_url(tmp_path: Path) -> None:
    """The legitimate flow stays: a device DHCP saw first (no MUD URL) takes its label's."""
    with portal(tmp_path) as (client, st, _):
        url = st.server.url("/bulb.json")
        st.server.put_json("/bulb.json", mud_document(url))
        st.services.devices.observe(mac=CAMERA, ip="192.0.2.40")
        token = page_csrf(client, "/onboard")
        done = client.post("/onboard/accept", data={"csrf": token, "mud_url": url,
                                                     "mac": CAMERA})
        assert done.status_code == 200, text_of(done.text)[:300]
        device = st.store.get_device(CAMERA)
        assert device is not None and device.mud_url == url
        # and accepting the URL it announced itself is the approval, as before
        newer = st.server.url("/bulb-v2.json")
        st.server.put_json("/bulb-v2.json", mud_document(newer))
        st.services.devices.observe(mac=CAMERA, mud_url=newer)
        again = client.post("/onboard/accept", data={"csrf": token, "mud_url": newer,
                                                      "mac": CAMERA})
        assert again.status_code == 200, text_of(again.text)[:300]
        device = st.store.get_device(CAMERA)
        assert device is not None and device.mud_url == newer
