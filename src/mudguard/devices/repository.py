"""Secondary MUD repositories: where to look when a device announces no MUD URL.

A repository is an index of entries keyed by manufacturer + model, or by the MAC's
OUI (first three octets). An entry gives a MUD URL or a MUD file, and optionally an
end-of-support date and ``supported: false`` (how an ISP or a community repository
tells the home that a device is past its life).

Index format (``index.json``, the same for a local folder and an HTTPS source)::

    {"entries": [
      {"manufacturer": "Example Inc", "model": "Plug 1", "oui": "02:00:5e",
       "mud_url": "https://mud.example.com/plug1.json",    # or
       "mud_file": "plug1.json",                           # folder-relative (folder only)
       "end_of_support": "2027-01-01", "supported": true,
       "signature_file": "plug1.p7s"}                      # optional (folder only)
    ]}

``mudguard repo build`` writes this format with both ``mud_url`` (for HTTPS) and
``mud_file`` + ``signature_file`` (for a folder), plus keys readers ignore
(``format``, ``sha256``, ``identify``: see ``mudguard.repo.core``). Of the
identification features, ``identify.hostname_pattern`` (globs like ``Plug-*``) is
matched here: with the entry's OUI it picks one model among a maker's.

Parsing is pure (``parse_index``); ``FolderRepository`` reads files under its
folder only (no path leaves it) and ``HttpsRepository`` gets its index through the
injected fetcher (the MUD fetcher: https only, size-limited, TLS verified).
Everything in an index is remote input: a bad entry is skipped with a finding,
never trusted.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mudguard.devices._model import normalise_mac
from mudguard.devices.lifecycle import MudUrlError, check_mud_url
from mudguard.errors import RemoteInputError

MAX_INDEX_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 50_000
_OUI = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){2}$")


class RepositoryError(RemoteInputError):
    """A repository index that cannot be used at all."""

    key = "bad_repository"


@dataclass(frozen=True, slots=True, kw_only=True)
class RepositoryEntry:
    """One device kind a repository knows."""

    manufacturer: str | None = None
    model: str | None = None
    oui: str | None = None
    mud_url: str | None = None
    mud_file: str | None = None
    signature_file: str | None = None
    hostname_patterns: tuple[str, ...] = ()  # identify.hostname_pattern (with an oui)
    end_of_support: datetime | None = None
    supported: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RepositoryMatch:
    """A repository's answer for one device."""

    repository: str  # where it came from (folder path or index URL)
    entry: RepositoryEntry
    mud_data: bytes | None = None  # the MUD file, when the entry carried one
    signature: bytes | None = None  # its detached signature, when the entry named one


def _fold(text: str | None) -> str | None:
    return " ".join(text.lower().split()) if text else None


def _parse_entry(raw: Any) -> RepositoryEntry:
    if not isinstance(raw, dict):
        raise RepositoryError("entry is not an object")
    strings = {k: raw.get(k) for k in ("manufacturer", "model", "oui", "mud_url", "mud_file",
                                        "signature_file", "end_of_support")}
    for key, value in strings.items():
        if value is not None and (not isinstance(value, str) or len(value) > 512):
            raise RepositoryError(f"{key} must be text of at most 512 characters")
    oui = strings["oui"]
    if oui is not None:
        oui = normalise_mac(oui + ":00:00:00")[:8] if len(oui) <= 9 else None
        if oui is None or not _OUI.match(oui):
            raise RepositoryError("oui must be three octets, e.g. 02:00:5e")
    if strings["mud_url"] is not None:
        try:
            check_mud_url(strings["mud_url"])
        except MudUrlError as exc:
            raise RepositoryError(str(exc)) from None
    eos = None
    if strings["end_of_support"] is not None:
        try:
            eos = datetime.fromisoformat(strings["end_of_support"])
        except ValueError:
            raise RepositoryError("end_of_support must be an ISO date") from None
        eos = eos if eos.tzinfo else eos.replace(tzinfo=UTC)
    supported = raw.get("supported", True)
    if not isinstance(supported, bool):
        raise RepositoryError("supported must be true or false")
    identify = raw.get("identify")
    patterns = identify.get("hostname_pattern") if isinstance(identify, dict) else None
    hostname_patterns = tuple(p for p in patterns[:8] if isinstance(p, str) and len(p) <= 64
                              and "*" in p) if isinstance(patterns, list) else ()
    if not (strings["manufacturer"] and strings["model"]) and oui is None:
        raise RepositoryError("an entry needs manufacturer and model, or an oui")
    return RepositoryEntry(manufacturer=strings["manufacturer"], model=strings["model"],
                           oui=oui, mud_url=strings["mud_url"], mud_file=strings["mud_file"],
                           signature_file=strings["signature_file"] if strings["mud_file"]
                           else None, hostname_patterns=hostname_patterns if oui else (),
                           end_of_support=eos, supported=supported)


def parse_index(data: bytes) -> tuple[list[RepositoryEntry], list[str]]:
    """Parse an ``index.json``: the usable entries and one finding per skipped entry.

    Raises ``RepositoryError`` if the whole index is unusable.
    """
    if len(data) > MAX_INDEX_BYTES:
        raise RepositoryError(f"index is {len(data)} bytes; the limit is {MAX_INDEX_BYTES}")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"index is not JSON: {exc}") from None
    raw_entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(raw_entries, list):
        raise RepositoryError("index has no 'entries' list")
    entries: list[RepositoryEntry] = []
    findings: list[str] = []
    for number, raw in enumerate(raw_entries[:MAX_ENTRIES]):
        try:
            entries.append(_parse_entry(raw))
        except (RemoteInputError, ValueError) as exc:
            findings.append(f"entries[{number}]: {exc}")
    return entries, findings


def match_entry(entries: Iterable[RepositoryEntry], *, mac: str, manufacturer: str | None,
                model: str | None, hostname: str | None = None) -> RepositoryEntry | None:
    """The best entry for a device: manufacturer + model first, then the MAC's OUI with
    a hostname pattern the device's DHCP hostname matches (``Plug-*``: the identification
    feature that tells a maker's models apart), then the OUI alone."""
    mfg, mdl = _fold(manufacturer), _fold(model)
    oui = normalise_mac(mac)[:8]
    by_oui = by_feature = None
    name = hostname.lower() if hostname else None
    for entry in entries:
        if mfg and mdl and _fold(entry.manufacturer) == mfg and _fold(entry.model) == mdl:
            return entry
        if by_feature is None and name and entry.oui == oui and any(
                fnmatch.fnmatchcase(name, p.lower()) for p in entry.hostname_patterns):
            by_feature = entry
        if by_oui is None and entry.oui == oui and not entry.model:
            by_oui = entry
    return by_feature or by_oui


class Repository(Protocol):
    """Anything that can answer "which MUD file for this device?"."""

    name: str

    def lookup(self, *, mac: str, manufacturer: str | None,
               model: str | None, hostname: str | None = None) -> RepositoryMatch | None:
        """The repository's entry for the device, or None."""
        ...

    def known_devices(self) -> list[RepositoryEntry]:
        """Every usable entry (the portal's "check before buying" lists them)."""
        ...


class FolderRepository:
    """A local folder with an ``index.json`` and MUD files beside it."""

    def __init__(self, folder: Path | str) -> None:
        """Use ``folder``; it is read on every lookup so edits apply without a restart."""
        self.folder = Path(folder).resolve()
        self.name = str(self.folder)

    def _read(self, relative: str) -> bytes:
        path = (self.folder / relative).resolve()
        if not path.is_relative_to(self.folder) or not path.is_file():
            raise RepositoryError(f"{relative!r} is not a file inside the repository folder")
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise RepositoryError(f"{relative!r} is too large")
        return path.read_bytes()

    def known_devices(self) -> list[RepositoryEntry]:
        """Every usable entry of the folder's index."""
        return parse_index(self._read("index.json"))[0]

    def lookup(self, *, mac: str, manufacturer: str | None,
               model: str | None, hostname: str | None = None) -> RepositoryMatch | None:
        """The folder's entry for the device (with its MUD file's bytes), or None."""
        entries, _findings = parse_index(self._read("index.json"))
        entry = match_entry(entries, mac=mac, manufacturer=manufacturer, model=model,
                            hostname=hostname)
        if entry is None:
            return None
        data = self._read(entry.mud_file) if entry.mud_file else None
        signature = self._read(entry.signature_file) if data and entry.signature_file else None
        return RepositoryMatch(repository=self.name, entry=entry, mud_data=data,
                               signature=signature)


class HttpsRepository:
    """A remote repository: ``index.json`` at an https URL, entries give MUD URLs.

    The index is kept for ``max_age`` seconds (``clock`` is monotonic seconds), so
    onboarding many devices does not fetch it once per device.
    """

    def __init__(self, index_url: str, fetch: Callable[[str], bytes], *,
                 max_age: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``fetch`` is the MUD fetcher (https only, TLS verified, size-limited)."""
        self.index_url = check_mud_url(index_url)
        self.name = index_url
        self._fetch = fetch
        self._max_age = max_age
        self._clock = clock
        self._cached: tuple[float, list[RepositoryEntry]] | None = None

    def _entries(self) -> list[RepositoryEntry]:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._max_age:
            return self._cached[1]
        entries, _findings = parse_index(self._fetch(self.index_url))
        self._cached = (now, entries)
        return entries

    def known_devices(self) -> list[RepositoryEntry]:
        """Every usable entry of the remote index (kept ``max_age`` seconds)."""
        return list(self._entries())

    def lookup(self, *, mac: str, manufacturer: str | None,
               model: str | None, hostname: str | None = None) -> RepositoryMatch | None:
        """The remote entry for the device, or None. ``mud_file`` entries are ignored
        (a remote index must point at MUD URLs, which the device then keeps)."""
        usable = [e for e in self._entries()
                  if e.mud_url or not e.supported or e.end_of_support]
        entry = match_entry(usable, mac=mac, manufacturer=manufacturer, model=model,
                            hostname=hostname)
        return None if entry is None else RepositoryMatch(repository=self.name, entry=entry)


def load_repositories(specs: Sequence[str], fetch: Callable[[str], bytes] | None
                      ) -> list[Repository]:
    """Repositories from configuration strings, in order: an ``https://`` URL of an
    ``index.json`` (needs ``fetch``), or a local folder. Raises ``RepositoryError``
    for a spec that is neither."""
    found: list[Repository] = []
    for spec in specs:
        if spec.startswith("https://"):
            if fetch is None:
                raise RepositoryError(f"{spec}: an HTTPS repository needs the MUD fetcher")
            found.append(HttpsRepository(spec, fetch))
        elif "://" in spec:
            raise RepositoryError(f"{spec[:80]}: only https:// or a folder path")
        elif Path(spec).is_dir():
            found.append(FolderRepository(spec))
        else:
            raise RepositoryError(f"{spec[:80]}: no such folder")
    return found


def lookup_all(repositories: Sequence[Repository], *, mac: str, manufacturer: str | None,
               model: str | None, errors: list[str] | None = None,
               hostname: str | None = None) -> RepositoryMatch | None:
    """Ask each repository in order; the first match wins. A failing repository is
    skipped (its error appended to ``errors``), never fatal."""
    for repository in repositories:
        try:
            match = repository.lookup(mac=mac, manufacturer=manufacturer, model=model,
                                      hostname=hostname)
        except Exception as exc:  # one bad source must not stop onboarding
            if errors is not None:
                errors.append(f"{repository.name}: {exc}")
            continue
        if match is not None:
            return match
    return None
