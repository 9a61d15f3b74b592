"""Adapter: read EAPOL frames out of a pcap/pcapng capture (dpkt reads the file;
the 802.11, radiotap and Ethernet headers are decoded here, so a hostile frame
can only be skipped, never crash the reader).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import dpkt

from mudguard.errors import RemoteInputError
from mudguard.keys.core import EapolObservation, Handshake, find_handshakes

__all__ = ["CaptureError", "eapol_observations", "read_handshakes"]

_DLT_EN10MB = 1
_DLT_IEEE802_11 = 105
_DLT_IEEE802_11_RADIO = 127
_EAPOL_ETHERTYPE = 0x888E
_SNAP_EAPOL = b"\xaa\xaa\x03\x00\x00\x00\x88\x8e"
_MAX_FRAMES = 5_000_000
_READ_ERRORS = (ValueError, dpkt.Error, struct.error)


class CaptureError(RemoteInputError):
    """The capture file cannot be read (not pcap/pcapng, unsupported link type)."""

    key = "capture_invalid"


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _from_80211(frame: bytes) -> EapolObservation | None:
    if len(frame) < 24:
        return None
    fc0, fc1 = frame[0], frame[1]
    if (fc0 >> 2) & 0x3 != 2 or fc1 & 0x40:  # not a data frame, or protected
        return None
    to_ds, from_ds = fc1 & 0x1, fc1 & 0x2
    header = 24 + (6 if to_ds and from_ds else 0)
    if fc0 & 0x80:  # QoS data subtypes carry a 2-byte QoS control field
        header += 2
        if fc1 & 0x80:  # +HTC
            header += 4
    addr1, addr2, addr3 = frame[4:10], frame[10:16], frame[16:22]
    if to_ds and not from_ds:
        src, dst = addr2, addr3
    elif from_ds and not to_ds:
        src, dst = addr3, addr1
    else:
        src, dst = addr2, addr1
    body = frame[header:]
    if not body.startswith(_SNAP_EAPOL):
        return None
    # The AP is the BSSID; for EAPOL the SA/DA are the AP and the station themselves.
    return EapolObservation(src=_mac(src), dst=_mac(dst), eapol=body[len(_SNAP_EAPOL) :])


def _from_radiotap(frame: bytes) -> EapolObservation | None:
    if len(frame) < 8:
        return None
    (length,) = struct.unpack("<H", frame[2:4])
    return _from_80211(frame[length:]) if length <= len(frame) else None


def _from_ethernet(frame: bytes) -> EapolObservation | None:
    if len(frame) < 14:
        return None
    (ethertype,) = struct.unpack("!H", frame[12:14])
    if ethertype != _EAPOL_ETHERTYPE:
        return None
    return EapolObservation(src=_mac(frame[6:12]), dst=_mac(frame[0:6]), eapol=frame[14:])


_DECODERS = {
    _DLT_EN10MB: _from_ethernet,
    _DLT_IEEE802_11: _from_80211,
    _DLT_IEEE802_11_RADIO: _from_radiotap,
}


def eapol_observations(path: Path) -> Iterator[EapolObservation]:
    """Yield every EAPOL frame in a pcap or pcapng file, in capture order."""
    with path.open("rb") as handle:
        try:
            reader: dpkt.pcap.Reader | dpkt.pcapng.Reader = dpkt.pcap.Reader(handle)
        except _READ_ERRORS:
            handle.seek(0)
            try:
                reader = dpkt.pcapng.Reader(handle)
            except _READ_ERRORS as exc:
                raise CaptureError(f"{path.name}: not a pcap or pcapng file") from exc
        decoder = _DECODERS.get(reader.datalink())
        if decoder is None:
            raise CaptureError(f"{path.name}: link type {reader.datalink()} is not supported "
                               "(802.11, radiotap or Ethernet)")
        try:
            for count, (_ts, frame) in enumerate(reader):
                if count >= _MAX_FRAMES:
                    raise CaptureError(f"{path.name}: more than {_MAX_FRAMES} frames")
                observation = decoder(bytes(frame))
                if observation is not None:
                    yield observation
        except _READ_ERRORS as exc:
            raise CaptureError(f"{path.name}: truncated or corrupt capture") from exc


def read_handshakes(path: Path) -> list[Handshake]:
    """Every (message 1, message 2) pair in a capture."""
    return find_handshakes(eapol_observations(path))
