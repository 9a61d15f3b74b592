"""``mudguard repo build|check``: a static secondary MUD repository (an ISP's, a community's).

``build`` turns approved profiles (MUD files, folders of them, or homes' consented
exports from ``mudguard device export-profile``) into ``index.json`` + ``mud/*.json``
+ detached signatures, ready for any HTTPS server or CDN; the gateway reads it
through ``[mud] repositories``. ``check`` verifies a folder or a published URL.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mudguard.cli.mud_cmd import CaBundle, _certificates, _fetch_config, _parse_at, _private_key

repo_app = typer.Typer(help="Build and check a secondary MUD repository (static files).",
                       no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``repo`` command group to the main app."""
    app.add_typer(repo_app, name="repo")


@repo_app.command("build")
def build(
    sources: Annotated[list[Path], typer.Argument(
        help="Approved profiles: MUD files, folders of them, or export-profile files.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The repository folder "
                                         "(replaced atomically).", file_okay=False)],
    key: Annotated[Path, typer.Option("--key", help="PEM private key that signs the files.",
                                      exists=True, dir_okay=False)],
    cert: Annotated[Path, typer.Option("--cert", help="PEM certificate of the signer.",
                                       exists=True, dir_okay=False)],
    base_url: Annotated[str, typer.Option(
        "--base-url", help="The https URL the folder will be published at (each file's "
        "mud-url must be where it is fetched, RFC 8520 §3.3).")],
    chain: Annotated[Path | None, typer.Option("--chain", help="PEM intermediate "
                                               "certificates to embed.", exists=True,
                                               dir_okay=False)] = None,
    generalise: Annotated[bool, typer.Option(
        "--generalise", help="Replace home addresses and home names in the profiles by "
        "local-networks instead of refusing them.")] = False,
    home_prefix: Annotated[list[str] | None, typer.Option(
        "--home-prefix", help="Another prefix that is a home's own (repeatable).")] = None,
) -> None:
    """Build a signed static repository from approved profiles: nothing personal goes in."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from mudguard.errors import MudguardError
    from mudguard.repo.files import build_repository

    try:
        home = [ipaddress.ip_network(p, strict=False) for p in home_prefix or []]
    except ValueError as exc:
        raise typer.BadParameter(f"--home-prefix: {exc}") from None
    private = _private_key(key)
    if not isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise typer.BadParameter("only EC and RSA keys can sign MUD files")
    (signer, *_rest) = _certificates(cert, "certificate")
    extra = [c for c in (_certificates(chain, "chain") if chain else [])
             if isinstance(c, x509.Certificate)]
    assert isinstance(signer, x509.Certificate)
    try:
        result = build_repository(sources, output, base_url=base_url, key=private, cert=signer,
                                  chain=extra, generalise=generalise, home=home,
                                  now=datetime.now(UTC))
    except (MudguardError, OSError) as exc:
        err_console.print(f"[red]refused[/]: {escape(str(exc))}")
        err_console.print("nothing was written")
        raise typer.Exit(1) from None
    for change in result.changes:
        console.print(f"  changed: {escape(change)}")
    console.print(f"built {escape(str(result.directory))}: {result.entries} profiles, signed by "
                  f"{escape(signer.subject.rfc4514_string())}")


@repo_app.command("check")
def check(
    source: Annotated[str, typer.Argument(help="The repository: a folder, or the https URL "
                                          "of its index.json (or of its folder).")],
    ca: Annotated[list[Path], typer.Option(
        "--ca", help="PEM trust anchors the signatures must chain to (repeatable).",
        exists=True, dir_okay=False)],
    at: Annotated[str | None, typer.Option("--at", help="Check as of this date "
                                           "(ISO 8601; default now).")] = None,
    ca_bundle: CaBundle = None,
) -> None:
    """Check a repository: index schema, every MUD file valid, every signature valid,
    nothing personal. Exit 0 if usable, 1 with every error."""
    from cryptography import x509

    from mudguard.repo.files import check_folder, check_url

    anchors = [c for path in ca for c in _certificates(path, "trust anchors")
               if isinstance(c, x509.Certificate)]
    when = _parse_at(at)
    if source.startswith(("https://", "http://")):
        from mudguard.mud.fetch import fetch_mud_bytes, fetch_signature_bytes

        config = _fetch_config(ca_bundle)
        index_url = source if source.endswith(".json") else source.rstrip("/") + "/index.json"
        report = check_url(index_url, anchors, when,
                           fetch_mud=lambda url: fetch_mud_bytes(url, config=config),
                           fetch_signature=lambda url: fetch_signature_bytes(url, config=config))
    else:
        report = check_folder(Path(source), anchors, when)
    for error in report.errors:
        console.print(f"[red]error[/]: {escape(error)}")
    if report.ok:
        console.print(f"[green]ok[/]: {report.entries} entries, every file valid and signed")
        raise typer.Exit(0)
    console.print(f"[red]not usable[/]: {len(report.errors)} errors")
    raise typer.Exit(1)
