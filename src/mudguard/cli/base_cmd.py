"""``mudguard base``: the static base ruleset that closes the LAN before the daemon runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

err_console = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``base`` command to the main app."""
    app.command(name="base")(base)


def base(
    config: Annotated[Path, typer.Option(
        "--config", "-c", help="The gateway's TOML configuration (LAN interface, device "
        "tables).", metavar="FILE")] = Path("/etc/mudguard/gateway.toml"),
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the ruleset to FILE (atomically) instead of stdout.",
        metavar="FILE", dir_okay=False)] = None,
    load: Annotated[bool, typer.Option(
        "--load", help="Also install it in the kernel now (root), unless the kernel "
        "already holds this very base.")] = False,
) -> None:
    """Print the base ruleset an early-boot unit loads with `nft -j -f FILE`.

    The base is mudguard's tables with no device in them: nothing is forwarded from
    or to the LAN, and LAN devices reach only the gateway's DHCP and neighbour
    discovery. Loaded before the network comes up (packaging/systemd/
    mudguard-base.service), it keeps the LAN closed until the daemon runs, and
    closed if the daemon never starts. The daemon takes it over without flushing
    it and adds each device's policy as it goes (a device waits a few seconds at
    boot, then works); it rewrites <state_dir>/base.json at each start. See
    docs/boot.md.
    """
    from mudguard.daemon.config import ConfigError, load_config
    from mudguard.enforce.boot import base_ruleset_text, write_base_ruleset

    try:
        gateway_config = load_config(config)
        context = gateway_config.home_context()
    except ConfigError as exc:
        err_console.print(f"[bold red]mudguard base:[/] {exc}")
        raise typer.Exit(2) from None
    if output is None:
        typer.echo(base_ruleset_text(context, gateway_config.ruleset), nl=False)
    else:
        try:
            write_base_ruleset(output, context, gateway_config.ruleset)
        except OSError as exc:
            err_console.print(f"[bold red]mudguard base:[/] cannot write {output}: {exc}")
            raise typer.Exit(1) from None
    if load:
        _load(context, gateway_config.ruleset)


def _load(context: object, ruleset: str = "chains") -> None:
    """Install the base now, unless the kernel already holds it (then nothing changes)."""
    from mudguard.enforce import Enforcer, Nft, NftError
    from mudguard.policy import HomeContext

    assert isinstance(context, HomeContext)
    if os.geteuid() != 0:
        err_console.print("[bold red]mudguard base:[/] --load needs root (nftables).")
        raise typer.Exit(2)
    try:
        if ruleset == "data":
            from mudguard.enforce.data_gateway import DataGatewayEnforcer

            installed = DataGatewayEnforcer(Nft(), context).close_lan()
        else:
            installed = Enforcer(Nft(), context).close_lan()
    except NftError as exc:
        err_console.print(f"[bold red]mudguard base:[/] {exc}")
        raise typer.Exit(1) from None
    err_console.print("base installed: the LAN is closed" if installed
                      else "the kernel already holds this base: left as it is")
