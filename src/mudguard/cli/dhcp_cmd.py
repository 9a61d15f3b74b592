"""``mudguard dhcp …``: check the dnsmasq → mudguard path without the daemon.

``mudguard dhcp listen`` binds the hook socket and prints, for every lease event the
hook sends, what the daemon's intake makes of it (one JSON object per line): the
same checks in the same code (``discovery.dhcp.hook_verdict``: the message, the MAC,
the address, the MUD URL), so an installer sees that dnsmasq runs
``mudguard-dhcp-hook``, that devices announce MUD URLs, and which events the daemon
would refuse and why. It stops after ``--count`` events or ``--timeout`` seconds
without one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mudguard.discovery.dhcp import DEFAULT_SOCKET, SOCKET_ENV, DhcpHookListener

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
    """Print what the daemon would do with each lease event dnsmasq's hook sends.

    One JSON object per event: "verdict" is "accepted" (with the normalised mac, ip,
    source, mud_url, hostname, vendor_class, prl; "ignored_ip" for an address that cannot identify a
    device) or "refused" (with "error" and "reason": an all-zero, broadcast or
    multicast MAC, a malformed message, a MUD URL RFC 8520 forbids). Whether an
    accepted MAC is a new device depends on the daemon's store and is not shown.
    """
    def show(verdict: dict[str, Any]) -> None:
        typer.echo(json.dumps(verdict))
        sys.stdout.flush()

    try:
        listener = DhcpHookListener(socket_path)
    except OSError as exc:
        typer.echo(f"error: cannot bind {socket_path}: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc
    with listener:
        got = listener.verdicts(show, max_messages=count, timeout=timeout)
    if got == 0:
        typer.echo(f"no lease event in {timeout:g} s (is dnsmasq started with "
                   f"--dhcp-script={Path(sys.executable).with_name('mudguard-dhcp-hook')} "
                   f"and {SOCKET_ENV}={socket_path}?)", err=True)
        raise typer.Exit(1)
