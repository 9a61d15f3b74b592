"""``mudguard mud …``: check, show, sign and verify MUD files."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mudguard.mud import Direction, ParseResult, describe_policy, parse_mud

if TYPE_CHECKING:
    from mudguard.mud.fetch import FetchConfig

mud_app = typer.Typer(help="Read, check and sign MUD files (RFC 8520).", no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``mud`` command group to the main app."""
    app.add_typer(mud_app, name="mud")


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def load_source(source: str, ca_bundle: Path | None = None) -> tuple[bytes, str | None]:
    """Read a MUD file from a path, or fetch it from an https URL.

    Returns the bytes and the URL they came from (None for a file).
    """
    if _is_url(source):
        from mudguard.mud.fetch import fetch_mud_bytes  # adapter: only when a URL is given

        return fetch_mud_bytes(source, config=_fetch_config(ca_bundle)), source
    path = Path(source)
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {source}")
    return path.read_bytes(), None


def _fetch_config(ca_bundle: Path | None) -> FetchConfig:
    from mudguard.mud.fetch import FetchConfig

    return FetchConfig(ca_bundle=ca_bundle)


def _load_or_exit(source: str, ca_bundle: Path | None) -> tuple[bytes, str | None]:
    from mudguard.errors import MudguardError

    try:
        return load_source(source, ca_bundle)
    except MudguardError as exc:  # FetchError: key, URL and reason, never a traceback
        err_console.print(f"[red]error[/] ({escape(exc.key)}): {escape(str(exc))}")
        raise typer.Exit(1) from None


CaBundle = Annotated[Path | None, typer.Option(
    "--ca-bundle", help="PEM trust anchors for https MUD servers (default: the system CAs).",
    exists=True, dir_okay=False)]


def _print_findings(result: ParseResult, as_json: bool) -> None:
    if as_json:
        payload = {"valid": result.ok, "findings": [f.as_dict() for f in result.findings]}
        console.print_json(json.dumps(payload))
        return
    for finding in result.findings:
        style = "red" if finding.severity.value == "error" else "yellow"
        console.print(f"[{style}]{finding.severity.value}[/]: {escape(str(finding))}")


@mud_app.command("check")
def check(
    source: Annotated[str, typer.Argument(help="A MUD file path or an https:// MUD URL.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ca_bundle: CaBundle = None,
) -> None:
    """Validate a MUD file: exit 0 if usable (warnings shown), 1 with every error if not."""
    data, url = _load_or_exit(source, ca_bundle)
    result = parse_mud(data, expected_url=url)
    _print_findings(result, as_json)
    if not as_json:
        if result.ok:
            console.print(f"[green]valid[/] ({len(result.warnings)} warnings)")
        else:
            console.print(f"[red]invalid[/] ({len(result.errors)} errors)")
    raise typer.Exit(0 if result.ok else 1)


@mud_app.command("show")
def show(
    source: Annotated[str, typer.Argument(help="A MUD file path or an https:// MUD URL.")],
    ca_bundle: CaBundle = None,
) -> None:
    """Summarise a MUD file for people: who made it and what it may talk to."""
    data, url = _load_or_exit(source, ca_bundle)
    result = parse_mud(data, expected_url=url)
    if result.mud is None:
        _print_findings(result, False)
        raise typer.Exit(1)
    mud = result.mud
    console.print(f"[bold]{escape(mud.systeminfo or mud.model_name or mud.mud_url)}[/]")
    console.print(f"  MUD URL:      {escape(mud.mud_url)}")
    console.print(f"  Maker:        {escape(mud.mfg_name or 'not stated')}")
    console.print(f"  Model:        {escape(mud.model_name or 'not stated')}")
    console.print(f"  Firmware:     {escape(mud.firmware_rev or 'not stated')}")
    console.print(f"  Supported:    {'yes' if mud.is_supported else '[red]no: out of support[/]'}")
    console.print(f"  Last update:  {mud.last_update.isoformat()}")
    console.print(f"  Signature:    {escape(mud.mud_signature or 'none announced')}")
    if mud.documentation:
        console.print(f"  Documentation: {escape(mud.documentation)}")
    for extension in mud.extensions:
        state = "understood" if extension.understood else "[yellow]not understood[/]"
        console.print(f"  Extension:    {escape(extension.name)} ({state})")
    if mud.draft_era:
        console.print("  Format:       [yellow]pre-standard (draft-era) file, normalised[/]")
    for acl in mud.acls:  # RFC 9761: observed by the gateway, never enforced in the kernel
        for ace in acl.aces:
            for profile in ace.matches.tls_profiles:
                console.print(f"  TLS profile:  {escape(acl.name)}/{escape(ace.name)}: "
                              f"{escape(profile.summary())} (ClientHellos watched)")
    words = describe_policy(mud)
    for direction, title in ((Direction.FROM_DEVICE, "The device"),
                             (Direction.TO_DEVICE, "The device")):
        lines = words[direction.value]
        heading = "Outgoing" if direction is Direction.FROM_DEVICE else "Incoming"
        console.print(f"\n[bold]{heading}[/]")
        if not lines:
            console.print("  nothing")
        for line in lines:
            console.print(f"  {title} {escape(line)}")
    console.print("\nEverything else is blocked.")
    if result.warnings:
        count = len(result.warnings)
        console.print(f"\n[yellow]{count} warnings[/] (mudguard mud check for details)")


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read the {what} {path}: {exc.strerror}") from None


def _private_key(path: Path) -> object:
    from cryptography.hazmat.primitives import serialization

    pem = _read_file(path, "key")
    # The passphrase never travels in argv: the environment or a hidden prompt.
    secret = os.environ.get("MUDGUARD_KEY_PASSPHRASE")
    for attempt in (None, secret):
        try:
            return serialization.load_pem_private_key(
                pem, password=attempt.encode() if attempt else None)
        except TypeError:
            continue  # encrypted and no (or the wrong kind of) password: try the next
        except ValueError as exc:
            raise typer.BadParameter(f"{path} is not a usable private key: {exc}") from None
    typed = typer.prompt("Key passphrase", hide_input=True)
    try:
        return serialization.load_pem_private_key(pem, password=typed.encode())
    except (TypeError, ValueError):
        raise typer.BadParameter(f"cannot decrypt the key {path}") from None


def _certificates(path: Path, what: str) -> list[object]:
    from cryptography import x509

    try:
        return list(x509.load_pem_x509_certificates(_read_file(path, what)))
    except ValueError:
        raise typer.BadParameter(f"{path}: no PEM certificate in the {what}") from None


@mud_app.command("sign")
def sign(
    source: Annotated[Path, typer.Argument(help="The MUD file to sign (signed byte for byte).",
                                           exists=True, dir_okay=False)],
    key: Annotated[Path, typer.Option("--key", help="PEM private key of the signer "
                                      "(passphrase from MUDGUARD_KEY_PASSPHRASE or a prompt).",
                                      exists=True, dir_okay=False)],
    cert: Annotated[Path, typer.Option("--cert", help="PEM certificate of the signer.",
                                       exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the DER "
                                         "signature (.p7s).", dir_okay=False)],
    chain: Annotated[Path | None, typer.Option("--chain", help="PEM intermediate certificates "
                                               "to embed.", exists=True, dir_okay=False)] = None,
) -> None:
    """Sign a MUD file: a detached CMS signature (DER), as RFC 8520 §13.2 asks."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from mudguard.mud.signature import sign_mud

    data = _read_file(source, "MUD file")
    result = parse_mud(data)
    if not result.ok:
        _print_findings(result, False)
        err_console.print("[red]refusing to sign an invalid MUD file[/]")
        raise typer.Exit(1)
    private = _private_key(key)
    if not isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise typer.BadParameter("only EC and RSA keys can sign MUD files")
    (signer, *_rest) = _certificates(cert, "certificate")
    extra = _certificates(chain, "chain") if chain else []
    assert isinstance(signer, x509.Certificate)
    try:
        signature = sign_mud(data, private, signer,
                             [c for c in extra if isinstance(c, x509.Certificate)])
    except ValueError as exc:
        err_console.print(f"[red]error[/]: cannot sign: {escape(str(exc))}")
        raise typer.Exit(1) from None
    output.write_bytes(signature)
    console.print(f"signed {escape(str(source))} -> {escape(str(output))} "
                  f"({len(signature)} bytes, signer {escape(signer.subject.rfc4514_string())})")


def _parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"--at: expected a date like 2019-01-01 or "
                                 f"2019-01-01T12:00:00Z, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@mud_app.command("verify")
def verify(
    source: Annotated[str, typer.Argument(help="The MUD file (path or https:// URL).")],
    signature: Annotated[str | None, typer.Argument(
        help="The DER signature (path or URL); default: the file's mud-signature URL.")] = None,
    trust: Annotated[list[Path] | None, typer.Option(
        "--trust", help="PEM trust anchors (repeatable).", exists=True, dir_okay=False)] = None,
    at: Annotated[str | None, typer.Option("--at", help="Check as of this date "
                                           "(ISO 8601; default now).")] = None,
    device_cert: Annotated[Path | None, typer.Option(
        "--device-cert", help="The device's 802.1AR certificate (PEM): its MUD signer "
        "extension must name the signer.", exists=True, dir_okay=False)] = None,
    ca_bundle: CaBundle = None,
) -> None:
    """Verify a MUD file's signature: exit 0 if valid, 1 with the reason if not."""
    from cryptography import x509

    from mudguard.mud.signature import verify_mud_signature

    when = _parse_at(at)
    if not trust:
        raise typer.BadParameter("at least one --trust anchor is needed")
    anchors = [c for path in trust for c in _certificates(path, "trust anchors")
               if isinstance(c, x509.Certificate)]
    data, _url = _load_or_exit(source, ca_bundle)
    sig_bytes = _signature_bytes(signature, data, ca_bundle)
    device = None
    if device_cert is not None:
        (first, *_rest) = _certificates(device_cert, "device certificate")
        device = first if isinstance(first, x509.Certificate) else None
    status = verify_mud_signature(data, sig_bytes, trust_anchors=anchors, at=when,
                                  device_cert=device)
    if status.valid:
        console.print(f"[green]valid[/]: signed by {escape(status.signer_subject or '?')}")
        raise typer.Exit(0)
    reason = status.reason.value if status.reason else "invalid"
    console.print(f"[red]invalid[/] ({reason}): {escape(status.detail)}")
    raise typer.Exit(1)


def _signature_bytes(signature: str | None, data: bytes, ca_bundle: Path | None) -> bytes:
    from mudguard.errors import MudguardError

    if signature is None:
        parsed = parse_mud(data)
        url = parsed.mud.mud_signature if parsed.mud is not None else None
        if url is None:
            err_console.print("[red]invalid[/] (unsigned): the file names no mud-signature "
                              "and no signature was given")
            raise typer.Exit(1)
        signature = url
    if not _is_url(signature):
        return _read_file(Path(signature), "signature")
    from mudguard.mud.fetch import fetch_signature_bytes

    try:
        return fetch_signature_bytes(signature, config=_fetch_config(ca_bundle))
    except MudguardError as exc:
        err_console.print(f"[red]error[/] ({escape(exc.key)}): {escape(str(exc))}")
        raise typer.Exit(1) from None
