"""``mudguard mud …``: check, show, sign and verify MUD files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mudguard.mud import Direction, ParseResult, describe_policy, parse_mud

mud_app = typer.Typer(help="Read, check and sign MUD files (RFC 8520).", no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``mud`` command group to the main app."""
    app.add_typer(mud_app, name="mud")


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def load_source(source: str) -> tuple[bytes, str | None]:
    """Read a MUD file from a path, or fetch it from an https URL.

    Returns the bytes and the URL they came from (None for a file).
    """
    if _is_url(source):
        from mudguard.mud.fetch import fetch_mud_bytes  # adapter: only when a URL is given

        return fetch_mud_bytes(source), source
    path = Path(source)
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {source}")
    return path.read_bytes(), None


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
) -> None:
    """Validate a MUD file: exit 0 if usable (warnings shown), 1 with every error if not."""
    try:
        data, url = load_source(source)
    except typer.BadParameter:
        raise
    except Exception as exc:  # the fetcher's errors carry a clear message
        err_console.print(f"[red]error[/]: {escape(str(exc))}")
        raise typer.Exit(1) from exc
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
) -> None:
    """Summarise a MUD file for people: who made it and what it may talk to."""
    data, url = load_source(source)
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
