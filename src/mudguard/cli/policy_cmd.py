"""``mudguard policy …``: what a MUD file becomes in the kernel.

``policy compile`` prints the complete nftables batch (table, base chains, dispatch
maps, DNS-name sets and the device's chains) as libnftables JSON, ready for
``nft -j -f -``; without ``--json`` it lists the device's rules chain by chain.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mudguard.devices import MacError, device_mac
from mudguard.mud import parse_mud
from mudguard.policy import (
    DeviceFacts,
    HomeContext,
    LifecycleState,
    compile_home,
    decide,
    device_chain,
)

policy_app = typer.Typer(help="Compile MUD files to nftables rules.", no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DEFAULT_LAN = ("192.0.2.0/24", "2001:db8:1::/64")
DEFAULT_GATEWAY = ("192.0.2.1", "2001:db8:1::1")


def register(app: typer.Typer) -> None:
    """Add the ``policy`` command group to the main app."""
    app.add_typer(policy_app, name="policy")


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(2)


def _addresses(values: list[str], version: int, what: str) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise _fail(f"{what}: not an IP address: {value!r}") from None
        if address.version != version:
            raise _fail(f"{what}: expected an IPv{version} address, got {value!r}")
        why = _not_a_device_address(address)
        if why is not None:
            raise _fail(f"{what}: {value} cannot be a device's own address (it is {why})")
        out.append(str(address))
    return tuple(out)


def _not_a_device_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address
                          ) -> str | None:
    """Why no device can send from ``address`` (None: it can)."""
    for test, name in (("is_unspecified", "unspecified"), ("is_loopback", "loopback"),
                       ("is_multicast", "multicast"), ("is_reserved", "reserved")):
        if getattr(address, test):
            return name
    return None


def _prefixes(values: list[str], what: str) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise _fail(f"{what}: not an IP address or prefix: {value!r}") from None
    return tuple(out)


def build_batch(mud_bytes: bytes, *, mac: str, ipv4: tuple[str, ...], ipv6: tuple[str, ...],
                state: LifecycleState, context: HomeContext) -> list[dict[str, Any]]:
    """The complete libnftables batch for one device with this MUD file in ``context``.

    Raises ``ValueError`` with every error if the MUD file is unusable.
    """
    result = parse_mud(mud_bytes)
    if not result.ok or result.mud is None:
        raise ValueError("; ".join(str(f) for f in result.errors) or "unusable MUD file")
    mud = result.mud
    device = DeviceFacts(mac=mac, ipv4=ipv4, ipv6=ipv6, mud_url=mud.mud_url, state=state)
    policy = decide(device, mud, (), context, now=datetime.now(UTC))
    return compile_home([policy], context)


@policy_app.command("compile")
def compile_cmd(
    mudfile: Annotated[Path, typer.Argument(help="the MUD file (JSON)")],
    mac: Annotated[str, typer.Option("--mac", help="the device's MAC address")],
    ipv4: Annotated[list[str] | None, typer.Option("--ipv4", help="a device IPv4 address")] = None,
    ipv6: Annotated[list[str] | None, typer.Option("--ipv6", help="a device IPv6 address")] = None,
    state: Annotated[LifecycleState, typer.Option(help="lifecycle state")] = (
        LifecycleState.PROFILED),
    lan: Annotated[list[str] | None, typer.Option("--lan", help="a LAN prefix")] = None,
    gateway: Annotated[list[str] | None, typer.Option("--gateway",
                                                      help="a gateway LAN address")] = None,
    lan_interface: Annotated[str, typer.Option(help="the LAN bridge")] = "br-lan",
    as_json: Annotated[bool, typer.Option("--json", help="print the nft JSON batch")] = False,
) -> None:
    """Compile MUDFILE for one device; exit 0, or 2 with a clear error."""
    try:
        mac = device_mac(mac.strip())
    except MacError as exc:
        raise _fail(f"--mac: {exc} (expected a device's MAC like 02:00:00:00:00:01)") from None
    if not mudfile.is_file():
        raise _fail(f"no such file: {mudfile}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", lan_interface):
        raise _fail(f"--lan-interface: not an interface name: {lan_interface!r}")
    context = HomeContext(
        lan_prefixes=_prefixes(lan or list(DEFAULT_LAN), "--lan"),
        gateway_addresses=_prefixes(gateway or list(DEFAULT_GATEWAY), "--gateway"),
        lan_interface=lan_interface,
    )
    try:
        batch = build_batch(mudfile.read_bytes(), mac=mac,
                            ipv4=_addresses(ipv4 or [], 4, "--ipv4"),
                            ipv6=_addresses(ipv6 or [], 6, "--ipv6"), state=state,
                            context=context)
    except ValueError as exc:
        raise _fail(f"{mudfile}: {exc}") from None
    if as_json:
        typer.echo(json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *batch]},
                              indent=1))
        return
    _print_rules(batch, mac)


def _print_rules(batch: list[dict[str, Any]], mac: str) -> None:
    chains = {device_chain(mac, kind): kind for kind in ("out", "in", "gw")}
    table = Table("chain", "rule", "verdict")
    for cmd in batch:
        rule = cmd.get("add", {}).get("rule")
        if not rule or rule["chain"] not in chains:
            continue
        verdict = next((k for e in rule["expr"] for k in e
                        if k in ("accept", "drop", "return", "log")), "")
        table.add_row(chains[rule["chain"]], escape(rule.get("comment", "")), verdict)
    console.print(table)
