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
    listen: Annotated[list[str], typer.Option(help="a LAN address of the gateway (repeat)")],
    upstream: Annotated[str, typer.Option(help="the resolver to forward to")],
    policy: Annotated[Path, typer.Option(help="JSON: config and devices (see dns/server.py)",
                                         exists=True, dir_okay=False, readable=True)],
    port: Annotated[int, typer.Option(help="port to serve on")] = 53,
    upstream_port: Annotated[int, typer.Option(help="the upstream's port")] = 53,
    filler: Annotated[str, typer.Option(help="netlink or libnftables")] = "netlink",
    lifetime: Annotated[float, typer.Option(help="stop after this many seconds")] = 3600.0,
) -> None:
    """Serve DNS on LISTEN addresses in this network namespace; prints ``ready`` once bound."""
    from mudguard.dns.server import main

    argv = [a for address in listen for a in ("--listen", address)]
    argv += ["--upstream", upstream, "--upstream-port", str(upstream_port), "--port", str(port),
             "--policy", str(policy), "--filler", filler, "--lifetime", str(lifetime)]
    main(argv)
