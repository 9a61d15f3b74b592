"""The daemon's identifier: the same decision as ``mudguard identify``, fed by DHCP leases.

dnsmasq's hook already hands the daemon each lease's hostname (option 12), vendor
class (60) and parameter request list (55); with the MAC's OUI these are the
clues the daemon has without capturing traffic. ``DhcpIdentifier.enrich`` adds the
maker and the kind it infers to a DHCP sighting that carries none, when the
confidence reaches ``min_confidence``; ``from_learning`` does the same at the end of a
device's learning with the DNS names its connections went to. The device service
stores each only while the device has none yet (the kind is shown to the owner: "a
plug"); a MUD file's ``mfg-name`` replaces the maker and an owner's label (``add``)
too. Nothing here
decides access: maker and kind are shown to the owner, never used to pick a profile
(a repository match needs a model too, which this never sets).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from mudguard.devices._model import Device, MudSource
from mudguard.discovery.sighting import Sighting
from mudguard.identify.capture import load_knowledge, load_oui_registry
from mudguard.identify.decide import Clue, Identification, TrafficSummary, identify
from mudguard.identify.knowledge import KnowledgeBase, OuiRegistry
from mudguard.profile.core import mac_bytes

log = logging.getLogger(__name__)

DHCP_SOURCES = frozenset({MudSource.DHCP4, MudSource.DHCP6})


class DhcpIdentifier:
    """Identify devices from what their DHCP requests say (see the module docstring)."""

    def __init__(self, kb: KnowledgeBase, oui: OuiRegistry | None, *,
                 min_confidence: float = 0.5) -> None:
        """Use ``kb`` and ``oui``; keep a maker only at ``min_confidence`` or above."""
        self.kb = kb
        self.oui = oui
        self.min_confidence = min_confidence

    @classmethod
    def load(cls) -> DhcpIdentifier:
        """The identifier with the shipped knowledge and the installed OUI registry."""
        oui = load_oui_registry()
        if oui is None:
            log.warning("no OUI registry installed (libwireshark-data): makers are "
                        "inferred from DHCP names only")
        return cls(load_knowledge(), oui)

    def identify(self, sighting: Sighting) -> Identification:
        """What the sighting's MAC and DHCP options say about the device."""
        clues = [Clue(name, value) for name, value in (
            ("hostname", sighting.hostname), ("vendor_class", sighting.vendor_class),
            ("prl", sighting.prl)) if value]
        return identify(mac_bytes(sighting.mac), clues, self.kb, self.oui)

    def enrich(self, sighting: Sighting) -> Sighting:
        """The sighting with the inferred maker and kind, for a DHCP sighting that names
        none (each kept only at ``min_confidence`` or above)."""
        if sighting.source not in DHCP_SOURCES or (sighting.manufacturer and sighting.kind):
            return sighting
        result = self.identify(sighting)
        log.info("identified %s: maker %s (%.2f), kind %s (%.2f)", sighting.mac,
                 result.manufacturer, result.manufacturer_confidence, result.kind,
                 result.kind_confidence)
        maker = sighting.manufacturer
        if maker is None and result.manufacturer_confidence >= self.min_confidence:
            maker = result.manufacturer
        kind = sighting.kind
        if kind is None and result.kind_confidence >= self.min_confidence:
            kind = result.kind
        return replace(sighting, manufacturer=maker, kind=kind)

    def from_learning(self, device: Device, names: Sequence[str]) -> tuple[str | None,
                                                                           str | None]:
        """(maker, kind) of a device at the end of its learning: its DHCP hostname, its
        MAC and the DNS names its connections went to (each kept at ``min_confidence``)."""
        clues = [Clue("hostname", device.hostname)] if device.hostname else []
        clues += [Clue("dns_name", name) for name in names]
        result = identify(mac_bytes(device.mac), clues, self.kb, self.oui,
                          TrafficSummary(dns_names=len(names)))
        log.info("identified %s from its learned traffic: maker %s (%.2f), kind %s (%.2f)",
                 device.mac, result.manufacturer, result.manufacturer_confidence,
                 result.kind, result.kind_confidence)
        maker = result.manufacturer \
            if result.manufacturer_confidence >= self.min_confidence else None
        kind = result.kind if result.kind_confidence >= self.min_confidence else None
        return maker, kind
