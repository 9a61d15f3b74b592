"""One intake for every discovery source (STYLE.md §2.6).

DHCPv4 option 161, DHCPv6 option 112, LLDP, the 802.1AR certificate and the QR label
each produce a ``Sighting(mac, ip, source, mud_url, hostname)``. All of them go to
``Intake.on_sighting()``, which keys by the normalised MAC, drops link-local,
loopback and other unusable addresses, skips sightings that change nothing
(a lease renewal, a periodic LLDP frame), and hands the rest to
``DeviceService.observe()``; a lease that ended (dnsmasq's ``del``) goes to
``DeviceService.lease_ended()`` and takes the address off the device at once. A
bad sighting (a non-https MUD URL, a malformed MAC) is logged and changes nothing;
one source's bad data never stops the others.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mudguard.devices._model import Device, MudSource, device_mac, normalise_mac
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
NEW_DHCP_DEVICES = 128
"""At most this many unknown MACs become devices from DHCP (v4 and v6) per
``NEW_LLDP_WINDOW``: a DHCP client chooses its own hardware address, so one device
changing it at will could otherwise do the same. Generous for a home's first start (all
its devices asking at once); a MAC over budget stays unknown (nothing of it forwarded)
until a later request finds room."""
MAX_DEVICES = 4096
"""No new device from discovery once the store holds this many (owners add by hand)."""


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
    kind: str | None = None  # camera, plug, … (``mudguard.identify``, never the device's word)
    vendor_class: str | None = None  # DHCPv4 option 60 (for ``mudguard.identify``)
    prl: str | None = None  # DHCPv4 option 55, decimal codes joined by commas
    lease_ended: bool = False  # the DHCP server says the lease of ``ip`` ended


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

    Raises ``SightingError`` for a MAC that cannot name a device (malformed, all-zero,
    broadcast, multicast: ``device_mac``).
    """
    try:
        mac = device_mac(sighting.mac)
    except RemoteInputError as exc:
        raise SightingError(str(exc)) from None
    return replace(sighting, mac=mac, ip=usable_address(sighting.ip),
                   hostname=clean_text(sighting.hostname),
                   mud_url=sighting.mud_url.strip() if sighting.mud_url else None,
                   manufacturer=clean_text(sighting.manufacturer, 128),
                   model=clean_text(sighting.model, 128),
                   kind=clean_text(sighting.kind, 32),
                   vendor_class=clean_text(sighting.vendor_class, 256),
                   prl=clean_text(sighting.prl, 512))


class Intake:
    """The single funnel from discovery sources to the device services. Thread-safe."""

    def __init__(self, service: DeviceService, *, remember: int = 4096,
                 max_devices: int = MAX_DEVICES,
                 enrich: Callable[[Sighting], Sighting] | None = None) -> None:
        """``remember`` bounds how many recent sightings are kept for de-duplication;
        ``max_devices`` how many devices discovery may fill the store with; ``enrich``
        adds what can be inferred (``mudguard.identify``: the maker from DHCP clues)."""
        self.service = service
        self._enrich = enrich
        self._seen: OrderedDict[str, Sighting] = OrderedDict()
        self._remember = remember
        self._max_devices = max_devices
        self._lock = threading.Lock()
        self._new: dict[str, list[datetime]] = {"lldp": [], "dhcp": []}
        self.refused_new = 0
        """New MACs refused by a budget or the cap (a hostile or broken device's mark)."""

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
        if not clean.lease_ended:
            clean = self._enriched(clean)
        with self._lock:
            if clean.lease_ended:
                return self._lease_ended(clean)
            if self._seen.get(clean.mac) == clean:
                return None
            if clean.source is MudSource.NEIGHBOUR and not self._may_add(clean):
                return None
            if not self._may_create(clean):
                return None
            try:
                device = self.service.observe(
                    mac=clean.mac, ip=clean.ip, hostname=clean.hostname, mud_url=clean.mud_url,
                    source=clean.source if clean.mud_url else None,
                    manufacturer=clean.manufacturer, model=clean.model, kind=clean.kind)
            except MudUrlError as exc:
                log.warning("%s from %s: %s", clean.source.value, clean.mac, exc)
                return None
            if clean.ip is not None:
                # The address left whoever had it: their same lease again is news.
                for mac in [m for m, s in self._seen.items() if s.ip == clean.ip
                            and m != clean.mac]:
                    del self._seen[mac]
            self._seen[clean.mac] = clean
            self._seen.move_to_end(clean.mac)
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            return device

    def _enriched(self, sighting: Sighting) -> Sighting:
        """The sighting with inferred facts added; unchanged if the enricher fails."""
        if self._enrich is None:
            return sighting
        try:
            return self._enrich(sighting)
        except Exception:  # one inference bug never stops discovery
            log.exception("identifying %s failed", sighting.mac)
            return sighting

    def _lease_ended(self, sighting: Sighting) -> Device | None:
        """The address leaves the device at once (kernel, then store); the device's
        next lease is a sighting again, even if it brings the same address back."""
        self._seen.pop(sighting.mac, None)
        if sighting.ip is None:
            return None
        return self.service.lease_ended(sighting.mac, sighting.ip)

    def _may_create(self, sighting: Sighting) -> bool:
        """A known MAC always; a new one while under its source's new-device budget
        (LLDP, DHCP: whatever MAC the sender writes) and the store's cap."""
        budget = {MudSource.LLDP: ("lldp", NEW_LLDP_DEVICES),
                  MudSource.DHCP4: ("dhcp", NEW_DHCP_DEVICES),
                  MudSource.DHCP6: ("dhcp", NEW_DHCP_DEVICES)}.get(sighting.source)
        if budget is None or self.service.store.get_device(sighting.mac) is not None:
            return True
        kind, limit = budget
        now = self.service.clock()
        recent = [t for t in self._new[kind] if now - t < NEW_LLDP_WINDOW]
        self._new[kind] = recent
        if len(recent) >= limit:
            why = f"more than {limit} new devices from {kind} in {NEW_LLDP_WINDOW}"
        elif self.service.store.count_devices() >= self._max_devices:
            why = f"the home already has {self._max_devices} devices"
        else:
            recent.append(now)
            return True
        self.refused_new += 1
        if self.refused_new in (1, 10) or self.refused_new % 100 == 0:
            log.warning("ignored new MAC %s from %s: %s (%d refused so far)", sighting.mac,
                        sighting.source.value, why, self.refused_new)
        return False

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
