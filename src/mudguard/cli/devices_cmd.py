"""``mudguard devices``, ``mudguard device …``, ``mudguard events``, ``mudguard settings``:
the owner's view of every device and the decisions about them.

Every command works on the device database (``--db``, env ``MUDGUARD_DB``, default
``/var/lib/mudguard/mudguard.db``) through the same services the portal uses.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mudguard.devices import Device, DeviceEvent, HomeDefault, Settings
from mudguard.devices.service import DeviceService, KeyRevoker, ResetInstructions
from mudguard.errors import MudguardError
from mudguard.policy import GrantKind
from mudguard.store import DEFAULT_DB, Store

device_app = typer.Typer(help="One device: show it, grant or revoke access, forget it.",
                         no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DbOpt = Annotated[Path, typer.Option("--db", envvar="MUDGUARD_DB",
                                     help="The device database (SQLite).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
MacArg = Annotated[str, typer.Argument(help="The device's MAC address.")]


def register(app: typer.Typer) -> None:
    """Add ``devices``, ``device``, ``events`` and ``settings`` to the main app."""
    app.command("devices")(devices)
    app.command("events")(events)
    app.command("settings")(settings_cmd)
    app.add_typer(device_app, name="device")


def _fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[red]error[/] ({getattr(exc, 'key', 'error')}): {escape(str(exc))}")
    return typer.Exit(1)


def _service(db: Path, *, keys: KeyRevoker | None = None) -> DeviceService:
    try:
        return DeviceService(store=Store(db), keys=keys)
    except (MudguardError, OSError) as exc:
        raise _fail(exc) from exc


def _print_json(payload: object) -> None:
    # Plain print: Rich would wrap long lines and break the JSON for scripts.
    typer.echo(json.dumps(payload, indent=2, sort_keys=True))


def devices(db: DbOpt = DEFAULT_DB, as_json: JsonOpt = False) -> None:
    """List every device on the home network and what it may do."""
    svc = _service(db)
    found = svc.store.list_devices()
    if as_json:
        _print_json([_device_json(svc, d) for d in found])
        return
    if not found:
        console.print("No devices yet.")
        return
    table = Table("MAC", "name", "state", "addresses", "MUD URL", "why")
    for d in found:
        table.add_row(d.mac, escape(d.name or d.hostname or ""), d.state.value,
                      escape(" ".join(d.ipv4 + d.ipv6)), escape(d.mud_url or "none"),
                      escape("; ".join(d.reasons)))
    console.print(table)


def _device_json(svc: DeviceService, device: Device) -> dict[str, object]:
    payload = device.as_dict()
    payload["grants"] = [g.as_dict() for g in svc.store.list_grants(device.mac)]
    return payload


@device_app.command("show")
def show(mac: MacArg, db: DbOpt = DEFAULT_DB, as_json: JsonOpt = False) -> None:
    """Everything known about one device: state and why, profile, grants, recent events."""
    svc = _service(db)
    try:
        device = svc.device(mac)
    except MudguardError as exc:
        raise _fail(exc) from exc
    if as_json:
        payload = _device_json(svc, device)
        payload["events"] = [e.as_dict() for e in svc.store.list_events(device.mac)]
        _print_json(payload)
        return
    console.print(f"[bold]{escape(device.name or device.hostname or device.mac)}[/]")
    for label, value in (
            ("MAC", device.mac), ("state", device.state.value), ("why", "; ".join(device.reasons)),
            ("addresses", " ".join(device.ipv4 + device.ipv6) or "none"),
            ("hostname", device.hostname), ("MUD URL", device.mud_url),
            ("from", device.mud_source.value if device.mud_source else None),
            ("pending URL", device.pending_mud_url), ("maker", device.manufacturer),
            ("model", device.model), ("signature", device.signature_status.value),
            ("signer", device.signer),
            ("end of support", device.end_of_support.date().isoformat()
             if device.end_of_support else None)):
        if value:
            console.print(f"  {label + ':':16}{escape(str(value))}")
    grants = svc.store.list_grants(device.mac)
    console.print("\n[bold]Grants[/]" if grants else "\nNo grants.")
    for g in grants:
        console.print(f"  #{g.id} {_grant_words(g.as_dict())}")
    history = svc.store.list_events(device.mac)[-10:]
    if history:
        console.print("\n[bold]Recent events[/]")
        _print_events(history)


def _grant_words(g: dict[str, object]) -> str:
    target = {"lan": "the home LAN", "internet": "the Internet"}.get(str(g["kind"]))
    if target is None:
        target = str(g["host"]) + (f" port {g['port']}" if g["port"] else "")
    verb = "may not talk to" if g["kind"] == "deny" else "may talk to"
    until = f" until {g['expires']}" if g["expires"] else ""
    return escape(f"{verb} {target}{until}")


def _parse_expiry(text: str | None, now: datetime) -> datetime | None:
    if text is None:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return now + timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("use 30m, 12h, 7d or an ISO date/time", param_hint="--expires")\
            from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _split_service(text: str) -> tuple[str, int | None]:
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and "]" not in port and host.count(":") == 0:
        return host, int(port)
    if text.startswith("[") and "]:" in text:
        inner, _, port = text[1:].partition("]:")
        return inner, int(port) if port.isdigit() else None
    return text, None


@device_app.command("grant")
def grant(
    mac: MacArg,
    lan: Annotated[bool, typer.Option("--lan", help="Allow the home LAN.")] = False,
    internet: Annotated[bool, typer.Option("--internet", help="Allow the Internet.")] = False,
    service: Annotated[str | None, typer.Option(
        "--service", help="Allow one host or address, HOST[:PORT].")] = None,
    deny: Annotated[str | None, typer.Option("--deny", help="Deny one host or network.")] = None,
    udp: Annotated[bool, typer.Option("--udp", help="The service's port is UDP.")] = False,
    expires: Annotated[str | None, typer.Option(
        "--expires", help="When the grant ends: 30m, 12h, 7d or an ISO date/time.")] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Give the device one more permission (recorded, shown, revocable)."""
    chosen = [k for k, on in ((GrantKind.LAN, lan), (GrantKind.INTERNET, internet),
                              (GrantKind.SERVICE, service is not None),
                              (GrantKind.DENY, deny is not None)) if on]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --lan, --internet, --service, --deny")
    svc = _service(db)
    host, port = _split_service(service or deny or "") if (service or deny) else (None, None)
    try:
        record = svc.grant(mac, chosen[0], host=host, port=port,
                           protocol=(17 if udp else 6) if port else None,
                           expires=_parse_expiry(expires, svc.clock()))
    except MudguardError as exc:
        raise _fail(exc) from exc
    console.print(f"grant #{record.id}: {record.mac} {_grant_words(record.as_dict())}")


@device_app.command("revoke")
def revoke(mac: MacArg, grant_id: Annotated[int, typer.Argument(help="The grant's number.")],
           db: DbOpt = DEFAULT_DB) -> None:
    """Take one grant back."""
    try:
        _service(db).revoke_grant(mac, grant_id)
    except MudguardError as exc:
        raise _fail(exc) from exc
    console.print(f"grant #{grant_id} revoked")


@device_app.command("approve-url")
def approve_url(mac: MacArg, db: DbOpt = DEFAULT_DB) -> None:
    """Accept the new MUD URL the device announced (its profile is then applied)."""
    try:
        device = _service(db).approve_url(mac)
    except MudguardError as exc:
        raise _fail(exc) from exc
    console.print(f"{device.mac}: MUD URL {escape(device.mud_url or '')} approved; "
                  f"state {device.state.value} ({escape('; '.join(device.reasons))})")


@device_app.command("release")
def release(mac: MacArg, db: DbOpt = DEFAULT_DB) -> None:
    """Let a quarantined device out (back to what its profile allows)."""
    try:
        device = _service(db).release(mac)
    except MudguardError as exc:
        raise _fail(exc) from exc
    console.print(f"{device.mac}: {device.state.value}")


def _key_revoker() -> KeyRevoker | None:
    path = Path(os.environ.get("MUDGUARD_KEYS_DB", "/var/lib/mudguard/keys.db"))
    if not path.is_file():
        return None
    from mudguard.devices.wiring import KeyManagerRevoker
    from mudguard.keys.ring import KeyRing
    from mudguard.keys.service import KeyFiles, KeyManager

    psk = Path(os.environ.get("MUDGUARD_PSK_FILE", "/var/lib/mudguard/hostapd.wpa_psk"))
    sae = os.environ.get("MUDGUARD_SAE_FILE")
    ctrl = os.environ.get("MUDGUARD_HOSTAPD_CTRL")
    files = KeyFiles(psk_file=psk, sae_file=Path(sae) if sae else None,
                     ctrl_path=Path(ctrl) if ctrl else None)
    return KeyManagerRevoker(KeyManager(KeyRing(path), files))


@device_app.command("forget")
def forget(
    mac: MacArg,
    transfer: Annotated[bool, typer.Option(
        "--transfer", help="The device goes to a new owner.")] = False,
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
) -> None:
    """End of use: remove its rules and key, delete its data, show how to reset it."""
    try:
        steps = _service(db, keys=_key_revoker()).forget(mac, transfer=transfer)
    except MudguardError as exc:
        raise _fail(exc) from exc
    if as_json:
        _print_json({"mac": steps.mac, "key_revoked": steps.key_revoked,
                     "steps": list(steps.steps), "documentation": steps.documentation})
        return
    _print_reset(steps)


def _print_reset(steps: ResetInstructions) -> None:
    console.print(f"{steps.mac} forgotten: its rules and data are deleted.")
    if steps.key_revoked is None:
        console.print("[yellow]No WiFi key service here: the revocation is recorded as an "
                      "event; remove its key by hand if it has one.[/]")
    console.print("[bold]Now reset it:[/]")
    for number, step in enumerate(steps.steps, 1):
        console.print(f"  {number}. {escape(step)}")
    if steps.documentation:
        console.print(f"  The maker's instructions: {escape(steps.documentation)}")


def events(
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
    device: Annotated[str | None, typer.Option("--device", help="Only this MAC.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 200,
) -> None:
    """What happened: devices joining, profiles, URL changes, grants, quarantines."""
    svc = _service(db)
    try:
        found = svc.store.list_events(device, limit=1_000_000)[-limit:]
    except MudguardError as exc:
        raise _fail(exc) from exc
    if as_json:
        _print_json([e.as_dict() for e in found])
        return
    if not found:
        console.print("No events yet.")
        return
    _print_events(found)


def _print_events(found: list[DeviceEvent]) -> None:
    for e in found:
        details = ", ".join(f"{k}={v}" for k, v in sorted(e.details.items()) if v is not None)
        console.print(f"  {e.at.isoformat(timespec='seconds')} {e.mac or 'home':17} "
                      f"{e.kind.value:16} {escape(details)}")


def settings_cmd(
    db: DbOpt = DEFAULT_DB,
    home_default: Annotated[HomeDefault | None, typer.Option(
        "--home-default", help="For devices without a MUD file: internet (no LAN) or lan.")]
    = None,
    allow_unsigned: Annotated[bool | None, typer.Option(
        "--allow-unsigned/--require-signed", help="Accept MUD files without a signature.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or change the home's settings."""
    svc = _service(db)
    current = svc.store.get_settings()
    if home_default is not None or allow_unsigned is not None:
        current = Settings(
            home_default=home_default or current.home_default,
            allow_unsigned=current.allow_unsigned if allow_unsigned is None else allow_unsigned)
        svc.store.save_settings(current)
    if as_json:
        _print_json({"home_default": current.home_default.value,
                     "allow_unsigned": current.allow_unsigned})
        return
    console.print(f"home default:   {current.home_default.value}")
    console.print(f"allow unsigned: {'yes' if current.allow_unsigned else 'no'}")
