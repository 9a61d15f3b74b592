"""``mudguard demo``: the virtual home, with the real gateway running in it."""

from __future__ import annotations

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
        "--duration", min=5, metavar="SECONDS",
        help="The longest the home runs once built. Headless (default 90): it stops "
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
) -> None:
    """Run the real gateway on a virtual home: five devices and a fake Internet.

    Builds network namespaces (gateway, devices, Internet) and runs mudguard in them: DHCP
    with MUD URLs, signed MUD files, nftables, the DNS guard, quarantine, WiFi keys and the
    portal. Ctrl-C removes everything it built.
    """
    from mudguard.demo.runner import Demo, DemoError, DemoOptions

    options = DemoOptions(headless=headless, duration=duration, host_port=port, prefix=prefix,
                          quarantine_within=quarantine_within, verbose=verbose,
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
