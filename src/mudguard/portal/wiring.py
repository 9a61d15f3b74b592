"""Adapters that plug the gateway's parts into the portal's protocols.

Kept apart from the portal's routes (which import none of them); the composition
root (the daemon, ``mudguard portal``) picks what exists on this gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mudguard.keys.core import WifiCredentials
from mudguard.portal._services import IssuedKey

if TYPE_CHECKING:
    from mudguard.keys.service import KeyManager


class KeyManagerIssuer:
    """``KeyIssuer`` over the WiFi key manager: one key per device, replaced on re-issue."""

    def __init__(self, manager: KeyManager, ssid: str,
                 clock: Callable[[], float] = time.time) -> None:
        """Issue keys through ``manager`` for the network called ``ssid``."""
        self.manager = manager
        self.ssid = ssid
        self.clock = clock

    def issue(self, mac: str) -> IssuedKey:
        """Revoke any key the device had, issue a new one, return it with its id."""
        old = self.manager.ring.by_mac(mac)
        if old is not None:
            self.manager.revoke(old.entry.keyid)
        record = self.manager.issue(mac=mac, now=self.clock())
        return IssuedKey(credentials=WifiCredentials(ssid=self.ssid,
                                                     passphrase=record.entry.passphrase),
                         key_id=record.entry.keyid)
