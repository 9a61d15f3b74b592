"""Key operations: issue, revoke, bind on first use. Wires the key ring, the key
files and hostapd's control socket together.

Ordering: the ring's transaction stays open while the files are written and
hostapd reloads them; only if hostapd accepts does the ring commit. If anything
fails the ring rolls back and the files are rewritten from it, so ring, files
and hostapd never disagree about who holds which key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mudguard.errors import MudguardError
from mudguard.keys.core import (
    ONBOARDING_MAC,
    BindingDecision,
    BindingOutcome,
    CtrlEvent,
    KeyRecord,
    PskEntry,
    decide_connection,
    generate_passphrase,
    normalise_mac,
    render_psk_file,
    render_sae_password_file,
)
from mudguard.keys.hostapd import (
    HostapdControl,
    HostapdError,
    HostapdEvents,
    HostapdNotRunning,
    file_lock,
    write_atomic,
)
from mudguard.keys.ring import KeyRing, KeyRingError

__all__ = ["DEFAULT_PSK_FILE", "KeyEventWatcher", "KeyFiles", "KeyManager"]

DEFAULT_PSK_FILE = Path("/var/lib/mudguard/hostapd.wpa_psk")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyFiles:
    """Where hostapd reads keys, and its control socket (None: hostapd not running)."""

    psk_file: Path
    sae_file: Path | None = None
    ctrl_path: Path | None = None
    pmk_ssid: str | None = None
    """If set, the psk file holds each key's PMK for this SSID instead of its passphrase
    (hostapd reloads far faster, and the file never shows a passphrase)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyFiles:
        """The paths the ``keys`` commands use: ``MUDGUARD_PSK_FILE`` (default
        ``DEFAULT_PSK_FILE``), ``MUDGUARD_SAE_FILE``, ``MUDGUARD_HOSTAPD_CTRL`` and
        ``MUDGUARD_SSID`` (PMK form), so every caller writes the same file the same way."""
        env = os.environ if environ is None else environ
        sae, ctrl = env.get("MUDGUARD_SAE_FILE"), env.get("MUDGUARD_HOSTAPD_CTRL")
        return cls(psk_file=Path(env.get("MUDGUARD_PSK_FILE", str(DEFAULT_PSK_FILE))),
                   sae_file=Path(sae) if sae else None, ctrl_path=Path(ctrl) if ctrl else None,
                   pmk_ssid=env.get("MUDGUARD_SSID") or None)


class KeyManager:
    """Issue, revoke and bind per-device keys, keeping ring, files and hostapd in step."""

    def __init__(self, ring: KeyRing, files: KeyFiles,
                 control: Callable[[Path], HostapdControl] = HostapdControl,
                 notify: Callable[[dict[str, str], float], None] | None = None) -> None:
        """``notify(event, now)`` also receives every binding-rule event (e.g. to put it
        in the device store's event list); the ring keeps its own copy either way."""
        self.ring = ring
        self.files = files
        self._control = control
        self._notify = notify

    # -- writing and telling hostapd ---------------------------------------------------

    def _write_files(self) -> None:
        entries = [r.entry for r in self.ring.records()]
        write_atomic(self.files.psk_file, render_psk_file(entries, ssid=self.files.pmk_ssid))
        if self.files.sae_file is not None:
            write_atomic(self.files.sae_file, render_sae_password_file(entries))

    def _hostapd(self, action: Callable[[HostapdControl], None]) -> None:
        if self.files.ctrl_path is None:
            return
        try:
            control = self._control(self.files.ctrl_path)
        except HostapdNotRunning as exc:
            # The files are the truth: a stopped hostapd reads them when it starts,
            # so a revocation must not wait for it (nor be undone because of it).
            log.warning("%s; the key file is written and read at its next start", exc)
            return
        with control:
            action(control)

    def _apply(self, change: Callable[[], Any], *, deauth: str | None = None) -> None:
        """Run ``change`` on the ring, write the files, reload hostapd; all or nothing."""
        with file_lock(self.files.psk_file):
            try:
                with self.ring.transaction():
                    change()
                    self._write_files()
                    self._hostapd(lambda c: c.reload_wpa_psk())
            except BaseException:
                self._write_files()  # the ring rolled back: put the old keys back
                # hostapd 2.10 clears its key list before reading the file, so a refused
                # reload leaves it with the lines before the bad one: reload the old file.
                with contextlib.suppress(MudguardError, OSError):
                    self._hostapd(lambda c: c.reload_wpa_psk())
                raise
        if deauth is not None and deauth != ONBOARDING_MAC:
            self._hostapd(lambda c: c.deauthenticate(deauth))

    def sync(self) -> None:
        """Rewrite the files from the ring and reload hostapd (after a restart)."""
        self._apply(lambda: None)

    # -- operations --------------------------------------------------------------------

    def issue(self, *, mac: str | None, now: float, vlan: int = 0,
              device: str | None = None, passphrase: str | None = None) -> KeyRecord:
        """A new key for ``mac``, or a one-time onboarding key if ``mac`` is None."""
        bound_mac = ONBOARDING_MAC if mac is None else normalise_mac(mac)
        if bound_mac == ONBOARDING_MAC and mac is not None:
            raise KeyRingError("00:00:00:00:00:00 is not a device; use an onboarding key")
        prefix = "onb" if mac is None else "dev"
        entry = PskEntry(keyid=f"{prefix}-{secrets.token_hex(4)}", mac=bound_mac, vlan=vlan,
                         passphrase=passphrase or generate_passphrase())
        record = KeyRecord(entry=entry, device=device or (bound_mac if mac else "onboarding"),
                           created_at=now, bound_at=None if mac is None else now)
        self._apply(lambda: self.ring.add(record))
        log.info("issued key %s for %s (vlan %d)", entry.keyid, record.device, vlan)
        return record

    def revoke(self, keyid: str) -> KeyRecord:
        """Remove one key, reload hostapd, disconnect the station that held it.
        Every other key and station is left alone."""
        record = self.ring.get(keyid)
        if record is None:
            raise KeyRingError(f"no key {keyid}")
        self._apply(lambda: self.ring.remove(keyid), deauth=record.entry.mac)
        log.info("revoked key %s (%s)", keyid, record.device)
        return record

    def on_event(self, event: CtrlEvent, now: float) -> BindingDecision | None:
        """Apply the binding rule to ``AP-STA-CONNECTED``; other events are ignored."""
        if event.name != "AP-STA-CONNECTED" or event.mac is None:
            return None
        decision = decide_connection(self.ring.records(), event.params.get("keyid"),
                                     event.mac, now)
        if decision.event is not None:
            self.ring.log_event(decision.event, now)
            if self._notify is not None:
                self._notify(decision.event, now)
        if decision.outcome is BindingOutcome.BIND and decision.record is not None:
            bound = decision.record
            try:
                self._apply(lambda: self.ring.update(bound))
            except (KeyRingError, HostapdError) as exc:
                log.warning("binding %s to %s failed: %s", bound.keyid, event.mac, exc)
                self._hostapd(lambda c: c.deauthenticate(event.mac or ""))
                raise
        elif decision.outcome in (BindingOutcome.MISMATCH, BindingOutcome.UNKNOWN):
            mac = event.mac
            self._hostapd(lambda c: c.deauthenticate(mac))
        return decision


class KeyEventWatcher:
    """Follows hostapd's events in a thread of its own and applies the binding rule.

    A failure while handling one event is logged and the watcher carries on; if
    hostapd goes away (restart), it re-attaches every ``retry`` seconds until stopped.
    ``on_decision`` (optional) sees every decision, e.g. to update the device store.
    """

    def __init__(self, manager: KeyManager, ctrl_path: Path, *,
                 clock: Callable[[], float] = time.time,
                 on_decision: Callable[[CtrlEvent, BindingDecision], None] | None = None,
                 poll: float = 0.5, retry: float = 1.0) -> None:
        """Nothing runs until ``start()`` (or ``run()`` in the caller's thread)."""
        self.manager = manager
        self.ctrl_path = ctrl_path
        self._clock = clock
        self._on_decision = on_decision
        self._poll = poll
        self._retry = retry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.attached = threading.Event()
        """Set while attached to hostapd (tests and health checks wait on it)."""

    def start(self) -> None:
        """Run in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="hostapd-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Attach, handle events until ``stop()``; re-attach after hostapd restarts."""
        while not self._stop.is_set():
            try:
                with HostapdEvents(self.ctrl_path) as events:
                    self.attached.set()
                    self._follow(events)
            except (HostapdError, OSError) as exc:
                log.warning("hostapd events at %s: %s; retrying", self.ctrl_path, exc)
            finally:
                self.attached.clear()
            self._stop.wait(self._retry)

    def _follow(self, events: HostapdEvents) -> None:
        idle = 0.0
        while not self._stop.is_set():
            event = events.next_event(self._poll)
            if event is None:
                idle += self._poll
                if idle >= 10 * self._poll:  # hostapd says nothing: check it is still there
                    if not events.ping():
                        raise HostapdError("hostapd stopped answering")
                    idle = 0.0
                continue
            idle = 0.0
            try:
                decision = self.manager.on_event(event, self._clock())
            except MudguardError as exc:
                log.warning("event %s not applied: %s", event.name, exc)
                continue
            if decision is not None and self._on_decision is not None:
                self._on_decision(event, decision)
