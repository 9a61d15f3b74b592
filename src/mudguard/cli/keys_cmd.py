"""``mudguard keys …``: per-device WiFi keys (issue, list, revoke, QR, identify, RADIUS)."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mudguard.errors import MudguardError

if TYPE_CHECKING:
    from mudguard.keys.capture import CaptureContents
    from mudguard.keys.core import PskEntry
    from mudguard.keys.handshake import Handshake, Identification
    from mudguard.keys.service import KeyManager

keys_app = typer.Typer(help="A WiFi key of its own for every device (hostapd).",
                       no_args_is_help=True)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DEFAULT_PSK_FILE = Path("/var/lib/mudguard/hostapd.wpa_psk")

PskFileOpt = Annotated[Path, typer.Option(
    "--psk-file", envvar="MUDGUARD_PSK_FILE", help="The hostapd wpa_psk_file mudguard writes.")]
SaeFileOpt = Annotated[Path | None, typer.Option(
    "--sae-file", envvar="MUDGUARD_SAE_FILE", help="Also write a WPA3 sae_password_file.")]
DbOpt = Annotated[Path, typer.Option(
    "--db", envvar="MUDGUARD_KEYS_DB", help="The key ring (SQLite).")]
PmkSsidOpt = Annotated[str | None, typer.Option(
    "--ssid", envvar="MUDGUARD_SSID",
    help="The network name: the psk file then holds PMKs, not passphrases (fast reloads).")]
CtrlOpt = Annotated[Path | None, typer.Option(
    "--ctrl", envvar="MUDGUARD_HOSTAPD_CTRL",
    help="hostapd's control socket (<ctrl_interface>/<ifname>); tells hostapd at once.")]


def register(app: typer.Typer) -> None:
    """Add the ``keys`` command group to the main app."""
    app.add_typer(keys_app, name="keys")


def _fail(exc: Exception) -> typer.Exit:
    key = getattr(exc, "key", "error")
    err_console.print(f"[red]error[/] ({key}): {escape(str(exc))}")
    return typer.Exit(1)


def _manager(db: Path, psk_file: Path, sae_file: Path | None, ctrl: Path | None,
             ssid: str | None) -> KeyManager:
    from mudguard.keys.ring import KeyRing
    from mudguard.keys.service import KeyFiles, KeyManager

    return KeyManager(KeyRing(db), KeyFiles(psk_file=psk_file, sae_file=sae_file,
                                            ctrl_path=ctrl, pmk_ssid=ssid))


@keys_app.command("issue")
def issue(
    mac: Annotated[str | None, typer.Argument(help="The device's MAC address.")] = None,
    onboarding: Annotated[bool, typer.Option(
        "--onboarding", help="A one-time key, bound to the first device that uses it.")] = False,
    vlan: Annotated[int, typer.Option("--vlan", min=0, max=4094, help="VLAN id (0: none).")] = 0,
    device: Annotated[str | None, typer.Option("--device", help="A name for the device.")] = None,
    psk_file: PskFileOpt = DEFAULT_PSK_FILE,
    sae_file: SaeFileOpt = None,
    db: DbOpt = Path("/var/lib/mudguard/keys.db"),
    ctrl: CtrlOpt = None,
    ssid: PmkSsidOpt = None,
) -> None:
    """Issue a new key for MAC, or a one-time onboarding key with --onboarding."""
    if (mac is None) == (not onboarding):
        raise typer.BadParameter("give either a MAC or --onboarding")
    try:
        manager = _manager(db, psk_file, sae_file, ctrl, ssid)
        record = manager.issue(mac=mac, vlan=vlan, device=device, now=time.time())
    except MudguardError as exc:
        raise _fail(exc) from exc
    console.print(f"keyid={record.keyid}")
    console.print(f"passphrase: {escape(record.entry.passphrase)}", soft_wrap=True)
    console.print(f"mudguard keys qr {record.keyid} -o {record.keyid}.svg  # printable QR code")


@keys_app.command("list")
def list_keys(db: DbOpt = Path("/var/lib/mudguard/keys.db")) -> None:
    """Every key: id, MAC (or onboarding), VLAN, device. Passphrases are not shown."""
    from mudguard.keys.ring import KeyRing

    try:
        records = KeyRing(db).records()
    except MudguardError as exc:
        raise _fail(exc) from exc
    table = Table("keyid", "mac", "vlan", "device", "bound")
    for record in records:
        entry = record.entry
        mac = "onboarding (unused)" if entry.is_onboarding else entry.mac
        bound = time.strftime("%Y-%m-%d %H:%M", time.gmtime(record.bound_at)) \
            if record.bound_at else "-"
        table.add_row(record.keyid, mac, str(entry.vlan or "-"), escape(record.device), bound)
    console.print(table)


@keys_app.command("revoke")
def revoke(
    keyid: Annotated[str, typer.Argument(help="The key to remove.")],
    psk_file: PskFileOpt = DEFAULT_PSK_FILE,
    sae_file: SaeFileOpt = None,
    db: DbOpt = Path("/var/lib/mudguard/keys.db"),
    ctrl: CtrlOpt = None,
    ssid: PmkSsidOpt = None,
) -> None:
    """Remove one device's key and disconnect it; every other device keeps its key."""
    try:
        record = _manager(db, psk_file, sae_file, ctrl, ssid).revoke(keyid)
    except MudguardError as exc:
        raise _fail(exc) from exc
    console.print(f"revoked {escape(record.keyid)} ({escape(record.device)})")


@keys_app.command("qr")
def qr(
    keyid: Annotated[str, typer.Argument(help="The key to print.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="FILE.svg or FILE.png")],
    ssid: Annotated[str, typer.Option("--ssid", envvar="MUDGUARD_SSID", help="The network name.")],
    db: DbOpt = Path("/var/lib/mudguard/keys.db"),
) -> None:
    """Write the WIFI: QR code of a key (phones join by scanning it). The file is 0600."""
    from mudguard.keys.core import WifiCredentials
    from mudguard.keys.qr import save_wifi_qr
    from mudguard.keys.ring import KeyRing

    if output.suffix.lower() not in (".svg", ".png"):
        raise typer.BadParameter("the output file must end in .svg or .png", param_hint="-o")
    try:
        record = KeyRing(db).get(keyid)
        if record is None:
            err_console.print(f"[red]error[/]: no key {escape(keyid)}")
            raise typer.Exit(1)
        save_wifi_qr(WifiCredentials(ssid=ssid, passphrase=record.entry.passphrase), output)
    except MudguardError as exc:
        raise _fail(exc) from exc
    console.print(f"QR code written to {escape(str(output))}")


EXIT_SAE = 3
"""``keys identify``: the capture holds only WPA3-SAE handshakes."""


@keys_app.command("identify", epilog=(
    "Exit status: 0 a key was identified (one keyid= line per key on stdout; a psk file "
    "line without keyid= prints 'keyid= line=N'); 1 no handshake, no key matches, or a "
    "bad file; 3 the capture holds only WPA3-SAE handshakes: SAE derives a new PMK in "
    "every session, so a handshake cannot tell which password was used."))
def identify(
    capture: Annotated[Path, typer.Argument(
        help="A pcap/pcapng (802.11, radiotap, Prism, AVS, PPI or Ethernet) holding a "
             "WPA/WPA2 4-way handshake: any two messages carrying both nonces and a MIC.")],
    ssid: Annotated[str, typer.Option("--ssid", help="The network's SSID (the PMK salt).")],
    psk_file: Annotated[Path, typer.Option(
        "--psk-file", help="The hostapd wpa_psk_file to test (passphrase or 64-hex PMK "
                           "lines; keyid= optional).")],
    nonce_corrections: Annotated[int, typer.Option(
        "--nonce-corrections", min=0, max=1024,
        help="Also try the ANonce of an unanswered message 1 counted ±N in its last 4 "
             "bytes, little/big-endian (hashcat's nonce-error-corrections; 0: never).")] = 8,
) -> None:
    """Print keyid=<id> of the psk-file entry whose passphrase (or PMK) the handshake used."""
    from mudguard.keys.capture import read_capture
    from mudguard.keys.core import read_psk_file_lines

    for path in (capture, psk_file):
        if not path.is_file():
            why = "not a regular file" if path.exists() else "no such file"
            err_console.print(f"[red]error[/]: {why}: {escape(str(path))}")
            raise typer.Exit(1)
    try:
        lines = read_psk_file_lines(_ascii_text(psk_file))
        contents = read_capture(capture)
    except MudguardError as exc:
        raise _fail(exc) from exc
    handshakes = _psk_handshakes(contents, ssid)
    if not handshakes:
        raise typer.Exit(1)
    from mudguard.keys.handshake import identify_handshakes

    found = identify_handshakes(handshakes, ssid, [line.entry for line in lines],
                                corrections=nonce_corrections)
    by_entry = {id(line.entry): line for line in lines}
    printed: list[str] = []
    for result in found:
        line = by_entry[id(result.entry)]
        name = f"keyid={line.keyid}" if line.keyid is not None else f"keyid= line={line.number}"
        err_console.print(f"station {result.handshake.spa} with AP {result.handshake.aa}: "
                          f"{escape(name)} ({_how(result)})")
        if name not in printed:
            printed.append(name)
    if not printed:
        stations = len({(hs.aa, hs.spa) for hs in handshakes})
        err_console.print(f"[red]error[/]: none of the {len(lines)} keys matches the "
                          f"handshake(s) of {stations} station(s) (wrong SSID or key not in "
                          "the file)")
        raise typer.Exit(1)
    for name in printed:
        console.print(escape(name))


def _ascii_text(path: Path) -> str:
    """A wpa_psk_file's text; hostapd's format is ASCII, so another byte is an error
    naming its line (the file is never guessed at)."""
    from mudguard.keys.core import KeyFormatError

    data = path.read_bytes()
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        # Never the byte itself: it may be part of a passphrase.
        raise KeyFormatError(f"line {line} is not ASCII (a wpa_psk_file holds ASCII "
                             "passphrases or hex PMKs)") from None


def _psk_handshakes(contents: CaptureContents, ssid: str) -> list[Handshake]:
    """The candidates a psk file can explain; says why the others are left out, and
    exits (1, or EXIT_SAE) when none is left."""
    from mudguard.keys.handshake import HandshakeKind

    kept: list[Handshake] = []
    sae: set[tuple[str, str]] = set()
    other: set[tuple[str, str, int | None]] = set()
    elsewhere: set[tuple[str, str]] = set()
    for hs in contents.handshakes:
        announced = contents.ssids.get(hs.aa, set())
        if announced and ssid.encode("utf-8") not in announced:
            elsewhere.add((hs.aa, b", ".join(sorted(announced)).decode("utf-8", "replace")))
        elif hs.kind is HandshakeKind.SAE:
            sae.add((hs.aa, hs.spa))
        elif hs.kind is HandshakeKind.OTHER:
            other.add((hs.aa, hs.spa, hs.akm))
        else:
            kept.append(hs)
    for aa, names in sorted(elsewhere):
        err_console.print(f"AP {aa} announces SSID {escape(names)!r}, not {escape(ssid)!r}: "
                          "its handshakes are left out")
    for aa, spa, akm in sorted(other, key=str):
        err_console.print(f"station {spa} with AP {aa}: AKM {akm} is not a PSK (802.1X, FT "
                          "or OWE): no psk file line makes its PMK")
    for aa, spa in sorted(sae):
        err_console.print(f"station {spa} with AP {aa}: WPA3-SAE handshake; SAE derives a "
                          "new PMK in every session, so it cannot identify a key")
    if not kept and sae and not other and not elsewhere:
        err_console.print("[red]error[/] (wifi_sae_handshake): only WPA3-SAE handshakes in "
                          "the capture: a handshake cannot identify an SAE password (use "
                          "hostapd's sae_password id= and AP-STA-CONNECTED instead)")
        raise typer.Exit(EXIT_SAE)
    if not contents.handshakes:
        err_console.print("[red]error[/]: no complete handshake in the capture (an ANonce from "
                          "message 1 or 3, an SNonce and MIC from message 2, or message 4 "
                          "carrying the SNonce)")
    elif not kept:
        err_console.print("[red]error[/]: no WPA/WPA2-PSK handshake left to test")
    return kept


def _how(result: Identification) -> str:
    """How the key was found: the message pair, replay counters, nonce correction."""
    hs = result.handshake
    parts = [hs.pairing, "WPA1" if hs.mic_frame.version == 1 else
             "PSK-SHA256" if hs.mic_frame.version == 3 else "WPA2"]
    if not hs.replay_checked:
        parts.append("replay counters differ")
    if result.correction is not None:
        parts.append(f"ANonce corrected {result.correction}")
    return ", ".join(parts)


def _stop_on_sigterm() -> None:
    """Treat SIGTERM (systemd stop, kill) like Ctrl-C, so sockets close and output flushes."""
    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise typer.BadParameter("use HOST:PORT, e.g. 127.0.0.1:1812", param_hint="--listen")
    return host.strip("[]"), int(port)


@keys_app.command("radius")
def radius(
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to answer on.")],
    secret_file: Annotated[Path | None, typer.Option(
        "--secret-file", help="File holding the shared secret (else env MUDGUARD_RADIUS_SECRET).")
    ] = None,
    client: Annotated[list[str] | None, typer.Option(
        "--client", help="An address allowed to ask (repeatable; default: loopback).")] = None,
    db: DbOpt = Path("/var/lib/mudguard/keys.db"),
) -> None:
    """Serve hostapd's RADIUS key requests (wpa_psk_radius, macaddr_acl=2) until Ctrl-C."""
    from mudguard.keys.radius import RadiusConfig, RadiusServer
    from mudguard.keys.ring import KeyRing

    host, port = _listen(listen)
    if secret_file is not None:
        secret = secret_file.read_bytes().strip()
    else:
        secret = os.environ.get("MUDGUARD_RADIUS_SECRET", "").encode("utf-8")
    if not secret:
        err_console.print("[red]error[/]: no shared secret (--secret-file or "
                          "MUDGUARD_RADIUS_SECRET); never on the command line")
        raise typer.Exit(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ring = KeyRing(db)

    def lookup(mac: str) -> PskEntry | None:
        record = ring.by_mac(mac)
        return None if record is None else record.entry

    try:
        server = RadiusServer(RadiusConfig(host, port, secret,
                                           frozenset(client or ["127.0.0.1", "::1"])), lookup)
    except MudguardError as exc:
        raise _fail(exc) from exc
    console.print(f"RADIUS listening on {host}:{server.address[1]}")
    _stop_on_sigterm()
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@keys_app.command("watch")
def watch(
    ctrl: Annotated[Path, typer.Option("--ctrl", envvar="MUDGUARD_HOSTAPD_CTRL",
                                       help="hostapd's control socket.")],
    psk_file: PskFileOpt = DEFAULT_PSK_FILE,
    sae_file: SaeFileOpt = None,
    db: DbOpt = Path("/var/lib/mudguard/keys.db"),
    ssid: PmkSsidOpt = None,
    seconds: Annotated[float, typer.Option("--seconds", help="Stop after this long (0: never).")
                       ] = 0.0,
) -> None:
    """Follow hostapd's events: bind one-time keys, disconnect key/MAC mismatches."""
    from mudguard.keys.core import BindingDecision, CtrlEvent
    from mudguard.keys.service import KeyEventWatcher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    def show(event: CtrlEvent, decision: BindingDecision) -> None:
        console.print(f"{escape(event.mac or '')}: {decision.outcome.value} "
                      f"{escape(str(event.params.get('keyid')))}")

    try:
        watcher = KeyEventWatcher(_manager(db, psk_file, sae_file, ctrl, ssid), ctrl,
                                  on_decision=show)
    except MudguardError as exc:
        raise _fail(exc) from exc
    end = time.monotonic() + seconds if seconds else float("inf")
    _stop_on_sigterm()
    watcher.start()
    try:
        while time.monotonic() < end:
            time.sleep(min(0.5, max(0.01, end - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
