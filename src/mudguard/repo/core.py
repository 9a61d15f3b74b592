"""A secondary MUD repository as data: scrubbing profiles, building and checking the index.

Theory of operation: ``mudguard repo build`` turns approved profiles (MUD files an
ISP or a community vouches for, or profiles homes learned and chose to share) into
a static repository that any HTTPS server or CDN can publish::

    index.json            {"format": "mudguard-repository", "version": 1, "entries": [...]}
    mud/<name>.json       the MUD file, its mud-url and mud-signature pointing here
    mud/<name>.p7s        its detached CMS signature (RFC 8520 §13.2)

Each entry carries what ``mudguard.devices.repository`` reads (``manufacturer``,
``model``, ``oui``, ``mud_url``, ``mud_file``, ``supported``) plus, compatibly
(older readers ignore unknown keys), ``signature_file``, ``sha256`` and
``identify``: the identification features (``mudguard.identify`` field names)
that tell the device kind apart, never a home's own values.

Nothing personal leaves a home: a profile naming a home address (private, link-local,
CGNAT, ULA, or a prefix the builder names), a home DNS name (``.local``, ``.lan``,
``.home.arpa``…) or a MAC address is refused with the place it was found; with
``generalise`` such a peer becomes the RFC 8520 abstraction ``local-networks``
instead. ACL and ACE names (the learner puts the device's MAC in them) are always
renamed, ``systeminfo`` is cut to 60 characters, the index holds OUIs (three octets)
only. Everything here is pure; ``mudguard.repo.files`` reads, signs and writes.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

from mudguard.devices.repository import RepositoryError, parse_index
from mudguard.errors import RemoteInputError
from mudguard.mud import parse_mud

INDEX_FORMAT: Final = "mudguard-repository"
INDEX_VERSION: Final = 1
EXPORT_FORMAT: Final = "mudguard-profile-export"
SYSTEMINFO_CHARS: Final = 60
MAX_FEATURE_VALUES: Final = 8
MAX_FEATURE_CHARS: Final = 64
IDENTIFY_FIELDS: Final = frozenset({
    "vendor_class", "prl", "mdns_service", "mdns_query", "ssdp_server", "ssdp_type",
    "user_agent", "hostname_pattern"})
"""Identification features an index may carry (``mudguard.identify`` field names).
A hostname only as a pattern (``Plug-*``): a device's own hostname can be personal."""

HOME_NETWORKS: Final = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "::/128", "::1/128", "fc00::/7", "fe80::/10"))
"""Addresses that can only be a home's own (RFC 1918, 6598, 3927, 4193, 4291)."""

HOME_NAME_SUFFIXES: Final = (".local", ".lan", ".home", ".home.arpa", ".internal",
                             ".localdomain", ".fritz.box", ".station")
_MAC = re.compile(r"(?i)(?<![0-9a-f])[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}"
                  r"(?![0-9a-f])|(?<![0-9a-f])[0-9a-f]{12}(?![0-9a-f])|"
                  r"(?<![0-9a-f])[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}(?![0-9a-f])")
_IPV4_TEXT = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_NAME_KEYS: Final = ("ietf-acldns:dst-dnsname", "ietf-acldns:src-dnsname")
_NET_KEYS: Final = ("destination-ipv4-network", "source-ipv4-network",
                    "destination-ipv6-network", "source-ipv6-network")
_MUD = "ietf-mud:mud"
_ACLS = "ietf-access-control-list:acls"


class PersonalDataError(RemoteInputError):
    """A profile names something of one home (an address, a name, a MAC)."""

    key = "personal_data"


class SourceError(RemoteInputError):
    """A source the repository cannot take (invalid, no consent, no identity)."""

    key = "bad_repository_source"


@dataclass(frozen=True, slots=True)
class Scrubbed:
    """A profile with nothing personal left, and what was changed to get there."""

    document: dict[str, Any]
    changes: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """One approved profile to publish, as read from a source."""

    origin: str  # where it was read (for messages)
    document: dict[str, Any]
    manufacturer: str | None = None
    model: str | None = None
    oui: str | None = None
    identify: dict[str, tuple[str, ...]] = field(default_factory=dict)
    end_of_support: str | None = None


@dataclass(frozen=True, slots=True)
class Published:
    """One built entry: the MUD file's bytes and its index entry (signature added later)."""

    name: str
    data: bytes
    entry: dict[str, Any]


# -- personal data -------------------------------------------------------------------

def is_home_address(text: str, home: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
                    = ()) -> bool:
    """True if ``text`` (an address or prefix) lies in a home-only range or in ``home``."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    if net.is_multicast or str(net) == "255.255.255.255/32":
        return False  # a group address is nobody's: the learner writes these one-way
    return any(net.version == h.version and net.subnet_of(h)  # type: ignore[arg-type]
               for h in (*HOME_NETWORKS, *home))


def is_home_name(name: str) -> bool:
    """True for a DNS name only one home can resolve (``nas.local``, ``printer``)."""
    folded = name.lower().rstrip(".")
    return "." not in folded or folded.endswith(HOME_NAME_SUFFIXES)


def personal_in_text(text: str, home: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
                     = ()) -> str | None:
    """What personal datum free text holds (a MAC, a home IPv4 address), or None."""
    if _MAC.search(text):
        return "a MAC address"
    for literal in _IPV4_TEXT.findall(text):
        if is_home_address(literal, home):
            return f"the home address {literal}"
    return None


def _strings(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key, f"{path}/{key}#key")
            yield from _strings(item, f"{path}/{key}")
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from _strings(item, f"{path}[{number}]")


def find_personal(document: Any, home: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
                  = ()) -> list[str]:
    """Every place in a JSON value that names a MAC, a home address or a home name."""
    found: list[str] = []
    for path, text in _strings(document, ""):
        what = personal_in_text(text, home)
        if what is None and (path.endswith("-network") and is_home_address(text, home)):
            what = f"the home address {text}"
        if what is None and path.endswith("-dnsname") and is_home_name(text):
            what = f"the home name {text!r}"
        if what is not None:
            found.append(f"{path or '/'}: {what}")
    return found


def scrub_profile(document: Mapping[str, Any], *, generalise: bool = False,
                  home: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
                  ) -> Scrubbed:
    """The profile with nothing personal in it.

    ACL and ACE names are renamed, ``systeminfo`` loses MACs and home addresses and is
    cut to 60 characters. A peer that is a home address or a home DNS name is
    replaced by ``local-networks`` when ``generalise``; otherwise (and always for a
    MAC match, which has no abstraction) ``PersonalDataError`` lists every place.
    """
    doc = copy.deepcopy(dict(document))
    changes: list[str] = []
    refusals: list[str] = []
    mud = doc.get(_MUD)
    acls = (doc.get(_ACLS) or {}).get("acl") if isinstance(doc.get(_ACLS), dict) else None
    if not isinstance(mud, dict) or not isinstance(acls, list):
        raise SourceError("not a MUD file: it needs ietf-mud:mud and ietf-access-control-list:acls")
    renamed = _rename_acls(mud, acls)
    if renamed:
        changes.append(f"renamed {renamed} ACLs and their ACEs (names can carry a MAC)")
    for acl in acls:
        for ace in ((acl.get("aces") or {}).get("ace") or []) if isinstance(acl, dict) else []:
            if isinstance(ace, dict) and isinstance(ace.get("matches"), dict):
                _scrub_matches(f"{acl.get('name')}/{ace.get('name')}", ace["matches"],
                               generalise, home, changes, refusals)
    _scrub_systeminfo(mud, home, changes)
    for key in ("mud-url", "mud-signature"):
        mud.pop(key, None)  # replaced by the repository's own URLs
    remaining = [] if refusals else find_personal(doc, home)
    if refusals or remaining:
        hint = "" if generalise else " (--generalise replaces home peers by local-networks)"
        raise PersonalDataError("the profile names something of one home: "
                                + "; ".join((refusals + remaining)[:10]) + hint)
    return Scrubbed(doc, tuple(changes))


def _rename_acls(mud: dict[str, Any], acls: list[Any]) -> int:
    names: dict[str, str] = {}
    for number, acl in enumerate(acls):
        if not isinstance(acl, dict):
            continue
        kind = str(acl.get("type", "acl")).split("-")[0][:8]
        new = f"acl{number}-{kind}"
        names[str(acl.get("name"))] = new
        acl["name"] = new
        for ace_number, ace in enumerate((acl.get("aces") or {}).get("ace") or []):
            if isinstance(ace, dict):
                ace["name"] = f"{new}-ace{ace_number}"
    for policy in ("from-device-policy", "to-device-policy"):
        listed = ((mud.get(policy) or {}).get("access-lists") or {}).get("access-list") or []
        for ref in listed:
            if isinstance(ref, dict) and str(ref.get("name")) in names:
                ref["name"] = names[str(ref.get("name"))]
    return len(names)


def _scrub_matches(where: str, matches: dict[str, Any], generalise: bool,
                   home: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
                   changes: list[str], refusals: list[str]) -> None:
    if "eth" in matches:
        refusals.append(f"{where}: an Ethernet (MAC) match has no abstraction")
    for family in ("ipv4", "ipv6"):
        ip = matches.get(family)
        if not isinstance(ip, dict):
            continue
        personal = [k for k in _NET_KEYS if isinstance(ip.get(k), str)
                    and is_home_address(ip[k], home)]
        personal += [k for k in _NAME_KEYS if isinstance(ip.get(k), str) and is_home_name(ip[k])]
        for key in personal:
            if not generalise:
                refusals.append(f"{where}: {key} {ip[key]!r} is of this home")
                continue
            changes.append(f"{where}: {key} {ip.pop(key)!r} -> local-networks")
            mud_match = matches.setdefault(_MUD, {})
            if isinstance(mud_match, dict):
                mud_match.clear()  # one abstraction per ACE
                mud_match["local-networks"] = [None]


def _scrub_systeminfo(mud: dict[str, Any], home: Sequence[ipaddress.IPv4Network
                                                          | ipaddress.IPv6Network],
                      changes: list[str]) -> None:
    info = mud.get("systeminfo")
    if not isinstance(info, str):
        return
    clean = _MAC.sub("…", info)
    clean = _IPV4_TEXT.sub(lambda m: "…" if is_home_address(m.group(0), home) else m.group(0),
                           clean)
    clean = clean[:SYSTEMINFO_CHARS]
    if clean != info:
        mud["systeminfo"] = clean
        changes.append("systeminfo shortened to 60 characters without MACs or home addresses")


# -- sources ---------------------------------------------------------------------------

def _text(value: Any, what: str, limit: int = 128) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise SourceError(f"{what} must be text of 1 to {limit} characters")
    return " ".join(value.split())


def check_identify(raw: Any) -> dict[str, tuple[str, ...]]:
    """Identification features as an index may carry them; ``SourceError`` if not."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SourceError("identify must be an object of feature lists")
    out: dict[str, tuple[str, ...]] = {}
    for key, values in sorted(raw.items()):
        if key not in IDENTIFY_FIELDS:
            raise SourceError(f"identify: unknown feature {str(key)[:40]!r} "
                              f"(known: {', '.join(sorted(IDENTIFY_FIELDS))})")
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_FEATURE_VALUES:
            raise SourceError(f"identify.{key} must be a list of 1 to {MAX_FEATURE_VALUES} values")
        clean = []
        for value in values:
            text = _text(value, f"identify.{key}", MAX_FEATURE_CHARS)
            assert text is not None
            if not text.isprintable() or personal_in_text(text) is not None:
                raise SourceError(f"identify.{key}: {text!r} is not a plain, impersonal value")
            if key == "hostname_pattern" and "*" not in text:
                raise SourceError(f"identify.hostname_pattern {text!r} must be a pattern with * "
                                  "(a device's own hostname can be personal)")
            clean.append(text)
        out[key] = tuple(clean)
    return out


def _oui(text: Any) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str) or not re.fullmatch(r"(?i)[0-9a-f]{2}([:-]?)[0-9a-f]{2}"
                                                     r"\1[0-9a-f]{2}", text.strip()):
        raise SourceError("oui must be three octets, e.g. 02:00:5e (never a whole MAC)")
    digits = re.sub(r"[^0-9a-f]", "", text.lower())
    return ":".join(digits[i:i + 2] for i in (0, 2, 4))


def read_source(origin: str, document: Any) -> Profile:
    """A ``Profile`` from one source's JSON: a MUD file, or a home's consented export
    (``mudguard device export-profile``). ``SourceError`` says why one is refused."""
    if not isinstance(document, dict):
        raise SourceError(f"{origin}: not a JSON object")
    if document.get("format") == EXPORT_FORMAT:
        if document.get("consent") is not True:
            raise SourceError(f"{origin}: the owner did not consent to sharing this profile")
        mud = document.get("mud")
        if not isinstance(mud, dict):
            raise SourceError(f"{origin}: the export holds no MUD file")
        return Profile(origin=origin, document=mud,
                       manufacturer=_text(document.get("manufacturer"), "manufacturer"),
                       model=_text(document.get("model"), "model"),
                       oui=_oui(document.get("oui")),
                       identify=check_identify(document.get("identify")))
    if _MUD not in document:
        raise SourceError(f"{origin}: neither a MUD file nor a profile export")
    inner = document[_MUD] if isinstance(document[_MUD], dict) else {}
    return Profile(origin=origin, document=document,
                   manufacturer=_text(inner.get("mfg-name"), "mfg-name"),
                   model=_text(inner.get("model-name"), "model-name"))


# -- building ----------------------------------------------------------------------------

def entry_name(profile: Profile) -> str:
    """A file name for the profile (letters, digits and dashes only)."""
    label = " ".join(p for p in (profile.manufacturer, profile.model) if p) or (
        f"oui {profile.oui}" if profile.oui else "profile")
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60]
    return slug or "profile"


def publish(profile: Profile, *, base_url: str, generalise: bool = False,
            home: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
            taken: Iterable[str] = ()) -> tuple[Published, tuple[str, ...]]:
    """The MUD file as the repository serves it, and its index entry.

    ``base_url`` is where the repository will be published (https, ending in ``/``);
    the file's ``mud-url`` and ``mud-signature`` point there. Raises
    ``PersonalDataError`` or ``SourceError`` (with the source named) if it cannot be
    published.
    """
    if not (profile.manufacturer and profile.model) and profile.oui is None:
        raise SourceError(f"{profile.origin}: a repository entry needs the maker and model "
                          "(mfg-name and model-name) or an OUI")
    try:
        scrubbed = scrub_profile(profile.document, generalise=generalise, home=home)
    except RemoteInputError as exc:
        raise type(exc)(f"{profile.origin}: {exc}") from None
    name = entry_name(profile)
    used = set(taken)
    number = 2
    while name in used:
        name, number = f"{entry_name(profile)}-{number}", number + 1
    mud_url = urljoin(base_url, f"mud/{name}.json")
    mud = scrubbed.document[_MUD]
    mud["mud-url"] = mud_url
    mud["mud-signature"] = urljoin(base_url, f"mud/{name}.p7s")
    data = (json.dumps(scrubbed.document, indent=2, ensure_ascii=False) + "\n").encode()
    result = parse_mud(data, expected_url=mud_url)
    if result.mud is None:
        errors = "; ".join(str(f) for f in result.errors[:5])
        raise SourceError(f"{profile.origin}: not a valid MUD file: {errors}")
    entry: dict[str, Any] = {"manufacturer": profile.manufacturer, "model": profile.model,
                             "oui": profile.oui, "mud_url": mud_url,
                             "mud_file": f"mud/{name}.json",
                             "signature_file": f"mud/{name}.p7s",
                             "sha256": hashlib.sha256(data).hexdigest(),
                             "supported": result.mud.is_supported}
    if profile.identify:
        entry["identify"] = {k: list(v) for k, v in profile.identify.items()}
    if profile.end_of_support:
        entry["end_of_support"] = profile.end_of_support
    entry = {k: v for k, v in entry.items() if v is not None}
    return Published(name, data, entry), scrubbed.changes


def check_base_url(url: str) -> str:
    """``url`` with a trailing ``/`` if it can publish a repository (https, a host)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise SourceError("--base-url must be an https:// URL (RFC 8520 §1.6) without query")
    return url if url.endswith("/") else url + "/"


def index_document(entries: Sequence[Mapping[str, Any]], generated: datetime
                   ) -> dict[str, Any]:
    """The ``index.json`` object; ``SourceError`` if two entries claim the same device."""
    seen: dict[tuple[str, str], int] = {}
    for number, entry in enumerate(entries):
        key = (str(entry.get("manufacturer", "")).lower(), str(entry.get("model", "")).lower()
               if entry.get("model") else f"oui {entry.get('oui')}")
        if key in seen:
            raise SourceError(f"two sources describe the same device {key[0]} {key[1]} "
                              f"(entries {seen[key]} and {number}): keep one")
        seen[key] = number
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION,
            "generated": generated.strftime("%Y-%m-%dT%H:%M:%SZ"), "entries": list(entries)}


# -- checking ------------------------------------------------------------------------------

Reader = Callable[[str], bytes]
"""Read a repository file by its path relative to the repository root."""

VerifySignature = Callable[[bytes, bytes], str | None]
"""Check a detached signature over a file: None if valid, else the reason."""


@dataclass(slots=True)
class CheckReport:
    """What ``check_repository`` found: errors make the repository unusable."""

    entries: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.errors


def check_repository(read: Reader, verify: VerifySignature, *, index_url: str | None = None
                     ) -> CheckReport:
    """Check a built repository through ``read``: the index's schema, each MUD file's
    validity, hash and signature, and that nothing personal is in either.

    ``index_url`` (for a published repository) is where the index was read: each
    entry's ``mud_url`` must then be its ``mud_file`` beside it.
    """
    report = CheckReport()
    try:
        raw = read("index.json")
        entries, findings = parse_index(raw)
        document = json.loads(raw)
    except (RepositoryError, OSError, ValueError) as exc:
        report.errors.append(f"index.json: {exc}")
        return report
    report.errors.extend(f"index.json {f}" for f in findings)
    if document.get("format") != INDEX_FORMAT:
        report.errors.append(f"index.json: format is not {INDEX_FORMAT!r}")
    report.errors.extend(f"index.json{p}" for p in find_personal(document))
    report.entries = len(entries)
    for number, entry in enumerate(document.get("entries") or []):
        if isinstance(entry, dict):
            report.errors.extend(_check_entry(number, entry, read, verify, index_url))
    return report


def _check_entry(number: int, entry: dict[str, Any], read: Reader, verify: VerifySignature,
                 index_url: str | None) -> list[str]:
    where = f"entries[{number}]"
    try:
        check_identify(entry.get("identify"))
    except SourceError as exc:
        return [f"{where}: {exc}"]
    mud_file, sig_file = entry.get("mud_file"), entry.get("signature_file")
    if not isinstance(mud_file, str) or not isinstance(sig_file, str):
        return [f"{where}: needs mud_file and signature_file"]
    url = entry.get("mud_url")
    if index_url is not None and url != urljoin(index_url, mud_file):
        return [f"{where}: mud_url {url!r} is not {mud_file!r} beside the index"]
    try:
        data, signature = read(mud_file), read(sig_file)
    except (OSError, RemoteInputError) as exc:
        return [f"{where}: {exc}"]
    errors: list[str] = []
    if entry.get("sha256") != hashlib.sha256(data).hexdigest():
        errors.append(f"{where}: {mud_file} does not match its sha256 in the index")
    result = parse_mud(data, expected_url=url if isinstance(url, str) else None)
    if result.mud is None:
        errors.append(f"{where}: {mud_file} is invalid: "
                      + "; ".join(str(f) for f in result.errors[:3]))
    else:
        errors.extend(f"{where}: {mud_file}{p}" for p in find_personal(json.loads(data)))
    problem = verify(data, signature)
    if problem is not None:
        errors.append(f"{where}: {sig_file}: {problem}")
    return errors


# -- a home's export -----------------------------------------------------------------------

def export_profile(mud_data: bytes, *, consent: bool, manufacturer: str | None,
                   model: str | None, mac: str, identify: Mapping[str, Sequence[str]],
                   generalise: bool = False,
                   home: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
                   ) -> dict[str, Any]:
    """A home's approved learned profile, ready to give to a repository (``repo build``).

    Only with the owner's explicit ``consent``; the MUD file is scrubbed
    (``scrub_profile``), the device is named by maker, model and its MAC's OUI (the
    first three octets) only. Raises ``SourceError`` or ``PersonalDataError``.
    """
    if not consent:
        raise SourceError("sharing a profile needs the owner's explicit consent (--consent)")
    try:
        document = json.loads(mud_data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"the approved profile is not JSON: {exc}") from None
    scrubbed = scrub_profile(document, generalise=generalise, home=home)
    oui = _oui(mac[:8])
    export: dict[str, Any] = {
        "format": EXPORT_FORMAT, "consent": True,
        "manufacturer": _text(manufacturer, "manufacturer"), "model": _text(model, "model"),
        "oui": oui, "identify": {k: list(v) for k, v in
                                 check_identify({k: list(v) for k, v in identify.items()}
                                                or None).items()},
        "mud": scrubbed.document, "changes": list(scrubbed.changes)}
    return {k: v for k, v in export.items() if v not in (None, {})}
