"""``mudguard doctor``: check this machine for everything the gateway needs; name the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to the main app."""
    app.command("doctor")(doctor)


def doctor(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="The gateway's TOML configuration: check its interfaces, "
        "ports and WiFi too.", metavar="FILE")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check the kernel (nf_tables set and map types, bridge port isolation, flowtables),
    br_netfilter, dnsmasq, hostapd, the clock, privileges and free ports.

    Each failed check says how to fix it. Exit 0 when every required check passes
    (warnings allowed), 1 otherwise, 2 for an unreadable configuration.
    """
    from mudguard.daemon.config import ConfigError, load_config
    from mudguard.daemon.doctor import passed, run_checks

    loaded = None
    if config is not None:
        try:
            loaded = load_config(config)
        except ConfigError as exc:
            err_console.print(f"[bold red]mudguard doctor:[/] {exc}")
            raise typer.Exit(2) from None
    checks = run_checks(loaded)
    ok = passed(checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        table = Table(title="mudguard doctor", show_lines=False)
        for column in ("check", "status", "found", "fix"):
            table.add_column(column, overflow="fold")
        for check in checks:
            style = _STYLE[check.status.value]
            table.add_row(escape(check.name), f"[{style}]{check.status.value}[/]",
                          escape(check.detail), escape(check.fix))
        console.print(table)
        console.print("[green]ready to run the gateway[/]" if ok else
                      "[bold red]not ready: fix the failed checks above[/]")
    raise typer.Exit(0 if ok else 1)
