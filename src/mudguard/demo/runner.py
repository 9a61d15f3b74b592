"""``mudguard demo``: build the virtual home, run the real gateway in it, and show what
happens.

Sequence: check requirements; build the home (``mudguard.vhome``: gateway, one namespace
per device, a fake Internet); make the run directory (test PKI, signed MUD files,
configs); start the fake Internet, then the gateway daemon (``mudguard run``) inside the
gateway namespace, then the portal relay on host loopback, then the device programs.
While it runs, the device programs' reports and the daemon's device events feed the
``Judge``; the owner's actions of the scenario (grant the gadget the Internet, which
goes through the daemon's control socket to the same ``DeviceService.grant`` the portal
and CLI use) happen when the judge sees their precondition. Whatever happens, every
process is stopped and every namespace deleted on the way out (Ctrl-C included).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mudguard.demo import scenario
from mudguard.demo.judge import Judge, Status, Verdict

if TYPE_CHECKING:
    from mudguard.vhome import VirtualHome

DEFAULT_PREFIX = "mghd"
PORTAL_PORT = 8080  # the portal's port on the gateway's LAN address
WIFI_SSID = "mudguard-demo"
WIFI_INTERFACE = "wlan0"  # hostapd runs with driver=none: there is no radio here
START_TIMEOUT = 40.0
OWNER_NAME = "owner"  # the portal's owner when the demo creates the account


class DemoError(RuntimeError):
    """The demo could not start (the message says what is missing or failed)."""


def missing_requirements() -> list[str]:
    """What this machine lacks to run the demo, in words (empty when nothing)."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("not running as root: the demo builds network namespaces and "
                        "loads nftables rules (run: sudo ./scripts/run)")
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"),
                          ("dnsmasq", "dnsmasq-base"), ("hostapd", "hostapd")):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing (apt-get install {package})")
    try:
        ctypes.CDLL("libnftables.so.1")
    except OSError:
        problems.append("libnftables is missing (apt-get install libnftables1)")
    return problems


@dataclass(slots=True)
class DemoOptions:
    """How to run the demo."""

    headless: bool = False
    duration: float | None = None  # None: until Ctrl-C (interactive) / 90 s (headless)
    prefix: str = DEFAULT_PREFIX
    host_port: int = 8480  # host loopback port relayed to the portal
    quarantine_within: float = 15.0
    period: float = 1.5  # seconds between a device's rounds
    verbose: bool = False  # headless: print every notable event too
    keep_running: bool = False  # headless: run to ``duration`` even once every outcome passed
    owner_password: str | None = None  # create the portal's owner account before start
    echo: Callable[[str], None] = print


@dataclass(slots=True)
class _Child:
    name: str
    proc: subprocess.Popen[str]
    log: IO[str] | None = None


@dataclass(slots=True)
class Demo:
    """One run of the demo."""

    options: DemoOptions
    judge: Judge = field(init=False)
    events: queue.Queue[tuple[str, str]] = field(default_factory=queue.Queue)
    children: list[_Child] = field(default_factory=list)
    macs: dict[str, str] = field(default_factory=dict)  # MAC -> device key
    log_lines: list[str] = field(default_factory=list)  # recent notable events
    portal_url: str | None = None
    run_dir: Path | None = None
    control: Path | None = None
    started_at: float = 0.0  # wall-clock time the devices were started
    _hinted: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.judge = Judge(quarantine_within=self.options.quarantine_within)

    # -- the whole run --------------------------------------------------------------------

    def run(self) -> int:
        """Run the demo; return the exit status (0: every expected outcome happened)."""
        if self.options.owner_password is not None:
            from mudguard.portal import AuthInputError, check_password

            try:  # before anything is built
                check_password(self.options.owner_password)
            except AuthInputError as exc:
                raise DemoError(f"--owner-password-file: {exc.reason}") from None
        problems = missing_requirements()
        if problems:
            raise DemoError("cannot run the demo:\n  - " + "\n  - ".join(problems))
        from mudguard.vhome import VirtualHome

        lock = _exclusive(self.options.prefix)  # a second demo must not tear this one down
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        self.options.echo(f"building the virtual home (namespaces {self.options.prefix}-*)…")
        try:
            with VirtualHome(prefix=self.options.prefix, devices=len(scenario.DEVICES)) as home, \
                    tempfile.TemporaryDirectory(prefix=f"{self.options.prefix}-") as tmp:
                try:
                    self._start(home, Path(tmp))
                    return self._watch()
                finally:
                    self._stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
            lock.close()

    # -- start ----------------------------------------------------------------------------

    def _start(self, home: VirtualHome, root: Path) -> None:
        from mudguard.vhome import GW4, LAN4

        self.run_dir = root
        run = scenario.prepare(root, datetime.now(UTC))
        for address in scenario.internet_addresses():
            home.run(home.inet_ns, ["ip", "addr", "replace", f"{address}/32", "dev", "lo"])
        self.options.echo("starting the fake Internet and the gateway (mudguard run)…")
        self._spawn("internet", home.inet_ns,
                    [sys.executable, "-m", "mudguard.demo.internet", str(run.internet_config)],
                    ready="ready")
        state = root / "state"
        state.mkdir(mode=0o700)
        if self.options.owner_password is not None:
            self._create_owner(state)
        self.control = state / "control.sock"
        config = root / "gateway.toml"
        config.write_text(gateway_config(
            lan_interface=home.lan_if, wan_interface=home.wan_if, lan_prefix=str(LAN4),
            gateway=GW4, state_dir=state, ca_file=run.ca_file))
        self._spawn("gateway", home.gw_ns,
                    [sys.executable, "-m", "mudguard", "run", "--config", str(config),
                     "--log-format", "json"], ready="ready", json_ready=True)
        self._relay_portal(home, GW4)
        threading.Thread(target=self._check_portal, daemon=True).start()
        self.started_at = time.time()
        self._issue_keys(home, state)
        for node, dev in zip(home.nodes, scenario.DEVICES, strict=True):
            self.macs[node.mac] = dev.key
            # Devices get their address by DHCP, as real ones do: drop vhome's static one.
            home.run(node.ns, ["ip", "addr", "flush", "dev", node.iface])
            home.run(node.ns, ["ip", "route", "flush", "table", "main"], check=False)
            self._spawn(dev.key, node.ns,
                        [sys.executable, "-m", "mudguard.demo.devices", dev.key,
                         "--interface", node.iface, "--period", str(self.options.period),
                         "--lifetime", str(self.options.duration or 24 * 3600)],
                        stdin=True)

    def _create_owner(self, state: Path) -> None:
        """The portal's owner account, made before the gateway starts (as the portal's
        first visit would): the same ``OwnerAccount.create`` with its password rules."""
        from mudguard.portal import AuthInputError, OwnerAccount

        assert self.options.owner_password is not None
        try:
            OwnerAccount(state / "owner.json").create(OWNER_NAME, self.options.owner_password)
        except AuthInputError as exc:
            raise DemoError(f"the portal's owner account: {exc.reason}") from None

    def _issue_keys(self, home: VirtualHome, state: Path) -> None:
        """Give every device its own WiFi key, as the owner does when onboarding it: the
        same ``KeyManager.issue`` as ``mudguard keys issue`` (key ring, hostapd's key file
        written atomically, RELOAD_WPA_PSK to the running hostapd over its control
        socket). Passphrases are never shown."""
        from mudguard.keys.ring import KeyRing
        from mudguard.keys.service import KeyFiles, KeyManager

        manager = KeyManager(KeyRing(state / "keys.db"), KeyFiles(
            psk_file=state / "hostapd.wpa_psk", pmk_ssid=WIFI_SSID,
            ctrl_path=state / "hostapd" / WIFI_INTERFACE))
        for node, dev in zip(home.nodes, scenario.DEVICES, strict=True):
            try:
                record = manager.issue(mac=node.mac, now=time.time(), device=dev.label)
            except Exception as exc:  # shown, and the wifi outcome fails
                self._note(f"owner: WiFi key for {dev.key} failed: {type(exc).__name__}")
                continue
            self.judge.view(dev.key).wifi_key = record.entry.keyid
            self._note(f"owner: issued {dev.key} its own WiFi key {record.entry.keyid}")
        manager.ring.close()
        self.judge.psk_file = state / "hostapd.wpa_psk"
        self.judge.macs = {n.mac: d.key for n, d in zip(home.nodes, scenario.DEVICES,
                                                         strict=True)}

    def _spawn(self, name: str, ns: str, argv: list[str], *, ready: str | None = None,
               json_ready: bool = False, stdin: bool = False) -> None:
        assert self.run_dir is not None
        log = (self.run_dir / f"{name}.log").open("w")
        # A session of its own: the terminal's Ctrl-C reaches only the demo, which then
        # stops the children in order (devices, gateway, Internet) and deletes the home.
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                stderr=log, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                text=True, bufsize=1, start_new_session=True)
        child = _Child(name, proc, log)
        self.children.append(child)
        assert proc.stdout is not None
        if ready is not None:
            self._wait_ready(child, ready, json_ready)
        threading.Thread(target=self._read, args=(name, proc.stdout), daemon=True).start()

    def _wait_ready(self, child: _Child, ready: str, json_ready: bool) -> None:
        assert child.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = child.proc.stdout.readline()
            if not line:
                break
            text = line.strip()
            if json_ready:
                with contextlib.suppress(ValueError):
                    if json.loads(text).get("event") == ready:
                        return
                self.events.put((child.name, text))
            elif text == ready:
                return
        raise DemoError(f"the {child.name} did not start:\n{self._tail(child.name)}")

    def _read(self, name: str, stream: IO[str]) -> None:
        for line in stream:
            self.events.put((name, line.strip()))

    def _tail(self, name: str, lines: int = 15) -> str:
        assert self.run_dir is not None
        path = self.run_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def _relay_portal(self, home: VirtualHome, gateway: str) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self.options.host_port))
        except OSError:
            listener.bind(("127.0.0.1", 0))  # the usual port is taken: any free one
        listener.listen(64)
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", home.gw_ns, sys.executable, "-m", "mudguard.demo.forward",
             "--fd", str(listener.fileno()), "--to", f"{gateway}:{PORTAL_PORT}"],
            pass_fds=(listener.fileno(),), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        listener.close()
        self.children.append(_Child("portal relay", proc))  # type: ignore[arg-type]
        self.portal_url = f"http://127.0.0.1:{port}/"

    def _check_portal(self) -> None:
        """GET the portal's front page from the host, through the relay (a few tries)."""
        assert self.portal_url is not None
        import http.client
        from urllib.parse import urlsplit

        where = urlsplit(self.portal_url)
        detail = "no answer"
        for _ in range(20):
            conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=3)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                detail = f"GET {self.portal_url} -> {response.status}"
                if response.status < 500:
                    self.judge.portal = (True, detail)
                    return
            except OSError as exc:
                detail = f"GET {self.portal_url}: {exc}"
            finally:
                conn.close()
            time.sleep(0.5)
        self.judge.portal = (False, detail)

    # -- watch ----------------------------------------------------------------------------

    def _watch(self) -> int:
        duration = self.options.duration
        if duration is None and self.options.headless:
            duration = 90.0
        end = time.monotonic() + duration if duration is not None else None
        shown: dict[str, Status] = {}
        live = None
        login = (f"log in as {OWNER_NAME!r} with the password you gave"
                 if self.options.owner_password is not None
                 else "the first visit sets the owner's password")
        self.options.echo(f"portal: {self.portal_url}  (open it in a browser on this machine; "
                          f"{login})")
        if not self.options.headless:
            from mudguard.demo.live import start_live

            live = start_live(self)
        try:
            while end is None or time.monotonic() < end:
                self._drain(timeout=0.25)
                self._act()
                if live is not None:
                    live.refresh_view()
                else:
                    self._print_changes(shown)
                    if self.judge.all_passed() and not self.options.keep_running:
                        break
                dead = self._dead_child()
                if dead is not None:
                    raise DemoError(f"the {dead} stopped unexpectedly:\n{self._tail(dead)}")
        except KeyboardInterrupt:
            if self.options.headless:
                raise
            # Interactive: Ctrl-C is the normal end; show the outcomes, then tear down.
        finally:
            if live is not None:
                live.stop()
        verdicts = self.judge.outcomes(final=self.options.headless)
        for verdict in verdicts:
            self.options.echo(format_verdict(verdict))
        if not self.options.headless:
            return 0  # the owner stopped it: not a test run
        return 0 if all(v.status is Status.PASSED for v in verdicts) else 1

    def _dead_child(self) -> str | None:
        for child in self.children:
            if child.name in ("internet", "gateway") and child.proc.poll() is not None:
                return child.name
        return None

    def _print_changes(self, shown: dict[str, Status]) -> None:
        for verdict in self.judge.outcomes():
            if verdict.status is not Status.PENDING and shown.get(verdict.key) != verdict.status:
                shown[verdict.key] = verdict.status
                elapsed = time.time() - self.started_at
                self.options.echo(f"[{elapsed:5.1f}s] {format_verdict(verdict)}")

    def _drain(self, timeout: float) -> None:
        try:
            source, line = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._take(source, line)
            try:
                source, line = self.events.get_nowait()
            except queue.Empty:
                return

    def _take(self, source: str, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if source == "gateway":
            self._gateway_event(event)
        elif source in {d.key for d in scenario.DEVICES}:
            event["device"] = source  # a device speaks only for itself
            self.judge.device_event(event)
            if event.get("event") in ("lease", "lldp", "compromised", "scan", "error"):
                self._note(f"{source}: {_describe_device_event(event)}")

    def _gateway_event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "drops":
            who = self.macs.get(str(event.get("mac", "")).lower())
            if who is not None and isinstance(event.get("count"), int):
                self.judge.view(who).dropped += event["count"]
            return
        if event.get("event") != "device":
            if event.get("event") in ("alert", "error"):
                who = self.macs.get(str(event.get("mac", "")).lower(), "")
                what = "deviation alert" if event.get("event") == "alert" else "error"
                self._note(f"gateway: {what} {who}: {event.get('message')}".replace("  ", " "))
            return
        found = self.macs.get(str(event.get("mac", "")).lower())
        if found is None:
            return
        key = found
        state = str(event.get("state"))
        before = self.judge.view(key).state
        self.judge.device_state(key, state, event.get("signature"), time.time())
        if state != before:
            reasons = "; ".join(event.get("reasons") or [])
            self._note(f"gateway: {key} is {state}" + (f" ({reasons})" if reasons else ""))

    def _note(self, text: str) -> None:
        if len(text) > 150:
            text = text[:149] + "…"
        line = f"{time.time() - self.started_at:5.1f}s {text}"
        self.log_lines.append(line)
        del self.log_lines[:-10]
        if self.options.headless and self.options.verbose:
            self.options.echo(f"       {line}")

    # -- the scenario's actions -----------------------------------------------------------

    def _act(self) -> None:
        printer = self.judge.view("printer").address
        if printer and "printer" not in self._hinted:
            self._hint("plug", {"hosts": {"printer": printer}})
            self._hinted.add("printer")
        camera = self.judge.view("camera")
        if ("compromise" not in self._hinted and camera.state == "profiled"
                and len(camera.flows["cloud"].ok) >= 2):
            self._hint("camera", {"compromise": True})
            self._hinted.add("compromise")
        if self.judge.ready_for_grant("nomud"):
            self._grant_internet("nomud")

    def _hint(self, key: str, hint: dict[str, Any]) -> None:
        for child in self.children:
            if child.name == key and child.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    child.proc.stdin.write(json.dumps(hint) + "\n")
                    child.proc.stdin.flush()

    def _grant_internet(self, key: str) -> None:
        mac = next(m for m, k in self.macs.items() if k == key)
        assert self.control is not None
        reply = control_request(self.control, {"op": "grant", "mac": mac, "kind": "internet"})
        if reply.get("ok"):
            self.judge.granted(key, time.time())
            self._note(f"owner: granted {key} the Internet (as in the portal)")
        else:
            self._note(f"owner: grant failed: {reply.get('error')}")
            self.judge.granted(key, float("inf"))  # do not retry forever

    # -- stop -----------------------------------------------------------------------------

    def _stop(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.terminate()
        deadline = time.monotonic() + 5
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(timeout=5)
            if child.log is not None:
                child.log.close()
        self.children.clear()


def _exclusive(prefix: str) -> IO[str]:
    """Hold a lock for ``prefix`` while the demo runs: building the home first deletes
    any namespace with its prefix (a crashed run's leftovers), so two demos with the same
    prefix must never run at once."""
    import fcntl

    path = Path(tempfile.gettempdir()) / f"mudguard-demo-{prefix}.lock"
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise DemoError(f"another mudguard demo (prefix {prefix}) is running; stop it "
                        "first (Ctrl-C in its terminal)") from None
    return handle


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _describe_device_event(event: dict[str, Any]) -> str:
    kind = event.get("event")
    if kind == "lease":
        announced = event.get("mud_url") or "no MUD URL"
        return f"got {event.get('address')} by DHCP, announcing {announced}"
    if kind == "lldp":
        return f"announced {event.get('mud_url')} by LLDP"
    if kind == "compromised":
        return "compromised! starts scanning the LAN and flooding the Internet"
    if kind == "scan":
        return f"scanned {event.get('probes')} LAN ports, {event.get('open')} answered"
    return str(event.get("error") or kind)


def format_verdict(verdict: Verdict) -> str:
    """One line per outcome: ``PASS  bulb: ...  (detail)``."""
    mark = {Status.PASSED: "PASS", Status.FAILED: "FAIL", Status.PENDING: "WAIT"}[verdict.status]
    return f"{mark}  {verdict.text}" + (f"  ({verdict.detail})" if verdict.detail else "")


def control_request(path: Path, request: dict[str, Any], timeout: float = 10.0
                    ) -> dict[str, Any]:
    """Send one JSON request to the daemon's control socket; return its JSON reply."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n") and len(data) < 1 << 20:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        return {"ok": False, "error": f"control socket: {exc}"}
    try:
        reply = json.loads(data)
    except ValueError:
        return {"ok": False, "error": "control socket: malformed reply"}
    return reply if isinstance(reply, dict) else {"ok": False, "error": "malformed reply"}


def gateway_config(*, lan_interface: str, wan_interface: str, lan_prefix: str, gateway: str,
                   state_dir: Path, ca_file: Path) -> str:
    """The daemon's TOML configuration for the demo home."""
    first, last = scenario.DHCP_RANGE
    return "\n".join([
        "# mudguard gateway configuration written by `mudguard demo`",
        "[gateway]",
        f'lan_interface = "{lan_interface}"',
        f'wan_interface = "{wan_interface}"',
        f'lan_prefixes = ["{lan_prefix}"]',
        f'addresses = ["{gateway}"]',
        f'state_dir = "{state_dir}"',
        "# devices with no MUD file get the home LAN only, until the owner grants more;",
        "# meanwhile they are learned ([devices] learning is on by default)",
        'home_default = "lan"',
        "",
        "[dhcp]",
        f'range = ["{first}", "{last}"]',
        'lease_time = "1h"',
        "",
        "[dns]",
        f'upstream = ["{scenario.INTERNET_DNS}"]',
        "",
        "[mud]",
        "# the demo's manufacturer server and signatures use a test CA made at start-up",
        f'ca_file = "{ca_file}"',
        f'signature_roots = "{ca_file}"',
        "allow_unsigned = true",
        "",
        "[discovery]",
        "lldp = true  # the printer announces its MUD URL by LLDP",
        "",
        "[watch]",
        "report_seconds = 2  # dropped packets per device, for the live view and the portal",
        "",
        "[wifi]",
        "# real hostapd (driver=none: no radio here) reading one key per device",
        f'ssid = "{WIFI_SSID}"',
        f'interface = "{WIFI_INTERFACE}"',
        "",
        "[portal]",
        f'address = "{gateway}"',
        f"port = {PORTAL_PORT}",
        "# the host's browser reaches the portal through a loopback relay",
        'names = ["localhost", "127.0.0.1"]',
        "",
    ])
