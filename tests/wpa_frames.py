"""Build WPA 4-way handshakes from known keys, wrap them in every capture link type and
write pcap/pcapng files: the test generator for ``mudguard.keys.handshake``/``capture``.

The frames follow IEEE 802.11-2020 12.7.2 (EAPOL-Key layout) and 12.7.6 (4-way
handshake); MICs are computed with mudguard's own PTK/MIC functions, which are checked
against the IEEE vectors and two real over-the-air captures in test_keys_crypto.py.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from mudguard.keys.core import eapol_mic, pmk_from_passphrase, ptk_from_pmk

PAIRWISE, INSTALL, ACK, MIC, SECURE, ENCRYPTED = 0x8, 0x40, 0x80, 0x100, 0x200, 0x1000
AP, STA = "02:aa:00:00:00:01", "02:5a:00:00:00:02"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def rsn_element(akm: int) -> bytes:
    body = (b"\x01\x00" + b"\x00\x0f\xac\x04" + b"\x01\x00\x00\x0f\xac\x04"
            + b"\x01\x00\x00\x0f\xac" + bytes([akm]) + b"\x00\x00")
    return bytes([48, len(body)]) + body


def wpa1_element() -> bytes:
    body = (b"\x00\x50\xf2\x01\x01\x00" + b"\x00\x50\xf2\x02" + b"\x01\x00\x00\x50\xf2\x02"
            + b"\x01\x00\x00\x50\xf2\x02")
    return bytes([221, len(body)]) + body


@dataclass(frozen=True)
class Exchange:
    """One 4-way handshake between AP and STA with a known key.

    version: key descriptor version (1 WPA1/HMAC-MD5, 2 WPA2/HMAC-SHA1, 3 PSK-SHA256/
    AES-CMAC, 0 SAE: AKM-defined). ``replay``: message 1's counter.
    """

    passphrase: str
    ssid: str
    version: int = 2
    anonce: bytes = bytes(range(1, 33))
    snonce: bytes = bytes(range(101, 133))
    aa: str = AP
    spa: str = STA
    replay: int = 1
    akm: int | None = None

    @property
    def akm_suite(self) -> int:
        return self.akm if self.akm is not None else {0: 8, 1: 2, 2: 2, 3: 6}[self.version]

    @property
    def ptk(self) -> bytes:
        pmk = pmk_from_passphrase(self.passphrase, self.ssid)
        return ptk_from_pmk(pmk, mac_bytes(self.aa), mac_bytes(self.spa), self.anonce,
                            self.snonce, sha256=self.version == 3)

    @property
    def kck(self) -> bytes:
        return self.ptk[:16]

    def wrapped_gtk(self) -> bytes:
        """Message 3's key data: RSN element and GTK KDE, AES-key-wrapped with the KEK
        (RFC 3394), padded with 0xdd 00.. (IEEE 802.11-2020 12.7.2)."""
        kde = rsn_element(self.akm_suite) + b"\xdd\x16\x00\x0f\xac\x01\x01\x00" + bytes(range(16))
        kde += b"\xdd" + bytes(-(len(kde) + 1) % 8)
        return aes_key_wrap(self.ptk[16:32], kde)

    def _frame(self, info: int, replay: int, nonce: bytes, key_data: bytes,
               with_mic: bool) -> bytes:
        wpa1 = self.version == 1
        body = (bytes([254 if wpa1 else 2]) + struct.pack("!HHQ", info | self.version,
                                                          32 if wpa1 else 16, replay)
                + nonce + bytes(16) + bytes(8) + bytes(8) + bytes(16)
                + struct.pack("!H", len(key_data)) + key_data)
        frame = struct.pack("!BBH", 1 if wpa1 else 2, 3, len(body)) + body
        if not with_mic:
            return frame
        if self.version == 0:
            mic = b"\x5a" * 16  # SAE: the KCK comes from the SAE PMK, unknown here
        else:
            mic = eapol_mic(self.kck, frame, self.version)
        return frame[:81] + mic + frame[97:]

    def m1(self, *, replay: int | None = None, anonce: bytes | None = None) -> bytes:
        return self._frame(PAIRWISE | ACK, self.replay if replay is None else replay,
                           anonce or self.anonce, b"", with_mic=False)

    def m2(self, *, replay: int | None = None) -> bytes:
        element = wpa1_element() if self.version == 1 else rsn_element(self.akm_suite)
        return self._frame(PAIRWISE | MIC, self.replay if replay is None else replay,
                           self.snonce, element, with_mic=True)

    def m3(self, *, replay: int | None = None) -> bytes:
        wpa1 = self.version == 1
        info = PAIRWISE | ACK | MIC | INSTALL | (0 if wpa1 else SECURE | ENCRYPTED)
        if wpa1:
            key_data = wpa1_element()  # WPA1: the GTK comes in a group key handshake
        elif self.version == 0:
            key_data = b"\x99" * 56  # SAE: the KEK comes from the SAE PMK, unknown here
        else:
            key_data = self.wrapped_gtk()
        return self._frame(info, self.replay + 1 if replay is None else replay,
                           self.anonce, key_data, with_mic=True)

    def m4(self, *, with_snonce: bool = False, replay: int | None = None) -> bytes:
        info = PAIRWISE | MIC | (0 if self.version == 1 else SECURE)
        nonce = self.snonce if with_snonce else bytes(32)
        return self._frame(info, self.replay + 1 if replay is None else replay, nonce, b"",
                           with_mic=True)


# --- link layers -----------------------------------------------------------------------

SNAP = b"\xaa\xaa\x03\x00\x00\x00\x88\x8e"


def dot11_data(src: str, dst: str, bssid: str, eapol: bytes, *, qos: bool = False,
               four_address: bool = False, protected: bool = False) -> bytes:
    """An 802.11 data frame carrying ``eapol`` (ToDS from a station, FromDS from the AP)."""
    subtype = 8 if qos else 0
    fc0 = (subtype << 4) | (2 << 2)
    if four_address:
        fc1, addrs = 0x3, mac_bytes(bssid) + mac_bytes(bssid) + mac_bytes(dst)
    elif src == bssid:
        fc1, addrs = 0x2, mac_bytes(dst) + mac_bytes(bssid) + mac_bytes(src)
    else:
        fc1, addrs = 0x1, mac_bytes(bssid) + mac_bytes(src) + mac_bytes(dst)
    if protected:
        fc1 |= 0x40
    header = bytes([fc0, fc1]) + b"\x00\x00" + addrs + b"\x10\x00"
    if four_address:
        header += mac_bytes(src)
    if qos:
        header += b"\x07\x00"
    return header + SNAP + eapol


def beacon(bssid: str, ssid: bytes, akm: int = 2) -> bytes:
    header = b"\x80\x00\x00\x00" + b"\xff" * 6 + mac_bytes(bssid) * 2 + b"\x00\x00"
    fixed = bytes(8) + b"\x64\x00\x11\x04"
    return header + fixed + bytes([0, len(ssid)]) + ssid + rsn_element(akm)


def radiotap(frame: bytes, *, fcs: bool = False) -> bytes:
    """Radiotap with TSFT and Flags (FCS at the end when ``fcs``)."""
    present = 0x3
    header = struct.pack("<BBHI", 0, 0, 8 + 8 + 1 + 3, present) + struct.pack("<Q", 12345)
    header += bytes([0x10 if fcs else 0]) + bytes(3)
    return header + frame + (b"\xde\xad\xbe\xef" if fcs else b"")


def prism(frame: bytes) -> bytes:
    return struct.pack("<II", 0x44, 144) + b"wlan0".ljust(16, b"\x00") + bytes(144 - 24) + frame


def avs(frame: bytes) -> bytes:
    return struct.pack(">II", 0x80211001, 64) + bytes(56) + frame


def ppi(frame: bytes) -> bytes:
    return struct.pack("<BBHI", 0, 0, 8, 105) + frame


def ethernet(src: str, dst: str, eapol: bytes, *, vlan: int | None = None) -> bytes:
    tag = b"" if vlan is None else struct.pack("!HH", 0x8100, vlan)
    return mac_bytes(dst) + mac_bytes(src) + tag + struct.pack("!H", 0x888E) + eapol


LINKTYPES = {"ethernet": 1, "802.11": 105, "prism": 119, "radiotap": 127, "avs": 163,
             "ppi": 192}


def wrap(link: str, src: str, dst: str, eapol: bytes, bssid: str = AP) -> bytes:
    """One EAPOL frame as a capture on ``link`` shows it."""
    if link == "ethernet":
        return ethernet(src, dst, eapol)
    frame = dot11_data(src, dst, bssid, eapol)
    return {"802.11": lambda f: f, "prism": prism, "radiotap": radiotap, "avs": avs,
            "ppi": ppi}[link](frame)


# --- files -----------------------------------------------------------------------------


def write_pcap(path: Path, linktype: int, frames: Iterable[tuple[float, bytes]]) -> Path:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for ts, frame in frames:
        out += struct.pack("<IIII", int(ts), int(ts % 1 * 1e6), len(frame), len(frame)) + frame
    path.write_bytes(out)
    return path


def _block(block_type: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("<II", block_type, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def write_pcapng(path: Path, linktypes: Sequence[int],
                 frames: Iterable[tuple[int, float, bytes]]) -> Path:
    """A pcapng with one interface per link type; frames are (interface, time, bytes).
    Interfaces use nanosecond timestamps (if_tsresol 9)."""
    out = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    for linktype in linktypes:
        options = struct.pack("<HH", 9, 1) + b"\x09\x00\x00\x00" + struct.pack("<HH", 0, 0)
        out += _block(1, struct.pack("<HHI", linktype, 0, 65535) + options)
    for iface, ts, frame in frames:
        units = int(ts * 1e9)
        out += _block(6, struct.pack("<IIIII", iface, units >> 32, units & 0xFFFFFFFF,
                                     len(frame), len(frame)) + frame)
    path.write_bytes(out)
    return path


def capture(path: Path, link: str, messages: Sequence[tuple[float, str, str, bytes]], *,
            pcapng: bool = False, extra: Sequence[tuple[float, bytes]] = ()) -> Path:
    """Write (time, src, dst, eapol) messages (plus ready link-layer ``extra`` frames)
    as a ``link`` capture."""
    frames = sorted([(ts, wrap(link, src, dst, eapol)) for ts, src, dst, eapol in messages]
                    + list(extra), key=lambda item: item[0])
    if pcapng:
        return write_pcapng(path, [LINKTYPES[link]], [(0, ts, f) for ts, f in frames])
    return write_pcap(path, LINKTYPES[link], frames)
