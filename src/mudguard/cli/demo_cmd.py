"""``mudguard demo``: the virtual home, with the real gateway running in it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

err_console = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the main app."""
    app.command(name="demo")(demo)


def demo(
    headless: Annotated[bool, typer.Option(
        "--headless", help="No live view: print a line per expected outcome; stop as soon "
                           "as every one has happened (exit 0), or at --duration (exit 1 "
                           "if any is missing).")] = False,
    duration: Annotated[float | None, typer.Option(
        "--duration", min=5, max=7 * 24 * 3600, metavar="SECONDS",
        help="The longest the home runs once built (at most a week). Headless (default "
             "90): it stops "
             "earlier, as soon as every expected outcome has happened. Live view (default: "
             "until Ctrl-C): it keeps running even when every outcome is seen early.")
    ] = None,
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535,
        help="Host loopback port that leads to the portal (0: any free port).")] = 8480,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Headless: also print every event as it happens.")] = False,
    prefix: Annotated[str, typer.Option(
        "--prefix", hidden=True, help="Name prefix of the namespaces (tests use their own).")
    ] = "mghd",
    quarantine_within: Annotated[float, typer.Option(
        "--quarantine-within", min=1, help="Seconds the camera may attack before it must "
                                           "be quarantined.")] = 15.0,
    keep_running: Annotated[bool, typer.Option(
        "--keep-running", help="Headless: keep the home running until --duration even once "
                               "every expected outcome has happened (to look at the portal "
                               "of a home that has run for a while).")] = False,
    owner_password_file: Annotated[Path | None, typer.Option(
        "--owner-password-file", metavar="FILE", exists=True, dir_okay=False,
        help="Create the portal's owner account 'owner' with the password on this file's "
             "first line (at least 10 characters), instead of the first visit's set-up.")
    ] = None,
) -> None:
    """Run the real gateway on a virtual home: five devices and a fake Internet.

    Builds network namespaces (gateway, devices, Internet) and runs mudguard in them: DHCP
    with MUD URLs, signed MUD files, nftables, the DNS guard, quarantine, WiFi keys and the
    portal. Ctrl-C removes everything it built.
    """
    from mudguard.demo.runner import Demo, DemoError, DemoOptions

    password = None
    if owner_password_file is not None:
        lines = owner_password_file.read_text(encoding="utf-8").splitlines()
        password = lines[0] if lines else ""
    options = DemoOptions(headless=headless, duration=duration, host_port=port, prefix=prefix,
                          quarantine_within=quarantine_within, verbose=verbose,
                          keep_running=keep_running, owner_password=password,
                          echo=lambda line: typer.echo(line))
    try:
        status = Demo(options).run()
    except DemoError as exc:
        err_console.print(f"[bold red]mudguard demo:[/] {exc}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("stopped; the virtual home has been removed.")
        raise typer.Exit(130) from None
    raise typer.Exit(status)
