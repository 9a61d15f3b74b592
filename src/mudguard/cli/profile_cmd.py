"""``mudguard profile …``: learn a MUD profile from a capture, check a capture against one."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from mudguard.mud import parse_mud
from mudguard.policy import decide
from mudguard.profile.capture import CaptureError, CaptureStats, dns_answers, read_frames
from mudguard.profile.core import (
    LearnOptions,
    NoTrafficError,
    Observations,
    Observer,
    check_flows,
    device_facts,
    device_flows,
    home_context,
    infer_home,
    learn,
    mac_bytes,
    mac_text,
)

profile_app = typer.Typer(help="Learn a device's MUD profile from traffic, or check traffic "
                               "against one.", no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

CaptureArg = Annotated[Path, typer.Argument(
    help="A pcap or pcapng capture (Ethernet, Linux cooked SLL/SLL2, raw IP, loopback, "
         "unencrypted 802.11/radiotap).")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="The device's MAC (or one of its IP addresses, for captures without "
                     "MACs). Needed when the capture holds several devices.")]
LanOpt = Annotated[list[str] | None, typer.Option(
    "--lan", help="A home LAN prefix (repeatable). Default: the /24 and /64 around the "
                  "device's own addresses, plus link-local.")]
GatewayOpt = Annotated[list[str] | None, typer.Option(
    "--gateway", help="The gateway's address (repeatable). Default: whoever answered "
                      "DNS or DHCP in the capture.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def register(app: typer.Typer) -> None:
    """Add the ``profile`` command group to the main app."""
    app.add_typer(profile_app, name="profile")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[red]error[/]: {escape(message)}")
    return typer.Exit(code)


@contextmanager
def _progress(path: Path, quiet: bool) -> Iterator[Any]:
    """A byte progress bar on stderr, or a no-op when quiet or not a terminal."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task(path.name, total=path.stat().st_size)
        yield lambda done: bar.update(task, completed=done)


def observe(path: Path, device: bytes | str | None, quiet: bool
            ) -> tuple[Observations, CaptureStats]:
    """Stream a capture into an ``Observer`` (bounded memory) and freeze the result.

    ``device`` is a MAC (only its frames are kept), an IP address (all are kept and
    the device is found by address afterwards), or None.
    """
    if not path.is_file():
        raise _fail(f"no such file: {path}")
    stats = CaptureStats()
    observer = Observer(device=device if isinstance(device, bytes) else None)
    try:
        with _progress(path, quiet) as progress:
            frames = read_frames(path, stats=stats, progress=progress)
            stats.non_ip += observer.add_frames(frames, dns=dns_answers)
    except CaptureError as exc:
        raise _fail(str(exc), 1) from exc
    obs = observer.finish()
    if obs.overflow:
        err_console.print(f"[yellow]warning[/]: {obs.overflow} flows not kept "
                          "(tables full); the result may be incomplete")
    _skipped(stats)
    return obs, stats


def _skipped(stats: CaptureStats) -> None:
    """Say what the capture held that could not be read."""
    from mudguard.profile.link import LINKTYPE_NAMES, supported_text

    if stats.encrypted:
        err_console.print(f"[yellow]warning[/]: {stats.encrypted} encrypted 802.11 data frames "
                          "skipped: decrypt the capture first (e.g. with the network's key)")
    for linktype, count in sorted(stats.unsupported.items()):
        err_console.print(f"[yellow]warning[/]: {count} packets on link type {linktype} "
                          f"({LINKTYPE_NAMES.get(linktype, 'not supported')}) skipped; "
                          f"supported: {supported_text()}")


def _device(obs: Observations, device: bytes | str | None) -> bytes:
    """The device to profile: the one asked for (by MAC or address), the only one in the
    capture, or the only one that takes part in every flow of it."""
    if isinstance(device, str):
        return _device_by_address(obs, device)
    if device is not None:
        if device not in obs.mac_packets and not obs.packets:
            raise _fail(f"no packets of {mac_text(device)} in the capture", 1)
        return device
    candidates = obs.device_macs()
    if len(candidates) == 1:
        return mac_bytes(candidates[0][0])
    central = obs.central_device()
    if central is not None:
        return central
    if not candidates:
        raise _fail("no device sends IP packets in the capture", 1)
    listing = ", ".join(f"{mac} ({count} packets)" for mac, count in candidates[:10])
    raise _fail(f"the capture holds {len(candidates)} devices; choose one with --device: "
                f"{listing}")


def _device_by_address(obs: Observations, address: str) -> bytes:
    import ipaddress

    packed = ipaddress.ip_address(address).packed
    holders = sorted(mac for mac, own in obs.mac_addresses.items() if packed in own)
    if not holders:
        raise _fail(f"no device with address {address} in the capture", 1)
    return holders[0]


def _parse_mac(text: str | None) -> bytes | str | None:
    """The ``--device`` value: 6 MAC bytes, or an IP address's text."""
    import ipaddress

    if text is None:
        return None
    try:
        return mac_bytes(text)
    except ValueError as exc:
        try:
            return str(ipaddress.ip_address(text.strip()))
        except ValueError:
            raise typer.BadParameter(f"{exc} (nor an IP address)",
                                     param_hint="--device") from exc


def _home_args(lan: list[str] | None, gateway: list[str] | None) -> tuple[list[str], list[str]]:
    import ipaddress

    try:
        for prefix in lan or ():
            ipaddress.ip_network(prefix, strict=False)
        for address in gateway or ():
            ipaddress.ip_address(address)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return list(lan or ()), list(gateway or ())


def _check_output(path: Path) -> None:
    """Refuse, before any work, an output the learned file could not be written to."""
    if path.is_dir():
        raise _fail(f"--output {path} is a folder; name the file to write", 2)
    folder = path.resolve().parent
    if not folder.is_dir():
        raise _fail(f"--output: no such folder: {folder}", 2)
    if not os.access(folder, os.W_OK):
        raise _fail(f"--output: cannot write in {folder}", 2)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (exits 1 with the reason)."""
    try:
        _replace_with(path, text)
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror or exc}", 1) from None


def _replace_with(path: Path, text: str) -> None:
    folder = path.resolve().parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@profile_app.command("learn")
def learn_command(
    capture: CaptureArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the MUD file.")],
    device: DeviceOpt = None,
    mud_url: Annotated[str | None, typer.Option(
        "--mud-url", help="The MUD URL the file will be published at.")] = None,
    lan: LanOpt = None,
    gateway: GatewayOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a MUD file (RFC 8520) that allows exactly what the device did in the capture.

    DNS answers in the capture (else the TLS server name) name Internet peers; the
    gateway's services become my-controller, home addresses local-networks; TCP
    direction comes from SYNs (else the ports; else it is left open). A device too
    varied for one file gets ports merged into ranges and, if still too many, Internet
    peers replaced by any address (with a warning). Without --device the capture must
    hold one device; otherwise choose one.
    """
    wanted = _parse_mac(device)
    lan_list, gw_list = _home_args(lan, gateway)
    _check_output(output)
    obs, stats = observe(capture, wanted, quiet)
    _learn_and_write(obs, stats.records, wanted, capture.name, output, mud_url, lan_list,
                     gw_list)


def _learn_and_write(obs: Observations, records: int, wanted: bytes | str | None, source: str,
                     output: Path, mud_url: str | None, lan: list[str],
                     gateway: list[str]) -> None:
    """Learn the MUD file from observations, check it, and write it atomically."""
    mac = _device(obs, wanted)
    home = infer_home(obs, mac, lan=lan, gateway=gateway)
    url = mud_url or f"https://learned.mudguard.invalid/{mac.hex()}.json"
    options = LearnOptions(mud_url=url, systeminfo=f"Learned for {mac_text(mac)} from {source}")
    try:
        learned = learn(obs, home, options)
    except NoTrafficError as exc:
        raise _fail(str(exc), 1) from exc
    for warning in learned.warnings:
        err_console.print(f"[yellow]warning[/]: {escape(warning)}")
    document = learned.document
    result = parse_mud(document)
    if not result.ok:  # our own output must always be valid: a bug if not
        for finding in result.errors:
            err_console.print(f"[red]error[/]: {escape(str(finding))}")
        raise _fail("the learned profile is not valid (a bug in mudguard)", 1)
    _write_atomic(output, json.dumps(document, indent=2) + "\n")
    aces = sum(len(acl["aces"]["ace"]) for acl in document["ietf-access-control-list:acls"]["acl"])
    err_console.print(f"learned {aces} rules for {mac_text(mac)} from {records} packets "
                      f"({obs.packets} of the device); gateway {', '.join(home.gateway_ips) or '?'}"
                      f" → {escape(str(output))}")


@profile_app.command("learn-live")
def learn_live(
    interface: Annotated[str, typer.Argument(help="The interface the device talks through "
                                                  "(e.g. the gateway's LAN bridge).")],
    device: Annotated[str, typer.Option(
        "--device", help="The device's MAC (or its IP address on an interface without "
                         "MACs, e.g. a tunnel).")],
    seconds: Annotated[float, typer.Option("--seconds", help="How long to watch.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the MUD file.")],
    mud_url: Annotated[str | None, typer.Option(
        "--mud-url", help="The MUD URL the file will be published at.")] = None,
    netns: Annotated[str | None, typer.Option(
        "--netns", help="Capture inside this network namespace.")] = None,
    lan: LanOpt = None,
    gateway: GatewayOpt = None,
) -> None:
    """Watch a live device for a while and propose its MUD file (same code as "learn").

    The owner reviews the proposal (``mudguard mud show OUT.json``) before using it.
    """
    from mudguard.profile.capture import dns_answers
    from mudguard.profile.live import LiveCapture, LiveCaptureError

    wanted = _parse_mac(device)
    lan_list, gw_list = _home_args(lan, gateway)
    if not 0 < seconds <= 7 * 24 * 3600:
        raise typer.BadParameter("must be in (0, 604800]", param_hint="--seconds")
    _check_output(output)
    observer = Observer(device=wanted if isinstance(wanted, bytes) else None)
    try:
        live = LiveCapture(interface, netns=netns)
    except LiveCaptureError as exc:
        raise _fail(str(exc), 1) from exc
    err_console.print(f"watching {escape(interface)} for {seconds:g} s …")
    observer.add_frames(live.frames(seconds), dns=dns_answers)
    obs = observer.finish()
    _learn_and_write(obs, obs.packets, wanted, f"{interface} ({seconds:g} s)", output, mud_url,
                     lan_list, gw_list)


@profile_app.command("check")
def check(
    capture: CaptureArg,
    mud: Annotated[Path, typer.Option("--mud", help="The device's MUD file.")],
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of deviating flows.")
                       ] = False,
    lan: LanOpt = None,
    gateway: GatewayOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """List every flow in the capture that the MUD file does not allow.

    The decision is the enforcement's own: decide() builds the device's rules and
    evaluate() runs each flow through them, as the kernel would. Exit 0 when
    nothing deviates, 1 when something does.
    """
    if not mud.is_file():
        raise _fail(f"no such file: {mud}")
    result = parse_mud(mud.read_bytes())
    if result.mud is None or not result.ok:
        for finding in result.errors:
            err_console.print(f"[red]error[/]: {escape(str(finding))}")
        raise _fail(f"{mud} is not a usable MUD file", 1)
    wanted = _parse_mac(device)
    lan_list, gw_list = _home_args(lan, gateway)
    obs, _stats = observe(capture, wanted, quiet)
    mac = _device(obs, wanted)
    home = infer_home(obs, mac, lan=lan_list, gateway=gw_list)
    context = home_context(home, result.mud.mud_url)
    policy = decide(device_facts(home, result.mud.mud_url), result.mud, (), context,
                    now=datetime.now(UTC))
    flows = device_flows(obs, mac, every_port=True)
    deviations = check_flows(policy, flows, context, obs.names_for(mac))
    if as_json:
        print(json.dumps([d.as_dict() for d in deviations], indent=2))
    else:
        _print_table(deviations, len(flows))
    raise typer.Exit(1 if deviations else 0)


TABLE_ROWS = 200  # the table shows this many deviations; --json lists them all


def _print_table(deviations: list[Any], total: int) -> None:
    if not deviations:
        console.print(f"[green]all {total} flows are allowed by the profile[/]")
        return
    table = Table(title=f"{len(deviations)} of {total} flows are not allowed")
    for column in ("device", "dir", "src", "dst", "name", "proto", "ports", "packets",
                   "first seen", "rule"):
        table.add_column(column)
    for d in deviations[:TABLE_ROWS]:
        f = d.flow
        ports = (f"{f.src_port}→{f.dst_port}" if f.dst_port is not None
                 else f"type {f.icmp_type}/{f.icmp_code}" if f.icmp_type is not None else "")
        row = (f.device, "out" if f.direction.value == "from-device" else "in", f.src, f.dst,
               f.remote_name or "", str(f.protocol), ports, str(f.packets),
               d.as_dict()["first_seen"], d.origin)
        table.add_row(*(escape(str(cell)) for cell in row))
    console.print(table)
    if len(deviations) > TABLE_ROWS:
        console.print(f"… and {len(deviations) - TABLE_ROWS} more (--json lists every one)")
