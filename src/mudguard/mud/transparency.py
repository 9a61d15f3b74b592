"""RFC 9472 transparency: where a device's SBOM and vulnerability information are.

Theory of operation: the ``ietf-mud-transparency`` module (RFC 9472 §4, vendored in
``yang/``) augments ``/mud:mud`` with one container, JSON member
``ietf-mud-transparency:transparency``. ``parse_transparency`` validates it against
that module's rules (two YANG choices, a keyed list, an identityref) and returns the
typed ``Transparency`` with a ``Finding`` per problem, never raising. Beyond YANG,
every URI must be one mudguard can show safely: the RFC's prose limits the contact
URIs to tel, http, https and mailto (an error otherwise), and SBOM / vulnerability
URLs of another scheme are kept with a warning but never fetched nor linked.

Pure: no I/O. Fetching is ``mudguard.mud.fetch.fetch_transparency_bytes`` (cloud) and
``fetch_local_sbom`` (the device itself, ``/.well-known/sbom``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar
from urllib.parse import urlsplit

from mudguard.mud._model import Finding, Findings, PathPart, Severity

TRANSPARENCY_KEY = "ietf-mud-transparency:transparency"
MODULE = "ietf-mud-transparency"
WELL_KNOWN_PATH = "/.well-known/sbom"
"""RFC 9472 registers the ``sbom`` well-known URI: where a device serves its own SBOM."""

CONTACT_SCHEMES = frozenset({"tel", "http", "https", "mailto"})
LINK_SCHEMES = frozenset({"http", "https"})
MAX_SBOMS = 64
MAX_VULN_URLS = 64
_MAX_URI = 2048

# The two YANG choices: which members belong to which case.
_SBOM_CASES = {"sboms": "cloud", "sbom-local-well-known": "local-well-known",
               "sbom-contact-uri": "sbom-contact-info"}
_VULN_CASES = {"vuln-url": "cloud", "vuln-contact-uri": "vuln-contact-info"}
_MEMBERS = frozenset(_SBOM_CASES) | frozenset(_VULN_CASES) | {"sbom-archive-list"}


class LocalScheme(StrEnum):
    """The identities derived from ``mudtx:local-type``: how to ask the device itself."""

    HTTP = "http"
    HTTPS = "https"
    COAP = "coap"
    COAPS = "coaps"


@dataclass(frozen=True, slots=True, kw_only=True)
class SbomEntry:
    """One entry of the ``sboms`` list: an SBOM for one software version."""

    version_info: str
    url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Transparency:
    """A validated ``transparency`` container (RFC 9472)."""

    sboms: tuple[SbomEntry, ...] = ()
    local_well_known: LocalScheme | None = None
    sbom_contact_uri: str | None = None
    sbom_archive_list: str | None = None
    vuln_urls: tuple[str, ...] = ()
    vuln_contact_uri: str | None = None

    @property
    def software_list_published(self) -> bool:
        """True when the manufacturer says where the SBOM itself can be read."""
        return bool(self.local_well_known is not None
                    or any(entry.url for entry in self.sboms) or self.sbom_archive_list)

    @property
    def sbom_urls(self) -> tuple[str, ...]:
        """Every SBOM URL the ``sboms`` list names, in order."""
        return tuple(entry.url for entry in self.sboms if entry.url)


def is_link(url: str) -> bool:
    """True for an http or https URL: the only ones fetched or shown as links."""
    return url.split(":", 1)[0].lower() in LINK_SCHEMES


def parse_transparency(value: object, path: tuple[PathPart, ...]
                       ) -> tuple[Transparency | None, tuple[Finding, ...]]:
    """Validate a ``transparency`` container; the model (None if it has errors) and
    every finding, each with its JSON path under ``path``."""
    found = Findings()
    if not isinstance(value, dict):
        found.error(path, f"expected an object, got {_kind(value)}")
        return None, tuple(found.items)
    for key in value:
        if key in _MEMBERS:
            continue
        if ":" in key and not key.startswith(MODULE + ":"):
            found.warn(path + (key,), "member of a module mudguard does not implement; ignored")
        else:
            found.error(path + (key,), "unknown member of the transparency container "
                        "(RFC 9472)")
    _one_case(value, _SBOM_CASES, "sbom-retrieval-method", path, found)
    _one_case(value, _VULN_CASES, "vuln-retrieval-method", path, found)
    result = Transparency(
        sboms=_sboms(value.get("sboms"), path + ("sboms",), found) if "sboms" in value else (),
        local_well_known=_member(value, "sbom-local-well-known", path, found, _local_scheme),
        sbom_contact_uri=_member(value, "sbom-contact-uri", path, found, _contact_uri),
        sbom_archive_list=_member(value, "sbom-archive-list", path, found, _link),
        vuln_urls=_vuln_urls(value.get("vuln-url"), path + ("vuln-url",), found)
        if "vuln-url" in value else (),
        vuln_contact_uri=_member(value, "vuln-contact-uri", path, found, _contact_uri),
    )
    errors = any(f.severity is Severity.ERROR for f in found.items)
    return (None if errors else result), tuple(found.items)


_T = TypeVar("_T")


def _member(obj: dict[str, object], key: str, path: tuple[PathPart, ...], found: Findings,
            read: Callable[[object, tuple[PathPart, ...], Findings], _T | None]) -> _T | None:
    if key not in obj:
        return None
    return read(obj[key], path + (key,), found)


def _one_case(obj: dict[str, object], cases: dict[str, str], choice: str,
              path: tuple[PathPart, ...], found: Findings) -> None:
    present = sorted({cases[key] for key in obj if key in cases})
    if len(present) > 1:
        # YANG choice: the members of only one case may be present.
        found.error(path, f"choice {choice} takes one case, got {', '.join(present)}")


def _sboms(value: object, path: tuple[PathPart, ...], found: Findings
           ) -> tuple[SbomEntry, ...]:
    if not isinstance(value, list):
        found.error(path, f"expected a list, got {_kind(value)}")
        return ()
    if not value:
        found.error(path, "an empty list is not valid JSON for a YANG list (RFC 7951 §5.4)")
    if len(value) > MAX_SBOMS:
        found.error(path, f"{len(value)} entries; mudguard takes at most {MAX_SBOMS}")
        return ()
    entries: list[SbomEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        entry = _sbom_entry(item, path + (i,), found)
        if entry is None:
            continue
        if entry.version_info in seen:
            found.error(path + (i, "version-info"),
                        f"duplicate key {entry.version_info!r} in the sboms list")
        seen.add(entry.version_info)
        entries.append(entry)
    return tuple(entries)


def _sbom_entry(value: object, path: tuple[PathPart, ...], found: Findings
                ) -> SbomEntry | None:
    if not isinstance(value, dict):
        found.error(path, f"expected an object, got {_kind(value)}")
        return None
    for key in value:
        if key not in ("version-info", "sbom-url"):
            found.error(path + (key,), "unknown member of an sboms entry")
    if "version-info" not in value:
        found.error(path + ("version-info",), "missing: the key of the sboms list")
        return None
    version = _string(value["version-info"], path + ("version-info",), found)
    url = _member(value, "sbom-url", path, found, _link)
    return None if version is None else SbomEntry(version_info=version, url=url)


def _vuln_urls(value: object, path: tuple[PathPart, ...], found: Findings) -> tuple[str, ...]:
    if not isinstance(value, list):
        found.error(path, f"expected a list (YANG leaf-list), got {_kind(value)}")
        return ()
    if len(value) > MAX_VULN_URLS:
        found.error(path, f"{len(value)} URLs; mudguard takes at most {MAX_VULN_URLS}")
        return ()
    urls: list[str] = []
    for i, item in enumerate(value):
        url = _link(item, path + (i,), found)
        if url in urls:
            # RFC 7950 §7.7: the values of a configuration leaf-list are unique.
            found.error(path + (i,), f"duplicate value {url!r} in a leaf-list")
        elif url is not None:
            urls.append(url)
    return tuple(urls)


def _local_scheme(value: object, path: tuple[PathPart, ...], found: Findings
                  ) -> LocalScheme | None:
    text = _string(value, path, found)
    if text is None:
        return None
    # RFC 7951 §6.8: an identityref is "module:identity"; the prefix may be left out
    # only because the identity is defined in the leaf's own module.
    name = text.removeprefix(MODULE + ":")
    try:
        return LocalScheme(name)
    except ValueError:
        found.error(path, f"expected one of http, https, coap, coaps (identities of "
                    f"mudtx:local-type), got {text!r}")
        return None


def _contact_uri(value: object, path: tuple[PathPart, ...], found: Findings) -> str | None:
    return _uri(value, path, found, CONTACT_SCHEMES,
                "RFC 9472: a contact URI must be tel, http, https or mailto")


def _link(value: object, path: tuple[PathPart, ...], found: Findings) -> str | None:
    return _uri(value, path, found, LINK_SCHEMES,
                "mudguard fetches and links only http and https URLs", strict=False)


def _uri(value: object, path: tuple[PathPart, ...], found: Findings,
         schemes: frozenset[str], why: str, *, strict: bool = True) -> str | None:
    text = _string(value, path, found, max_len=_MAX_URI)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not (parts.netloc or parts.path):
        found.error(path, f"expected a URI (inet:uri), got {text!r}")
        return None
    if parts.scheme.lower() not in schemes:
        if strict:
            found.error(path, f"scheme {parts.scheme!r} refused ({why})")
            return None
        # A valid inet:uri: kept, but shown as text only, never fetched nor linked.
        found.warn(path, f"scheme {parts.scheme!r}: shown as text, never fetched ({why})")
        return text
    if parts.scheme.lower() in LINK_SCHEMES and not parts.hostname:
        found.error(path, f"no host in {text!r}")
        return None
    return text


def _string(value: object, path: tuple[PathPart, ...], found: Findings, *,
            max_len: int = 1024) -> str | None:
    if not isinstance(value, str):
        found.error(path, f"expected a string, got {_kind(value)}")
        return None
    if not 0 < len(value) <= max_len or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        found.error(path, f"expected 1..{max_len} printable characters")
        return None
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
