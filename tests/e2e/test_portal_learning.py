"""Learn, then lock, approved by the owner in the portal (issue #16's "done when"), with
real packets: a plug that announces no MUD URL is identified from its DHCP request (maker
and kind, stored), learned from its real connections (conntrack) and DNS answers for a
shortened period, and the owner, over real HTTP to the daemon's own portal (first start,
log in, CSRF, the device page's proposal, "Lock it to this"), locks it; the kernel then
lets the learned flow pass and drops a new destination, which the portal's alerts list."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from mudguard.demo import scenario
from mudguard.store import Store
from tests.e2e.test_daemon import GADGET_CLOUD, Daemon, _resolve, daemon_home
from tests.e2e.test_daemon_wiring import _fresh

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]

LEARNING_SECONDS = 12.0
PLUG_MAC = "50:c7:bf:16:00:03"  # a TP-Link OUI, as a Kasa plug has
PORTAL = ("192.0.2.1", 8080)
OWNER, PASSWORD = "owner", "correct horse battery staple"


def _join_as_plug(interface: str, mac: str) -> str:
    """Inside the device namespace: DHCP as a TP-Link HS110 plug (no MUD URL)."""
    from mudguard.demo import dhcp
    from mudguard.demo.devices import configure

    lease = dhcp.obtain(interface, mac, hostname="HS110", mud_url=None, timeout=15.0)
    configure(interface, lease)
    return lease.address


class Browser:
    """A minimal browser for the portal: cookies, form posts, no redirects followed."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str, str]:
        """(status, Location, body) of one request."""
        import http.client
        from urllib.parse import urlencode

        conn = http.client.HTTPConnection(*PORTAL, timeout=10)
        sent = {"Host": f"{PORTAL[0]}:{PORTAL[1]}", **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            for header, value in response.getheaders():
                if header.lower() == "set-cookie":
                    name, _, rest = value.partition("=")
                    cookie = rest.split(";", 1)[0].strip('"')
                    if cookie and "max-age=0" not in value.lower():
                        self.cookies[name] = cookie
                    else:
                        self.cookies.pop(name, None)
            return response.status, response.getheader("Location") or "", \
                response.read().decode()
        finally:
            conn.close()


def _csrf(page: str) -> str:
    import re

    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


def _words(page: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def _owner_locks_in_the_portal(mac: str) -> dict[str, Any]:
    """Inside the gateway namespace (the LAN side): the owner's first start, log in, the
    device page with its proposal, a forged post refused, then "Lock it to this"."""
    browser = Browser()
    status, _, page = browser.request("GET", "/setup")
    assert status == 200, status
    status, where, _ = browser.request("POST", "/setup", {
        "csrf": _csrf(page), "username": OWNER, "password": PASSWORD,
        "password_again": PASSWORD})
    assert (status, where) == (303, "/devices"), (status, where)
    status, _, page = browser.request("GET", "/devices")
    browser.request("POST", "/logout", {"csrf": _csrf(page)})
    status, _, page = browser.request("GET", "/login")
    status, where, _ = browser.request("POST", "/login", {
        "csrf": _csrf(page), "username": OWNER, "password": PASSWORD})
    assert (status, where) == (303, "/devices"), (status, where)
    status, _, device_page = browser.request("GET", f"/devices/{mac}")
    assert status == 200, status
    forged = browser.request("POST", f"/devices/{mac}/learning/lock", {"csrf": "forged"})[0]
    status, where, _ = browser.request("POST", f"/devices/{mac}/learning/lock",
                                       {"csrf": _csrf(device_page)})
    after = browser.request("GET", f"/devices/{mac}")[2]
    return {"page": _words(device_page), "forged": forged, "locked": (status, where),
            "after": _words(after), "cookies": browser.cookies}


def _portal_alerts(cookies: dict[str, str]) -> list[dict[str, Any]]:
    """Inside the gateway namespace: the owner's alerts through the JSON API."""
    import json

    browser = Browser()
    browser.cookies = dict(cookies)
    status, _, body = browser.request("GET", "/api/alerts")
    assert status == 200, (status, body[:300])
    alerts: list[dict[str, Any]] = json.loads(body)
    return alerts


def test_a_plug_is_identified_learned_and_locked_by_the_owner_in_the_portal(
        tmp_path: Path) -> None:
    # Learning is on by default (#16): not set here, only its period and flushes.
    extra = ("[devices]\n"
             f"learning_days = {LEARNING_SECONDS / 86400:.8f}\nlearning_flush_seconds = 0.5\n")
    with daemon_home(tmp_path, "mgh16", extra=extra) as (vhome, config):
        # The home default lets it reach the Internet while it is learned (the usual
        # home); the demo's configuration runs the portal on the gateway's LAN address.
        config.write_text(config.read_text().replace('home_default = "lan"',
                                                     'home_default = "internet"'))
        assert f'address = "{PORTAL[0]}"' in config.read_text()
        db = config.parent / "state" / "mudguard.db"
        plug = vhome.nodes[2]
        _fresh(vhome, plug)
        vhome.run(plug.ns, ["ip", "link", "set", "dev", plug.iface, "address", PLUG_MAC])
        daemon = Daemon(vhome.gw_ns, config, config.parent / "gateway.log")
        try:
            daemon.wait_for({"event": "ready"})
            vhome.call(plug.ns, _join_as_plug, plug.iface, PLUG_MAC)
            daemon.wait_for({"event": "device", "mac": PLUG_MAC, "state": "learning"})
            with Store(db) as store:  # identified from its DHCP request and its OUI
                device = store.get_device(PLUG_MAC)
                assert device is not None
                assert (device.manufacturer, device.kind) == ("TP-Link", "plug")
            # What it does while learned: its cloud by name, on 443 (the home default).
            assert vhome.call(plug.ns, _resolve, "cloud.gadget.example") == [GADGET_CLOUD]
            assert vhome.tcp(plug.ns, GADGET_CLOUD, 443)
            ended = daemon.wait_for({"event": "learning-ended", "mac": PLUG_MAC},
                                    timeout=LEARNING_SECONDS + 20)
            assert ended["state"] == "proposed"
            # Still the home default until the owner decides: anything goes out.
            assert vhome.tcp(plug.ns, scenario.ELSEWHERE, 443)
            seen = vhome.call(vhome.gw_ns, _owner_locks_in_the_portal, PLUG_MAC, timeout=60)
            page = seen["page"]
            assert "What it did: lock it to this?" in page, page[:2000]
            assert "It talks to online services at gadget.example." in page, page[:3000]
            assert "Kind smart plug" in page and "TP-Link" in page
            assert "Lock it to this" in page and "Keep the home default" in page
            assert seen["forged"] == 403
            assert seen["locked"] == (303, f"/devices/{PLUG_MAC}")
            daemon.wait_for({"event": "device", "mac": PLUG_MAC, "state": "profiled"})
            assert "Lock it to this" not in seen["after"]
            # Real packets show the lock: the learned flow passes, a new destination is
            # dropped, and the owner is told in the portal.
            assert vhome.call(plug.ns, _resolve, "cloud.gadget.example") == [GADGET_CLOUD]
            assert vhome.tcp(plug.ns, GADGET_CLOUD, 443)
            assert not vhome.tcp(plug.ns, scenario.ELSEWHERE, 443)
            daemon.wait_for({"event": "drops", "mac": PLUG_MAC}, timeout=15)
            alerts = vhome.call(vhome.gw_ns, _portal_alerts, seen["cookies"])
            mine = [a for a in alerts if a["mac"] == PLUG_MAC and a["alert"] == "violation"]
            assert mine and mine[0]["open"], alerts
            assert any(scenario.ELSEWHERE in d["name"] for d in mine[0]["destinations"]), mine
            with Store(db) as store:
                device = store.get_device(PLUG_MAC)
                assert device is not None and device.mud_source is not None
                assert (device.mud_source.value, device.signature_status.value) == (
                    "learned", "owner_approved")
        finally:
            daemon.stop()
