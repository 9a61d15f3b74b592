"""``mudguard portal``: serve the owner's portal and API on one address, over the
device database, without the rest of the daemon.

``mudguard run`` already serves the portal on the gateway's LAN side; this command is
for a portal on its own (a second address, a test bench). Changes made here are
recorded in the database and enforced when the daemon (re)starts, as with
``mudguard devices``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mudguard.store import DEFAULT_DB

err_console = Console(stderr=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``portal`` command to the main app."""
    app.command("portal")(portal)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port); the host must be an IP address."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise typer.BadParameter("expected HOST:PORT, e.g. 192.0.2.1:8080",
                                 param_hint="--listen")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise typer.BadParameter(f"{host!r} is not an IP address", param_hint="--listen") \
            from exc
    return host, int(port_text)


def portal(
    listen: Annotated[str, typer.Option("--listen", help="Address and port to serve on "
                                        "(HOST:PORT); nothing else is bound.")],
    db: Annotated[Path, typer.Option("--db", help="The device database.")] = DEFAULT_DB,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="Where the owner account lives (default: beside the database).")
    ] = None,
    ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", help="PEM trust anchors for MUD servers (default: the system's).")] = None,
    roots: Annotated[Path | None, typer.Option(
        "--signature-roots", help="PEM trust anchors for MUD file signatures.")] = None,
    keys_db: Annotated[Path | None, typer.Option(
        "--keys-db", help="The WiFi key ring, to issue each onboarded device its own key.")
    ] = None,
    psk_file: Annotated[Path | None, typer.Option(
        "--psk-file", help="hostapd's wpa_psk_file (with --keys-db).")] = None,
    ssid: Annotated[str | None, typer.Option("--ssid", help="The WiFi network's name.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", help="PEM certificate (chain) to serve over HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", help="PEM private key of --tls-cert (file, never on the command line).")
    ] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", help="A host name the owner's browser uses for the portal "
        "(repeatable; the listen address is always allowed).")] = None,
) -> None:
    """Serve the owner's portal and REST API (OpenAPI schema at /openapi.json)."""
    host, port = parse_listen(listen)
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-key")
    from mudguard.app import MudFetcher, signature_verifier
    from mudguard.devices.service import DeviceService
    from mudguard.mud.fetch import FetchConfig
    from mudguard.portal import PortalServices, PortalSettings, create_app, serve
    from mudguard.store import Store

    db.parent.mkdir(parents=True, exist_ok=True)
    store = Store(db)
    issuer, revoker = None, None
    if keys_db is not None:
        from mudguard.devices.wiring import KeyManagerRevoker
        from mudguard.keys.ring import KeyRing
        from mudguard.keys.service import KeyFiles, KeyManager
        from mudguard.portal.wiring import KeyManagerIssuer

        manager = KeyManager(KeyRing(keys_db), KeyFiles(
            psk_file=psk_file or keys_db.with_name("hostapd.wpa_psk")))
        revoker = KeyManagerRevoker(manager)
        issuer = KeyManagerIssuer(manager, ssid or "mudguard")
    service = DeviceService(store=store, fetch=MudFetcher(FetchConfig(ca_bundle=ca_file)),
                            verify=signature_verifier(roots), keys=revoker)
    from mudguard.identify.capture import load_knowledge, load_oui_registry

    app = create_app(PortalServices(devices=service, keys=issuer, oui=load_oui_registry(),
                                    knowledge=load_knowledge()),
                     PortalSettings(state_dir=state_dir or db.parent,
                                    allowed_hosts=(host, *(allowed_host or ()))))
    scheme = "https" if tls_cert is not None else "http"
    err_console.print(f"portal on {scheme}://{escape(listen)}/ (database {escape(str(db))}); "
                      "changes are enforced by the running daemon")
    serve(app, host, port, certfile=tls_cert, keyfile=tls_key)
