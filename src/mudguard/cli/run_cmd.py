"""``mudguard run``: the long-running gateway daemon."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


def _fail(message: str) -> None:
    """Print ``mudguard run: message`` in red on stderr (Rich: loaded only for this)."""
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]mudguard run:[/] {message}")


class LogFormat(StrEnum):
    """How the daemon writes its events."""

    AUTO = "auto"
    TEXT = "text"
    JSON = "json"
    JOURNAL = "journal"


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to the main app."""
    app.command(name="run")(run)


def run(
    config: Annotated[Path, typer.Option(
        "--config", "-c", help="The gateway's TOML configuration.",
        metavar="FILE")] = Path("/etc/mudguard/gateway.toml"),
    log_format: Annotated[LogFormat, typer.Option(
        "--log-format", help="text for people, json for tools (one event per line), "
                             "journal: structured journald entries (MUDGUARD_EVENT=...); "
                             "auto: journal when systemd connected stdout to the journal, "
                             "text otherwise.")
    ] = LogFormat.AUTO,
    log_level: Annotated[str, typer.Option(
        "--log-level", help="Diagnostics on stderr: DEBUG, INFO, WARNING, ERROR.")
    ] = "WARNING",
    print_example_config: Annotated[bool, typer.Option(
        "--print-example-config",
        help="Print a complete commented configuration (every key, its default and "
             "meaning; docs/configuration.md) and exit.")] = False,
) -> None:
    """Run the gateway daemon until SIGTERM or Ctrl-C; SIGHUP re-reads the configuration.

    DHCP (dnsmasq) with MUD URLs, LLDP, MUD fetch and signature checks, nftables
    enforcement, the DNS guard, the traffic watcher with quarantine, WiFi keys (hostapd),
    the owner's portal and the control socket. The rules stay in force after it stops; a
    restart restores every device from the database.
    """
    if print_example_config:
        from mudguard.daemon.config_reference import example_config

        typer.echo(example_config(), nl=False)
        raise typer.Exit(0)
    from mudguard.daemon import ConfigError, EventLog, load_config
    from mudguard.daemon import run as run_daemon
    from mudguard.daemon.events import JournalSink, stdout_is_journal
    from mudguard.errors import MudguardError

    if os.geteuid() != 0:
        _fail("needs root (nftables, DHCP, port 53).")
        raise typer.Exit(2)
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter("use DEBUG, INFO, WARNING or ERROR", param_hint="--log-level")
    if log_format is LogFormat.AUTO:
        log_format = LogFormat.JOURNAL if stdout_is_journal() else LogFormat.TEXT
    events = EventLog(json_lines=log_format is LogFormat.JSON,
                      journal=JournalSink() if log_format is LogFormat.JOURNAL else None)
    try:
        status = run_daemon(load_config(config), log_level=level, config_path=config,
                            events=events)
    except ConfigError as exc:
        _fail(str(exc))
        raise typer.Exit(2) from None
    except MudguardError as exc:
        _fail(str(exc))
        raise typer.Exit(1) from None
    raise typer.Exit(status)
