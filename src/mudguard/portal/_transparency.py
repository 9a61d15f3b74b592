"""The device report's RFC 9472 lines: is the software list published, where are the
known vulnerabilities (pure: built from the validated MUD file, and from what the
background check retrieved, when it ran)."""

from __future__ import annotations

from dataclasses import dataclass

from mudguard.mud import MudFile
from mudguard.mud.transparency import is_link


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """A URI as shown: ``href`` only for schemes safe to link (contact URIs: tel, mailto,
    http, https, the parser allows no other; documents: http and https)."""

    href: str | None
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransparencyView:
    """What the report says about the device's SBOM and vulnerability information."""

    published: bool
    on_device: bool
    sbom_links: tuple[Link, ...] = ()
    sbom_contact: Link | None = None
    vuln_links: tuple[Link, ...] = ()
    vuln_contact: Link | None = None
    retrieved: bool | None = None
    """None: not asked yet; True: the software list was fetched; False: it could not be."""
    retrieval_error: str | None = None


def transparency_view(mud: MudFile, retrieved: bool | None = None,
                      retrieval_error: str | None = None) -> TransparencyView:
    """The report's transparency lines for ``mud`` (a file without the extension
    publishes nothing)."""
    tx = mud.transparency
    if tx is None:
        return TransparencyView(published=False, on_device=False)
    archive = (tx.sbom_archive_list,) if tx.sbom_archive_list else ()
    return TransparencyView(
        published=tx.software_list_published, on_device=tx.local_well_known is not None,
        sbom_links=_documents(tx.sbom_urls + archive),
        sbom_contact=_contact(tx.sbom_contact_uri),
        vuln_links=_documents(tx.vuln_urls), vuln_contact=_contact(tx.vuln_contact_uri),
        retrieved=retrieved if tx.software_list_published else None,
        retrieval_error=retrieval_error)


def _documents(urls: tuple[str, ...]) -> tuple[Link, ...]:
    return tuple(Link(href=url if is_link(url) else None, text=url) for url in urls)


def _contact(uri: str | None) -> Link | None:
    if uri is None:
        return None
    scheme, _, rest = uri.partition(":")
    text = rest if scheme.lower() in ("tel", "mailto") else uri
    return Link(href=uri, text=text)
