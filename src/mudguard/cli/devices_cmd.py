"""``mudguard devices``, ``mudguard device …``, ``mudguard events``, ``mudguard settings``:
the owner's view of every device and the decisions about them.

Every command is one owner request (``mudguard.devices.requests``). When the gateway
daemon runs, its control socket (``control.sock`` beside the database) carries the
request, so the daemon applies the change to the kernel at once. Without a daemon
the request runs here on the database alone (``--db``, env ``MUDGUARD_DB``, default
``/var/lib/mudguard/mudguard.db``); the daemon enforces it when it starts, since it
restores every device from the database.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mudguard.devices import HomeDefault
from mudguard.devices.requests import handle_request
from mudguard.devices.service import DeviceService, KeyRevoker
from mudguard.errors import MudguardError
from mudguard.mud import MAX_MUD_BYTES
from mudguard.store import DEFAULT_DB, Store

device_app = typer.Typer(help="One device: show it, grant or revoke access, forget it.",
                         no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DbOpt = Annotated[Path, typer.Option("--db", envvar="MUDGUARD_DB",
                                     help="The device database (SQLite).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
MacArg = Annotated[str, typer.Argument(help="The device's MAC address.")]
_READ_ONLY = {"devices", "device", "events"}
CONTROL_TIMEOUT = 30.0


def register(app: typer.Typer) -> None:
    """Add ``devices``, ``device``, ``events`` and ``settings`` to the main app."""
    app.command("devices")(devices)
    app.command("events")(events)
    app.command("settings")(settings_cmd)
    app.add_typer(device_app, name="device")


class _Failed(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _control_socket(db: Path) -> Path | None:
    path = db.parent / "control.sock"
    try:
        return path if stat.S_ISSOCK(path.stat().st_mode) else None
    except OSError:
        return None


def _via_daemon(path: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """The daemon's reply, or None if nothing listens on the socket (a stale file)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONTROL_TIMEOUT)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n") and len(data) < 16 * 1024 * 1024:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise _Failed(str(reply.get("error", "error")), str(reply.get("message", "")))
    return dict(reply)


def _key_revoker() -> KeyRevoker | None:
    path = Path(os.environ.get("MUDGUARD_KEYS_DB", "/var/lib/mudguard/keys.db"))
    if not path.is_file():
        return None
    from mudguard.devices.wiring import KeyManagerRevoker
    from mudguard.keys.ring import KeyRing
    from mudguard.keys.service import KeyFiles, KeyManager

    # The same files, written the same way (PMK lines with MUDGUARD_SSID), as `keys`.
    return KeyManagerRevoker(KeyManager(KeyRing(path), KeyFiles.from_env()))


def _call(db: Path, request: dict[str, Any], *, quiet: bool = False) -> dict[str, Any]:
    """Run one request through the daemon if it runs, else on the database here."""
    try:
        control = _control_socket(db)
        if control is not None:
            reply = _via_daemon(control, request)
            if reply is not None:
                return reply
        keys = _key_revoker() if request.get("op") == "forget" else None
        with Store(_store_path(db, request)) as store:
            result = handle_request(DeviceService(store=store, keys=keys), request)
    except _Failed as exc:
        raise _fail(exc.key, str(exc)) from exc
    except MudguardError as exc:
        raise _fail(exc.key, str(exc)) from exc
    except OSError as exc:
        raise _fail("io", str(exc)) from exc
    if request.get("op") not in _READ_ONLY and not quiet:
        err_console.print("[yellow]note[/]: the gateway daemon is not running: recorded in "
                          "the database; enforced when it starts.")
    return result


def _store_path(db: Path, request: dict[str, Any]) -> Path | str:
    """The database to answer ``request`` on: a read of a missing one creates nothing.

    A listing against a path with no database answers from an empty in-memory store
    (no devices, "device not found"), so a mistyped ``--db`` leaves no empty file behind.
    """
    if request.get("op") in _READ_ONLY and not db.exists():
        return ":memory:"
    return db


def _fail(key: str, message: str) -> typer.Exit:
    err_console.print(f"[red]error[/] ({key}): {escape(message)}")
    return typer.Exit(1)


def _print_json(payload: object) -> None:
    # Plain print: Rich would wrap long lines and break the JSON for scripts.
    typer.echo(json.dumps(payload, indent=2, sort_keys=True))


def devices(db: DbOpt = DEFAULT_DB, as_json: JsonOpt = False) -> None:
    """List every device on the home network and what it may do."""
    found = _call(db, {"op": "devices"})["devices"]
    if as_json:
        _print_json(found)
        return
    if not found:
        console.print("No devices yet.")
        return
    table = Table("MAC", "name", "state", "addresses", "MUD URL", "why")
    for d in found:
        table.add_row(d["mac"], escape(d["name"] or d["hostname"] or ""), d["state"],
                      escape(" ".join(d["ipv4"] + d["ipv6"])), escape(d["mud_url"] or "none"),
                      escape("; ".join(d["reasons"])))
    console.print(table)


@device_app.command("show")
def show(mac: MacArg, db: DbOpt = DEFAULT_DB, as_json: JsonOpt = False) -> None:
    """Everything known about one device: state and why, profile, grants, recent events."""
    d = _call(db, {"op": "device", "mac": mac})["device"]
    if as_json:
        _print_json(d)
        return
    console.print(f"[bold]{escape(d['name'] or d['hostname'] or d['mac'])}[/]")
    for label, key in (("MAC", "mac"), ("state", "state"), ("why", "reasons"),
                       ("addresses", "ipv4"), ("hostname", "hostname"), ("MUD URL", "mud_url"),
                       ("from", "mud_source"), ("pending URL", "pending_mud_url"),
                       ("maker", "manufacturer"), ("model", "model"), ("kind", "kind"),
                       ("signature", "signature_status"), ("signer", "signer"),
                       ("end of support", "end_of_support")):
        value = d.get(key)
        if key == "ipv4":
            value = " ".join(d["ipv4"] + d["ipv6"]) or "none"
        elif key == "reasons":
            value = "; ".join(value)
        if value:
            console.print(f"  {label + ':':16}{escape(str(value))}")
    if d.get("identification"):
        _print_identification(d["identification"])
    console.print("\n[bold]Grants[/]" if d["grants"] else "\nNo grants.")
    for g in d["grants"]:
        console.print(f"  #{g['id']} {_grant_words(g)}")
    if d["events"]:
        console.print("\n[bold]Recent events[/]")
        _print_events(d["events"][-10:])


def _print_identification(found: dict[str, Any]) -> None:
    """How the gateway recognised the device: its decision and the clues behind it."""
    console.print("\n[bold]Identified from its traffic[/]")
    for label, value, share in (("maker", found["manufacturer"],
                                 found["manufacturer_confidence"]),
                                ("kind", found["kind"], found["kind_confidence"])):
        console.print(f"  {label + ':':16}{escape(str(value or 'unknown'))} "
                      f"({share:.0%} sure)")
    for clue in found["evidence"]:
        supports = ", ".join(f"{k} {v}" for k, v in clue["supports"].items())
        console.print(f"  - {escape(clue['label'])} \"{escape(clue['value'])}\": "
                      f"{escape(supports)}")


def _grant_words(g: dict[str, Any]) -> str:
    target = {"lan": "the home LAN", "internet": "the Internet",
              "pause": "the Internet (paused)"}.get(str(g["kind"]))
    if target is None:
        target = str(g["host"]) + (f" port {g['port']}" if g["port"] else "")
    verb = "may not talk to" if g["kind"] in ("deny", "pause") else "may talk to"
    until = f" until {g['expires']}" if g["expires"] else ""
    daily = f" daily {g['schedule']}" if g.get("schedule") else ""
    return escape(f"{verb} {target}{daily}{until}")


def _parse_expiry(text: str | None) -> str | None:
    if text is None:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        when = datetime.now(UTC) + timedelta(seconds=int(text[:-1]) * units[text[-1]])
        return when.isoformat()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("use 30m, 12h, 7d or an ISO date/time",
                                 param_hint="--expires") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()


def _split_service(text: str) -> tuple[str, int | None]:
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        inner, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return inner, int(port) if port.isdigit() else None
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return text, None


@device_app.command("grant")
def grant(
    mac: MacArg,
    lan: Annotated[bool, typer.Option("--lan", help="Allow the home LAN.")] = False,
    internet: Annotated[bool, typer.Option("--internet", help="Allow the Internet.")] = False,
    service: Annotated[str | None, typer.Option(
        "--service", help="Allow one host or address, HOST[:PORT].")] = None,
    deny: Annotated[str | None, typer.Option("--deny", help="Deny one host or network.")] = None,
    pause: Annotated[bool, typer.Option(
        "--pause", help="Pause its Internet (the home LAN still works).")] = False,
    schedule: Annotated[str | None, typer.Option(
        "--schedule", help="Only daily in HH:MM-HH:MM [ZONE] (bedtime: 21:30-07:00); "
        "the owner's time zone (mudguard settings --time-zone) when none.")] = None,
    udp: Annotated[bool, typer.Option("--udp", help="The service's port is UDP.")] = False,
    expires: Annotated[str | None, typer.Option(
        "--expires", help="When the grant ends: 30m, 12h, 7d or an ISO date/time.")] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Give the device one more permission (recorded, shown, revocable)."""
    chosen = [k for k, on in (("lan", lan), ("internet", internet),
                              ("service", service is not None), ("deny", deny is not None),
                              ("pause", pause))
              if on]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --lan, --internet, --service, --deny, "
                                 "--pause")
    request: dict[str, Any] = {"op": "grant", "mac": mac, "kind": chosen[0],
                               "expires": _parse_expiry(expires),
                               "schedule": schedule}
    if service or deny:
        host, port = _split_service(service or deny or "")
        request |= {"host": host, "port": port, "protocol": (17 if udp else 6) if port else None}
    record = _call(db, request)["grant"]
    console.print(f"grant #{record['id']}: {record['mac']} {_grant_words(record)}")


def _from_label(label: Path | None, qr_text: str | None) -> dict[str, Any]:
    from mudguard.discovery.qr import QrError, parse_qr

    try:
        if label is not None:
            from mudguard.labels import read_label

            record = read_label(label.read_bytes())
        else:
            record = parse_qr(qr_text or "")
    except (QrError, OSError) as exc:
        raise _fail(getattr(exc, "key", "io"), str(exc)) from exc
    return {"mud_url": record.mud_url, "source": "qr", "manufacturer": record.company,
            "model": record.model, "mac": record.mac}


def _from_cert(cert: Path) -> dict[str, Any]:
    from mudguard.discovery.cert import CertificateError, parse_device_certificate

    try:
        info = parse_device_certificate(cert.read_bytes())
    except (CertificateError, OSError) as exc:
        raise _fail(getattr(exc, "key", "io"), str(exc)) from exc
    if info.mud_url is None:
        raise _fail("bad_certificate", "the certificate carries no MUD URL extension")
    return {"mud_url": info.mud_url, "source": "cert"}


@device_app.command("add")
def add(
    mac: Annotated[str | None, typer.Argument(
        help="The device's MAC (optional when its label carries one).")] = None,
    mud_url: Annotated[str | None, typer.Option("--mud-url", help="Its https MUD URL.")] = None,
    label: Annotated[Path | None, typer.Option(
        "--label", help="A photo or scan of its RFC 9238 QR label.")] = None,
    qr_text: Annotated[str | None, typer.Option(
        "--qr-text", help="The text a QR reader got from its label.")] = None,
    cert: Annotated[Path | None, typer.Option(
        "--cert", help="Its IEEE 802.1AR certificate (PEM or DER).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Your name for it.")] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Add a device by hand, from its QR label or from its certificate."""
    given = [x for x in (mud_url, label, qr_text, cert) if x is not None]
    if len(given) > 1:
        raise typer.BadParameter("give at most one of --mud-url, --label, --qr-text, --cert")
    found: dict[str, Any] = {"mud_url": mud_url, "source": "manual"}
    if label is not None or qr_text is not None:
        found = _from_label(label, qr_text)
    elif cert is not None:
        found = _from_cert(cert)
    device_mac = mac or found.pop("mac", None)
    found.pop("mac", None)
    if not device_mac:
        raise typer.BadParameter("give the device's MAC (its label carries none)")
    request = {"op": "add", "mac": device_mac, "name": name,
               **{k: v for k, v in found.items() if v is not None}}
    d = _call(db, request)["device"]
    console.print(f"{d['mac']}: {d['state']} ({escape('; '.join(d['reasons']))})")


@device_app.command("rename")
def rename(mac: MacArg, name: Annotated[str, typer.Argument(help="The new name.")],
           db: DbOpt = DEFAULT_DB) -> None:
    """Give the device a name of your own (empty to clear it)."""
    d = _call(db, {"op": "rename", "mac": mac, "name": name})["device"]
    console.print(f"{d['mac']}: {escape(d['name'] or '(no name)')}")


@device_app.command("revoke")
def revoke(mac: MacArg, grant_id: Annotated[int, typer.Argument(help="The grant's number.")],
           db: DbOpt = DEFAULT_DB) -> None:
    """Take one grant back."""
    _call(db, {"op": "revoke", "mac": mac, "grant_id": grant_id})
    console.print(f"grant #{grant_id} revoked")


@device_app.command("approve-url")
def approve_url(mac: MacArg, db: DbOpt = DEFAULT_DB) -> None:
    """Accept the new MUD URL the device announced (its profile is then applied)."""
    d = _call(db, {"op": "approve-url", "mac": mac})["device"]
    console.print(f"{d['mac']}: MUD URL {escape(d['mud_url'] or '')} approved; "
                  f"state {d['state']} ({escape('; '.join(d['reasons']))})")


@device_app.command("apply-profile")
def apply_profile(mac: MacArg,
                  mud_file: Annotated[Path, typer.Argument(
                      help="The proposed MUD file (from `profile learn` or `learn-live`).")],
                  db: DbOpt = DEFAULT_DB, as_json: JsonOpt = False) -> None:
    """Approve a profile learned from the device's traffic: it becomes the device's
    enforced profile (a MUD URL the device announces later still needs approve-url)."""
    try:
        with mud_file.open("rb") as handle:
            raw = handle.read(MAX_MUD_BYTES + 1)  # bounded: the parser refuses more anyway
        text = raw.decode("utf-8")
        # Compact: the control socket takes one short line; the compact bytes are the
        # profile that is enforced and hashed.
        text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    except OSError as exc:
        raise _fail("io", f"cannot read {mud_file}: {exc.strerror}") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail("bad_profile", f"{mud_file} is not a JSON MUD file: {exc}; "
                                   "nothing changed") from exc
    from mudguard.daemon.control import MAX_REQUEST

    request = {"op": "apply-profile", "mac": mac, "mud": text}
    size = len(json.dumps(request).encode()) + 1
    if size > MAX_REQUEST and _control_socket(db) is not None:
        raise _fail("too_large", f"the proposal is {size} bytes as a request; the running "
                                 f"daemon takes at most {MAX_REQUEST}: nothing changed")
    d = _call(db, request)["device"]
    if as_json:
        _print_json({"device": d})
        return
    console.print(f"{d['mac']}: learned profile {escape(d['mud_url'] or '')} applied "
                  f"({d['signature_status']}); state {d['state']} "
                  f"({escape('; '.join(d['reasons']))})")


@device_app.command("learn")
def learn(mac: MacArg,
          end_now: Annotated[bool, typer.Option("--end-now", help="End its learning period "
                                                "now and propose the learned profile.")] = False,
          lock: Annotated[bool, typer.Option("--lock", help="Lock it to the learned profile "
                                             "(ends learning first if needed).")] = False,
          keep_default: Annotated[bool, typer.Option(
              "--keep-default", help="Keep the home default; forget what was learned.")] = False,
          start: Annotated[bool, typer.Option("--start", help="Learn a device on the home "
                                              "default, or one locked to a learned profile "
                                              "(set aside meanwhile), again.")] = False,
          show_proposal: Annotated[bool, typer.Option(
              "--show-proposal", help="Print the proposed MUD file.")] = False,
          db: DbOpt = DEFAULT_DB, as_json: JsonOpt = False) -> None:
    """Learn, then lock: a device without a MUD file is learned, then its owner locks it
    to what it did (or keeps the home default). Without an action: show its learning."""
    chosen = [name for name, on in (("end-now", end_now), ("lock", lock),
                                    ("keep-default", keep_default), ("start", start)) if on]
    if len(chosen) > 1:
        raise typer.BadParameter("choose one of --end-now, --lock, --keep-default, --start")
    reply = _call(db, {"op": "learn", "mac": mac, "action": chosen[0] if chosen else "show"},
                  quiet=not chosen)
    if as_json:
        _print_json(reply)
        return
    d, record = reply["device"], reply["learning"]
    console.print(f"{d['mac']}: {d['state']} ({escape('; '.join(d['reasons']))})")
    if record is not None:
        console.print(f"  learning {record['started'][:16]} → {record['until'][:16]}: "
                      f"{record['flows']} distinct flows"
                      + (f" ({record['dropped']} more not kept)" if record["dropped"] else ""))
        if record["proposal"] is not None:
            _print_proposal(record["proposal"], show_proposal)


def _print_proposal(text: str, whole: bool) -> None:
    from mudguard.mud import describe_policy, parse_mud

    mud = parse_mud(text.encode()).mud
    if whole or mud is None:
        typer.echo(text)
        return
    console.print("  proposed profile (lock it with --lock):")
    for lines in describe_policy(mud).values():
        for line in lines:
            console.print(f"    {escape(line)}")


@device_app.command("export-profile")
def export_profile_cmd(
        mac: MacArg,
        output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the "
                                             "export (JSON), for `mudguard repo build`.",
                                             dir_okay=False)],
        consent: Annotated[bool, typer.Option(
            "--consent", help="I agree to share this device's approved profile with a "
            "repository (without it nothing is written).")] = False,
        feature: Annotated[list[str] | None, typer.Option(
            "--feature", help="An identification feature, FIELD=VALUE (e.g. "
            "vendor_class=udhcp 1.30.1, mdns_service=_hap._tcp); repeatable.")] = None,
        generalise: Annotated[bool, typer.Option(
            "--generalise", help="Replace home addresses and names in the profile by "
            "local-networks instead of refusing.")] = False,
        db: DbOpt = DEFAULT_DB) -> None:
    """Export the device's owner-approved learned profile for a community or ISP
    repository: maker, model, OUI and features only (never its MAC or home addresses)."""
    from mudguard.repo.files import export_from_store

    features: dict[str, list[str]] = {}
    for item in feature or []:
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise typer.BadParameter(f"--feature {item!r}: expected FIELD=VALUE")
        features.setdefault(name.strip(), []).append(value.strip())
    try:
        with Store(db) as store:
            exported = export_from_store(store, mac, consent=consent, identify=features,
                                         generalise=generalise)
        output.write_text(json.dumps(exported, indent=2, ensure_ascii=False) + "\n")
    except MudguardError as exc:
        raise _fail(exc.key, f"{exc}; nothing written") from exc
    except OSError as exc:
        raise _fail("io", str(exc)) from exc
    for change in exported.get("changes", []):
        console.print(f"  changed: {escape(change)}")
    console.print(f"exported {escape(str(output))}: {escape(exported.get('manufacturer') or '?')} "
                  f"{escape(exported.get('model') or '')} (OUI {exported['oui']}); give it to "
                  "the repository's maintainer")


@device_app.command("release")
def release(mac: MacArg, db: DbOpt = DEFAULT_DB) -> None:
    """Let a quarantined device out (back to what its profile allows)."""
    d = _call(db, {"op": "release", "mac": mac})["device"]
    console.print(f"{d['mac']}: {d['state']}")


@device_app.command("quarantine-exception")
def quarantine_exception(
        mac: MacArg,
        action: Annotated[str, typer.Argument(help="add or remove")],
        ace_name: Annotated[str, typer.Argument(help="The name of an ACE of its MUD file.")],
        db: DbOpt = DEFAULT_DB) -> None:
    """Keep one ACE of the device's MUD file open while it is quarantined (e.g. its
    firmware update server), besides those its MUD file names; or remove it."""
    if action not in ("add", "remove"):
        raise _fail("bad_request", "the action must be add or remove")
    d = _call(db, {"op": "quarantine-exception", "mac": mac, "action": action,
                   "ace": ace_name})["device"]
    kept = ", ".join(d["quarantine_exceptions"]) or "none"
    console.print(f"{d['mac']}: quarantine exceptions: {escape(kept)}")


@device_app.command("trust")
def trust(mac: MacArg, db: DbOpt = DEFAULT_DB) -> None:
    """Mark one of your own computers or phones: not restricted."""
    d = _call(db, {"op": "trust", "mac": mac})["device"]
    console.print(f"{d['mac']}: {d['state']}")


@device_app.command("untrust")
def untrust(mac: MacArg, db: DbOpt = DEFAULT_DB) -> None:
    """Withdraw trust: back to what the device's profile allows."""
    d = _call(db, {"op": "untrust", "mac": mac})["device"]
    console.print(f"{d['mac']}: {d['state']} ({escape('; '.join(d['reasons']))})")


@device_app.command("forget")
def forget(
    mac: MacArg,
    transfer: Annotated[bool, typer.Option(
        "--transfer", help="The device goes to a new owner.")] = False,
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
) -> None:
    """End of use: remove its rules and key, delete its data, show how to reset it."""
    steps = _call(db, {"op": "forget", "mac": mac, "transfer": transfer}, quiet=as_json)
    done = steps["forgotten"]
    if as_json:
        _print_json(done)
        return
    console.print(f"{done['mac']} forgotten: its rules and data are deleted.")
    if done["key_revoked"] is None:
        console.print("[yellow]No WiFi key service here: the revocation is recorded as an "
                      "event; remove its key by hand if it has one.[/]")
    console.print("[bold]Now reset it:[/]")
    for number, step in enumerate(done["steps"], 1):
        console.print(f"  {number}. {escape(step)}")
    if done["documentation"]:
        console.print(f"  The maker's instructions: {escape(done['documentation'])}")


def events(
    db: DbOpt = DEFAULT_DB,
    as_json: JsonOpt = False,
    device: Annotated[str | None, typer.Option("--device", help="Only this MAC.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 200,
) -> None:
    """What happened: devices joining, profiles, URL changes, grants, quarantines."""
    if device is not None:
        found = _call(db, {"op": "device", "mac": device})["device"]["events"][-limit:]
    else:
        found = _call(db, {"op": "events", "limit": limit})["events"]
    if as_json:
        _print_json(found)
        return
    if not found:
        console.print("No events yet.")
        return
    _print_events(found)


_REASON_DATA = frozenset({"reason_key", "reason_fields", "reason_keys"})


def _print_events(found: list[dict[str, Any]]) -> None:
    for e in found:
        # the reasons' catalogue keys are for the portal; the sentence says the same
        details = ", ".join(f"{k}={v}" for k, v in sorted(e["details"].items())
                            if v is not None and k not in _REASON_DATA)
        console.print(f"  {e['at'][:19]} {e['mac'] or 'home':17} {e['kind']:16} "
                      f"{escape(details)}")


def settings_cmd(
    db: DbOpt = DEFAULT_DB,
    home_default: Annotated[HomeDefault | None, typer.Option(
        "--home-default", help="For devices without a MUD file: internet (no LAN) or lan.")]
    = None,
    allow_unsigned: Annotated[bool | None, typer.Option(
        "--allow-unsigned/--require-signed", help="Accept MUD files without a signature.")]
    = None,
    learning_days: Annotated[float | None, typer.Option(
        "--learning-days", min=0, max=365, help="How long a device without a MUD file is "
        "learned before its profile is proposed (0: no learning).")] = None,
    lock_automatically: Annotated[bool | None, typer.Option(
        "--lock-automatically/--ask-before-locking", help="Lock a learned profile without "
        "asking (default: ask).")] = None,
    time_zone: Annotated[str | None, typer.Option(
        "--time-zone", help="Your IANA time zone (Europe/Paris) for times shown and daily "
        "schedules (those read in the previous zone keep their times of day in the new "
        "one); 'system': the gateway's own.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or change the home's settings."""
    request: dict[str, Any] = {"op": "settings"}
    if home_default is not None:
        request["home_default"] = home_default.value
    if allow_unsigned is not None:
        request["allow_unsigned"] = allow_unsigned
    if learning_days is not None:
        request["learning_days"] = learning_days
    if lock_automatically is not None:
        request["lock_automatically"] = lock_automatically
    if time_zone is not None:
        request["time_zone"] = time_zone
    current = _call(db, request, quiet=len(request) == 1)["settings"]
    if home_default is not None:
        err_console.print("[yellow]note[/]: devices already on the home default get the new "
                          "default's rules at once when the gateway daemon runs (else when "
                          "it next starts).")
    if as_json:
        _print_json(current)
        return
    console.print(f"home default:   {current['home_default']}")
    console.print(f"allow unsigned: {'yes' if current['allow_unsigned'] else 'no'}")
    console.print(f"learning days:  {current['learning_days']:g}")
    console.print(f"lock learned:   "
                  f"{'automatically' if current['lock_automatically'] else 'ask the owner'}")
    own = "" if current["time_zone"] else " (the gateway's own)"
    console.print(f"time zone:      {current['zone']}{own}")
