"""What a device may do, in words a person uses: grouped by purpose, from the effective
policy of its current state (grants included), risks flagged, no MUD jargon in the main
text (URNs, prefixes, ethertypes stay in the technical fold), in English and French."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mudguard.mud import MudFile, describe_policy, parse_mud
from mudguard.policy import (
    DeviceFacts,
    Grant,
    GrantKind,
    HomeContext,
    LifecycleState,
    PeerKind,
    decide,
)
from mudguard.portal._allowance import Allowance, describe_allowance
from mudguard.portal._i18n import catalogue, translate

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
JARGON = re.compile(r"urn:|/\d{1,3}\b|0x[0-9a-f]|ietf|ace|acl", re.IGNORECASE)


def _mud(corpus: Path, name: str) -> MudFile:
    mud = parse_mud((corpus / "mud/unsw" / name).read_bytes()).mud
    assert mud is not None
    return mud


def _allowance(mud: MudFile, state: LifecycleState, lang: str = "en",
               grants: tuple[Grant, ...] = ()) -> Allowance:
    policy = decide(DeviceFacts(mac="00:11:22:33:44:55", mud_url=mud.mud_url, state=state),
                    mud, grants, HomeContext(lan_prefixes=(), gateway_addresses=()),
                    now=NOW)
    return describe_allowance(policy, functools.partial(translate, lang))


def _groups(allowance: Allowance) -> dict[str, tuple[str, ...]]:
    return {g.key: g.items for g in allowance.groups}


@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize("state", [s for s in LifecycleState])
def test_no_jargon_in_the_main_text_in_any_state(corpus: Path, lang: str,
                                                 state: LifecycleState) -> None:
    for path in sorted((corpus / "mud/unsw").glob("*.json")):
        mud = parse_mud(path.read_bytes()).mud
        if mud is None:
            continue
        allowance = _allowance(mud, state, lang)
        text = allowance.main_text()
        assert not JARGON.search(text), (path.name, JARGON.search(text))
        assert "255.255.255.255" not in text and "224.0.0" not in text
    # The old description (every ACE as a sentence) is what this catches.
    old = describe_policy(_mud(corpus, "tplinkcameraMud.json"))
    assert JARGON.search("\n".join(old["from-device"]))
    assert not JARGON.search(_allowance(_mud(corpus, "tplinkcameraMud.json"),
                                        LifecycleState.PROFILED, lang).main_text())
    # The technical fold keeps the rule-level detail.
    technical = "\n".join(_allowance(_mud(corpus, "tplinkcameraMud.json"),
                                     LifecycleState.PROFILED).technical)
    assert "urn:ietf:params:mud:gateway" in technical and "ethertype 0x888e" in technical


def test_profiled_camera_is_grouped_by_purpose_and_its_risks_flagged(corpus: Path) -> None:
    allowance = _allowance(_mud(corpus, "tplinkcameraMud.json"), LifecycleState.PROFILED)
    groups = _groups(allowance)
    assert groups["gateway"] == ("the gateway (DHCP, finding the network (IPv6), DNS)",)
    assert groups["maker"] == ("its maker's cloud (tplinkcloud.com: 5 servers)",)
    assert groups["time"] == ("time servers (0.pool.ntp.org)",)
    assert "anyone on the Internet (UDP ports 1023 to 65535)" in groups["inbound"]
    assert "It may receive connections from anyone on the Internet." in allowance.risks
    assert any("HTTP" in item and "TCP port 8080" in item for item in groups["home"])


def test_profiled_bulb_names_the_app_and_the_fixed_address(corpus: Path) -> None:
    groups = _groups(_allowance(_mud(corpus, "lifxbulbMud.json"), LifecycleState.PROFILED))
    assert groups["home"][0].startswith("anything at home: LIFX app, network sign-in")
    assert groups["home"][1].startswith("announcements to the whole home network: DHCP")
    assert groups["maker"] == ("its maker's cloud (lifx.co: 1 server)",)
    assert groups["online"] == ("a fixed Internet address, 8.8.8.8 (DNS)",)
    assert "internet" not in groups  # nothing open-ended


def test_quarantined_lists_only_the_gateway_basics(corpus: Path) -> None:
    for name in ("tplinkcameraMud.json", "lifxbulbMud.json", "chromecastUltraMud.json"):
        for lang in ("en", "fr"):
            allowance = _allowance(_mud(corpus, name), LifecycleState.QUARANTINED, lang,
                                   grants=(Grant(kind=GrantKind.INTERNET),))
            assert list(_groups(allowance)) == ["gateway"], name
            assert allowance.risks == ()
            assert allowance.summary in ("Quarantined: only the gateway's basics.",
                                         "En quarantaine\u202f: seulement l'essentiel de "
                                         "la passerelle.")


def test_out_of_support_is_home_only_with_no_cloud(corpus: Path) -> None:
    mud = _mud(corpus, "tplinkcameraMud.json")
    allowance = _allowance(mud, LifecycleState.OUT_OF_SUPPORT)
    groups = _groups(allowance)
    assert set(groups) == {"gateway", "home", "inbound"}
    assert "tplinkcloud" not in allowance.main_text() and "Internet" not in "".join(
        groups["home"])
    assert allowance.summary == "Out of support: home network only, no Internet."


def test_an_internet_grant_shows_the_internet(corpus: Path) -> None:
    mud = _mud(corpus, "lifxbulbMud.json")
    later = NOW + timedelta(hours=1)
    for state in (LifecycleState.OUT_OF_SUPPORT, LifecycleState.PROFILED):
        allowance = _allowance(mud, state, grants=(Grant(kind=GrantKind.INTERNET,
                                                         expires=later),))
        assert _groups(allowance)["internet"] == (
            "anything on the Internet, as you allowed (all traffic)",)
        assert "It may send data to any address on the Internet." in allowance.risks
    out = _allowance(mud, LifecycleState.OUT_OF_SUPPORT, "fr",
                     grants=(Grant(kind=GrantKind.INTERNET),))
    assert "plus l'accès à Internet que vous lui avez donné" in out.summary
    expired = _allowance(mud, LifecycleState.OUT_OF_SUPPORT, grants=(
        Grant(kind=GrantKind.INTERNET, expires=NOW - timedelta(hours=1)),))
    assert "internet" not in _groups(expired)


def test_blocks_the_owner_added_are_listed(corpus: Path) -> None:
    allowance = _allowance(_mud(corpus, "lifxbulbMud.json"), LifecycleState.PROFILED,
                           grants=(Grant(kind=GrantKind.DENY, host="v2.broker.lifx.co"),))
    assert _groups(allowance)["blocked"] == ("never: v2.broker.lifx.co",)


def test_risks_in_french(corpus: Path) -> None:
    allowance = _allowance(_mud(corpus, "tplinkcameraMud.json"), LifecycleState.PROFILED,
                           "fr")
    assert "Il peut recevoir des connexions de n'importe qui sur Internet." in \
        allowance.risks
    assert "le cloud de son fabricant (tplinkcloud.com\u202f: 5 serveurs)" in \
        _groups(allowance)["maker"]


def test_new_french_strings_use_a_narrow_no_break_space_before_high_punctuation() -> None:
    fr = catalogue("fr")
    prefixes = ("allow.", "alert.", "risk.", "svc.")
    checked = [key for key in fr if key.startswith(prefixes) or key in (
        "error.not_dismissable", "error.bad_alert")]
    assert len(checked) > 80 and set(checked) <= set(catalogue("en"))
    assert sum("\u202f" in fr[key] for key in checked) >= 15
    for key in checked:
        assert not re.search(r"(?<!\u202f)[:;?!](\s|$)", fr[key]), (key, fr[key])


def _main_allowance(html: str) -> str:
    import html as entities

    from tests.unit.test_portal_support import text_of

    start = html.index('data-testid="allowance-main">') + len('data-testid="allowance-main">')
    return entities.unescape(text_of(html[start:html.index(
        'data-testid="allowance-technical"', start)]))


def test_the_device_page_follows_the_state_and_the_grants(tmp_path: Path) -> None:
    from tests.unit.test_portal_api import _api_login
    from tests.unit.test_portal_pages import _serve_bulb
    from tests.unit.test_portal_support import page_csrf, portal

    mac = "00:11:22:33:44:55"
    with portal(tmp_path) as (client, st, _):
        st.services.onboard(url=_serve_bulb(st), mac=mac)
        profiled = _main_allowance(client.get(f"/devices/{mac}").text)
        assert "api.example.com" in profiled or "example.com" in profiled
        token = page_csrf(client)
        client.post(f"/devices/{mac}/grants", data={"csrf": token, "kind": "internet",
                                                    "expires": "1d"})
        granted = _main_allowance(client.get(f"/devices/{mac}").text)
        assert "anything on the Internet, as you allowed" in granted
        headers = _api_login(client)
        api = client.get(f"/api/devices/{mac}", headers=headers).json()
        assert "allowed" in api  # the old field stays
        assert [g["key"] for g in api["allowance"]["groups"]][-1] == "internet"
        st.services.devices.quarantine(mac, "scan")
        for lang in ("en", "fr"):
            page = client.get(f"/devices/{mac}?lang={lang}").text
            quarantined = _main_allowance(page)
            # The quarantine keeps only the maker's own servers (its MUD file is at
            # mud.example.com: api.example.com is the maker's): no Internet grant.
            assert "Internet," not in quarantined and "Internet (" not in quarantined
            assert "example.com" in quarantined
            assert not JARGON.search(quarantined.replace("details", "")), quarantined
            assert 'data-testid="allowance-technical"' in page
        assert _main_allowance(client.get(f"/devices/{mac}?lang=en").text).startswith(
            "Quarantined: only the gateway's basics and its maker's own servers (for a fix).")


def test_the_onboarding_preview_says_it_in_words_too(tmp_path: Path) -> None:
    from tests.unit.test_portal_pages import _serve_bulb
    from tests.unit.test_portal_support import page_csrf, portal

    with portal(tmp_path) as (client, st, _):
        url = _serve_bulb(st)
        token = page_csrf(client, "/onboard")
        for lang, words in (("en", "its maker's cloud (example.com: 1 server)"),
                            ("fr", "le cloud de son fabricant (example.com\u202f: 1 serveur)")):
            preview = client.post(f"/onboard/check?lang={lang}", data={
                "csrf": token, "mud_url": url, "mac": ""})
            assert preview.status_code == 200
            main = _main_allowance(preview.text)  # (whitespace collapsed: U+202F too)
            assert words.replace("\u202f", " ") in main and not JARGON.search(main)
            assert lang == "en" or "example.com\u202f: 1 serveur" in preview.text
            assert "details" in preview.text and "api.example.com" in preview.text


def test_names_are_listed_under_their_domain_and_answers_are_not_inbound(corpus: Path) -> None:
    groups = _groups(_allowance(_mud(corpus, "chromecastUltraMud.json"),
                                LifecycleState.PROFILED))
    assert "googleapis.com: 4 servers" in groups["online"]  # not four lines of one each
    assert groups["inbound"] == ("other devices at home (Google Cast app)",)  # not 8.8.8.8


def test_a_controller_class_is_listed_only_when_the_owner_mapped_it(corpus: Path) -> None:
    """The bulb's draft-era ``urn:ietf:params:mud:gateway`` rules grant nothing until the
    owner maps that class (``[mud] controllers``); mapped, they are what it may do."""
    mud = _mud(corpus, "lifxbulbMud.json")
    policy = decide(DeviceFacts(mac="00:11:22:33:44:55", mud_url=mud.mud_url,
                                state=LifecycleState.PROFILED),
                    mud, (), HomeContext(lan_prefixes=(), gateway_addresses=()), now=NOW)
    t = functools.partial(translate, "en")
    unmapped = _groups(describe_allowance(policy, t))["home"]
    mapped = _groups(describe_allowance(policy, t, {"urn:ietf:params:mud:gateway"}))["home"]
    assert not any(line.startswith("a controller app at home") for line in unmapped)
    assert any(line.startswith("a controller app at home: DHCP") for line in mapped)


def test_my_controller_rules_are_listed_only_when_the_home_assigns_controllers(
        corpus: Path) -> None:
    """RFC 8520 §8 "my-controller" means the controllers the home assigned to this MUD
    URL; the daemon assigns none, so the rule grants nothing and is not listed."""
    mud = parse_mud((corpus / "mud/rfc/mudmaker-my-controller.json").read_bytes()).mud
    assert mud is not None
    policy = decide(DeviceFacts(mac="00:11:22:33:44:55", mud_url=mud.mud_url,
                                state=LifecycleState.PROFILED),
                    mud, (), HomeContext(lan_prefixes=(), gateway_addresses=()), now=NOW)
    assert any(r.peer is PeerKind.MY_CONTROLLER for r in policy.rules)
    t = functools.partial(translate, "en")
    plain = describe_allowance(policy, t)
    assigned = describe_allowance(policy, t, my_controllers=True)
    lines = [line for g in plain.groups for line in g.items]
    assert len(lines) < len([line for g in assigned.groups for line in g.items]), lines
