"""``mudguard dhcp …``: check the dnsmasq → mudguard path without the daemon.

``mudguard dhcp listen`` binds the hook socket and prints every lease event the
hook sends (one JSON object per line), so an installer can see that dnsmasq runs
``mudguard-dhcp-hook`` and that devices announce MUD URLs. It stops after
``--count`` events or ``--timeout`` seconds without one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mudguard.discovery.dhcp import DEFAULT_SOCKET, SOCKET_ENV, DhcpHookListener
from mudguard.discovery.sighting import Sighting

dhcp_app = typer.Typer(help="DHCP discovery (dnsmasq's --dhcp-script hook).",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``dhcp`` command group to the main app."""
    app.add_typer(dhcp_app, name="dhcp")


@dhcp_app.command("listen")
def listen(
    socket_path: Annotated[Path, typer.Option(
        "--socket", envvar=SOCKET_ENV, help="The hook's unix socket.")] = DEFAULT_SOCKET,
    count: Annotated[int, typer.Option("--count", min=1, max=100_000)] = 10,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, max=3600)] = 60.0,
) -> None:
    """Print the lease events dnsmasq's hook sends (MAC, address, source, MUD URL,
    hostname, vendor class, parameter request list)."""
    def show(sighting: Sighting) -> None:
        typer.echo(json.dumps({"mac": sighting.mac, "ip": sighting.ip,
                               "source": sighting.source.value, "mud_url": sighting.mud_url,
                               "hostname": sighting.hostname,
                               "vendor_class": sighting.vendor_class, "prl": sighting.prl}))
        sys.stdout.flush()

    try:
        listener = DhcpHookListener(socket_path)
    except OSError as exc:
        typer.echo(f"error: cannot bind {socket_path}: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc
    with listener:
        got = listener.serve(show, max_messages=count, timeout=timeout)
    if got == 0:
        typer.echo(f"no lease event in {timeout:g} s (is dnsmasq started with "
                   f"--dhcp-script={Path(sys.executable).with_name('mudguard-dhcp-hook')} "
                   f"and {SOCKET_ENV}={socket_path}?)", err=True)
        raise typer.Exit(1)
