"""Issue #15 in a real headless Chromium: every page of the portal, in English and in
French, on a 390 px phone, scrolls only up and down (nothing wider than the screen),
and axe-core (the ``axe-playwright-python`` package's bundled copy, MPL-2.0) finds no
serious or critical accessibility violation on any of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mudguard.policy import GrantKind
from tests.e2e import test_portal_browser as chromium
from tests.e2e.test_portal_browser import CAMERA, LAMP, _flood, _shot
from tests.unit.test_portal_support import OWNER, PASSWORD, Stack

live = chromium.live  # the portal under uvicorn and Debian's Chromium, as pytest fixtures
browser = chromium.browser

axe_module = pytest.importorskip("axe_playwright_python.sync_playwright",
                                 reason="axe-playwright-python is a dev dependency")

PHONE = {"width": 390, "height": 844}


def _pages(st: Stack) -> list[str]:
    report_url = st.server.url("/lamp.json")
    return ["/devices", f"/devices/{CAMERA}", f"/devices/{LAMP}", f"/devices/{LAMP}/report",
            "/alerts", "/onboard", "/report", f"/report?mud_url={report_url}",
            "/report?mud_url=https://mud.invalid/x.json", "/settings"]


def _serious(page: Any) -> list[str]:
    results = axe_module.Axe().run(page)
    assert results.response["testEngine"]["name"] == "axe-core"
    assert results.response["passes"] or results.response["violations"] is not None
    if os.environ.get("MUDGUARD_AXE_ALL"):
        print(page.url, [(v["id"], v["impact"]) for v in results.response["violations"]])
    return [f"{v['id']} ({v['impact']}): {v['nodes'][0]['target']}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


def _sideways(page: Any) -> int:
    """How many CSS pixels the page is wider than the screen (0: nothing scrolls)."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def test_every_page_fits_a_phone_and_passes_axe_in_both_languages(
        live: tuple[str, Stack], browser: Any, corpus: Path) -> None:
    base, st = live
    _flood(st, corpus)
    st.services.grant(LAMP, GrantKind.PAUSE, schedule="21:30-07:00 UTC")
    page = browser.new_page()
    page.set_viewport_size(PHONE)
    problems: list[str] = []
    for lang in ("en", "fr"):  # before the account exists, then logged out
        page.goto(base + f"/setup?lang={lang}")
        problems += [f"/setup {lang}: {v}" for v in _serious(page)]
        if _sideways(page) > 0:
            problems.append(f"/setup {lang}: {_sideways(page)} px sideways")
    page.goto(base + "/setup?lang=en")
    page.get_by_label("User name").fill(OWNER)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create the account").click()
    page.wait_for_url("**/devices")
    for lang in ("en", "fr"):
        for path in _pages(st):
            joiner = "&" if "?" in path else "?"
            page.goto(base + f"{path}{joiner}lang={lang}")
            assert page.locator("html").get_attribute("lang") == lang
            wider = _sideways(page)
            if wider > 0:
                problems.append(f"{path} {lang}: {wider} px sideways")
            problems += [f"{path} {lang}: {v}" for v in _serious(page)]
            if path == f"/devices/{LAMP}":
                _shot(page, f"phone-device-paused-{lang}")
        _shot(page, f"phone-settings-{lang}")
        # The pages a form leads to: the preview of a typed MUD URL, and an error page.
        page.goto(base + f"/onboard?lang={lang}")
        page.locator("#mud_url").fill(st.server.url("/lamp.json"))
        page.locator("form[action='/onboard/check'] button[type=submit]").last.click()
        page.wait_for_url("**/onboard/check")
        assert page.locator("table.matrix").count() == 1  # the preview, not an error
        for name in ("preview", "error"):
            if name == "error":
                page.goto(base + f"/devices/02:00:00:00:00:99?lang={lang}")
            wider = _sideways(page)
            if wider > 0:
                problems.append(f"{name} {lang}: {wider} px sideways")
            problems += [f"{name} {lang}: {v}" for v in _serious(page)]
    page.goto(base + f"/report?mud_url={st.server.url('/lamp.json')}&lang=fr")
    _shot(page, "phone-guidance-cards-fr")
    # The guidance matrix is cards here: each moment's advice is labelled in the card.
    cell = page.locator("table.matrix td").first
    assert cell.evaluate("e => getComputedStyle(e).display") == "block"
    browser.clear_cookies()
    page.goto(base + "/login?lang=fr")
    assert page.url.split("?")[0].endswith("/login")
    problems += [f"/login fr: {v}" for v in _serious(page)]
    if _sideways(page) > 0:
        problems.append(f"/login fr: {_sideways(page)} px sideways")
    assert not problems, "\n".join(problems)
