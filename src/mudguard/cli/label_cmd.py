"""``mudguard label …``: make and read RFC 9238 device labels (for manufacturers and owners)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mudguard.discovery.qr import QrError, QrRecord
from mudguard.labels import label_png, label_svg, read_label

label_app = typer.Typer(help="Printable RFC 9238 QR labels with the device's MUD URL.",
                        no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``label`` command group to the main app."""
    app.add_typer(label_app, name="label")


@label_app.command("make")
def make(
    mud_url: Annotated[str, typer.Option("--mud-url", help="The device's https MUD URL.")],
    output: Annotated[Path, typer.Option("-o", "--output",
                                         help="Where to write the label: .svg or .png.")],
    mac: Annotated[str | None, typer.Option("--mac", help="The device's MAC address.")] = None,
    company: Annotated[str | None, typer.Option("--company", help="The maker's name.")] = None,
    product: Annotated[str | None, typer.Option("--product", help="The product name.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="The model number.")] = None,
) -> None:
    """Write a printable label: the RFC 9238 QR code, the device's name and maker, the MUD URL."""
    suffix = output.suffix.lower()
    if suffix not in (".svg", ".png"):
        raise typer.BadParameter("the output file must end in .svg or .png", param_hint="-o")
    try:
        record = QrRecord(mud_url=mud_url, mac=mac, company=company, product=product,
                          model=model)
        if suffix == ".svg":
            output.write_text(label_svg(record), encoding="utf-8")
        else:
            output.write_bytes(label_png(record))
    except QrError as exc:
        err_console.print(f"[red]error[/] ({exc.key}): {escape(exc.reason)}")
        raise typer.Exit(1) from exc
    console.print(f"label written to {escape(str(output))}")


@label_app.command("read")
def read(
    image: Annotated[Path, typer.Argument(help="A photo or image of the label.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Read the RFC 9238 label in a picture and print what it says."""
    if not image.is_file():
        raise typer.BadParameter(f"no such file: {image}")
    try:
        record = read_label(image.read_bytes())
    except QrError as exc:
        err_console.print(f"[red]error[/] ({exc.key}): {escape(exc.reason)}")
        raise typer.Exit(1) from exc
    if as_json:
        console.print_json(json.dumps(record.as_dict()))
        return
    for name, value in (("MUD URL", record.mud_url), ("maker", record.company),
                        ("product", record.product), ("model", record.model),
                        ("MAC", record.mac)):
        if value is not None:
            console.print(f"{name}: {escape(value)}")
