"""``mudguard dns …``: run the DNS guard on its own (the daemon runs it inside ``mudguard run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

dns_app = typer.Typer(help="The DNS guard: answers fill nft sets before devices see them.",
                      no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``dns`` command group to the main app."""
    app.add_typer(dns_app, name="dns")


@dns_app.command("serve")
def serve(
    listen: Annotated[list[str] | None, typer.Option(
        help="a LAN address of the gateway (repeat; with --policy)")] = None,
    upstream: Annotated[str | None, typer.Option(
        help="the resolver to forward to (with --policy)")] = None,
    policy: Annotated[Path | None, typer.Option(
        help="JSON: config and devices (see dns/server.py); fills the chains design's "
             "per-name sets", exists=True, dir_okay=False, readable=True)] = None,
    config: Annotated[Path | None, typer.Option(
        help="the daemon's configuration: its devices (database), addresses, upstream "
             "and [gateway] ruleset, like `mudguard run`", exists=True, dir_okay=False,
        readable=True)] = None,
    port: Annotated[int | None, typer.Option(
        help="port to serve on (default: 53, or the configuration's [dns] port)")] = None,
    upstream_port: Annotated[int, typer.Option(help="the upstream's port")] = 53,
    filler: Annotated[str, typer.Option(help="netlink or libnftables")] = "netlink",
    lifetime: Annotated[float, typer.Option(help="stop after this many seconds")] = 3600.0,
) -> None:
    """Serve DNS in this network namespace; prints ``ready`` once bound.

    With --config: for the home the daemon runs (its database, re-read every few
    seconds), filling what its ``[gateway] ruleset`` needs. With --policy: the devices
    and names of a JSON file, into the chains design's per-name sets."""
    if config is not None:
        if policy is not None or listen or upstream:
            raise typer.BadParameter("--config takes the addresses, upstream and devices "
                                     "from the configuration: no --policy/--listen/--upstream")
        _serve_config(config, port, lifetime)
        return
    if policy is None or not listen or upstream is None:
        raise typer.BadParameter("give --config, or --policy with --listen and --upstream")
    from mudguard.dns.server import main

    argv = [a for address in listen for a in ("--listen", address)]
    argv += ["--upstream", upstream, "--upstream-port", str(upstream_port),
             "--port", str(53 if port is None else port),
             "--policy", str(policy), "--filler", filler, "--lifetime", str(lifetime)]
    main(argv)


def _serve_config(path: Path, port: int | None, lifetime: float) -> None:
    """``serve --config``: the standalone guard of ``daemon/dns_standalone.py``."""
    import asyncio
    import logging
    import sys

    from mudguard.daemon.config import ConfigError, load_config
    from mudguard.daemon.dns_standalone import StandaloneDns
    from mudguard.store import Store, StoreError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        gateway = load_config(path)
        store = Store(gateway.database)
    except (ConfigError, StoreError) as exc:
        typer.echo(f"mudguard dns serve: {exc}", err=True)
        raise typer.Exit(2) from None
    with store:
        guard = StandaloneDns(gateway, store)
        try:
            asyncio.run(guard.serve(port=port, lifetime=lifetime,
                                    ready=lambda: print("ready", flush=True)))
        except (OSError, ValueError) as exc:
            typer.echo(f"mudguard dns serve: {exc}", err=True)
            raise typer.Exit(2) from None
