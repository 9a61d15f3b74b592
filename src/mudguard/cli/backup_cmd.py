"""``mudguard backup -o FILE`` and ``mudguard restore FILE``: the gateway's state in one
owner-only archive (device database, WiFi key ring, owner account).

The state folder comes from ``--state-dir``, else from the configuration's
``gateway.state_dir`` (``--config``), else ``/var/lib/mudguard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DEFAULT_STATE_DIR = Path("/var/lib/mudguard")
DEFAULT_CONFIG = Path("/etc/mudguard/gateway.toml")

StateDirOpt = Annotated[Path | None, typer.Option(
    "--state-dir", help="The daemon's state folder (default: the configuration's "
    "gateway.state_dir, else /var/lib/mudguard).", metavar="DIR")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="The gateway's TOML configuration (for its state_dir).",
    metavar="FILE")]


def register(app: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to the main app."""
    app.command("backup")(backup)
    app.command("restore")(restore)


def _state_dir(state_dir: Path | None, config: Path | None) -> Path:
    if state_dir is not None:
        return state_dir
    from mudguard.daemon.config import ConfigError, load_config

    path = config or DEFAULT_CONFIG
    if config is None and not path.is_file():
        return DEFAULT_STATE_DIR
    try:
        return load_config(path).state_dir
    except ConfigError as exc:
        err_console.print(f"[bold red]mudguard:[/] {exc}")
        raise typer.Exit(2) from None


def backup(
    output: Annotated[Path, typer.Option("--output", "-o", help="The archive to write "
                                         "(tar.gz, mode 0600).", metavar="FILE")],
    state_dir: StateDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Back up the device database, the WiFi keys and the owner account into one archive.

    Safe while the daemon runs (SQLite's online backup). The archive holds WiFi
    passphrases and the owner's password hash: it is written owner-only (0600).
    """
    from mudguard.daemon.backup import BackupError, make_backup

    try:
        summary = make_backup(_state_dir(state_dir, config), output)
    except BackupError as exc:
        err_console.print(f"[bold red]mudguard backup:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"wrote {summary.path} (schema {summary.schema_version}: "
                  f"{', '.join(summary.files)})")


def restore(
    archive: Annotated[Path, typer.Argument(help="An archive made by mudguard backup.",
                                            metavar="FILE")],
    state_dir: StateDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Restore an archive made by ``mudguard backup`` (stop the daemon first).

    Refuses an archive whose database schema is newer than this mudguard; an older one
    is migrated when the daemon next starts. Each file is replaced atomically.
    """
    from mudguard.daemon.backup import BackupError, restore_backup

    try:
        summary = restore_backup(archive, _state_dir(state_dir, config))
    except BackupError as exc:
        err_console.print(f"[bold red]mudguard restore:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"restored {', '.join(summary.files)} from {archive} "
                  f"(schema {summary.schema_version}, made {summary.created_at})")
