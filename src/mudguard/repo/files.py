"""The file side of ``mudguard repo``: read sources, sign, write the repository atomically,
and read a repository back (a folder, or over HTTPS with the MUD fetcher) to check it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mudguard.devices import MudSource, SignatureStatus
from mudguard.mud import MAX_MUD_BYTES
from mudguard.mud.signature import sign_mud, verify_mud_signature
from mudguard.repo.core import (
    CheckReport,
    Profile,
    Published,
    SourceError,
    check_base_url,
    check_repository,
    export_profile,
    index_document,
    publish,
    read_source,
)
from mudguard.store import Store

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What ``build_repository`` wrote."""

    directory: Path
    entries: int
    changes: tuple[str, ...]


def source_files(sources: Sequence[Path]) -> list[Path]:
    """The JSON files the sources name: files as given, a folder's ``*.json`` sorted."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files.extend(sorted(p for p in source.glob("*.json") if p.is_file()))
        elif source.is_file():
            files.append(source)
        else:
            raise SourceError(f"{source}: no such file or folder")
    if not files:
        raise SourceError("no profile among the sources")
    return files


def read_profiles(sources: Sequence[Path]) -> list[Profile]:
    """Every source read as a ``Profile``; ``SourceError`` names the first bad one."""
    profiles = []
    for path in source_files(sources):
        if path.stat().st_size > MAX_MUD_BYTES * 2:
            raise SourceError(f"{path}: larger than {MAX_MUD_BYTES * 2} bytes")
        try:
            document = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SourceError(f"{path}: not JSON: {exc}") from None
        profiles.append(read_source(str(path), document))
    return profiles


def build_repository(sources: Sequence[Path], output: Path, *, base_url: str,
                     key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
                     cert: x509.Certificate, chain: Sequence[x509.Certificate] = (),
                     generalise: bool = False, home: Sequence[Network] = (),
                     now: datetime) -> BuildResult:
    """Build the repository into ``output``, all or nothing.

    Everything is written into a temporary folder beside ``output`` and renamed
    into place at the end; an existing ``output`` is replaced only then. A refused
    source (``SourceError``, ``PersonalDataError``) leaves ``output`` untouched.
    """
    base = check_base_url(base_url)
    published: list[Published] = []
    changes: list[str] = []
    for profile in read_profiles(sources):
        item, changed = publish(profile, base_url=base, generalise=generalise, home=home,
                                taken=[p.name for p in published])
        published.append(item)
        changes.extend(f"{profile.origin}: {c}" for c in changed)
    index = index_document([p.entry for p in published], now)
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / "mud").mkdir()
        for item in published:
            (staging / "mud" / f"{item.name}.json").write_bytes(item.data)
            (staging / "mud" / f"{item.name}.p7s").write_bytes(
                sign_mud(item.data, key, cert, chain))
        (staging / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False)
                                            + "\n")
        os.chmod(staging, 0o755)  # noqa: S103 - public files: a web server publishes them
        _replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildResult(output, len(published), tuple(changes))


def _replace(staging: Path, output: Path) -> None:
    if not output.exists():
        staging.rename(output)
        return
    if not (output / "index.json").is_file():
        raise SourceError(f"{output} exists and is not a repository: not replacing it")
    old = output.with_name(f".{output.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    output.rename(old)  # two renames: a reader sees the old or the new, never a mix
    staging.rename(output)
    shutil.rmtree(old, ignore_errors=True)


def signature_checker(anchors: Sequence[x509.Certificate], at: datetime
                      ) -> Callable[[bytes, bytes], str | None]:
    """A ``VerifySignature`` against the trust ``anchors`` at time ``at``."""
    def check(data: bytes, signature: bytes) -> str | None:
        status = verify_mud_signature(data, signature, trust_anchors=anchors, at=at)
        return None if status.valid else f"signature {status.reason}: {status.detail}"
    return check


def folder_reader(folder: Path) -> Callable[[str], bytes]:
    """Read files inside ``folder`` only (no path leaves it)."""
    root = folder.resolve()

    def read(relative: str) -> bytes:
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise OSError(f"{relative!r} is not a file inside {root}")
        return path.read_bytes()
    return read


def url_reader(index_url: str, fetch_mud: Callable[[str], bytes],
               fetch_signature: Callable[[str], bytes]) -> Callable[[str], bytes]:
    """Read files beside an https ``index_url`` with the MUD fetcher (``.p7s`` with the
    signature fetcher, which accepts the signature media types)."""
    def read(relative: str) -> bytes:
        url = urljoin(index_url, relative)
        return fetch_signature(url) if relative.endswith(".p7s") else fetch_mud(url)
    return read


def check_folder(folder: Path, anchors: Sequence[x509.Certificate], at: datetime
                 ) -> CheckReport:
    """``check_repository`` on a local folder."""
    return check_repository(folder_reader(folder), signature_checker(anchors, at))


def check_url(index_url: str, anchors: Sequence[x509.Certificate], at: datetime, *,
              fetch_mud: Callable[[str], bytes], fetch_signature: Callable[[str], bytes]
              ) -> CheckReport:
    """``check_repository`` on a published repository (``index_url`` ends in index.json)."""
    return check_repository(url_reader(index_url, fetch_mud, fetch_signature),
                            signature_checker(anchors, at), index_url=index_url)


def export_from_store(store: Store, mac: str, *, consent: bool,
                      identify: Mapping[str, Sequence[str]], generalise: bool = False,
                      home: Sequence[Network] = ()) -> dict[str, Any]:
    """``export_profile`` of a device's owner-approved learned profile in the store.
    Raises ``SourceError`` if the device has none."""
    device = store.get_device(mac)
    if device is None:
        raise SourceError(f"no device {mac}")
    if device.mud_source is not MudSource.LEARNED or device.mud_url is None \
            or device.signature_status is not SignatureStatus.OWNER_APPROVED:
        raise SourceError(f"{device.mac} has no learned profile its owner approved "
                          "(approve one first: device apply-profile / device learn --lock)")
    cached = store.get_mud(device.mud_url)
    if cached is None:
        raise SourceError(f"{device.mac}: its learned profile is not in the database")
    return export_profile(cached.data, consent=consent, manufacturer=device.manufacturer,
                          model=device.model, mac=device.mac, identify=identify,
                          generalise=generalise, home=home)
