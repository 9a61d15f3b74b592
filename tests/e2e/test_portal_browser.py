"""The owner's portal in a real headless Chromium (Debian's, driven by Playwright):
first start, login, onboarding by uploading a QR label photo, deciding an alert,
forgetting a device; a hostile MUD file must not script the page. Screenshots go to
``artifacts/portal/``.

The portal runs under uvicorn on 127.0.0.1 over the real service stack (SQLite store,
HTTPS MUD server with a test CA, key manager writing hostapd's PSK file).
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from PIL import Image

from mudguard.devices import EventKind
from mudguard.discovery.qr import QrRecord
from mudguard.keys.core import parse_wifi_qr
from mudguard.labels import label_png, read_qr_texts
from mudguard.policy import LifecycleState
from mudguard.portal import create_app
from tests.unit.test_portal_support import DATA, OWNER, PASSWORD, Stack, mud_document, stack

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "portal"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAC = "00:11:22:33:44:55"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (scripts/setup.sh)")
pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, Stack]]:
    """The portal served by uvicorn on loopback, over the real stack."""
    with stack(tmp_path) as st:
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(
            create_app(st.services, st.settings), host="127.0.0.1", port=port,
            log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        try:
            yield f"http://127.0.0.1:{port}", st
        finally:
            server.should_exit = True
            thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile; collects console errors and any dialog a page opens."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=FLAGS,
            headless=True, viewport={"width": 1100, "height": 900}, locale="en-CA")
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


def _watch(page: Any) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {"errors": [], "dialogs": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))

    def on_dialog(dialog: Any) -> None:
        seen["dialogs"].append(f"{dialog.type}: {dialog.message}")
        dialog.accept()

    page.on("dialog", on_dialog)
    return seen


def _shot(page: Any, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_owner_journey_in_chromium(live: tuple[str, Stack], browser: Any,
                                   tmp_path: Path) -> None:
    base, st = live
    url = st.server.url("/bulb.json")
    st.server.put_json("/bulb.json", mud_document(url))
    page = browser.new_page()
    seen = _watch(page)

    # First start: the owner account.
    page.goto(base + "/")
    assert page.url.endswith("/setup")
    page.get_by_label("User name").fill(OWNER)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    _shot(page, "01-first-start")
    page.get_by_role("button", name="Create the account").click()
    page.wait_for_url("**/devices")
    assert "No device has joined yet" in page.content()

    # Log out and back in.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")
    page.get_by_label("User name").fill(OWNER)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    assert "Wrong user name or password" in page.content()
    page.get_by_label("User name").fill(OWNER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/devices")

    # Onboarding by uploading a photo of the label (JPEG, small and tilted).
    label = Image.open(io.BytesIO(label_png(QrRecord(
        mud_url=url, company="Example Lighting", product="Smart bulb", model="LB-2000",
        mac=MAC)))).convert("RGB")
    photo = Image.new("RGB", (1400, 1000), (205, 200, 190))
    photo.paste(label.rotate(4, expand=True, fillcolor=(205, 200, 190)), (120, 180))
    photo_path = tmp_path / "label-photo.jpg"
    photo.save(photo_path, format="JPEG", quality=85)
    page.get_by_role("link", name="Add a device").first.click()
    page.get_by_label("Photo of the device's QR label").set_input_files(str(photo_path))
    _shot(page, "02-onboard-form")
    page.get_by_role("button", name="Check this device").click()
    page.wait_for_url("**/onboard/check")
    body = page.content()
    assert "may send to api.example.com (HTTPS)" in body
    assert "Not signed" in body
    assert page.get_by_label("Device MAC address (on its label or box)").input_value() == MAC
    _shot(page, "03-onboard-preview")
    page.get_by_role("button", name="Accept and create its WiFi key").click()
    page.wait_for_url("**/onboard/accept")
    assert "Its own WiFi key" in page.content()
    passphrase = page.locator(".passphrase").inner_text().strip()
    assert passphrase and passphrase in st.psk_file.read_text()
    qr_box = page.locator("img.wifi-qr").bounding_box()
    assert qr_box and qr_box["width"] >= 200  # the QR image really rendered
    # What the browser shows is a WiFi QR code a phone can scan, with this device's key.
    shown = read_qr_texts(page.locator("img.wifi-qr").screenshot())
    assert len(shown) == 1
    credentials = parse_wifi_qr(shown[0])
    assert (credentials.ssid, credentials.passphrase) == ("mudguard-home", passphrase)
    _shot(page, "04-onboarded-wifi-key")
    device = st.store.get_device(MAC)
    assert device is not None and device.state is LifecycleState.PROFILED

    # An alert: the watcher saw a violation and quarantined the device.
    st.store.add_event(EventKind.VIOLATION, st.services.now(), MAC,
                       {"peer": "203.0.113.50", "port": 23, "count": 3,
                        "reason": "telnet is not in its MUD profile"})
    st.services.devices.quarantine(MAC, "tried telnet to 203.0.113.50")
    page.goto(base + "/alerts")
    assert "needs a decision" in page.content()
    page.get_by_text("Technical details").first.click()
    _shot(page, "05-alert")
    page.get_by_role("button", name="Release it").first.click()
    page.wait_for_url("**/alerts")
    assert "needs a decision" not in page.content()
    assert st.store.get_device(MAC).state is LifecycleState.PROFILED

    # The device page on a phone-sized screen, then forget it (confirm dialog).
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(base + f"/devices/{MAC}")
    assert page.locator("svg.flows rect.bar-blocked").count() == 12
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    _shot(page, "06-device-phone")
    page.get_by_role("button", name="Forget this device").click()
    page.wait_for_url("**/forget")
    assert "Factory-reset" in page.content()
    assert any("Forget this device" in d for d in seen["dialogs"])
    assert st.store.get_device(MAC) is None
    assert MAC not in st.psk_file.read_text()
    _shot(page, "07-forgotten")

    # French, by the switch.
    page.get_by_role("link", name="Français").click()
    assert "Vos appareils" in page.content() or "Appareils" in page.content()
    assert not [e for e in seen["errors"] if "Content Security Policy" in e], seen["errors"]


def test_hostile_mud_file_cannot_script_the_page(live: tuple[str, Stack], browser: Any) -> None:
    base, st = live
    for name in ("script-in-usable-fields.json", "script-in-text-fields.json"):
        path = DATA / "hostile" / name
        url = st.server.url("/" + name)
        st.server.files["/" + name] = (path.read_text().replace("{MUD_URL}", url).encode(),
                                       "application/mud+json")
    page = browser.new_page()
    seen = _watch(page)
    page.goto(base + "/setup")
    page.get_by_label("User name").fill(OWNER)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create the account").click()
    page.wait_for_url("**/devices")
    for name in ("script-in-usable-fields.json", "script-in-text-fields.json"):
        page.goto(base + "/onboard")
        page.get_by_label("MUD URL (on its label, starts with https://)").fill(
            st.server.url("/" + name))
        page.get_by_label("Device MAC address (on its label or box)").fill(MAC)
        page.get_by_role("button", name="Check this device").click()
        page.wait_for_url("**/onboard/check")
        page.wait_for_timeout(300)
        assert page.locator("text=<script>").count() >= 1  # shown as text
        _shot(page, "08-hostile-preview-" + name.removesuffix(".json"))
        page.get_by_role("button", name="Accept and create its WiFi key").click()
        page.wait_for_url("**/onboard/accept")
        page.goto(base + f"/devices/{MAC}/report")
        page.goto(base + f"/devices/{MAC}")
        page.wait_for_timeout(300)
    assert seen["dialogs"] == [], seen["dialogs"]  # no alert() ran
    assert page.evaluate("typeof window.mudPwned") == "undefined"


def test_keyboard_only_first_start_and_login(live: tuple[str, Stack], browser: Any) -> None:
    """Tab and Enter are enough: skip link first, then the labelled fields, then submit."""
    base, _ = live
    page = browser.new_page()
    page.goto(base + "/setup")

    def focused() -> str:
        return str(page.evaluate("document.activeElement.id || document.activeElement.className"
                                 " || document.activeElement.tagName"))

    page.keyboard.press("Tab")
    assert focused() == "skip"  # the first stop is "Skip to content"
    for _ in range(12):
        if focused() == "username":
            break
        page.keyboard.press("Tab")
    assert focused() == "username"
    page.keyboard.type(OWNER)
    page.keyboard.press("Tab")
    assert focused() == "password"
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/devices")
    outline = page.evaluate(
        "(() => { const a = document.querySelector('nav a'); a.focus();"
        " return getComputedStyle(a).outlineStyle + ' ' + getComputedStyle(a).outlineWidth; })()")
    assert outline.startswith("solid 3px"), outline


CAMERA, LAMP = "00:11:22:33:44:55", "00:11:22:33:44:66"
MAIN_JARGON = re.compile(r"urn:|/\d{1,3}\b|0x[0-9a-f]{2}", re.IGNORECASE)


def _flood(st: Stack, corpus: Path) -> None:
    """A home after a few minutes of trouble: a camera (the UNSW TP-Link camera's MUD file)
    that got quarantined and keeps being blocked, a lamp blocked 200 times."""
    import json

    doc = json.loads((corpus / "mud/unsw/tplinkcameraMud.json").read_text())
    camera_url = st.server.url("/camera.json")
    doc["ietf-mud:mud"]["mud-url"] = camera_url
    st.server.put_json("/camera.json", doc)
    lamp_url = st.server.url("/lamp.json")
    st.server.put_json("/lamp.json", mud_document(lamp_url))
    st.services.onboard(url=camera_url, mac=CAMERA, name="Garden camera")
    st.services.onboard(url=lamp_url, mac=LAMP, name="Desk lamp")
    flow = {"direction": "out", "src": "192.0.2.10", "protocol": 6, "src_port": 40000}
    for i in range(200):
        st.services.devices.tell(EventKind.VIOLATION, {"count": 1, "evidence": [
            {**flow, "dst": f"198.51.100.{7 + i % 3}", "dst_port": 23}]}, LAMP)
    st.services.devices.tell(EventKind.VIOLATION, {
        "kind": "scan", "reason": "scanned 5 LAN hosts on port 23",
        "evidence": [{**flow, "dst": f"192.0.2.{20 + i}", "dst_port": 23} for i in range(5)]},
        CAMERA)
    st.services.devices.quarantine(CAMERA, "scanned 5 LAN hosts on port 23")
    for _ in range(50):
        st.services.devices.tell(EventKind.VIOLATION, {"count": 4, "evidence": [
            {**flow, "dst": "203.0.113.5", "dst_port": 443, "remote_name": "ipc.example.net"}]},
            CAMERA)


@pytest.mark.parametrize("width", [390, 1280])
def test_alerts_are_incidents_and_the_allowance_is_in_words(
        live: tuple[str, Stack], browser: Any, corpus: Path, width: int) -> None:
    """At phone and desk widths, in English and French: the badge equals the alerts
    listed, one open alert per device and kind, the quarantine is there with the safe
    choice first, and the main allowance text has no URN, prefix or hex."""
    base, st = live
    _flood(st, corpus)
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    seen = _watch(page)
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto(base + "/setup")
    page.get_by_label("User name").fill(OWNER)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create the account").click()
    page.wait_for_url("**/devices")
    for lang in ("en", "fr"):
        page.goto(base + f"/alerts?lang={lang}")
        cards = page.locator("[data-testid=open-alerts] > li")
        keys = [(cards.nth(i).get_attribute("data-mac"), cards.nth(i).get_attribute("data-kind"))
                for i in range(cards.count())]
        assert len(keys) == len(set(keys)), keys  # at most one per device and kind
        assert set(keys) == {(CAMERA, "quarantine"), (LAMP, "violation")}
        badge = int(page.get_by_test_id("alert-badge").inner_text())
        assert badge == cards.count() == int(page.get_by_test_id("alerts-listed").inner_text())
        quarantine = page.locator(f"[data-kind=quarantine][data-mac='{CAMERA}']")
        buttons = quarantine.locator(".decide button")
        assert buttons.count() == 2
        first = buttons.nth(0)
        assert "secondary" not in (first.get_attribute("class") or "")  # the primary
        assert first.inner_text() == ("Keep it quarantined" if lang == "en"
                                      else "Le garder en quarantaine")
        assert ("and 1 more" if lang == "en" else "et 1 autre\n") in quarantine.inner_text() + "\n"
        lamp = page.locator(f"[data-kind=violation][data-mac='{LAMP}']").inner_text()
        assert ("blocked 200 times" if lang == "en" else "bloqué 200 fois") in lamp
        height = page.evaluate("document.documentElement.scrollHeight")
        assert height < 4000, height  # not 28,000 px of identical cards
        _shot(page, f"20-alerts-{lang}-{width}")
        page.goto(base + f"/devices/{CAMERA}?lang={lang}")
        main = page.get_by_test_id("allowance-main").inner_text()
        assert not MAIN_JARGON.search(main), MAIN_JARGON.search(main)
        assert "tplinkcloud" not in main  # quarantined: only the gateway's basics
        _shot(page, f"21-camera-{lang}-{width}")
        page.goto(base + f"/devices/{LAMP}?lang={lang}")
        assert int(page.get_by_test_id("alert-badge").inner_text()) == badge
        _shot(page, f"21-device-{lang}-{width}")
    # The owner keeps the camera quarantined and has seen the lamp's alert: none open.
    page.goto(base + "/alerts?lang=en")
    page.locator(f"[data-kind=quarantine][data-mac='{CAMERA}']").get_by_role(
        "button", name="Keep it quarantined").click()
    page.wait_for_url("**/alerts")
    page.locator(f"[data-kind=violation][data-mac='{LAMP}']").get_by_role(
        "button", name="I've seen it").click()
    page.wait_for_url("**/alerts")
    assert page.get_by_test_id("alert-badge").count() == 0
    assert page.locator("[data-testid=open-alerts] > li").count() == 0
    assert page.locator(".closed-alerts > li").count() == 2
    _shot(page, f"22-alerts-decided-{width}")
    assert [u for u in missing if not u.endswith("/favicon.ico")] == [], missing
    assert [e for e in seen["errors"] if "404" not in e] == [], seen["errors"]


def test_the_device_page_shows_true_activity_in_chromium(live: tuple[str, Stack],
                                                        browser: Any) -> None:
    """A healthy bulb with 192 allowed connections and a few blocked: green bars with a
    height, one "Recent" line per destination, the history collapsed, on a phone."""
    from datetime import timedelta

    base, st = live
    url = st.server.url("/bulb.json")
    st.server.put_json("/bulb.json", mud_document(url))
    st.services.onboard(url=url, mac=MAC, name="Bulb")
    now = st.services.now()
    st.store.add_activity(MAC, now - timedelta(minutes=30), {"v2.broker.lifx.co": (192, 0)})
    st.store.add_activity(MAC, now - timedelta(minutes=5), {"203.0.113.5": (0, 3)})
    for minutes in (3, 2, 1):
        st.store.add_event(EventKind.VIOLATION, now - timedelta(minutes=minutes), MAC,
                           {"count": 1})
    page = browser.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(base + "/setup")
    page.get_by_label("User name").fill(OWNER)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create the account").click()
    page.wait_for_url("**/devices")
    page.goto(base + f"/devices/{MAC}")
    summary = page.locator("figcaption.activity-summary").inner_text()
    assert "192 allowed, 3 blocked connections in the last 24 h" in summary
    heights = [float(h or 0) for h in page.locator("svg.flows rect.bar-allowed")
               .evaluate_all("rects => rects.map(r => r.getAttribute('height'))")]
    assert max(heights) > 50  # the busiest slot: the allowed connections, in green
    rows = page.locator("table.activity tbody tr")
    assert rows.count() == 2
    assert "v2.broker.lifx.co" in rows.nth(1).inner_text()
    assert "×3, last" in page.locator("ul.history").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    _shot(page, "08-device-activity")
