"""One intake for every discovery source (STYLE.md §2.6).

DHCPv4 option 161, DHCPv6 option 112, LLDP, the 802.1AR certificate and the QR label
each produce a ``Sighting(mac, ip, source, mud_url, hostname)``. All of them go to
``Intake.on_sighting()``, which keys by the normalised MAC, drops link-local,
loopback and other unusable addresses, skips sightings that change nothing
(a lease renewal, a periodic LLDP frame), and hands the rest to
``DeviceService.observe()``. A bad sighting (a non-https MUD URL, a malformed MAC)
is logged and changes nothing; one source's bad data never stops the others.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mudguard.devices._model import Device, MudSource, normalise_mac
from mudguard.devices.lifecycle import MudUrlError
from mudguard.devices.service import DeviceService
from mudguard.errors import RemoteInputError

log = logging.getLogger(__name__)

MAX_HOSTNAME = 253
NEW_LLDP_DEVICES = 32
"""At most this many unknown MACs become devices from LLDP frames per ``NEW_LLDP_WINDOW``:
a frame's source MAC is whatever its sender writes, so one device could otherwise fill
the store (and the ruleset) with invented devices."""
NEW_LLDP_WINDOW = timedelta(minutes=10)


class SightingError(RemoteInputError):
    """A discovery source produced data that cannot be a sighting."""

    key = "bad_sighting"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sighting:
    """A device seen by one discovery source. Everything in it came from the device."""

    mac: str
    source: MudSource
    ip: str | None = None
    mud_url: str | None = None
    hostname: str | None = None
    manufacturer: str | None = None  # QR label B000, certificate subject, …
    model: str | None = None


def usable_address(text: str | None) -> str | None:
    """``text`` in canonical form if it can identify a device on the LAN, else None
    (link-local, loopback, unspecified, multicast and malformed addresses)."""
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if (addr.is_link_local or addr.is_loopback or addr.is_unspecified or addr.is_multicast
            or addr.is_reserved):
        return None
    return addr.compressed


def clean_text(text: str | None, limit: int = MAX_HOSTNAME) -> str | None:
    """Device-supplied text kept as data: printable, trimmed, bounded; None if empty."""
    if text is None:
        return None
    kept = "".join(c for c in text if c.isprintable())[:limit].strip()
    return kept or None


def normalise(sighting: Sighting) -> Sighting:
    """The sighting with its MAC normalised, unusable addresses dropped, text cleaned.

    Raises ``SightingError`` for a MAC that is not one.
    """
    try:
        mac = normalise_mac(sighting.mac)
    except RemoteInputError as exc:
        raise SightingError(str(exc)) from None
    if int(mac[:2], 16) & 1:
        raise SightingError(f"{mac} is a multicast MAC, not a device")
    return replace(sighting, mac=mac, ip=usable_address(sighting.ip),
                   hostname=clean_text(sighting.hostname),
                   mud_url=sighting.mud_url.strip() if sighting.mud_url else None,
                   manufacturer=clean_text(sighting.manufacturer, 128),
                   model=clean_text(sighting.model, 128))


class Intake:
    """The single funnel from discovery sources to the device services. Thread-safe."""

    def __init__(self, service: DeviceService, *, remember: int = 4096) -> None:
        """``remember`` bounds how many recent sightings are kept for de-duplication."""
        self.service = service
        self._seen: OrderedDict[str, Sighting] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()
        self._lldp_new: list[datetime] = []

    def on_sighting(self, sighting: Sighting) -> Device | None:
        """Take one sighting; return the device if anything changed, else None.

        Never raises for bad device data: it is logged (and, for a known device,
        recorded as an event by the service).
        """
        try:
            clean = normalise(sighting)
        except SightingError as exc:
            log.warning("ignored a %s sighting: %s", sighting.source.value, exc)
            return None
        with self._lock:
            if self._seen.get(clean.mac) == clean:
                return None
            if clean.source is MudSource.NEIGHBOUR and not self._may_add(clean):
                return None
            if clean.source is MudSource.LLDP and not self._may_create_from_lldp(clean):
                log.warning("ignored an LLDP frame from new MAC %s: more than %d new devices "
                            "from LLDP in %s", clean.mac, NEW_LLDP_DEVICES, NEW_LLDP_WINDOW)
                return None
            try:
                device = self.service.observe(
                    mac=clean.mac, ip=clean.ip, hostname=clean.hostname, mud_url=clean.mud_url,
                    source=clean.source if clean.mud_url else None,
                    manufacturer=clean.manufacturer, model=clean.model)
            except MudUrlError as exc:
                log.warning("%s from %s: %s", clean.source.value, clean.mac, exc)
                return None
            self._seen[clean.mac] = clean
            self._seen.move_to_end(clean.mac)
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            return device

    def _may_create_from_lldp(self, sighting: Sighting) -> bool:
        """A known MAC always; a new one while under the LLDP new-device budget."""
        if self.service.store.get_device(sighting.mac) is not None:
            return True
        now = self.service.clock()
        self._lldp_new = [t for t in self._lldp_new if now - t < NEW_LLDP_WINDOW]
        if len(self._lldp_new) >= NEW_LLDP_DEVICES:
            return False
        self._lldp_new.append(now)
        return True

    def _may_add(self, sighting: Sighting) -> bool:
        """A neighbour entry is the device's own claim: it may only add an address to a
        known device, and never one another device holds."""
        store = self.service.store
        if sighting.ip is None or store.get_device(sighting.mac) is None:
            return False
        return all(d.mac == sighting.mac for d in store.devices_holding(sighting.ip))

    def forget(self, mac: str) -> None:
        """Drop the remembered sighting of a device (after ``forget``), so it is new again."""
        with self._lock:
            self._seen.pop(normalise_mac(mac), None)
