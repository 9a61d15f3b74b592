"""Hostile RFC 9238 labels and forged first MUD URLs, through the pure cores.

A label's text is shown to the owner when deciding: format characters (bidi overrides,
zero widths) must not let it read as another maker, model or URL. A device long on the
home default takes no first MUD URL from a source another device can forge (DHCP
chaddr, LLDP source MAC); the owner's own sources (label, typed) still apply at once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mudguard.devices import Device, EventKind, MudSource
from mudguard.devices.lifecycle import FIRST_URL_GRACE, on_seen
from mudguard.discovery.qr import GS, HEADER, TRAILER, QrError, parse_qr
from mudguard.labels import label_png, qr_png, read_label
from mudguard.policy import LifecycleState

URL = "https://mud.example.com/bulb.json"
MAC = "02:00:5e:00:53:10"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def payload(*elements: str) -> str:
    return HEADER + GS.join(elements) + TRAILER


@pytest.mark.parametrize(("text", "key"), [
    (payload("M180" + URL, "B000Acme\u202eevil"), "qr_bad_text"),
    (payload("M180" + URL, "B002LB\u200b2000"), "qr_bad_text"),
    (payload("M180" + URL, "B001\u2066Lamp\u2069"), "qr_bad_text"),
    (payload("M180" + URL, "Z999x\u200fy"), "qr_bad_text"),
    (payload("M180https://mud.example.com/\u202enosj.json"), "qr_bad_mud_url"),
    (payload("M180https://mud.example.com\u00a0.evil/x.json"), "qr_bad_mud_url"),
])
def test_format_characters_on_a_label_are_refused(text: str, key: str) -> None:
    with pytest.raises(QrError) as caught:
        parse_qr(text)
    assert caught.value.key == key


def test_a_printed_hostile_label_is_refused_by_the_reader() -> None:
    """The same through a real QR image (segno writes it, zxing-cpp reads it back)."""
    image = qr_png(payload("M180" + URL, "B000Acme\u202eevil"))
    with pytest.raises(QrError) as caught:
        read_label(image)
    assert caught.value.key == "qr_bad_text"


def test_ordinary_unicode_text_still_reads() -> None:
    record = parse_qr(payload("B000Société Éclairage", "M180" + URL, "B002Lampe n°2"))
    assert record.company == "Société Éclairage" and record.model == "Lampe n°2"
    assert label_png(record)  # and it can be printed


def _settled(now: datetime) -> Device:
    """A device first seen at ``now`` and put on the home default."""
    return replace(on_seen(None, mac=MAC, now=now).device, state=LifecycleState.DEFAULT)


@pytest.mark.parametrize("source", [MudSource.DHCP4, MudSource.DHCP6, MudSource.LLDP])
def test_forgeable_source_after_the_grace_waits_for_the_owner(source: MudSource) -> None:
    device = _settled(T0)
    later = T0 + FIRST_URL_GRACE + timedelta(seconds=1)
    outcome = on_seen(device, mac=MAC, now=later, mud_url=URL, source=source)
    assert outcome.device.mud_url is None and outcome.device.pending_mud_url == URL
    assert [n.kind for n in outcome.notices] == [EventKind.URL_CHANGED]


@pytest.mark.parametrize("source", [MudSource.DHCP4, MudSource.LLDP])
def test_forgeable_source_within_the_grace_is_the_first_url(source: MudSource) -> None:
    device = _settled(T0)
    outcome = on_seen(device, mac=MAC, now=T0 + FIRST_URL_GRACE, mud_url=URL, source=source)
    assert outcome.device.mud_url == URL and outcome.device.pending_mud_url is None


@pytest.mark.parametrize("source", [MudSource.QR, MudSource.MANUAL, MudSource.CERT])
def test_owner_and_certificate_sources_apply_at_any_time(source: MudSource) -> None:
    device = _settled(T0)
    outcome = on_seen(device, mac=MAC, now=T0 + timedelta(days=30), mud_url=URL,
                      source=source)
    assert outcome.device.mud_url == URL
