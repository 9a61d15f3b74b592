"""Languages: both catalogues and both guidance files are complete; Accept-Language."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mudguard.guidance import ASPECTS, LANGUAGES, MOMENTS, load_guidance
from mudguard.portal._i18n import catalogue, from_accept_language, pick_language, translate

PORTAL = Path(__file__).resolve().parents[2] / "src/mudguard/portal"


def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    en, fr = catalogue("en"), catalogue("fr")
    assert set(en) == set(fr)
    for key in en:
        assert re.findall(r"{(\w+)}", en[key]) == re.findall(r"{(\w+)}", fr[key]), key
        assert en[key].strip() and fr[key].strip(), key


def test_every_key_a_template_uses_exists() -> None:
    used: set[str] = set()
    for template in (PORTAL / "templates").glob("*.html"):
        used |= set(re.findall(r'(?<![\w.])t\("([a-z_.\-]+)"', template.read_text()))
    static = {k for k in used if not k.endswith(".")}
    assert static <= set(catalogue("en")), static - set(catalogue("en"))


def test_every_error_key_the_code_raises_is_translated() -> None:
    keys: set[str] = set()
    for source in PORTAL.glob("*.py"):
        keys |= set(re.findall(r'PortalHTTPError\("(\w+)"', source.read_text()))
        keys |= set(re.findall(r'PortalError\("(\w+)"', source.read_text()))
    keys |= set(re.findall(r'QrError\("(\w+)"',
                           (PORTAL.parent / "discovery/qr.py").read_text()))
    keys |= set(re.findall(r'QrError\("(\w+)"', (PORTAL.parent / "labels/_image.py").read_text()))
    keys -= {"qr_too_long", "qr_not_text", "qr_control_chars", "qr_bad_element",
             "qr_duplicate", "qr_bad_text"}  # shown through the generic qr_invalid text
    # Keys the shared services raise (devices, store, fetch, signatures) reach pages too.
    from mudguard.devices import MacError
    from mudguard.devices.lifecycle import LifecycleError, MudUrlError
    from mudguard.devices.service import DeviceNotFound, GrantError
    from mudguard.mud.signature import SignatureError
    from mudguard.store import StoreError

    keys |= {e.key for e in (MacError, LifecycleError, MudUrlError, DeviceNotFound,
                             GrantError, SignatureError, StoreError)}
    assert "need_mac" in keys and "bad_transition" in keys
    missing = {k for k in keys if f"error.{k}" not in catalogue("en")}
    assert not missing


def test_unknown_key_shows_itself_and_bad_placeholders_do_not_crash() -> None:
    assert translate("fr", "no.such.key") == "no.such.key"
    assert translate("en", "error.rate_limited") == "Too many attempts. Try again in {seconds} " \
        "seconds."
    assert translate("fr", "error.rate_limited", seconds=3).endswith("3 secondes.")


@pytest.mark.parametrize(("header", "expected"), [
    ("fr-CA,fr;q=0.9,en;q=0.8", "fr"),
    ("en-US,en;q=0.9,fr;q=0.8", "en"),
    ("de-DE,de;q=0.9", "en"),
    ("de;q=1, fr;q=0.5", "fr"),
    ("fr;q=0, en;q=0.1", "en"),
    ("fr;q=abc", "en"),
    ("", "en"),
    ("," * 10_000, "en"),
])
def test_accept_language(header: str, expected: str) -> None:
    assert from_accept_language(header) == expected


def test_query_then_cookie_then_header() -> None:
    assert pick_language("fr", "en", "en") == "fr"
    assert pick_language(None, "fr", "en") == "fr"
    assert pick_language("xx", None, "fr") == "fr"


@pytest.mark.parametrize("language", LANGUAGES)
def test_guidance_matrix_is_complete(language: str) -> None:
    guidance = load_guidance(language)
    assert set(guidance.advice) == set(ASPECTS)
    for row in guidance.advice.values():
        assert set(row) == set(MOMENTS) and all(len(text) > 40 for text in row.values())
    topics = {c.topic: c for c in guidance.contacts}
    assert set(topics) == set(ASPECTS)
    # Only the organisations' well-known home pages; no invented deep links.
    assert topics["privacy"].url == "https://www.priv.gc.ca/"
    assert topics["security"].url == "https://www.cyber.gc.ca/"
    assert topics["functionality"].url is None


def test_guidance_files_are_parallel() -> None:
    data = PORTAL.parent / "guidance" / "data"
    en = json.loads((data / "en.json").read_text())
    fr = json.loads((data / "fr.json").read_text())
    assert en.keys() == fr.keys()
    assert [c["url"] for c in en["contacts"]] == [c["url"] for c in fr["contacts"]]
    assert load_guidance("de").language == "en"


def test_every_event_kind_has_a_name_in_both_languages() -> None:
    from mudguard.devices import EventKind

    for kind in EventKind:
        for language in ("en", "fr"):
            assert f"event.{kind.value}" in catalogue(language), (language, kind)


# -- issue #15: French complete, one catalogue per language, French typography ------------

NNBSP = "\u202f"  # narrow no-break space: French puts it before : ; ? ! and inside « »
_KEY_USE = (
    re.compile(r'(?<![\w.])t\(\s*["\']([a-z0-9_.\-]+)["\']'),  # templates and t(...) helpers
    re.compile(r'translate\(\s*\w+,\s*["\']([a-z0-9_.\-]+)["\']'),
)


def _keys_used(text: str) -> set[str]:
    found: set[str] = set()
    for pattern in _KEY_USE:
        found |= set(pattern.findall(text))
    return {k for k in found if not k.endswith(".") and k != "key"}  # "event." ~ kind: built


def test_every_key_passed_to_the_translator_exists_in_both_languages() -> None:
    used: set[str] = set()
    for path in [*(PORTAL / "templates").glob("*.html"), *PORTAL.glob("*.py")]:
        used |= _keys_used(path.read_text(encoding="utf-8"))
    assert len(used) > 150  # the scan sees the templates and the Python helpers
    for language in ("en", "fr"):
        missing = used - set(catalogue(language))
        assert not missing, (language, sorted(missing))


def test_every_key_in_the_catalogue_is_used() -> None:
    """No leftovers: each key is named somewhere in the code (templates, Python), or
    belongs to a family whose name is built at run time (``"event." ~ kind``,
    ``f"state.{value}"``, ``"svc." + name``)."""
    sources = [p for p in (PORTAL.parent).rglob("*")
               if p.suffix in (".py", ".html", ".js") and "i18n" not in p.parts]
    text = "\n".join(p.read_text(encoding="utf-8") for p in sources)
    named = set(re.findall(r'["\']([a-z0-9_.\-]+)["\']', text))
    families = set(re.findall(r'["\']([a-z0-9_.\-]+\.)["\']\s*[~+]', text))
    families |= set(re.findall(r'f["\']([a-z0-9_.\-]+\.)\{', text))
    assert "event." in families and len(named) > 500  # the scan sees the code
    unused = [k for k in catalogue("en")
              if k not in named and not any(k.startswith(f) for f in families)]
    assert not unused, unused


def _prose(value: str) -> str:
    """The text of a message without its placeholders and URLs."""
    return re.sub(r"https?://\S+|\{\w+\}", "X", value)


def test_french_puts_a_narrow_no_break_space_before_high_punctuation() -> None:
    wrong = {}
    for key, value in catalogue("fr").items():
        for match in re.finditer(r"(.?)([:;?!])", _prose(value)):
            if match.group(1) != NNBSP:
                wrong[key] = value
        if re.search(r"«(?!\u202f)|(?<!\u202f)»", value):
            wrong[key] = value
    assert not wrong, wrong
    for key, value in catalogue("en").items():  # and English has none of that
        assert NNBSP not in value, key


def test_templates_leave_punctuation_to_the_catalogue() -> None:
    """A colon or question mark written after a translated string in a template would be
    English typography in French: it belongs in the message (``common.colon``)."""
    for template in (PORTAL / "templates").glob("*.html"):
        for line in template.read_text(encoding="utf-8").splitlines():
            assert not re.search(r"(\}\}|%\})\s?[;?!]|(\}\}|%\}) ?:(?!\{\{)", line), \
                (template.name, line.strip()[:120])


def test_reasons_history_and_reset_steps_are_french() -> None:
    """The sentences the device service writes reach the owner in French."""
    from datetime import UTC, datetime

    from mudguard.devices import Device, Settings
    from mudguard.devices import lifecycle as life
    from mudguard.devices.service import NO_MUD_URL, _reset_steps
    from mudguard.portal._reasons import reason_text, reset_step_text

    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    device = Device(mac="02:00:00:00:00:01", state=life.State.NEW)
    lan = Settings(home_default=life.HomeDefault.LAN)
    outcomes = [
        life.on_no_mud(device, why="the MUD file at https://x.example/m.json could not be "
                       "fetched: cannot resolve x.example", settings=Settings(), now=now),
        life.on_no_mud(device, why="Acme repository knows the device but has no MUD file",
                       settings=lan, now=now),
        life.start_learning(device, why="the owner asked to learn it", until=now,
                            settings=Settings(), now=now),
        life.trust(device, now=now),
    ]
    reasons = [r for o in outcomes for r in o.device.reasons]
    reasons += ["its end of support was 2026-01-01: restricted to the home LAN",
                "its maker no longer supports it (is-supported: false): restricted to the "
                "home LAN", "new device: deciding its access", "released from quarantine",
                "learning ended with no traffic to learn from",
                "MUD profile from https://x.example/m.json enforced"]
    reasons += [NO_MUD_URL, f"{NO_MUD_URL} (2 repositories failed: a; b)",
                f"{NO_MUD_URL}; no MUD profile"]
    watcher = _watcher_reasons()
    reasons += watcher
    fr = functools.partial(translate, "fr")
    for reason in reasons:
        text = reason_text(reason, fr)
        assert text != reason and "the " not in text and "applies" not in text, (reason, text)
        assert not re.search(r"\b(tcp|udp) \S+ port \d", text), (reason, text)  # in words
    assert "(Telnet vers 192.0.2.10, Telnet vers 192.0.2.11, Telnet vers 192.0.2.12, …)" \
        in reason_text(watcher[0], fr)
    assert "(e.g. HTTPS to 203.0.113.9)" in reason_text(watcher[-1], functools.partial(
        translate, "en"))
    assert reason_text("scanned 9 addresses in 10 s (tcp 192.0.2.7 port 23, "
                       "a thing of another shape)", fr).endswith(
        "(tcp 192.0.2.7 port 23, a thing of another shape)")  # shown as written
    assert "cannot resolve x.example" in reason_text(reasons[0], fr)  # the data stays
    assert reason_text("a watcher's own words", fr) == "a watcher's own words"
    for transfer in (False, True):
        for step in _reset_steps(device, transfer):
            assert reset_step_text(step, fr) != step



def test_the_reasons_a_new_mud_url_is_held_are_french() -> None:
    """Every reason ``lifecycle`` and the service give for holding (or accepting) a new
    MUD URL reaches the owner in French, the data kept."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from mudguard.devices import Device
    from mudguard.devices import SignatureStatus as Sig
    from mudguard.devices import lifecycle as life
    from mudguard.portal._reasons import reason_text

    base = "https://mud.maker.example/lamp/"
    pinned = Device(mac="02:00:00:00:00:01", mud_url=base + "v1.json",
                    pinned_signer="CN=s (CA key 01)", root_mud_url=base + "v1.json",
                    past_root_urls=(base + "v0.json",), pending_mud_url=base + "v2.json")
    made = [life.url_update_problem(pinned, "https://mud.maker.example/other.json"),
            life.url_update_problem(pinned, base + "v0.json"),
            life.url_update_problem(replace(pinned, pinned_signer=None), base + "v2.json"),
            life.url_update_problem(replace(pinned, state=life.State.QUARANTINED),
                                    base + "v2.json"),
            life.signer_problem(pinned, Sig.UNSIGNED, None),
            life.signer_problem(pinned, Sig.INVALID, "bad digest"),
            life.signer_problem(pinned, Sig.SIGNED_VALID, "CN=s (CA key 02)"),
            str(life.accept_url(pinned, datetime.now(UTC)).notices[0].details["reason"]),
            f"the new MUD file at {base}v2.json could not be fetched: timed out",
            f"the new MUD file at {base}v2.json is invalid: no ietf-mud:mud",
            "the new MUD file's signature is refused: invalid"]
    fr = functools.partial(translate, "fr")
    for reason in made:
        assert reason is not None
        text = reason_text(reason, fr)
        assert text != reason and "the new" not in text, (reason, text)
    assert "CN=s (CA key 02)" in reason_text(made[6], fr)  # the data stays


def test_the_watchers_reasons_are_stored_as_keys_and_read_in_either_language() -> None:
    """The tracker gives each alert's reason as a key with fields too: read through the
    key, it says in each language what the English sentence says through the patterns;
    the key wins over the sentence (a reworded sentence no pattern knows still reads in
    French); a malformed key falls back to the sentence."""
    from mudguard.portal._reasons import event_reason_text, reason_text

    alerts = _watcher_alerts()
    for language in ("en", "fr"):
        t = functools.partial(translate, language)
        for alert in alerts:
            details = {"reason": alert.reason, "reason_key": alert.reason_key,
                       "reason_fields": json.loads(json.dumps(alert.reason_fields))}
            assert event_reason_text(details, t) == reason_text(alert.reason, t), alert
    fr = functools.partial(translate, "fr")
    keyed = {"reason": "reworded: 8 probes", "reason_key": alerts[0].reason_key,
             "reason_fields": dict(alerts[0].reason_fields)}
    assert event_reason_text(keyed, fr).startswith("a balayé le réseau de la maison")
    for broken in ({**keyed, "reason_key": "watch.nope"},
                   {**keyed, "reason_fields": {"count": "8", "seconds": "10", "examples": []}},
                   {**keyed, "reason_fields": {**alerts[0].reason_fields,
                                               "examples": [{"remote": 7}]}}):
        assert event_reason_text(broken, fr) == "reworded: 8 probes"


def _watcher_reasons() -> list[str]:
    return [alert.reason for alert in _watcher_alerts()]


def _watcher_alerts() -> list[Any]:
    """Every reason the real deviation tracker gives: a LAN scan, an Internet scan, a port
    probe, a flood of drops, a quick run of blocked flows, a slow one (deviation), and a
    connection flood."""
    from mudguard.mud import Direction
    from mudguard.watch.nflog import FlowEvent
    from mudguard.watch.tracker import DeviationTracker, Thresholds

    def blocked(dst: str, port: int) -> FlowEvent:
        return FlowEvent(device_id="dev", direction=Direction.FROM_DEVICE, family=4,
                         src="192.0.2.2", dst=dst, protocol=6, src_port=40000, dst_port=port)

    made: list[Any] = []
    patient = Thresholds(deviation_flows=100)  # scans before the run of blocked flows
    for thresholds, target, step in (
            (Thresholds(), lambda i: (f"192.0.2.{10 + i}", 23), 0.01),  # LAN scan
            (patient, lambda i: (f"203.0.113.{10 + i}", 23), 0.01),  # Internet scan
            (patient, lambda i: ("203.0.113.9", 1000 + i), 0.01),  # port probe
            (Thresholds(), lambda i: ("203.0.113.9", 443), 0.1),  # 45 drops in 10 s
            (Thresholds(), lambda i: (f"203.0.113.{i % 2}", 1000 + i), 0.1),  # 8 in 10 s
            (Thresholds(), lambda i: ("203.0.113.9", 2000 + i), 30.0)):  # 8 in minutes
        tracker = DeviationTracker(thresholds, lan_prefixes=("192.0.2.0/24",))
        for i in range(200):
            alerts = tracker.observe(blocked(*target(i)), now=i * step)
            if alerts:
                made.append(alerts[0])
                break
    flood = DeviationTracker(Thresholds())
    for i in range(5000):
        alerts = flood.observe_connection("dev", now=i / 5000, sample=blocked("203.0.113.9", 443))
        if alerts:
            made.append(alerts[0])
            break
    assert len(made) == 7, made
    kinds = ("scanned the home network", "scanned 32", "probed", "blocked packets",
             "tried 8", "its profile does not allow", "opened")
    assert [k in m.reason for k, m in zip(kinds, made, strict=True)] == [True] * 7, made
    return made
