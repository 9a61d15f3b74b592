"""Allowed connections per device and destination, counted in the daemon.

The conntrack watcher calls ``on_connection`` once per connection the kernel accepted
(never per packet), on the event loop: a dict lookup of both ends among the devices'
addresses (``AddressBook``), a name lookup (what the device resolved through the DNS
guard), and a counter increment. Every ``violation_period`` the gateway drains the
counts (with the drop log's blocked counts, ``ViolationLog``) into the store's hourly
``activity`` rows. Bounded: at most ``max_devices`` devices and ``max_destinations``
destinations per device between drains (the rest count as ``other``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mudguard.devices.activity import OTHER, clean_destination

log = logging.getLogger(__name__)

DeviceLookup = Callable[[str], str | None]  # a LAN address -> device id
NameLookup = Callable[[str, str], str | None]  # (device id, remote address) -> DNS name


@dataclass(slots=True)
class ActivityLog:
    """Counts accepted connections per device id and destination between drains."""

    device_of: DeviceLookup
    names: NameLookup | None = None
    max_devices: int = 4096
    max_destinations: int = 64
    _counts: dict[str, dict[str, int]] = field(default_factory=dict)
    connections: int = 0  # counted since start (metrics, tests)

    def on_connection(self, conn: Any) -> None:
        """One accepted connection (a ``ConnEvent``): count it for the device that
        opened it (or, for a connection to a device, the device it reached)."""
        device, remote = self.device_of(conn.src), conn.dst
        if device is None:
            device, remote = self.device_of(conn.dst), conn.src
        if device is None:
            return
        name = None
        if self.names is not None:
            try:
                name = self.names(device, remote)
            except Exception:  # a naming bug must not lose the count
                log.exception("name lookup failed for %s", remote)
        self.count(device, clean_destination(name or remote))

    def count(self, device: str, destination: str, allowed: int = 1) -> None:
        """Add ``allowed`` connections of ``device`` to ``destination``."""
        counts = self._counts.get(device)
        if counts is None:
            if len(self._counts) >= self.max_devices:
                return
            counts = self._counts[device] = {}
        if destination not in counts and len(counts) >= self.max_destinations:
            destination = OTHER
        counts[destination] = counts.get(destination, 0) + allowed
        self.connections += allowed

    def drain(self) -> dict[str, dict[str, int]]:
        """The counts since the last drain, by device id, then destination."""
        counts, self._counts = self._counts, {}
        return counts
