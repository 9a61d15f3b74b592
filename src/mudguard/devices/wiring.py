"""Adapters that plug other parts of mudguard into the device services' protocols.

Kept apart from ``service.py`` so the services import none of them; the composition
root (``mudguard.app``) and the CLI pick what exists on this gateway.
"""

from __future__ import annotations

import functools
import logging
import os
import zoneinfo
from typing import TYPE_CHECKING

from mudguard.devices._model import EventKind, Settings
from mudguard.errors import MudguardError
from mudguard.policy import DailyWindow

if TYPE_CHECKING:
    from mudguard.devices.service import DeviceService
    from mudguard.keys.service import KeyManager

log = logging.getLogger(__name__)


class KeyManagerRevoker:
    """``KeyRevoker`` over the WiFi key manager: revokes the key bound to a MAC."""

    def __init__(self, manager: KeyManager) -> None:
        """Use ``manager`` (its ring, PSK files and hostapd control socket)."""
        self.manager = manager

    def revoke(self, mac: str) -> bool:
        """Revoke the device's key (hostapd reloads and the station is disconnected);
        True if it had one."""
        record = self.manager.ring.by_mac(mac)
        if record is None:
            return False
        self.manager.revoke(record.entry.keyid)
        return True


class KeyEventRecorder:
    """``KeyManager(notify=...)``: binding-rule events of the WiFi keys into the device
    store (a bound key sets the device's ``key_id``; a mismatch is an event the owner
    sees). Never raises into the key manager: a failure is logged."""

    def __init__(self, service: DeviceService) -> None:
        """Record into ``service``'s store."""
        self.service = service

    def __call__(self, event: dict[str, str], now: float) -> None:
        """Take one key event (``now`` is the key manager's clock; the store uses its own)."""
        kind, mac = event.get("event"), event.get("mac")
        details = {k: v for k, v in event.items() if k not in ("event", "mac")}
        try:
            if kind == "wifi_key_bound" and mac:
                self.service.set_key(mac, event.get("keyid"))
            elif kind == "wifi_key_mac_mismatch":
                self.service.tell(EventKind.KEY_MISMATCH, details, mac)
        except MudguardError as exc:
            log.warning("key event %s for %s not recorded: %s", kind, mac, exc)


def local_zone() -> str:
    """The gateway's IANA time zone, which daily schedules (a bedtime pause) are read in:
    ``TZ``, else where ``/etc/localtime`` points, else ``UTC``."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            target = os.readlink("/etc/localtime")
        except OSError:
            target = ""
        name = target.partition("zoneinfo/")[2]
    try:
        DailyWindow.parse(f"00:00-01:00 {name}")
    except ValueError:
        return "UTC"
    return name or "UTC"


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_time_zone(name: str) -> str:
    """``name`` when it is an IANA time zone this system knows
    (``zoneinfo.available_timezones()``); ``ValueError`` saying so otherwise."""
    cleaned = name.strip()
    if cleaned not in _known_zones():
        raise ValueError(f"{cleaned[:40]!r} is not a time zone this gateway knows "
                         "(an IANA name such as Europe/Paris)")
    return cleaned


def owner_zone(settings: Settings) -> str:
    """The zone the owner's times are in: their setting, else the system's own."""
    return settings.time_zone or local_zone()


def with_zone(schedule: str | None, zone: str | None = None) -> str | None:
    """A daily schedule with the gateway's zone added when it names none."""
    if schedule is None or " " in schedule.strip():
        return schedule
    return f"{schedule.strip()} {zone or local_zone()}"
