"""Adapters that plug other parts of mudguard into the device services' protocols.

Kept apart from ``service.py`` so the services import none of them; the composition
root (``mudguard.app``) and the CLI pick what exists on this gateway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mudguard.keys.service import KeyManager


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
