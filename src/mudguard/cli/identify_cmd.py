"""``mudguard identify CAPTURE [--device MAC] [--json]``: what a device is, from its traffic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mudguard.identify.capture import (
    CaptureScan,
    identify_scan,
    load_knowledge,
    load_oui_registry,
    scan_capture,
)
from mudguard.identify.decide import Identification
from mudguard.identify.knowledge import KnowledgeBase
from mudguard.profile.capture import CaptureError
from mudguard.profile.core import mac_bytes, mac_text

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

IDENTIFY_HELP = """Identify devices from a capture, passively: manufacturer, model when
knowable, kind (camera, plug, bulb, hub, lock, scale, speaker, tv, thermostat,
sprinkler, vacuum, smoke_alarm, printer, appliance, sensor, phone, computer,
router, nas; iot when only "some IoT device" is known), a confidence in 0..1 and the
evidence for each (which packet said what).

Clues: the MAC's OUI (Wireshark's manuf registry; a Wi-Fi module maker such as
Espressif is reported as the platform, not the maker), DHCP hostname, vendor
class and parameter request list, mDNS/DNS-SD and SSDP announcements, LLDP, the
DNS names and TLS server names the device asks for, server certificates in
clear, HTTP User-Agent, and the shape of its traffic. Phones and computers
(randomised MACs, many destinations) get "trusted_candidate": true.

With --json, the output is one JSON object. With --device: the object for that
MAC: mac, manufacturer, model, kind, platform (null when unknown; platform is the
Wi-Fi module or cloud platform), confidence (the mean of confidence_detail's
manufacturer and kind, each 0 when unknown), trusted_candidate, kind_candidates
(the best-supported kinds; kind is null when two tie), evidence (a list of
{source, packet (frame number), says, supports, weight}). Without --device: the same keys for
the busiest device (the MAC that sent the most frames, the gateway excluded),
plus "devices": the objects of every device in the capture, busiest first.

Exit 1: the capture cannot be read, holds no device, or --device is not in it."""


def register(app: typer.Typer) -> None:
    """Add the ``identify`` command to the main app."""
    app.command("identify", help=IDENTIFY_HELP)(identify_command)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error[/]: {escape(message)}")
    return typer.Exit(code)


def identify_command(
    capture: Annotated[Path, typer.Argument(help="A pcap or pcapng capture (Ethernet).")],
    device: Annotated[str | None, typer.Option(
        "--device", help="The device's MAC. Default: every device, the busiest first, "
        "phones and computers after the others.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Identify the devices of a capture (see the command's help)."""
    wanted = None
    if device is not None:
        try:
            wanted = mac_bytes(device)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--device") from exc
    if not capture.is_file():
        raise _fail(f"no such file: {capture}")
    kb = load_knowledge()
    try:
        scan = scan_capture(capture, kb.service_ports)
    except (CaptureError, OSError) as exc:
        raise _fail(f"cannot read {capture}: {exc}") from exc
    results = _identify(scan, wanted, kb)
    if as_json:
        typer.echo(json.dumps(_document(results, wanted is not None), indent=2))
    else:
        _print_table(results)


def _identify(scan: CaptureScan, wanted: bytes | None,
              kb: KnowledgeBase) -> list[Identification]:
    oui = load_oui_registry()
    if oui is None:
        err_console.print("[yellow]warning[/]: no OUI registry found (Debian package "
                          "libwireshark-data, or MUDGUARD_OUI_FILE): MAC prefixes not used")
    if wanted is not None:
        if wanted not in scan.devices:
            raise _fail(f"{mac_text(wanted)} does not appear in the capture")
        return [identify_scan(scan, wanted, kb, oui)]
    macs = [mac for mac, _ in scan.candidates()]
    if not macs:
        raise _fail("no device sends frames in the capture")
    results = [identify_scan(scan, mac, kb, oui) for mac in macs]
    # a set-up capture's busiest sender is often the phone running the maker's app: the
    # headline is the busiest device that is not recognised as a phone or computer
    return sorted(results, key=lambda r: r.trusted_candidate)


def _document(results: list[Identification], single: bool) -> dict[str, Any]:
    first = results[0].to_json()
    if single:
        return first
    return {**first, "devices": [r.to_json() for r in results]}


def _print_table(results: list[Identification]) -> None:
    table = Table("MAC", "manufacturer", "model", "kind", "confidence", "trusted?",
                  "strongest evidence")
    for result in results:
        strongest = max(result.evidence, key=lambda e: e.weight, default=None)
        table.add_row(result.mac, escape(result.manufacturer or "?"),
                      escape(result.model or ""), result.kind or "?",
                      f"{result.confidence:.2f}", "yes" if result.trusted_candidate else "",
                      escape(strongest.says) if strongest else "")
    console.print(table)
