"""The device page shows what issue #18's standards decided, in the owner's language:
RFC 9726 ``dns-elsewhere`` and RFC 9761 ``tls-deviation`` history lines from catalogue
keys, the acceptable-URL pins (signer, root URL), and what stays open in quarantine (the
MUD file's ACEs, the owner's exceptions). Real portal stack."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mudguard.devices import EventKind
from tests.unit.test_portal_support import mud_document, portal, text_of

MAC = "00:11:22:33:44:57"
AT = datetime(2026, 1, 15, 12, 30, tzinfo=UTC)
QUARANTINE = "ietf-mud-quarantine:quaranteed-device-policy"


def _onboard(st: Any, **changes: Any) -> None:
    url = st.server.url("/bulb.json")
    st.server.put_json("/bulb.json", mud_document(url, **changes))
    st.services.onboard(url=url, mac=MAC)


def test_dns_elsewhere_and_tls_deviation_lines_are_translated(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        _onboard(st)
        st.store.add_event(EventKind.DNS_ELSEWHERE, AT, MAC, {
            "kind": "dns-elsewhere", "transport": "dot", "server": "198.51.100.53",
            "allowed": False, "reason": "It resolves names with another DNS server: …",
            "message_key": "dns_elsewhere.dot", "params": {"server": "198.51.100.53"}})
        st.store.add_event(EventKind.TLS_DEVIATION, AT, MAC, {
            "ace": "from-bulb/cloud", "fits": False, "reason": "ALPN h2 instead of mqtt",
            "deviations": [{"kind": "alpn", "offered": ["h2"], "allowed": ["mqtt"]}]})
        french = text_of(client.get(f"/devices/{MAC}?lang=fr").text)
        assert ("Il résout les noms avec un autre serveur DNS (198.51.100.53, DNS sur TLS, "
                "port 853) au lieu de cette passerelle") in french
        assert "It resolves names" not in french  # the stored English is not shown
        assert "protocole applicatif (ALPN) h2 au lieu de mqtt" in french
        english = text_of(client.get(f"/devices/{MAC}?lang=en").text)
        assert "DNS over TLS on port 853) instead of this gateway" in english
        assert "The gateway blocked these lookups." in english


def test_an_unknown_catalogue_key_falls_back_to_the_reason(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        _onboard(st)
        st.store.add_event(EventKind.DNS_ELSEWHERE, AT, MAC, {
            "reason": "plain words", "message_key": "settings.learning",
            "params": {"server": "x"}})
        words = text_of(client.get(f"/devices/{MAC}").text)
        assert "plain words" in words and "Devices without a profile" not in words


def test_pins_and_quarantine_openings_are_shown(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        _onboard(st, **{"extensions": ["ietf-mud-quarantine"],
                        QUARANTINE: {"enabled-ace-names": [{"ace-name": "cloud"}]}})
        device = st.store.get_device(MAC)
        assert device is not None
        st.store.save_device(dataclasses.replace(
            device, pinned_signer="CN=MUD signer,O=Example Lighting (CA key 0a1b)",
            root_mud_url=device.mud_url, quarantine_exceptions=("ntp0-frdev",)))
        words = text_of(client.get(f"/devices/{MAC}").text)
        # the organisation in the main view, the whole pin under technical details
        assert "MUD signer trusted since its first file Example Lighting Technical details" \
            " CN=MUD signer,O=Example Lighting (CA key 0a1b)" in words
        assert f"Its MUD URL updates must stay under {device.mud_url}" in words
        assert "Stays open if quarantined named by its MUD file: cloud" in words
        assert "kept open by you: ntp0-frdev" in words
        french = text_of(client.get(f"/devices/{MAC}?lang=fr").text)
        assert "Reste ouvert en quarantaine désigné par son fichier MUD : cloud" in french


def test_a_plain_device_shows_no_pin_nor_quarantine_line(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, st, _):
        _onboard(st)
        words = text_of(client.get(f"/devices/{MAC}").text)
        assert "Stays open if quarantined" not in words
        assert "MUD signer trusted" not in words
