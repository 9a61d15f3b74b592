"""The pure lifecycle: transitions as data, RFC 8520 URL rules, support, quarantine."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mudguard.devices import Device, EventKind, HomeDefault, MudSource, Settings
from mudguard.devices import SignatureStatus as Sig
from mudguard.devices import lifecycle as lc
from mudguard.errors import BugError
from mudguard.mud import MudFile, parse_mud
from mudguard.policy import LifecycleState as S

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
MAC = "02:00:5e:00:53:01"
URL = "https://iot-device.example.com/dnsname"


def cloud_mud(corpus: Path, **changes: object) -> MudFile:
    doc = json.loads((corpus / "mud/rfc/mudmaker-cloud-service.json").read_bytes())
    doc["ietf-mud:mud"].update(changes)
    mud = parse_mud(doc).mud
    assert mud is not None
    return mud


def test_every_state_has_transitions_and_forgotten_only_restarts() -> None:
    assert set(lc.TRANSITIONS) == set(S)
    assert lc.TRANSITIONS[S.FORGOTTEN] == {S.NEW, S.FORGOTTEN}
    for state in S:
        if state is not S.FORGOTTEN:
            assert S.FORGOTTEN in lc.TRANSITIONS[state]


def test_forbidden_transition_is_a_bug() -> None:
    with pytest.raises(BugError):
        lc.transition(Device(mac=MAC, state=S.FORGOTTEN), S.PROFILED, (), NOW)


@pytest.mark.parametrize("url, why", [
    ("http://mud.example.com/x.json", "https"),
    ("ftp://mud.example.com/x.json", "https"),
    ("https:///x.json", "no host"),
    ("https://mud.example.com/" + "a" * 300, "limit"),
    ("https://mud.example.com/a b", "spaces"),
    ("https://mud.example.com/\x00", "control"),
    ("https://user:pw@mud.example.com/x", "credentials"),
    ("https://mud.example.com:99999/x", "malformed"),
    ("https://[::1/x", "malformed"),
    ("javascript:alert(1)", "https"),
    # a homograph: Cyrillic "а" reads as apple.com, is fetched from xn--pple-43d.com
    ("https://\u0430pple.com/mud.json", "ASCII"),
    ("https://mud.example.com/caf\u00e9.json", "ASCII"),
])
def test_bad_mud_urls(url: str, why: str) -> None:
    with pytest.raises(lc.MudUrlError, match=why):
        lc.check_mud_url(url)


def test_an_internationalised_host_in_its_ascii_form_is_a_mud_url() -> None:
    url = "https://xn--pple-43d.com/mud.json"
    assert lc.check_mud_url(url) == url  # shown as sent: no look-alike


def test_first_sighting_joins_and_takes_first_url() -> None:
    out = lc.on_seen(None, mac=MAC, now=NOW, ip="192.0.2.10", hostname="plug", mud_url=URL,
                     source=MudSource.DHCP4)
    d = out.device
    assert (d.state, d.mud_url, d.mud_source, d.ipv4, d.hostname) == (
        S.NEW, URL, MudSource.DHCP4, ("192.0.2.10",), "plug")
    assert [n.kind for n in out.notices] == [EventKind.JOINED]


def test_unchanged_sighting_tells_nothing() -> None:
    d = lc.on_seen(None, mac=MAC, now=NOW, ip="192.0.2.10", mud_url=URL).device
    again = lc.on_seen(d, mac=MAC, now=NOW + timedelta(minutes=1), ip="192.0.2.10", mud_url=URL)
    assert not again.changed


@pytest.mark.parametrize("ip", ["169.254.1.1", "127.0.0.1", "fe80::1", "::1", "0.0.0.0",
                                "224.0.0.1", "not-an-ip"])
def test_link_local_and_loopback_addresses_are_ignored(ip: str) -> None:
    d = lc.on_seen(None, mac=MAC, now=NOW, ip=ip).device
    assert d.ipv4 == () and d.ipv6 == ()


def test_new_address_is_seen() -> None:
    d = lc.on_seen(None, mac=MAC, now=NOW, ip="192.0.2.10").device
    out = lc.on_seen(d, mac=MAC, now=NOW, ip="2001:db8::10")
    assert out.device.ipv6 == ("2001:db8::10",)
    assert [n.kind for n in out.notices] == [EventKind.SEEN]


def test_url_change_is_held_until_approved(corpus: Path) -> None:
    d = lc.on_seen(None, mac=MAC, now=NOW, mud_url=URL).device
    d = lc.on_profile(d, cloud_mud(corpus), profile_hash="h1", signature=Sig.UNSIGNED,
                      signer=None, settings=Settings(), now=NOW).device
    assert d.state is S.PROFILED
    new = "https://iot-device.example.com/other"
    out = lc.on_seen(d, mac=MAC, now=NOW, mud_url=new, source=MudSource.LLDP)
    assert (out.device.mud_url, out.device.pending_mud_url) == (URL, new)
    assert out.device.state is S.PROFILED and out.device.profile_hash == "h1"
    assert [n.kind for n in out.notices] == [EventKind.URL_CHANGED]
    # Announcing it again does not repeat the event.
    assert not lc.on_seen(out.device, mac=MAC, now=NOW, mud_url=new).changed
    approved = lc.approve_url(out.device, NOW)
    assert (approved.device.mud_url, approved.device.pending_mud_url) == (new, None)
    assert approved.device.mud_source is MudSource.LLDP
    with pytest.raises(lc.LifecycleError):
        lc.approve_url(approved.device, NOW)


def test_bad_url_from_known_device_changes_nothing() -> None:
    d = lc.on_seen(None, mac=MAC, now=NOW, mud_url=URL).device
    with pytest.raises(lc.MudUrlError):
        lc.on_seen(d, mac=MAC, now=NOW, mud_url="http://evil.example.com/x")


def test_profile_applied_then_changed(corpus: Path) -> None:
    d = Device(mac=MAC, mud_url=URL)
    out = lc.on_profile(d, cloud_mud(corpus), profile_hash="h1", signature=Sig.SIGNED_VALID,
                        signer="CN=maker", settings=Settings(), now=NOW)
    assert out.device.state is S.PROFILED and out.device.signer == "CN=maker"
    assert out.device.manufacturer == "Example, Inc." and out.device.model == "dnsname"
    assert EventKind.PROFILE_APPLIED in [n.kind for n in out.notices]
    out2 = lc.on_profile(out.device, cloud_mud(corpus), profile_hash="h2",
                         signature=Sig.SIGNED_VALID, signer="CN=maker", settings=Settings(),
                         now=NOW)
    assert [n.kind for n in out2.notices] == [EventKind.PROFILE_CHANGED]


def test_is_supported_false_means_lan_only_with_reason(corpus: Path) -> None:
    out = lc.on_profile(Device(mac=MAC, mud_url=URL), cloud_mud(corpus, **{"is-supported": False}),
                        profile_hash="h", signature=Sig.UNSIGNED, signer=None,
                        settings=Settings(), now=NOW)
    assert out.device.state is S.OUT_OF_SUPPORT
    assert "is-supported: false" in out.device.reasons[0]
    assert EventKind.OUT_OF_SUPPORT in [n.kind for n in out.notices]


def test_end_of_support_date(corpus: Path) -> None:
    eos = NOW - timedelta(days=1)
    out = lc.on_profile(Device(mac=MAC, mud_url=URL), cloud_mud(corpus), profile_hash="h",
                        signature=Sig.UNSIGNED, signer=None, settings=Settings(), now=NOW,
                        end_of_support=eos)
    assert out.device.state is S.OUT_OF_SUPPORT and eos.date().isoformat() in out.device.reasons[0]
    later = Device(mac=MAC, state=S.PROFILED, end_of_support=NOW + timedelta(days=1))
    assert not lc.check_support(later, NOW).changed
    moved = lc.check_support(later, NOW + timedelta(days=2))
    assert moved.device.state is S.OUT_OF_SUPPORT


def test_invalid_signature_never_applies_profile(corpus: Path) -> None:
    out = lc.on_profile(Device(mac=MAC, mud_url=URL), cloud_mud(corpus), profile_hash="h",
                        signature=Sig.INVALID, signer=None, settings=Settings(), now=NOW)
    assert out.device.state is S.DEFAULT and out.device.profile_hash is None
    assert out.notices[0].kind is EventKind.SIGNATURE_INVALID
    # A device with an enforced profile keeps it.
    d = replace(Device(mac=MAC, mud_url=URL, state=S.PROFILED), profile_hash="old")
    kept = lc.on_profile(d, cloud_mud(corpus), profile_hash="new", signature=Sig.INVALID,
                         signer=None, settings=Settings(), now=NOW)
    assert (kept.device.state, kept.device.profile_hash) == (S.PROFILED, "old")


def test_unsigned_refused_when_home_requires_signatures(corpus: Path) -> None:
    strict = Settings(allow_unsigned=False, home_default=HomeDefault.LAN)
    out = lc.on_profile(Device(mac=MAC, mud_url=URL), cloud_mud(corpus), profile_hash="h",
                        signature=Sig.UNSIGNED, signer=None, settings=strict, now=NOW)
    assert out.device.state is S.DEFAULT
    assert "LAN only" in out.device.reasons[1]


def test_no_mud_applies_default_and_asks_owner() -> None:
    out = lc.on_no_mud(Device(mac=MAC), why="no URL", settings=Settings(), now=NOW)
    assert out.device.state is S.DEFAULT
    ask = out.notices[0]
    assert ask.kind is EventKind.NO_MUD and ask.details["default"] == "internet"
    profiled = Device(mac=MAC, state=S.PROFILED, profile_hash="h")
    kept = lc.on_no_mud(profiled, why="fetch failed", settings=Settings(), now=NOW)
    assert kept.device == profiled and kept.notices[0].kind is EventKind.FETCH_FAILED


def test_quarantine_wins_and_release_rederives(corpus: Path) -> None:
    d = Device(mac=MAC, state=S.PROFILED, mud_url=URL, profile_hash="h")
    q = lc.quarantine(d, reason="port scan", now=NOW)
    assert q.device.state is S.QUARANTINED and q.device.reasons == ("port scan",)
    assert not lc.quarantine(q.device, reason="again", now=NOW).changed
    # A profile refresh does not let it out.
    still = lc.on_profile(q.device, cloud_mud(corpus), profile_hash="h", signature=Sig.UNSIGNED,
                          signer=None, settings=Settings(), now=NOW)
    assert still.device.state is S.QUARANTINED
    released = lc.release(q.device, settings=Settings(), now=NOW, mud=cloud_mud(corpus))
    assert released.device.state is S.PROFILED
    with pytest.raises(lc.LifecycleError):
        lc.release(released.device, settings=Settings(), now=NOW)


def test_forget_clears_personal_data_and_rejoins_as_new() -> None:
    d = Device(mac=MAC, state=S.PROFILED, name="bedroom cam", hostname="cam", ipv4=("192.0.2.5",),
               mud_url=URL, key_id="k")
    f = lc.forget(d, now=NOW).device
    assert f.state is S.FORGOTTEN
    assert (f.name, f.hostname, f.ipv4, f.mud_url, f.key_id) == (None, None, (), None, None)
    back = lc.on_seen(f, mac=MAC, now=NOW, ip="192.0.2.6")
    assert back.device.state is S.NEW
    assert back.notices[0].kind is EventKind.JOINED


def test_lifecycle_core_imports_no_io_modules() -> None:
    import subprocess
    import sys

    code = ("import sys; before = set(sys.modules); import mudguard.devices.lifecycle; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60).stdout.split()
    io = ("asyncio", "socket", "sqlite3", "subprocess", "nftables", "pyroute2", "httpx")
    assert [m for m in loaded if m.split(".")[0] in io] == []


def test_trust_and_untrust(corpus: Path) -> None:
    d = Device(mac=MAC, state=S.PROFILED, mud_url=URL, profile_hash="h")
    t = lc.trust(d, now=NOW)
    assert t.device.state is S.TRUSTED and not lc.trust(t.device, now=NOW).changed
    back = lc.untrust(t.device, settings=Settings(), now=NOW, mud=cloud_mud(corpus))
    assert back.device.state is S.PROFILED
    with pytest.raises(lc.LifecycleError):
        lc.untrust(back.device, settings=Settings(), now=NOW)
    with pytest.raises(lc.LifecycleError, match="release"):
        lc.trust(replace(d, state=S.QUARANTINED), now=NOW)
    plain = lc.untrust(lc.trust(Device(mac=MAC), now=NOW).device, settings=Settings(), now=NOW)
    assert plain.device.state is S.DEFAULT and "no longer trusted" in plain.device.reasons[0]


# -- property: nothing a device sends changes what is enforced for it ---------------------

_URLS = st.sampled_from([URL, "https://iot-device.example.com/other",
                         "https://evil.example.net/x.json", "http://iot-device.example.com/x",
                         "https://[::1/x", None])
_IPS = st.sampled_from(["192.0.2.10", "192.0.2.99", "2001:db8::5", "fe80::1", "127.0.0.1",
                        "garbage", None])
_NAMES = st.one_of(st.none(), st.text(max_size=20))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_URLS, _IPS, _NAMES, st.sampled_from(list(MudSource))), max_size=12),
       st.sampled_from([S.PROFILED, S.OUT_OF_SUPPORT, S.QUARANTINED, S.DEFAULT, S.TRUSTED]))
def test_sightings_never_change_the_enforced_profile(
        seen: list[tuple[str | None, str | None, str | None, MudSource]], state: S) -> None:
    start = Device(mac=MAC, state=state, mud_url=URL, mud_source=MudSource.DHCP4,
                   profile_hash="h", reasons=("r",))
    device = start
    for url, ip, name, source in seen:
        try:
            device = lc.on_seen(device, mac=MAC, now=NOW, ip=ip, hostname=name, mud_url=url,
                                source=source).device
        except lc.MudUrlError:
            continue
    assert (device.state, device.mud_url, device.mud_source, device.profile_hash,
            device.reasons) == (start.state, start.mud_url, start.mud_source, "h", ("r",))
    assert device.pending_mud_url in (None, *(u for u, _, _, _ in seen))
