"""Adapter: the owner's printable WiFi QR code (segno), written 0600 since it holds a key."""

from __future__ import annotations

import io
from pathlib import Path

import segno

from mudguard.keys.core import KeyFormatError, WifiCredentials, wifi_qr_payload
from mudguard.keys.hostapd import write_atomic

__all__ = ["save_wifi_qr", "wifi_qr_image"]


def wifi_qr_image(creds: WifiCredentials, kind: str, *, scale: int = 8) -> bytes:
    """The ``WIFI:`` QR code as SVG or PNG bytes (error correction M)."""
    if kind not in ("svg", "png"):
        raise KeyFormatError(f"QR image kind must be svg or png, got {kind[:10]!r}")
    out = io.BytesIO()
    segno.make(wifi_qr_payload(creds), error="m", micro=False).save(
        out, kind=kind, scale=scale, border=4)
    return out.getvalue()


def save_wifi_qr(creds: WifiCredentials, path: Path) -> None:
    """Write the QR code to ``path`` (.svg or .png), mode 0600."""
    write_atomic(path, wifi_qr_image(creds, path.suffix.lower().lstrip(".")))
