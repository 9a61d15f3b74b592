"""The gateway's reasons and reset steps in the owner's language.

The device service stores a device's reasons (why it is in its state) and the
events' ``reason`` as English sentences, some with data inside (a URL, a date, the
error of a fetch); the CLI and the API show them as they are. The pages put each
known sentence through a table of anchored patterns to a catalogue key, with the
data as its fields; a reason made of two (``"{why}; no MUD profile"``) is translated
part by part. A sentence no pattern knows (a watcher's quarantine detail) is shown
as it is: never blank, never guessed. The watcher's examples (``tcp 192.0.2.7 port
23, udp pool.ntp.org port 123, …``) are put in words too: each a destination and its
service ("Telnet to 192.0.2.7"); an example of another shape stays as written.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from datetime import datetime, tzinfo

from mudguard.devices.reasons import MAX_DEPTH, reason_json
from mudguard.portal._i18n import catalogue
from mudguard.portal._incidents import service_of, service_text

Translate = Callable[..., str]

# (pattern, key); the named groups are the message's fields. Order: specific first.
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern + r"\Z", re.DOTALL), key) for pattern, key in (
        (r"new device: deciding its access", "reason.new"),
        (r"the device announced no MUD URL and no repository knows it \((?P<count>\d+) "
         r"repositories failed: (?P<detail>.*)\)", "reason.no_mud_url.failed"),
        (r"the device announced no MUD URL and no repository knows it", "reason.no_mud_url"),
        (r"MUD profile from (?P<url>\S+) enforced", "reason.profiled"),
        (r"profile learned from its traffic, approved by the owner \((?P<url>\S+)\)",
         "reason.learned_approved"),
        (r"its maker no longer supports it \(is-supported: false\): restricted to the home "
         r"LAN", "reason.unsupported"),
        (r"its end of support was (?P<date>[\d-]+): restricted to the home LAN",
         "reason.end_of_support"),
        (r"the home's default applies: home LAN only, no Internet", "reason.default.lan"),
        (r"the home's default applies: Internet only, no other devices on the LAN",
         "reason.default.internet"),
        (r"home's default applies: home LAN only, no Internet", "reason.default.lan"),
        (r"home's default applies: Internet only, no other devices on the LAN",
         "reason.default.internet"),
        (r"the MUD file's signature is invalid", "reason.signature_invalid"),
        (r"the MUD file is unsigned and this home requires signatures", "reason.unsigned"),
        (r"learning what it does until (?P<when>[\d-]+ [\d:]+ UTC); (?P<rest>.+)",
         "reason.learning"),
        (r"learning ended: a profile learned from its traffic awaits the owner \(lock it "
         r"with: device learn --lock; or --keep-default\)", "reason.proposed"),
        (r"learning ended with no traffic to learn from", "reason.learned_nothing"),
        (r"the owner kept the home default", "reason.kept_default"),
        (r"the owner asked to learn it(?: again)?", "reason.owner_learns"),
        (r"its learned profile is no longer in the cache", "reason.learned_lost"),
        (r"released from quarantine", "reason.released"),
        (r"trusted by the owner", "reason.trusted"),
        (r"no longer trusted", "reason.untrusted"),
        (r"forgotten by the owner", "reason.forgotten"),
        (r"the MUD file at (?P<url>\S+) could not be fetched: (?P<detail>.+)",
         "reason.fetch_failed"),
        (r"the MUD file at (?P<url>\S+) is invalid: (?P<detail>.+)", "reason.mud_invalid"),
        (r"(?P<url>\S+) names another device's learned profile", "reason.learned_by_other"),
        (r"the repository's MUD file for it is invalid \((?P<repository>.+)\)",
         "reason.repository_invalid"),
        (r"the repository's MUD file for it names another device's learned profile "
         r"\((?P<repository>.+)\)", "reason.repository_learned_by_other"),
        (r"(?P<repository>.+) knows the device but has no MUD file",
         "reason.repository_no_mud"),
        # a new MUD URL held for the owner (``lifecycle.url_update_problem``, ...)
        (r"it is quarantined: only the owner may change its MUD URL",
         "reason.url.quarantined"),
        (r"no signed MUD file has been accepted for this device yet, so there is no "
         r"signer to trust on first use",
         "reason.url.no_pin"),
        (r"(?P<url>\S+) is not under (?P<base>\S+), the base of its accepted MUD URL",
         "reason.url.other_base"),
        (r"(?P<url>\S+) was accepted before and replaced since: a possible rollback",
         "reason.url.rollback"),
        (r"the new MUD file is unsigned",
         "reason.url.unsigned"),
        (r"the new MUD file's signature is (?:not valid|refused): (?P<detail>.+)",
         "reason.url.bad_signature"),
        (r"the new MUD file is signed by (?P<signer>.+), not by (?P<pinned>.+)",
         "reason.url.other_signer"),
        (r"same base \((?P<base>\S+)\) and same signer \((?P<signer>.+)\) as its accepted "
         r"signed MUD file \(draft-ietf-iotops-mud-acceptable-urls\)",
         "reason.url.acceptable"),
        (r"the new MUD file(?: at \S+)? could not be fetched: (?P<detail>.+)",
         "reason.url.fetch_failed"),
        (r"the new MUD file(?: at \S+)? is invalid: (?P<detail>.+)",
         "reason.url.invalid"),
        # a MUD URL the device announced that RFC 8520 does not allow (``check_mud_url``)
        (r"a MUD URL must be text", "reason.url_rejected.text"),
        (r"MUD URL is (?P<length>\d+) characters; the limit is (?P<limit>\d+)",
         "reason.url_rejected.long"),
        (r"MUD URL contains spaces or control characters", "reason.url_rejected.spaces"),
        (r"MUD URL is malformed: (?P<detail>.+)", "reason.url_rejected.malformed"),
        (r"MUD URL must use https \(RFC 8520 §1\.6\), not (?P<scheme>.+)",
         "reason.url_rejected.not_https"),
        (r"MUD URL names no host", "reason.url_rejected.no_host"),
        (r"MUD URL must not carry credentials", "reason.url_rejected.credentials"),
        (r"(?P<why>.+); no MUD profile", "reason.no_profile"),
        # the watcher's alerts (``watch.tracker``): the examples stay as they are
        (r"scanned the home network: (?P<count>\d+) addresses in (?P<seconds>[\d.]+) s "
         r"\((?P<sample>.*)\)", "reason.watch.lan_scan"),
        (r"scanned (?P<count>\d+) addresses in (?P<seconds>[\d.]+) s \((?P<sample>.*)\)",
         "reason.watch.scan"),
        (r"probed (?P<count>\d+) ports of one address in (?P<seconds>[\d.]+) s "
         r"\((?P<sample>.*)\)", "reason.watch.ports"),
        (r"(?P<count>\d+) blocked packets in (?P<seconds>[\d.]+) s, the most the gateway "
         r"logs \((?P<sample>.*)\)", "reason.watch.flood"),
        (r"tried (?P<count>\d+) different blocked connections in (?P<seconds>[\d.]+) s "
         r"\((?P<sample>.*)\)", "reason.watch.tried"),
        (r"(?P<count>\d+) different connections its profile does not allow within "
         r"(?P<seconds>[\d.]+) s \((?P<sample>.*)\)", "reason.watch.deviation"),
        (r"opened (?P<count>\d+) connections in (?P<seconds>[\d.]+) s \(e\.g\. "
         r"(?P<sample>.*)\)", "reason.watch.connections"),
        (r"opened (?P<count>\d+) connections in (?P<seconds>[\d.]+) s",
         "reason.watch.connections.plain"),
        (r"(?P<count>\d+) TLS ClientHellos that do not fit its MUD profile within "
         r"(?P<seconds>[\d.]+) s \((?P<sample>.*)\)", "reason.watch.tls"),
    ))

# Fields that are themselves reasons (translated in turn).
_NESTED = frozenset({"rest", "why"})
_EXAMPLE = re.compile(r"(?P<protocol>tcp|udp|icmp|icmpv6|proto \d+) (?P<where>\S+)"
                      r"(?: (?P<what>port|type) (?P<number>\d+))?\Z")
_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}

RESET_STEPS: tuple[tuple[str, str], ...] = (
    ("Its network access and its own WiFi key have been removed", "reset.removed"),
    ("Factory-reset the device", "reset.factory"),
    ("Remove it from the maker's app or cloud account", "reset.account"),
    ("Give the new owner the device only after the reset", "reset.transfer"),
)


def reason_text(reason: str, t: Translate, depth: int = 0) -> str:
    """``reason`` in the language of ``t`` when it is one the gateway writes; else as is."""
    for pattern, key in _REASONS:
        match = pattern.match(reason)
        if match is None:
            continue
        fields = {name: reason_text(value, t, depth + 1)
                  if name in _NESTED and depth < 3 else value
                  for name, value in match.groupdict().items()}
        if "sample" in fields:
            fields["sample"] = examples_text(fields["sample"], t)
        return t(key, **fields)
    return reason


DNS_ELSEWHERE_KEYS = frozenset({"dns_elsewhere.do53", "dns_elsewhere.dot",
                                "dns_elsewhere.doq", "dns_elsewhere.doh"})
TLS_DEVIATION_KINDS = frozenset({"version", "dtls", "tls", "not-tls", "cipher", "extension",
                                 "group", "sigalg", "sigalg-cert", "alpn", "psk-mode",
                                 "cert-compression"})


def event_text(kind: str, details: dict[str, object], t: Translate) -> str:
    """The detail of a history line in the language of ``t``: a ``dns-elsewhere`` event
    from its catalogue key and server (RFC 9726), a ``tls-deviation`` from its deviations'
    keys (RFC 9761), any other from its reason (``reason_text``); "" when none."""
    if kind == "dns-elsewhere":
        key, params = details.get("message_key"), details.get("params")
        server = params.get("server") if isinstance(params, dict) else None
        if key in DNS_ELSEWHERE_KEYS and isinstance(server, str):
            outcome = "dns_elsewhere.allowed" if details.get("allowed") else \
                "dns_elsewhere.blocked"
            return f"{t(str(key), server=server)} {t(outcome)}"
    if kind == "tls-deviation":
        parts = []
        listed = details.get("deviations")
        for item in listed if isinstance(listed, list) else ():
            if isinstance(item, dict) and item.get("kind") in TLS_DEVIATION_KINDS:
                parts.append(t(f"report.tls.dev.{item['kind']}",
                               offered=_listed(item.get("offered")),
                               allowed=_listed(item.get("allowed"))))
        if parts:
            return t("common.semicolon").join(parts)
    if kind == "tls-observed":
        return ""
    return event_reason_text(details, t) if details.get("reason") else ""


def _listed(values: object, limit: int = 4) -> str:
    if not isinstance(values, list):
        return ""
    return ", ".join(str(v) for v in values[:limit]) + (" …" if len(values) > limit else "")
def keyed_reason_text(key: object, fields: object, t: Translate,
                      depth: int = 0, zone: tzinfo | None = None) -> str | None:
    """A reason stored as its key and fields at the source in the language of ``t``:
    the watcher's alerts (``reason_key`` ``watch.scan``, ``reason_fields`` count,
    seconds, examples) and the device's own reasons (``devices.reasons``: ``profiled``
    with its ``url``; a field that is itself a reason is worded in turn); None when the
    key is not one the catalogue knows or the fields are malformed (the caller then
    reads the English sentence). With ``zone`` (the owner's), a moment the reason keeps
    as data (``until``: when learning ends) is shown in it."""
    if not isinstance(key, str) or not isinstance(fields, dict) or \
            f"reason.{key}" not in catalogue("en"):
        return None
    if not key.startswith("watch."):
        return _fields_text(key, fields, t, depth, zone)
    count, seconds = fields.get("count"), fields.get("seconds")
    if isinstance(count, bool) or not isinstance(count, int) or \
            not isinstance(seconds, str | int | float) or isinstance(seconds, bool):
        return None
    examples = fields.get("examples")
    if not isinstance(examples, list):
        return None
    words = []
    for example in examples[:10]:
        text = _example_text(example, t)
        if text is None:
            return None
        words.append(text)
    sample = ", ".join(words) + (", …" if fields.get("more") is True else "")
    return t(f"reason.{key}", count=count, seconds=seconds, sample=sample)


def _fields_text(key: str, fields: Mapping[object, object], t: Translate,
                 depth: int, zone: tzinfo | None = None) -> str | None:
    """``reason.<key>`` filled from ``fields``: every placeholder of its English message
    present, each a text, a number or a nested reason ({key, fields}); else None. The
    ``when`` of a reason that keeps its moment (``until``, ISO) is that moment in
    ``zone`` when one is given."""
    english = catalogue("en")[f"reason.{key}"]
    names = {name for _, name, _, _ in string.Formatter().parse(english) if name}
    values: dict[str, object] = {}
    for name in names:
        value = fields.get(name)
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                return None
            value = keyed_reason_text(value.get("key"), value.get("fields"), t, depth + 1,
                                      zone)
        if value is None or isinstance(value, bool) or not isinstance(value, str | int):
            return None
        values[name] = value
    moment = _moment(fields.get("until"))
    if "when" in values and zone is not None and moment is not None:
        values["when"] = moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    return t(f"reason.{key}", **values)


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def device_reason_text(reason: str, t: Translate, zone: tzinfo | None = None) -> str:
    """One of a device's reasons (the "Why" line) in the language of ``t``: from its key
    when the source kept one (a ``devices.reasons.Reason``; its moments in ``zone``),
    else through the patterns."""
    stored = reason_json(reason)
    keyed = keyed_reason_text(stored["key"], stored["fields"], t, zone=zone) \
        if stored else None
    return keyed if keyed is not None else reason_text(str(reason), t)


def event_reason_text(details: Mapping[str, object], t: Translate) -> str:
    """An event's reason in the language of ``t``: from its key when the source stored
    one, else its English sentence through the patterns."""
    keyed = keyed_reason_text(details.get("reason_key"), details.get("reason_fields"), t)
    return keyed if keyed is not None else reason_text(str(details.get("reason") or ""), t)


def _example_text(example: object, t: Translate) -> str | None:
    if not isinstance(example, dict):
        return None
    protocol, remote = example.get("protocol"), example.get("remote")
    port, icmp_type = example.get("port"), example.get("icmp_type")
    if not isinstance(remote, str) or not remote or any(
            v is not None and (isinstance(v, bool) or not isinstance(v, int))
            for v in (protocol, port, icmp_type)):
        return None
    service = service_of(protocol, port, icmp_type)
    what = service_text(service, t) if service is not None else t("svc.other")
    return t("reason.example", service=what, where=remote[:255])


def examples_text(sample: str, t: Translate) -> str:
    """The watcher's examples (``tcp 192.0.2.7 port 23, …``) in words: "Telnet to
    192.0.2.7, …"; the text as it is when an example has another shape."""
    more = sample.endswith(", …")
    parts = sample.removesuffix(", …").split(", ")
    words = []
    for part in parts:
        found = _EXAMPLE.match(part)
        if found is None:
            return sample
        protocol_name = found["protocol"]
        protocol = (_PROTOCOLS.get(protocol_name) if not protocol_name.startswith("proto")
                    else int(protocol_name.split()[1]))
        number = int(found["number"]) if found["number"] else None
        service = service_of(protocol, number if found["what"] == "port" else None,
                             number if found["what"] == "type" else None)
        what = service_text(service, t) if service is not None else protocol_name
        words.append(t("reason.example", service=what, where=found["where"]))
    return ", ".join(words) + (", …" if more else "")


def reset_step_text(step: str, t: Translate) -> str:
    """A reset step (``DeviceService.forget``) in the language of ``t``."""
    for start, key in RESET_STEPS:
        if step.startswith(start):
            return t(key)
    return step
