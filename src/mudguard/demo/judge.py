"""The demo's referee: from what the devices report and what the gateway recorded, decide
whether each expected outcome happened.

Pure: events and device states go in with their times, verdicts come out. The live view
and ``--headless`` both print ``Judge.outcomes()``; the exit status is 0 only if every
outcome passed.

The outcomes (issue #8):

- the bulb's signed MUD file verified; the bulb reaches its cloud while a host its
  profile does not name stays blocked;
- the camera is quarantined within ``quarantine_within`` seconds of starting its attack,
  and its cloud is cut off after that;
- the out-of-support plug is LAN only: it reaches the printer, never the Internet;
- the gadget with no MUD file is learned (issue #16: learning is on by default) on the
  home default, so it is limited (its cloud blocked), then, once the owner grants it the
  Internet, reaches its cloud;
- the printer is reachable from the LAN (the plug prints on it) and reaches its cloud;
- each device has its own WiFi key in hostapd's key file (no radio here: hostapd runs
  with driver=none, so keys are issued and loaded, not used to associate);
- the owner's portal answers from the host (through the loopback relay).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

HOME_DEFAULT_STATES = frozenset({"default", "learning", "proposed"})
"""States in which a device without a MUD file has the home default (learning and a
proposal waiting for the owner change nothing it may reach)."""


class Status(StrEnum):
    """Where an expected outcome stands."""

    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One expected outcome and its status, with a short explanation."""

    key: str
    text: str
    status: Status
    detail: str = ""


@dataclass(slots=True)
class FlowTally:
    """Attempts of one flow of one device: counts and times of successes and failures."""

    ok: list[float] = field(default_factory=list)
    blocked: list[float] = field(default_factory=list)

    @property
    def last(self) -> bool | None:
        """The last attempt's result (None before any attempt)."""
        if not self.ok and not self.blocked:
            return None
        if not self.blocked:
            return True
        if not self.ok:
            return False
        return self.ok[-1] > self.blocked[-1]


@dataclass(slots=True)
class DeviceView:
    """What is known about one demo device."""

    key: str
    address: str | None = None
    state: str | None = None
    signature: str | None = None
    state_since: float | None = None
    compromised_at: float | None = None
    granted_at: float | None = None
    wifi_key: str | None = None
    dropped: int = 0  # packets the gateway dropped (its NFLOG reports)
    first_state: dict[str, float] = field(default_factory=dict)  # state -> first seen time
    flows: dict[str, FlowTally] = field(default_factory=lambda: defaultdict(FlowTally))
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Judge:
    """Accumulates observations and decides the outcomes."""

    quarantine_within: float = 15.0
    devices: dict[str, DeviceView] = field(default_factory=dict)
    portal: tuple[bool, str] | None = None  # reachable from the host, and what was seen
    psk_file: Path | None = None  # hostapd's per-device key file
    macs: dict[str, str] = field(default_factory=dict)  # MAC -> device key

    def view(self, key: str) -> DeviceView:
        """The view of device ``key`` (created on first use)."""
        if key not in self.devices:
            self.devices[key] = DeviceView(key)
        return self.devices[key]

    def device_event(self, event: dict[str, Any]) -> None:
        """Take one JSON event a device program reported."""
        key = str(event.get("device", ""))
        if not key:
            return
        view = self.view(key)
        t = float(event.get("t", 0.0))
        kind = event.get("event")
        if kind == "lease":
            view.address = str(event.get("address"))
        elif kind == "flow":
            tally = view.flows[str(event.get("flow"))]
            (tally.ok if event.get("ok") else tally.blocked).append(t)
        elif kind == "compromised":
            view.compromised_at = t
        elif kind == "error":
            view.notes.append(str(event.get("error")))

    def device_state(self, key: str, state: str, signature: str | None, t: float) -> None:
        """Take the gateway's recorded state of device ``key`` at time ``t``."""
        view = self.view(key)
        if state != view.state:
            view.state, view.state_since = state, t
        view.first_state.setdefault(state, t)
        view.signature = signature

    def granted(self, key: str, t: float) -> None:
        """The owner granted device ``key`` the Internet at ``t``."""
        self.view(key).granted_at = t

    # -- verdicts -------------------------------------------------------------------------

    def outcomes(self, *, final: bool = False) -> list[Verdict]:
        """Every expected outcome; with ``final`` a pending one becomes failed."""
        verdicts = [self._bulb_signed(), self._bulb_flows(), self._camera(), self._plug(),
                    self._gadget(), self._printer(), self._wifi(), self._portal()]
        if final:
            verdicts = [v if v.status is not Status.PENDING else
                        Verdict(v.key, v.text, Status.FAILED, v.detail or "did not happen")
                        for v in verdicts]
        return verdicts

    def all_passed(self) -> bool:
        """True once every outcome has passed."""
        return all(v.status is Status.PASSED for v in self.outcomes())

    def _tally(self, key: str, flow: str) -> FlowTally:
        return self.view(key).flows[flow]

    def _bulb_signed(self) -> Verdict:
        text = "bulb: its signed MUD file verified"
        view = self.view("bulb")
        if view.signature in ("signed-valid", "signed_valid"):
            return Verdict("bulb-signed", text, Status.PASSED, "signature valid")
        if view.signature in ("invalid",):
            return Verdict("bulb-signed", text, Status.FAILED, "signature invalid")
        return Verdict("bulb-signed", text, Status.PENDING, view.signature or "")

    def _bulb_flows(self) -> Verdict:
        text = "bulb: profiled; reaches its cloud, other hosts blocked"
        view = self.view("bulb")
        cloud, ntp, other = (self._tally("bulb", f) for f in ("cloud", "ntp", "elsewhere"))
        if other.ok:
            return Verdict("bulb-flows", text, Status.FAILED,
                           f"reached a host its profile does not name ({len(other.ok)}x)")
        if view.state == "profiled" and cloud.last and ntp.last and other.blocked:
            return Verdict("bulb-flows", text, Status.PASSED,
                           f"cloud {len(cloud.ok)} ok, elsewhere {len(other.blocked)} blocked")
        return Verdict("bulb-flows", text, Status.PENDING,
                       f"state {view.state}, cloud ok {len(cloud.ok)}")

    def _camera(self) -> Verdict:
        text = f"camera: quarantined within {self.quarantine_within:g} s of its attack"
        view = self.view("camera")
        cloud = self._tally("camera", "cloud")
        if self._tally("camera", "elsewhere").ok:
            return Verdict("camera", text, Status.FAILED, "reached a host it may not")
        quarantined = view.first_state.get("quarantined")
        if view.compromised_at is None:
            if quarantined is not None:
                return Verdict("camera", text, Status.FAILED, "quarantined before any attack")
            return Verdict("camera", text, Status.PENDING, "behaving normally")
        if not any(t < view.compromised_at for t in cloud.ok):
            return Verdict("camera", text, Status.FAILED if quarantined else Status.PENDING,
                           "never reached its cloud while behaving")
        if quarantined is None:
            return Verdict("camera", text, Status.PENDING, "attacking, not yet quarantined")
        delay = quarantined - view.compromised_at
        if delay > self.quarantine_within:
            return Verdict("camera", text, Status.FAILED, f"quarantined after {delay:.1f} s")
        # Cut off: once quarantined (plus a second for in-flight attempts) no cloud access.
        late = [t for t in cloud.ok if t > quarantined + 1.0]
        if late:
            return Verdict("camera", text, Status.FAILED, "still reached its cloud in quarantine")
        if not any(t > quarantined + 1.0 for t in cloud.blocked):
            return Verdict("camera", text, Status.PENDING, "quarantined; checking cut-off")
        return Verdict("camera", text, Status.PASSED,
                       f"quarantined {max(delay, 0.0) * 1000:.0f} ms after the attack began; "
                       "cloud cut off")

    def _plug(self) -> Verdict:
        text = "plug (out of support): LAN only"
        view = self.view("plug")
        cloud, printer, other = (self._tally("plug", f) for f in ("cloud", "printer",
                                                                    "elsewhere"))
        if cloud.ok or other.ok:
            return Verdict("plug", text, Status.FAILED, "reached the Internet")
        if view.state == "out-of-support" and printer.ok and cloud.blocked and other.blocked:
            return Verdict("plug", text, Status.PASSED,
                           f"printer reached {len(printer.ok)}x, Internet blocked")
        return Verdict("plug", text, Status.PENDING,
                       f"state {view.state}, printer ok {len(printer.ok)}")

    def _gadget(self) -> Verdict:
        text = "gadget (no MUD): limited while learning, then granted the Internet"
        view = self.view("nomud")
        cloud = self._tally("nomud", "cloud")
        granted = view.granted_at
        early = [t for t in cloud.ok if granted is None or t < granted]
        if early:
            return Verdict("gadget", text, Status.FAILED, "reached the Internet before the grant")
        if granted is None:
            return Verdict("gadget", text, Status.PENDING,
                           f"state {view.state}, blocked {len(cloud.blocked)}x")
        learning = view.first_state.get("learning")
        if learning is None or learning > granted:
            return Verdict("gadget", text, Status.FAILED,
                           f"granted while {view.state}, never learning (learning is on "
                           "by default)")
        if any(t > granted for t in cloud.ok):
            return Verdict("gadget", text, Status.PASSED,
                           f"learning, blocked {len(cloud.blocked)}x, then reached its cloud")
        return Verdict("gadget", text, Status.PENDING, "granted; waiting for its next attempt")

    def _printer(self) -> Verdict:
        text = "printer: reachable from the LAN, reaches its cloud"
        view = self.view("printer")
        cloud, other = self._tally("printer", "cloud"), self._tally("printer", "elsewhere")
        from_lan = self._tally("plug", "printer")
        if other.ok:
            return Verdict("printer", text, Status.FAILED, "reached a host it may not")
        if view.state == "profiled" and from_lan.ok and cloud.ok:
            return Verdict("printer", text, Status.PASSED,
                           f"reached from the LAN {len(from_lan.ok)}x")
        return Verdict("printer", text, Status.PENDING,
                       f"state {view.state}, reached from LAN {len(from_lan.ok)}x")

    def _wifi(self) -> Verdict:
        text = "wifi: each device has its own key in hostapd's key file"
        if self.psk_file is None or not self.macs:
            return Verdict("wifi", text, Status.PENDING)
        from mudguard.keys.core import parse_psk_file

        try:
            entries = parse_psk_file(self.psk_file.read_text())
        except (OSError, ValueError) as exc:
            return Verdict("wifi", text, Status.FAILED, f"cannot read the key file: {exc}")
        by_mac = {e.mac: e.keyid for e in entries}
        issued = {key: self.view(key).wifi_key for key in self.macs.values()}
        if any(by_mac.get(mac) != issued[key] for mac, key in self.macs.items()):
            return Verdict("wifi", text, Status.FAILED,
                           f"{len(entries)} keys in the file do not match the devices")
        if len(set(by_mac.values())) != len(entries):
            return Verdict("wifi", text, Status.FAILED, "two devices share a key")
        return Verdict("wifi", text, Status.PASSED,
                       f"{len(entries)} distinct keys, one per MAC, loaded by hostapd")

    def _portal(self) -> Verdict:
        text = "portal: reachable from the host"
        if self.portal is None:
            return Verdict("portal", text, Status.PENDING)
        ok, detail = self.portal
        return Verdict("portal", text, Status.PASSED if ok else Status.FAILED, detail)

    def ready_for_grant(self, key: str = "nomud") -> bool:
        """True when the gadget has shown it is limited (so the owner may grant)."""
        view = self.view(key)
        return (view.granted_at is None and view.state in HOME_DEFAULT_STATES
                and len(self._tally(key, "cloud").blocked) >= 2)
