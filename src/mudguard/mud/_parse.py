"""Parse, normalise and validate MUD files (RFC 8520 with RFC 8519 ACLs).

Theory of operation: ``parse_mud`` takes bytes, text or already-decoded JSON and
walks it once, building the typed model of ``_model.py``. Every problem becomes
a ``Finding`` carrying the JSON path where it was seen; the walk never stops at
the first problem, so a manufacturer sees everything wrong at once. Draft-era
spellings (``access-lists``, ``acl-type``, ``rule-name``, ``ipv6-acl``,
``ethernet-acl-type``, ``operator: range``, hex-string ethertypes) are rewritten
to RFC 8520 / RFC 8519 form with a warning each.

Local rule: the parser never raises on bad input; it raises only ``BugError``
through a programming mistake. Size and depth are bounded before decoding.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from mudguard.mud._model import (
    GATEWAY_SERVICES,
    QUARANTINE_MEMBER,
    QUARANTINE_MODULE,
    Ace,
    Acl,
    AclType,
    Direction,
    EthMatch,
    Extension,
    Finding,
    Forwarding,
    IcmpMatch,
    IpMatch,
    Matches,
    MudFile,
    MudMatch,
    ParseResult,
    PathPart,
    PortMatch,
    PortOperator,
    Severity,
    TransportMatch,
    ace_limits,
)
from mudguard.mud.tls_profile import (
    CLIENT_PROFILES_KEY,
    MUD_TLS_MODULE,
    PROFILE_SUPPORTED_KEY,
    TlsProfile,
    parse_client_profiles,
    parse_profile_supported,
)
from mudguard.mud.transparency import TRANSPARENCY_KEY, Transparency, parse_transparency

MAX_MUD_BYTES = 1 << 20
"""A MUD file larger than 1 MiB is refused before decoding (the fetcher caps too)."""

MAX_JSON_DEPTH = 32
MAX_ACES = 4096

MUD_KEY = "ietf-mud:mud"
ACLS_KEY = "ietf-access-control-list:acls"
DRAFT_ACLS_KEY = "ietf-access-control-list:access-lists"

# RFC 8520 §3.7: "extensions: a list of extension names ... 40 characters max".
# Extensions mudguard understands, with the JSON members they add to the mud container.
KNOWN_EXTENSIONS: Mapping[str, tuple[str, ...]] = {
    # RFC 9472 (SBOM and vulnerability information).
    "transparency": ("ietf-mud-transparency:transparency",),
    # draft-ietf-opsawg-ol: ownership and licensing statements (not RFC 9761, which is
    # the (D)TLS profiles below).
    "ol": ("ietf-ol:ol",),
    # draft-richardson-shg-mud-quarantined-access (the draft names no extension string;
    # its module's name is the natural one). Parsed by ``_parse_quarantine``.
    QUARANTINE_MODULE: (QUARANTINE_MEMBER,),
    # RFC 9761 (D)TLS profiles: the mud container's boolean is read by
    # ``_parse_mud_container``, the ACEs' ``client-profiles`` by ``_tls_profiles``.
    MUD_TLS_MODULE: (),
}

# Draft-era controller classes (pre-RFC MUD files, e.g. the UNSW corpus) naming the
# gateway's own services; the policy layer maps them to the gateway's addresses.
DRAFT_CONTROLLER_CLASSES = frozenset({"urn:ietf:params:mud:gateway", "urn:ietf:params:mud:dns",
                                      "urn:ietf:params:mud:dhcp", "urn:ietf:params:mud:ntp"})

_DATE_AND_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_ACL_TYPES = {t.value: t for t in AclType}
_DRAFT_ACL_TYPES = {"ethernet-acl-type": AclType.ETH, "ipv4-acl": AclType.IPV4,
                    "ipv6-acl": AclType.IPV6, "eth-acl": AclType.ETH}


class _Walker:
    """Collects findings while the model is built."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, path: tuple[PathPart, ...], message: str) -> None:
        self.findings.append(Finding(path=path, severity=Severity.ERROR, message=message))

    def warn(self, path: tuple[PathPart, ...], message: str) -> None:
        self.findings.append(Finding(path=path, severity=Severity.WARNING, message=message))

    # -- typed leaf readers -------------------------------------------------------

    def obj(self, value: object, path: tuple[PathPart, ...]) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.error(path, f"expected an object, got {_kind(value)}")
        return None

    def lst(self, value: object, path: tuple[PathPart, ...]) -> list[Any] | None:
        if isinstance(value, list):
            return value
        self.error(path, f"expected a list, got {_kind(value)}")
        return None

    def integer(self, value: object, path: tuple[PathPart, ...], lo: int, hi: int) -> int | None:
        # RFC 7951 §6.1: 8/16/32-bit integers are JSON numbers; 64-bit are strings.
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"expected an integer {lo}..{hi}, got {_show(value)}")
            return None
        if not lo <= value <= hi:
            self.error(path, f"expected {lo}..{hi}, got {value}")
            return None
        return value

    def string(self, value: object, path: tuple[PathPart, ...], *, max_len: int = 1024,
               min_len: int = 1) -> str | None:
        if not isinstance(value, str):
            self.error(path, f"expected a string, got {_show(value)}")
            return None
        if not min_len <= len(value) <= max_len:
            self.error(path, f"expected {min_len}..{max_len} characters, got {len(value)}")
            return None
        if _CONTROL.search(value):
            self.error(path, "control characters are not allowed")
            return None
        return value

    def boolean(self, value: object, path: tuple[PathPart, ...]) -> bool | None:
        if isinstance(value, bool):
            return value
        self.error(path, f"expected true or false, got {_show(value)}")
        return None

    def empty(self, value: object, path: tuple[PathPart, ...]) -> bool:
        # RFC 7951 §6.9: a leaf of type "empty" is encoded as [null].
        if value == [None]:
            return True
        self.error(path, f"expected [null] (YANG empty), got {_show(value)}")
        return False

    def uri(self, value: object, path: tuple[PathPart, ...], *, https: bool = False) -> str | None:
        text = self.string(value, path, max_len=2048)
        if text is None:
            return None
        parts = urlsplit(text)
        if not parts.scheme or not (parts.netloc or parts.path):
            self.error(path, f"expected a URI, got {_show(text)}")
            return None
        if https and (parts.scheme != "https" or not parts.hostname):
            self.error(path, f"MUD URLs must use https (RFC 8520 §3.3), got {_show(text)}")
            return None
        return text

    def host(self, value: object, path: tuple[PathPart, ...]) -> str | None:
        text = self.string(value, path, max_len=253)
        if text is None:
            return None
        if _is_ip(text):
            return text
        labels = text.rstrip(".").split(".")
        if not all(_HOST_LABEL.match(label) for label in labels):
            self.error(path, f"expected a DNS name (inet:host), got {_show(text)}")
            return None
        return text.rstrip(".").lower()


def parse_mud(data: bytes | str | Mapping[str, Any], *, expected_url: str | None = None
              ) -> ParseResult:
    """Parse, normalise and validate one MUD file.

    Args:
        data: the file's bytes or text, or its decoded JSON object.
        expected_url: the URL the file was fetched from; RFC 8520 §3.3 requires the
            ``mud-url`` inside the file to equal it.

    Returns:
        A ``ParseResult``: the model when usable, and every finding (errors and
        warnings) with its path. Never raises for bad input.
    """
    walker = _Walker()
    document = _decode(data, walker)
    if document is None:
        return ParseResult(mud=None, findings=tuple(walker.findings))
    mud = _parse_document(document, walker, expected_url)
    errors = any(f.severity is Severity.ERROR for f in walker.findings)
    return ParseResult(mud=None if errors else mud, findings=tuple(walker.findings))


def _decode(data: bytes | str | Mapping[str, Any], walker: _Walker) -> dict[str, Any] | None:
    if isinstance(data, Mapping):
        document: object = dict(data)
    else:
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        if len(raw) > MAX_MUD_BYTES:
            walker.error((), f"file is {len(raw)} bytes; the limit is {MAX_MUD_BYTES}")
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            walker.error((), f"not UTF-8 text (byte {exc.start})")
            return None
        if text.startswith("\ufeff"):
            # RFC 8259 §8.1: a sender must not add a BOM; a parser may ignore it.
            walker.warn((), "starts with a UTF-8 byte order mark, which JSON senders must "
                            "not add (RFC 8259 §8.1); ignored")
            text = text[1:]
        try:
            document = json.loads(text, parse_constant=_reject_constant,
                                  object_pairs_hook=_Members)
        except RecursionError:
            walker.error((), f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            return None
        except ValueError as exc:
            walker.error((), f"not valid JSON: {exc}")
            return None
        if _report_duplicates(document, (), walker):
            return None
    if _depth(document) > MAX_JSON_DEPTH:
        walker.error((), f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return None
    if not isinstance(document, dict):
        walker.error((), f"expected a JSON object, got {_kind(document)}")
        return None
    return document


class _Members(dict[str, Any]):
    """A decoded JSON object that remembers member names given more than once."""

    duplicates: tuple[str, ...]

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        seen: list[str] = []
        for key, value in pairs:
            if key in self and key not in seen:
                seen.append(key)
            self[key] = value
        self.duplicates = tuple(seen)


def _report_duplicates(value: object, path: tuple[PathPart, ...], walker: _Walker,
                       level: int = 0) -> bool:
    """Report every member name an object repeats (RFC 7951 §5.4 / RFC 8259 §4: a YANG
    document's member names are unique; which copy a reader keeps is undefined, so
    ``"forwarding": "drop", "forwarding": "accept"`` must not quietly become accept)."""
    if level > MAX_JSON_DEPTH:
        return False
    found = False
    if isinstance(value, _Members):
        for key in value.duplicates:
            walker.error(path + (key,), "member name given more than once; JSON objects in "
                         "a MUD file have unique member names (RFC 7951)")
            found = True
    if isinstance(value, dict):
        for key, child in value.items():
            found |= _report_duplicates(child, path + (key,), walker, level + 1)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found |= _report_duplicates(child, path + (index,), walker, level + 1)
    return found


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _depth(value: object, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return level
    deepest = level + 1
    for child in children:
        if isinstance(child, dict | list):
            deepest = max(deepest, _depth(child, level + 1))
    return deepest


def _parse_document(doc: dict[str, Any], w: _Walker, expected_url: str | None) -> MudFile | None:
    draft = False
    acls_value: object = None
    if ACLS_KEY in doc:
        acls_value = doc[ACLS_KEY]
        if DRAFT_ACLS_KEY in doc:
            w.error((DRAFT_ACLS_KEY,), f"both {ACLS_KEY} and the draft-era {DRAFT_ACLS_KEY}")
    elif DRAFT_ACLS_KEY in doc:
        draft = True
        acls_value = doc[DRAFT_ACLS_KEY]
        w.warn((DRAFT_ACLS_KEY,), f"draft-era container name; normalised to {ACLS_KEY}")
    for key in doc:
        if key not in (MUD_KEY, ACLS_KEY, DRAFT_ACLS_KEY):
            w.warn((key,), "top-level member not part of a MUD file; ignored")
    if MUD_KEY not in doc:
        w.error((MUD_KEY,), "missing: a MUD file must have the ietf-mud:mud container")
        return None
    acls_path: tuple[PathPart, ...] = (ACLS_KEY,)
    acls = _parse_acls(acls_value, acls_path, w) if acls_value is not None else ()
    if acls_value is None:
        w.warn(acls_path, "no access lists: the device is allowed nothing but the basics")
    return _parse_mud_container(doc[MUD_KEY], (MUD_KEY,), w, acls, draft, expected_url)


def _parse_mud_container(value: object, path: tuple[PathPart, ...], w: _Walker,
                         acls: tuple[Acl, ...], draft: bool, expected_url: str | None
                         ) -> MudFile | None:
    mud = w.obj(value, path)
    if mud is None:
        return None
    version = _required(mud, "mud-version", path, w, lambda v, p: w.integer(v, p, 0, 255))
    if version is not None and version != 1:
        w.error(path + ("mud-version",),
                f"only MUD version 1 exists (RFC 8520 §3.1), got {version}")
    mud_url = _required(mud, "mud-url", path, w, lambda v, p: w.uri(v, p, https=True))
    if mud_url is not None and expected_url is not None and mud_url != expected_url:
        # RFC 8520 §3.3: the mud-url in the file MUST equal the URL that was used to fetch it.
        w.error(path + ("mud-url",), f"file says {_show(mud_url)} but was fetched from "
                f"{_show(expected_url)} (RFC 8520 §3.3)")
    last_update = _required(mud, "last-update", path, w, lambda v, p: _date_time(v, p, w))
    is_supported = _required(mud, "is-supported", path, w, w.boolean)
    cache_validity = _optional(mud, "cache-validity", path, lambda v, p: w.integer(v, p, 1, 168))
    signature = _optional(mud, "mud-signature", path, lambda v, p: w.uri(v, p))
    systeminfo = _optional(mud, "systeminfo", path, lambda v, p: _systeminfo(v, p, w))
    strings = {key: _optional(mud, key, path, w.string)
               for key in ("mfg-name", "model-name", "firmware-rev", "software-rev")}
    documentation = _optional(mud, "documentation", path, lambda v, p: w.uri(v, p))
    extensions = _parse_extensions(mud, path, w)
    transparency = _transparency(mud, extensions, path, w)
    from_names = _policy_names(mud, "from-device-policy", path, w, acls)
    to_names = _policy_names(mud, "to-device-policy", path, w, acls)
    known = {"mud-version", "mud-url", "last-update", "cache-validity", "is-supported",
             "systeminfo", "mfg-name", "model-name", "firmware-rev", "software-rev",
             "documentation", "mud-signature", "extensions", "from-device-policy",
             "to-device-policy", PROFILE_SUPPORTED_KEY}
    tls_supported = None
    if PROFILE_SUPPORTED_KEY in mud:
        tls_supported, tls_findings = parse_profile_supported(
            mud[PROFILE_SUPPORTED_KEY], path + (PROFILE_SUPPORTED_KEY,))
        w.findings.extend(tls_findings)
    extension_members = {m for e in extensions for m in KNOWN_EXTENSIONS.get(e.name, ())}
    extension_members.add(QUARANTINE_MEMBER)
    quarantine = _parse_quarantine(mud, path, w, acls)
    for key in mud:
        if key in known or key in extension_members:
            continue
        if ":" in key:
            w.warn(path + (key,), "member of a module mudguard does not implement; not enforced")
        else:
            w.error(path + (key,), "unknown member of the ietf-mud:mud container")
    _check_acl_usage(acls, from_names, to_names, w)
    if version is None or mud_url is None or last_update is None or is_supported is None:
        return None
    return MudFile(
        mud_version=version, mud_url=mud_url, last_update=last_update,
        cache_validity_hours=cache_validity if cache_validity is not None else 48,
        is_supported=is_supported, acls=acls, from_device_policy=from_names,
        to_device_policy=to_names, mud_signature=signature, systeminfo=systeminfo,
        mfg_name=strings["mfg-name"], model_name=strings["model-name"],
        firmware_rev=strings["firmware-rev"], software_rev=strings["software-rev"],
        documentation=documentation, extensions=extensions, draft_era=draft,
        quarantine_ace_names=quarantine,
        transparency=transparency, tls_profile_supported=tls_supported,
    )


def _transparency(mud: dict[str, Any], extensions: tuple[Extension, ...],
                  path: tuple[PathPart, ...], w: _Walker) -> Transparency | None:
    # RFC 9472: the container is used when the file lists the "transparency" extension.
    if TRANSPARENCY_KEY not in mud or not any(e.name == "transparency" for e in extensions):
        return None
    parsed, findings = parse_transparency(mud[TRANSPARENCY_KEY], path + (TRANSPARENCY_KEY,))
    # The container only says where a software list is published; it never changes
    # what the device may reach. A container mudguard cannot read is therefore ignored
    # with warnings, never a reason to refuse the whole file (and the device's profile).
    broken = any(f.severity is Severity.ERROR for f in findings)
    w.findings.extend(dataclasses.replace(f, severity=Severity.WARNING,
                                          message=f"{f.message} (transparency ignored)")
                      if f.severity is Severity.ERROR else f for f in findings)
    return None if broken else parsed


SYSTEMINFO_DISPLAY_CHARS = 60


def _systeminfo(value: object, path: tuple[PathPart, ...], w: _Walker) -> str | None:
    text = w.string(value, path, max_len=1024)
    if text is not None and len(text) > SYSTEMINFO_DISPLAY_CHARS:
        # RFC 8520 (systeminfo): "SHOULD NOT exceed 60 characters worth of display
        # space" (https://www.rfc-editor.org/rfc/rfc8520); the YANG leaf is a
        # plain string, so a longer one is usable and only shortened for display.
        w.warn(path, f"longer than {SYSTEMINFO_DISPLAY_CHARS} characters ({len(text)}); "
               "RFC 8520 says it should fit in 60")
    return text


def _parse_extensions(mud: dict[str, Any], path: tuple[PathPart, ...], w: _Walker
                      ) -> tuple[Extension, ...]:
    if "extensions" not in mud:
        return ()
    items = w.lst(mud["extensions"], path + ("extensions",))
    if items is None:
        return ()
    result: list[Extension] = []
    for i, item in enumerate(items):
        name = w.string(item, path + ("extensions", i), max_len=40)
        if name is None:
            continue
        members = KNOWN_EXTENSIONS.get(name)
        if members is None:
            # RFC 8520 §3.7: extensions "MUST NOT" be silently ignored by a manager that
            # needs them; we can only report them, and never act on their contents.
            w.warn(path + ("extensions", i), f"extension {_show(name)} is not understood by "
                   "mudguard; its members are reported, not enforced")
            result.append(Extension(name=name, understood=False))
        else:
            data = {m: mud[m] for m in members if m in mud}
            result.append(Extension(name=name, understood=True, data=data))
    return tuple(result)


def _policy_names(mud: dict[str, Any], key: str, path: tuple[PathPart, ...], w: _Walker,
                  acls: tuple[Acl, ...]) -> tuple[str, ...]:
    here = path + (key,)
    if key not in mud:
        w.warn(here, "missing: nothing is allowed in this direction")
        return ()
    policy = w.obj(mud[key], here)
    if policy is None:
        return ()
    lists = w.obj(policy.get("access-lists", {}), here + ("access-lists",))
    if lists is None:
        return ()
    entries = w.lst(lists.get("access-list", []), here + ("access-lists", "access-list"))
    if entries is None:
        return ()
    names: list[str] = []
    acl_names = {a.name for a in acls}
    for i, entry in enumerate(entries):
        epath = here + ("access-lists", "access-list", i)
        obj = w.obj(entry, epath)
        if obj is None:
            continue
        name = w.string(obj.get("name"), epath + ("name",), max_len=64)
        if name is None:
            continue
        if name not in acl_names:
            w.error(epath + ("name",), f"names ACL {_show(name)}, which the file does not define")
            continue
        if name in names:
            w.error(epath + ("name",), f"ACL {_show(name)} listed twice")
            continue
        names.append(name)
    return tuple(names)


def _check_acl_usage(acls: tuple[Acl, ...], from_names: tuple[str, ...],
                     to_names: tuple[str, ...], w: _Walker) -> None:
    for i, acl in enumerate(acls):
        if acl.name not in from_names and acl.name not in to_names:
            w.warn((ACLS_KEY, "acl", i), f"ACL {_show(acl.name)} is not used by either policy")
        if acl.name in from_names and acl.name in to_names:
            w.warn((ACLS_KEY, "acl", i), f"ACL {_show(acl.name)} is used in both directions")
        for direction, names in ((Direction.FROM_DEVICE, from_names),
                                 (Direction.TO_DEVICE, to_names)):
            if acl.name not in names:
                continue
            for j, ace in enumerate(acl.aces):
                _warn_limits(ace, direction, (ACLS_KEY, "acl", i, "aces", "ace", j, "matches"), w)


def _warn_limits(ace: Ace, direction: Direction, path: tuple[PathPart, ...], w: _Walker) -> None:
    """One warning per thing mudguard cannot enforce as written, saying what it does instead."""
    for limit in ace_limits(ace, direction):
        if limit.never:
            outcome = "the ACE matches nothing"
        elif ace.action is Forwarding.ACCEPT:
            outcome = "the ACE allows nothing"
        else:
            outcome = f"left out, so the ACE ({ace.action.value}) applies more widely"
        where = path + tuple(limit.field.split(".", 1))
        w.warn(where, f"{limit.reason}: {outcome}")


def _parse_acls(value: object, path: tuple[PathPart, ...], w: _Walker) -> tuple[Acl, ...]:
    container = w.obj(value, path)
    if container is None:
        return ()
    for key in container:
        if key != "acl":
            w.error(path + (key,), "unknown member of the acls container")
    items = w.lst(container.get("acl", []), path + ("acl",))
    if items is None:
        return ()
    acls: list[Acl] = []
    seen: set[str] = set()
    total_aces = 0
    for i, item in enumerate(items):
        acl = _parse_acl(item, path + ("acl", i), w)
        if acl is None:
            continue
        if acl.name in seen:
            w.error(path + ("acl", i, "name"), f"ACL name {_show(acl.name)} is not unique")
            continue
        seen.add(acl.name)
        total_aces += len(acl.aces)
        if total_aces > MAX_ACES:
            w.error(path + ("acl", i), f"more than {MAX_ACES} ACEs in one file")
            break
        acls.append(acl)
    return tuple(acls)


def _parse_acl(value: object, path: tuple[PathPart, ...], w: _Walker) -> Acl | None:
    obj = w.obj(value, path)
    if obj is None:
        return None
    obj = dict(obj)
    _rename(obj, "acl-type", "type", path, w)
    _rename(obj, "access-list-entries", "aces", path, w)
    name = _required(obj, "name", path, w, lambda v, p: w.string(v, p, max_len=64))
    acl_type = _required(obj, "type", path, w, lambda v, p: _acl_type(v, p, w))
    aces: list[Ace] = []
    aces_obj = w.obj(obj.get("aces", {}), path + ("aces",))
    if aces_obj is not None:
        entries = w.lst(aces_obj.get("ace", []), path + ("aces", "ace"))
        names: set[str] = set()
        for j, entry in enumerate(entries or []):
            ace = _parse_ace(entry, path + ("aces", "ace", j), w, acl_type)
            if ace is None:
                continue
            if ace.name in names:
                w.error(path + ("aces", "ace", j, "name"), f"ACE name {_show(ace.name)} repeats")
                continue
            names.add(ace.name)
            aces.append(ace)
    for key in obj:
        if key not in ("name", "type", "aces"):
            w.error(path + (key,), "unknown member of an ACL")
    if name is None or acl_type is None:
        return None
    mixed = {AclType.IPV4: AclType.MIXED_ETH_IPV4, AclType.IPV6: AclType.MIXED_ETH_IPV6}
    if acl_type in mixed and any(ace.matches.eth is not None for ace in aces):
        # RFC 8519's eth container is conditional on an eth(-derived) ACL type; draft-era
        # generators put eth matches in ipv4 ACLs, so the type becomes the mixed one.
        acl_type = mixed[acl_type]
    return Acl(name=name, type=acl_type, aces=tuple(aces))


def _acl_type(value: object, path: tuple[PathPart, ...], w: _Walker) -> AclType | None:
    text = w.string(value, path)
    if text is None:
        return None
    bare = text.split(":", 1)[-1]
    if bare in _ACL_TYPES:
        return _ACL_TYPES[bare]
    if bare in _DRAFT_ACL_TYPES:
        normal = _DRAFT_ACL_TYPES[bare]
        w.warn(path, f"draft-era ACL type {_show(text)}; normalised to {normal.value}")
        return normal
    w.error(path, f"expected one of {', '.join(sorted(_ACL_TYPES))}, got {_show(text)}")
    return None


def _parse_ace(value: object, path: tuple[PathPart, ...], w: _Walker,
               acl_type: AclType | None) -> Ace | None:
    obj = w.obj(value, path)
    if obj is None:
        return None
    obj = dict(obj)
    _rename(obj, "rule-name", "name", path, w)
    name = _required(obj, "name", path, w, lambda v, p: w.string(v, p, max_len=64))
    matches = _parse_matches(obj.get("matches", {}), path + ("matches",), w, acl_type)
    action = _parse_actions(obj.get("actions"), path + ("actions",), w)
    for key in obj:
        if key not in ("name", "matches", "actions", "statistics"):
            w.error(path + (key,), "unknown member of an ACE")
    if name is None or matches is None or action is None:
        return None
    return Ace(name=name, matches=matches, action=action)


def _parse_actions(value: object, path: tuple[PathPart, ...], w: _Walker) -> Forwarding | None:
    if value is None:
        w.error(path, "missing: every ACE needs actions.forwarding")
        return None
    obj = w.obj(value, path)
    if obj is None:
        return None
    for key in obj:
        if key not in ("forwarding", "logging"):
            w.error(path + (key,), "unknown member of actions")
    text = w.string(obj.get("forwarding"), path + ("forwarding",))
    if text is None:
        return None
    bare = text.split(":", 1)[-1]
    try:
        return Forwarding(bare)
    except ValueError:
        w.error(path + ("forwarding",), f"expected accept, drop or reject, got {_show(text)}")
        return None


def _parse_matches(value: object, path: tuple[PathPart, ...], w: _Walker,
                   acl_type: AclType | None) -> Matches | None:
    obj = w.obj(value, path)
    if obj is None:
        return None
    obj = dict(obj)
    start = len(w.findings)
    for draft, normal in (("ipv4-acl", "ipv4"), ("ipv6-acl", "ipv6")):
        _rename(obj, draft, normal, path, w)
    _move_draft_ports(obj, path, w)
    if "ipv4" in obj and "ipv6" in obj:
        w.error(path, "ipv4 and ipv6 matches are alternatives (RFC 8519 choice l3)")
    l4 = [k for k in ("tcp", "udp", "icmp") if k in obj]
    if len(l4) > 1:
        w.error(path, f"{' and '.join(l4)} matches are alternatives (RFC 8519 choice l4)")
    ip = None
    for key, version in (("ipv4", 4), ("ipv6", 6)):
        if key in obj:
            ip = _parse_ip(obj[key], path + (key,), w, version)
    transport = None
    for key, proto in (("tcp", 6), ("udp", 17)):
        if key in obj:
            transport = _parse_transport(obj[key], path + (key,), w, proto)
    icmp = _parse_icmp(obj["icmp"], path + ("icmp",), w) if "icmp" in obj else None
    eth = _parse_eth(obj["eth"], path + ("eth",), w) if "eth" in obj else None
    mud = _parse_mud_match(obj["ietf-mud:mud"], path + ("ietf-mud:mud",), w) \
        if "ietf-mud:mud" in obj else None
    for key in obj:
        if key not in ("ipv4", "ipv6", "tcp", "udp", "icmp", "eth", "ietf-mud:mud",
                       "egress-interface", "ingress-interface", CLIENT_PROFILES_KEY):
            w.error(path + (key,), "unknown match")
    if "egress-interface" in obj or "ingress-interface" in obj:
        w.error(path, "interface matches have no meaning in a MUD file")
    tls = _tls_profiles(obj[CLIENT_PROFILES_KEY], path + (CLIENT_PROFILES_KEY,), w,
                        transport is not None) if CLIENT_PROFILES_KEY in obj else ()
    matches = Matches(ip=ip, transport=transport, icmp=icmp, eth=eth, mud=mud,
                      unenforced=_unmodelled(obj), tls_profiles=tls)
    _check_protocol(matches, obj, path, w)
    _check_acl_type(matches, acl_type, path, w)
    if any(f.severity is Severity.ERROR for f in w.findings[start:]):
        return None
    return matches


def _tls_profiles(value: object, path: tuple[PathPart, ...], w: _Walker, transport: bool
                  ) -> tuple[TlsProfile, ...]:
    """RFC 9761 ``client-profiles`` of an ACE. A profile only adds observation of the
    device's ClientHellos (the ACE is enforced as the rest of it says), so a container
    mudguard cannot read is ignored with warnings, never a reason to refuse the file."""
    profiles, findings = parse_client_profiles(value, path)
    broken = any(f.severity is Severity.ERROR for f in findings)
    w.findings.extend(dataclasses.replace(f, severity=Severity.WARNING,
                                          message=f"{f.message} (TLS profile ignored)")
                      if f.severity is Severity.ERROR else f for f in findings)
    if broken:
        return ()
    if profiles and not transport:
        w.warn(path, "a (D)TLS profile on an ACE without tcp or udp: not observed")
        return ()
    return profiles


# RFC 8519 header fields mudguard reads but does not model: present in an ACE, they make
# it allow nothing (an accept) or are left out (a drop drops more); see ``ace_limits``.
UNMODELLED_FIELDS: Mapping[str, tuple[str, ...]] = {
    "ipv4": ("ihl", "flags", "offset", "identification"),
    "tcp": ("sequence-number", "acknowledgement-number", "data-offset", "reserved", "flags",
            "window-size", "urgent-pointer", "options"),
    "udp": ("length",),
    "icmp": ("rest-of-header",),
}


def _unmodelled(obj: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    found: list[tuple[str, str, str]] = []
    for container, keys in UNMODELLED_FIELDS.items():
        inner = obj.get(container)
        if not isinstance(inner, dict):
            continue
        for key in keys:
            if key in inner:
                found.append((container, key, json.dumps(inner[key], sort_keys=True)))
    return tuple(found)


def _move_draft_ports(obj: dict[str, Any], path: tuple[PathPart, ...], w: _Walker) -> None:
    """Draft MUD put ``*-port-range-or-operator`` inside the ip match; RFC 8519 puts
    ``source-port`` / ``destination-port`` in tcp or udp."""
    for ipkey in ("ipv4", "ipv6"):
        ip = obj.get(ipkey)
        if not isinstance(ip, dict):
            continue
        for side in ("source", "destination"):
            draft_key = f"{side}-port-range-or-operator"
            if draft_key not in ip:
                continue
            ip = dict(ip)
            port = ip.pop(draft_key)
            obj[ipkey] = ip
            protocol = ip.get("protocol")
            l4 = {6: "tcp", 17: "udp"}.get(protocol) if isinstance(protocol, int) else None
            if l4 is None:
                w.error(path + (ipkey, draft_key), "draft-era port match without protocol 6 or 17")
                continue
            l4obj = dict(obj.get(l4) or {})
            l4obj[f"{side}-port"] = port
            obj[l4] = l4obj
            w.warn(path + (ipkey, draft_key), f"draft-era port match; moved to {l4}.{side}-port")


def _check_protocol(m: Matches, obj: dict[str, Any], path: tuple[PathPart, ...], w: _Walker
                    ) -> None:
    if m.ip is None or m.ip.protocol is None:
        return
    declared = m.ip.protocol
    if m.transport is not None and declared != m.transport.protocol:
        w.error(path + ("ipv4" if m.ip.version == 4 else "ipv6", "protocol"),
                f"protocol {declared} contradicts the "
                f"{'tcp' if m.transport.protocol == 6 else 'udp'} match")
    icmp_protocol = 1 if m.ip.version == 4 else 58
    if m.icmp is not None and declared != icmp_protocol:
        # ICMP in IPv4 is protocol 1, ICMPv6 in IPv6 is 58; anything else never matches.
        w.error(path, f"protocol {declared} contradicts the icmp match in IPv{m.ip.version} "
                f"(expected {icmp_protocol})")


def _check_acl_type(m: Matches, acl_type: AclType | None, path: tuple[PathPart, ...],
                    w: _Walker) -> None:
    if acl_type is None:
        return
    has_v4 = m.ip is not None and m.ip.version == 4
    has_v6 = m.ip is not None and m.ip.version == 6
    allowed = {
        AclType.IPV4: (False, True, False),
        AclType.IPV6: (False, False, True),
        AclType.ETH: (True, False, False),
        AclType.MIXED_ETH_IPV4: (True, True, False),
        AclType.MIXED_ETH_IPV6: (True, False, True),
        AclType.MIXED_ETH_IPV4_IPV6: (True, True, True),
    }[acl_type]
    eth_ok, v4_ok, v6_ok = allowed
    if has_v4 and not v4_ok:
        w.error(path + ("ipv4",), f"an ipv4 match in an ACL of type {acl_type.value}")
    if has_v6 and not v6_ok:
        w.error(path + ("ipv6",), f"an ipv6 match in an ACL of type {acl_type.value}")
    if m.eth is not None and not eth_ok:
        # Draft-era generators (UNSW) mixed eth matches into ipv4 ACLs; the meaning is clear,
        # so this is accepted with a warning rather than rejected.
        w.warn(path + ("eth",), f"an eth match in an ACL of type {acl_type.value} "
               "(draft-era mixing; treated as a mixed ACL)")
    if acl_type is AclType.ETH and (m.transport is not None or m.icmp is not None):
        w.error(path, "an eth-acl-type ACL cannot match on layer 4")


def _parse_ip(value: object, path: tuple[PathPart, ...], w: _Walker, version: int
              ) -> IpMatch | None:
    obj = w.obj(value, path)
    if obj is None:
        return None
    fam = f"ipv{version}"
    fields: dict[str, Any] = {"version": version}
    ints = {"protocol": ("protocol", 0, 255), "dscp": ("dscp", 0, 63), "ecn": ("ecn", 0, 3),
            "ttl": ("ttl", 0, 255), "length": ("length", 0, 65535)}
    if version == 6:
        ints["flow-label"] = ("flow_label", 0, (1 << 20) - 1)
    for key, (attr, lo, hi) in ints.items():
        if key in obj:
            fields[attr] = w.integer(obj[key], path + (key,), lo, hi)
    for side in ("source", "destination"):
        key = f"{side}-{fam}-network"
        if key in obj:
            fields["src_network" if side == "source" else "dst_network"] = _prefix(
                obj[key], path + (key,), w, version)
    for side in ("src", "dst"):
        key = f"ietf-acldns:{side}-dnsname"
        if key in obj:
            fields[f"{side}_dnsname"] = w.host(obj[key], path + (key,))
            network_key = f"{'source' if side == 'src' else 'destination'}-{fam}-network"
            if network_key in obj:
                # The YANG allows both leaves, but RFC 8520 never says how a name and a
                # prefix combine (intersection? either?); guessing could widen access.
                w.error(path + (key,), f"{side}-dnsname together with {network_key}: RFC 8520 "
                        "does not define how they combine")
    allowed = set(ints) | {f"source-{fam}-network", f"destination-{fam}-network",
                           "ietf-acldns:src-dnsname", "ietf-acldns:dst-dnsname"}
    if version == 4:
        allowed |= {"ihl", "flags", "offset", "identification"}
    for key in obj:
        if key not in allowed:
            w.error(path + (key,), f"unknown member of the {fam} match")
    fields = {k: v for k, v in fields.items() if v is not None}
    return IpMatch(**fields)


def _prefix(value: object, path: tuple[PathPart, ...], w: _Walker, version: int) -> str | None:
    text = w.string(value, path, max_len=64)
    if text is None:
        return None
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        w.error(path, f"expected an IPv{version} prefix, got {_show(text)}")
        return None
    if network.version != version:
        example = "192.0.2.0/24" if version == 4 else "2001:db8::/32"
        w.error(path, f"expected an IPv{version} prefix like {example}, got {_show(text)}")
        return None
    if "/" not in text:
        # Draft-era generators wrote bare host addresses; RFC 8519 wants a prefix.
        w.warn(path, f"host address without a prefix length; normalised to {network}")
    return str(network)


def _parse_transport(value: object, path: tuple[PathPart, ...], w: _Walker, protocol: int
                     ) -> TransportMatch | None:
    obj = w.obj(value, path)
    if obj is None:
        return None
    src = _parse_port(obj["source-port"], path + ("source-port",), w) \
        if "source-port" in obj else None
    dst = _parse_port(obj["destination-port"], path + ("destination-port",), w) \
        if "destination-port" in obj else None
    direction = None
    if "ietf-mud:direction-initiated" in obj:
        dpath = path + ("ietf-mud:direction-initiated",)
        if protocol != 6:
            # RFC 8520 §2.1: direction-initiated augments only the tcp container.
            w.error(dpath, "direction-initiated applies to tcp only (RFC 8520)")
        text = w.string(obj["ietf-mud:direction-initiated"], dpath)
        if text is not None:
            try:
                direction = Direction(text)
            except ValueError:
                w.error(dpath, f"expected from-device or to-device, got {_show(text)}")
    allowed = {"source-port", "destination-port", "ietf-mud:direction-initiated"}
    tcp_fields = {"sequence-number", "acknowledgement-number", "data-offset", "reserved",
                  "flags", "window-size", "urgent-pointer", "options"}
    allowed |= tcp_fields if protocol == 6 else {"length"}
    for key in obj:
        if key not in allowed:
            w.error(path + (key,), "unknown member of the transport match")
    return TransportMatch(protocol=protocol, src_port=src, dst_port=dst,
                          direction_initiated=direction)


_RFC8519_OPERATORS = {op.value: op for op in (PortOperator.EQ, PortOperator.NEQ,
                                               PortOperator.LTE, PortOperator.GTE)}


def _parse_port(value: object, path: tuple[PathPart, ...], w: _Walker) -> PortMatch | None:
    obj = w.obj(value, path)
    if obj is None:
        return None
    obj = dict(obj)
    if obj.get("operator") == "range":
        # Draft-era (UNSW) spelling: RFC 8519 has a range case with no operator.
        w.warn(path + ("operator",), "draft-era 'operator: range'; normalised to a port range")
        del obj["operator"]
    for key in obj:
        if key not in ("operator", "port", "lower-port", "upper-port"):
            w.error(path + (key,), "unknown member of a port match")
    if "lower-port" in obj or "upper-port" in obj:
        if "port" in obj:
            w.error(path, "a port range and an operator are alternatives (RFC 8519)")
            return None
        if "operator" in obj:
            if obj["operator"] != "eq":
                # RFC 8519 §4.1: operator and lower-port/upper-port are cases of one choice.
                w.error(path + ("operator",), "a port range and an operator are alternatives "
                        f"(RFC 8519), got operator {_show(obj['operator'])}")
                return None
            # UNSW's generator wrote {"operator": "eq", "lower-port": a, "upper-port": b};
            # with no "port" the only meaning is the range.
            w.warn(path + ("operator",), "draft-era operator beside a port range; ignored")
        lower = _required(obj, "lower-port", path, w, lambda v, p: w.integer(v, p, 0, 65535))
        upper = _required(obj, "upper-port", path, w, lambda v, p: w.integer(v, p, 0, 65535))
        if lower is None or upper is None:
            return None
        if lower > upper:
            # RFC 8519 §4.1: "lower-port ... must be less than or equal to upper-port".
            w.error(path, f"lower-port {lower} is above upper-port {upper}")
            return None
        return PortMatch(operator=PortOperator.RANGE, lower=lower, upper=upper)
    op_text = obj.get("operator", "eq")
    # RFC 8519 ietf-packet-fields "typedef operator": lte, gte, eq and neq only.
    op = _RFC8519_OPERATORS.get(op_text) if isinstance(op_text, str) else None
    if op is None:
        w.error(path + ("operator",), f"expected eq, neq, lte or gte, got {_show(op_text)}")
        return None
    port = _required(obj, "port", path, w, lambda v, p: w.integer(v, p, 0, 65535))
    if port is None:
        return None
    return PortMatch(operator=op, port=port)


def _parse_icmp(value: object, path: tuple[PathPart, ...], w: _Walker) -> IcmpMatch | None:
    obj = w.obj(value, path)
    if obj is None:
        return None
    for key in obj:
        if key not in ("type", "code", "rest-of-header"):
            w.error(path + (key,), "unknown member of the icmp match")
    icmp_type = w.integer(obj["type"], path + ("type",), 0, 255) if "type" in obj else None
    code = w.integer(obj["code"], path + ("code",), 0, 255) if "code" in obj else None
    return IcmpMatch(type=icmp_type, code=code)


def _parse_eth(value: object, path: tuple[PathPart, ...], w: _Walker) -> EthMatch | None:
    obj = w.obj(value, path)
    if obj is None:
        return None
    fields: dict[str, Any] = {}
    for key, attr in (("source-mac-address", "src_mac"), ("destination-mac-address", "dst_mac"),
                      ("source-mac-address-mask", "src_mac_mask"),
                      ("destination-mac-address-mask", "dst_mac_mask")):
        if key in obj:
            text = w.string(obj[key], path + (key,), max_len=17)
            if text is not None and not _MAC.match(text):
                w.error(path + (key,), f"expected a MAC address, got {_show(text)}")
                text = None
            fields[attr] = text.lower() if text else None
    if "ethertype" in obj:
        fields["ethertype"] = _ethertype(obj["ethertype"], path + ("ethertype",), w)
    for key in obj:
        if key not in ("source-mac-address", "destination-mac-address", "ethertype",
                       "source-mac-address-mask", "destination-mac-address-mask"):
            w.error(path + (key,), "unknown member of the eth match")
    return EthMatch(**{k: v for k, v in fields.items() if v is not None})


_ETHERTYPE_NAMES = {"ipv4": 0x0800, "arp": 0x0806, "ipv6": 0x86DD, "eapol": 0x888E,
                    "lldp": 0x88CC, "vlan": 0x8100, "802-1-q": 0x8100}


def _ethertype(value: object, path: tuple[PathPart, ...], w: _Walker) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return w.integer(value, path, 0, 0xFFFF)
    if isinstance(value, str):
        bare = value.split(":", 1)[-1].lower()
        if bare in _ETHERTYPE_NAMES:
            return _ETHERTYPE_NAMES[bare]
        if re.fullmatch(r"0x[0-9a-f]{1,4}", bare):
            number = int(bare, 16)
            w.warn(path, f"draft-era hex-string ethertype {_show(value)}; normalised to {number}")
            return number
    w.error(path, f"expected an ethertype (number or name), got {_show(value)}")
    return None


def _parse_mud_match(value: object, path: tuple[PathPart, ...], w: _Walker) -> MudMatch | None:
    obj = w.obj(value, path)
    if obj is None:
        return None
    fields: dict[str, Any] = {}
    if "manufacturer" in obj:
        fields["manufacturer"] = w.host(obj["manufacturer"], path + ("manufacturer",))
    if "model" in obj:
        fields["model"] = w.uri(obj["model"], path + ("model",))
    if "controller" in obj:
        fields["controller"] = _controller(obj["controller"], path + ("controller",), w)
    for key, attr in (("same-manufacturer", "same_manufacturer"),
                      ("local-networks", "local_networks"), ("my-controller", "my_controller")):
        if key in obj:
            fields[attr] = w.empty(obj[key], path + (key,))
    for key in obj:
        if key not in ("manufacturer", "same-manufacturer", "model", "local-networks",
                       "controller", "my-controller"):
            w.error(path + (key,), "unknown MUD match")
    fields = {k: v for k, v in fields.items() if v is not None}
    match = MudMatch(**fields)
    set_count = sum(1 for v in (match.manufacturer, match.model, match.controller) if v) + sum(
        (match.same_manufacturer, match.local_networks, match.my_controller))
    if set_count > 1:
        w.warn(path, "several MUD abstractions in one ACE: all must hold at once")
    return match


_CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~:/@+-]*$")


def _controller(value: object, path: tuple[PathPart, ...], w: _Walker) -> str | None:
    text = w.string(value, path, max_len=2048)
    if text is None:
        return None
    if not urlsplit(text).scheme:
        # Qualification suites write bare class names ("bacnet"); the class is opaque
        # either way: only the owner's mapping gives it addresses.
        if not _CLASS_NAME.match(text):
            w.error(path, f"expected a controller class URI, got {_show(text)}")
            return None
        w.warn(path, f"controller class {_show(text)} is not an absolute URI (RFC 8520 wants "
               "one); treated as an opaque class the owner maps to addresses: unmapped, it "
               "grants nothing")
        return text
    text = w.uri(text, path)
    if text is not None and text in GATEWAY_SERVICES:
        ports = " and ".join(f"{'TCP' if p == 6 else 'UDP'} {n}"
                             for p, n in GATEWAY_SERVICES[text])
        w.warn(path, f"draft-era controller class {_show(text)}: the gateway's own service on "
               f"{ports} only")
    elif text in DRAFT_CONTROLLER_CLASSES:
        w.warn(path, f"draft-era controller class {_show(text)}: treated as a controller class "
               "the owner maps to addresses (never the gateway as a whole); unmapped, it "
               "grants nothing")
    return text


def _date_time(value: object, path: tuple[PathPart, ...], w: _Walker) -> datetime | None:
    text = w.string(value, path, max_len=40)
    if text is None:
        return None
    if not _DATE_AND_TIME.match(text):
        w.error(path, f"expected a date-and-time like 2019-01-28T12:00:00Z, got {_show(text)}")
        return None
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        w.error(path, f"not a real date and time: {_show(text)}")
        return None


def _rename(obj: dict[str, Any], draft: str, normal: str, path: tuple[PathPart, ...],
            w: _Walker) -> None:
    if draft not in obj:
        return
    if normal in obj:
        w.error(path + (draft,), f"both {draft} (draft-era) and {normal}")
        return
    obj[normal] = obj.pop(draft)
    w.warn(path + (draft,), f"draft-era member {draft}; normalised to {normal}")


def _required(obj: dict[str, Any], key: str, path: tuple[PathPart, ...], w: _Walker,
              read: Any) -> Any:
    if key not in obj:
        w.error(path + (key,), "missing (mandatory)")
        return None
    return read(obj[key], path + (key,))


def _optional(obj: dict[str, Any], key: str, path: tuple[PathPart, ...], read: Any) -> Any:
    if key not in obj or obj[key] is None:
        return None
    return read(obj[key], path + (key,))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value), "a value")


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_quarantine(mud: dict[str, Any], path: tuple[PathPart, ...], w: _Walker,
                      acls: tuple[Acl, ...]) -> tuple[str, ...] | None:
    """draft-richardson-shg-mud-quarantined-access-02: the names in
    ``quaranteed-device-policy``/``enabled-ace-names`` (None: no such container).

    A name that matches no ACE of the file is a warning and enables nothing: the list
    can only narrow what a quarantined device may do, never widen it.
    """
    if QUARANTINE_MEMBER not in mud:
        return None
    where = path + (QUARANTINE_MEMBER,)
    container = w.obj(mud[QUARANTINE_MEMBER], where)
    if container is None:
        return ()
    for key in container:
        if key != "enabled-ace-names":
            w.warn(where + (key,), "not part of quaranteed-device-policy; ignored")
    items = w.lst(container.get("enabled-ace-names", []), where + ("enabled-ace-names",))
    ace_names = {ace.name for acl in acls for ace in acl.aces}
    names: list[str] = []
    for i, item in enumerate(items or []):
        at = where + ("enabled-ace-names", i)
        name = _enabled_ace_name(item, at, w)
        if name is None or name in names:
            continue
        if name not in ace_names:
            w.warn(at, f"no ACE named {_show(name)} in this file: it enables nothing "
                   "while the device is quarantined")
            continue
        names.append(name)
    return tuple(names)


def _enabled_ace_name(item: object, at: tuple[PathPart, ...], w: _Walker) -> str | None:
    if isinstance(item, str):  # a leaf-list spelling of the keyed list
        w.warn(at, 'a bare name; the YANG list entry is {"ace-name": NAME}')
        return w.string(item, at, max_len=64)
    entry = w.obj(item, at)
    if entry is None:
        return None
    if "ace-name" not in entry:
        w.error(at + ("ace-name",), "missing: the list's key")
        return None
    return w.string(entry["ace-name"], at + ("ace-name",), max_len=64)
