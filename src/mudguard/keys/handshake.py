"""WPA 4-way handshakes as real captures hold them, pure: pair the EAPOL-Key messages
seen between an AP and a station, and tell which key of a psk file made them.

A key can be tested once three things are known: the ANonce (messages 1 and 3), the
SNonce (message 2; message 4 only when the station copies it there) and a MIC over a
frame whose nonce is the SNonce. Any two messages that together carry them are a
candidate, the way hcxpcapngtool and hashcat pair them (``message_pair``):

- M1+M2: ANonce from message 1, SNonce and MIC from message 2 (same replay counter);
- M2+M3: ANonce from message 3 (its replay counter is message 2's + 1), SNonce and MIC
  from message 2: message 1 stale or missing does not matter;
- M3+M4 and M1+M4: only when message 4 carries the SNonce. IEEE 802.11-2020 12.7.6.5
  has message 4's nonce zero, so a standard message 4 adds no SNonce; some supplicants
  copy it there, and then message 4's MIC is checked with the ANonce of message 3
  (same counter) or message 1 (counter - 1).

Replay counters only order the candidates: a message 1 with another counter (the AP
resent it, the capture missed the copy the station answered) is still tried, up to
``window`` seconds away. For such a message 1 an AP that counts its ANonce up between
copies is met with hashcat's nonce-error-corrections: the ANonce's last 4 bytes,
little- or big-endian, ± 1..N.

SAE (WPA3-Personal) derives a fresh PMK in every session from the password and both
parties' random commits: a 4-way handshake after SAE cannot tell which password was
used, and :func:`identify_handshakes` never tries. Descriptor version 0 (AKM-defined
MIC and KDF) or an SAE AKM in message 2 marks it.
"""

from __future__ import annotations

import bisect
import enum
import hmac
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from mudguard.keys.core import (
    DeviceFrameError,
    EapolKey,
    EapolObservation,
    PskEntry,
    eapol_mic,
    normalise_mac,
    parse_eapol_key,
    ptk_from_pmk,
)

__all__ = [
    "AKM_PSK",
    "AKM_PSK_SHA256",
    "SAE_AKMS",
    "Handshake",
    "HandshakeKind",
    "Identification",
    "akm_suites",
    "find_handshakes",
    "handshake_matches",
    "identify_handshakes",
    "identify_key",
    "nonce_corrections",
]

AKM_8021X, AKM_PSK, AKM_FT_8021X, AKM_FT_PSK = 1, 2, 3, 4
AKM_8021X_SHA256, AKM_PSK_SHA256 = 5, 6
SAE_AKMS = frozenset({8, 9, 24, 25})
"""00-0F-AC:8 SAE, 9 FT-SAE, 24 SAE-EXT-KEY, 25 FT-SAE-EXT-KEY."""
_PSK_AKMS = frozenset({AKM_PSK, AKM_PSK_SHA256})
_RSN_OUI, _WPA_OUI = b"\x00\x0f\xac", b"\x00\x50\xf2"
_WPA_IE_PREFIX = _WPA_OUI + b"\x01"

DEFAULT_WINDOW = 600.0
"""Seconds between an ANonce message and the SNonce message still paired (hcxpcapngtool
pairs within its EAPOL timeout; real captures show message 1 minutes early)."""
_MAX_ANONCES = 8
"""Distinct ANonces tried per station message (a capture can hold many re-keys)."""
_NEAREST = 128
DEFAULT_NONCE_CORRECTIONS = 8
"""hashcat's default --nonce-error-corrections."""


class HandshakeKind(enum.Enum):
    """What a handshake can tell about the key."""

    PSK = "psk"
    """WPA/WPA2 PSK or PSK-SHA256: the PMK is the key (or PBKDF2 of the passphrase)."""
    SAE = "sae"
    """WPA3 SAE: the PMK is fresh per session, the handshake cannot identify a key."""
    OTHER = "other"
    """802.1X/EAP, FT or an unknown AKM: the PMK does not come from a psk file line."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """A candidate: an ANonce and a station message (SNonce + MIC) of one AP and station."""

    aa: str
    """The authenticator (AP) MAC."""
    spa: str
    """The supplicant (station) MAC."""
    anonce: bytes
    mic_frame: EapolKey
    """Message 2 (or a message 4 carrying the SNonce): its nonce is the SNonce, its MIC
    is checked."""
    pairing: str = "M1+M2"
    """Which messages gave the ANonce and the MIC (hcxtools' message pairs)."""
    replay_checked: bool = True
    """The replay counters agree (the ANonce is the one the station answered)."""
    akm: int | None = None
    """00-0F-AC suite type from the station's RSN element (WPA1 PSK maps to 2)."""

    @property
    def snonce(self) -> bytes:
        """The supplicant's nonce."""
        return self.mic_frame.nonce

    @property
    def kind(self) -> HandshakeKind:
        """PSK (identifiable), SAE, or another AKM."""
        if self.akm in SAE_AKMS:
            return HandshakeKind.SAE
        if self.mic_frame.version == 0:
            # AKM-defined integrity: SAE/OWE/FILS; without the element assume SAE,
            # the only personal-mode AKM that uses it.
            return HandshakeKind.SAE if self.akm is None else HandshakeKind.OTHER
        if self.akm is None or self.akm in _PSK_AKMS:
            return HandshakeKind.PSK
        return HandshakeKind.OTHER


def akm_suites(key_data: bytes) -> tuple[int, ...]:
    """The AKM suite types in the RSN (element 48) or WPA (vendor 00-50-F2:1) element
    of a key data field; WPA1's 00-50-F2:2 (PSK) reads as 2 and 00-50-F2:1 as 1."""
    offset = 0
    while offset + 2 <= len(key_data):
        element, length = key_data[offset], key_data[offset + 1]
        body = key_data[offset + 2 : offset + 2 + length]
        if element == 48:
            return _suites_after(body, 2, _RSN_OUI)
        if element == 221 and body.startswith(_WPA_IE_PREFIX):
            return _suites_after(body, 6, _WPA_OUI)
        offset += 2 + length
    return ()


def _suites_after(body: bytes, version_end: int, oui: bytes) -> tuple[int, ...]:
    """Skip version, group cipher and the pairwise list, read the AKM list."""
    offset = version_end + 4
    if offset + 2 > len(body):
        return ()
    (pairwise,) = struct.unpack("<H", body[offset : offset + 2])
    offset += 2 + 4 * pairwise
    if offset + 2 > len(body):
        return ()
    (count,) = struct.unpack("<H", body[offset : offset + 2])
    suites = [body[offset + 2 + 4 * i : offset + 6 + 4 * i] for i in range(count)]
    return tuple(s[3] for s in suites if len(s) == 4 and s[:3] == oui)


@dataclass(slots=True)
class _Seen:
    ts: float
    key: EapolKey


@dataclass(slots=True)
class _Link:
    """Every handshake message between one AP and one station, in capture order."""

    ap_messages: list[_Seen] = field(default_factory=list)
    station_messages: list[_Seen] = field(default_factory=list)
    akm: int | None = None


def _links(observations: Iterable[EapolObservation]) -> dict[tuple[str, str], _Link]:
    links: dict[tuple[str, str], _Link] = {}
    for obs in observations:
        try:
            key = parse_eapol_key(obs.eapol)
        except DeviceFrameError:
            continue  # a capture holds many things besides EAPOL-Key frames
        number = key.message
        if number in (1, 3):
            links.setdefault((obs.src, obs.dst), _Link()).ap_messages.append(_Seen(obs.ts, key))
        elif number in (2, 4):
            link = links.setdefault((obs.dst, obs.src), _Link())
            link.station_messages.append(_Seen(obs.ts, key))
            if number == 2 and link.akm is None:
                link.akm = next(iter(akm_suites(key.key_data)), None)
    return links


def _replay_checked(ap: EapolKey, station: EapolKey) -> bool:
    """The counters of a real exchange: M1 = M2, M3 = M2 + 1, M3 = M4, M1 = M4 - 1."""
    expected = {(1, 2): 0, (3, 2): 1, (3, 4): 0, (1, 4): -1}[(ap.message, station.message)]
    return ap.replay_counter == station.replay_counter + expected


def _candidates(link: _Link, times: Sequence[float], station: _Seen,
                window: float) -> list[tuple[_Seen, bool]]:
    """The ANonce messages to try with one station message: replay-checked first (message
    1 before message 3, same ANonce), then the nearest in time; one per distinct ANonce.
    At most ``_NEAREST`` messages either side are looked at (a deauthentication flood
    can leave thousands)."""
    here = bisect.bisect_left(times, station.ts)
    low = max(bisect.bisect_left(times, station.ts - window), here - _NEAREST)
    high = min(bisect.bisect_right(times, station.ts + window), here + _NEAREST)
    near = [(ap, _replay_checked(ap.key, station.key)) for ap in link.ap_messages[low:high]]
    near.sort(key=lambda item: (not item[1], item[0].key.message if item[1] else 0,
                                abs(item[0].ts - station.ts)))
    seen: set[bytes] = set()
    chosen: list[tuple[_Seen, bool]] = []
    for ap, checked in near:
        if ap.key.nonce not in seen and any(ap.key.nonce):
            seen.add(ap.key.nonce)
            chosen.append((ap, checked))
    return chosen[:_MAX_ANONCES]


def find_handshakes(observations: Iterable[EapolObservation], *,
                    window: float = DEFAULT_WINDOW) -> list[Handshake]:
    """Every candidate (ANonce, SNonce, MIC) per AP and station, best first within each
    station message (see the module docstring for the pairs)."""
    found: list[Handshake] = []
    for (aa, spa), link in _links(observations).items():
        link.ap_messages.sort(key=lambda seen: seen.ts)  # stable: capture order kept
        times = [seen.ts for seen in link.ap_messages]
        for station in link.station_messages:
            if not any(station.key.nonce):
                continue  # a standard message 4: no SNonce, nothing to pair
            for ap, checked in _candidates(link, times, station, window):
                numbers = sorted((ap.key.message, station.key.message))
                found.append(Handshake(aa=aa, spa=spa, anonce=ap.key.nonce,
                                       mic_frame=station.key,
                                       pairing=f"M{numbers[0]}+M{numbers[1]}",
                                       replay_checked=checked, akm=link.akm))
    return found


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(normalise_mac(mac).replace(":", ""))


def _mic_verifies(handshake: Handshake, pmk: bytes, anonce: bytes) -> bool:
    frame = handshake.mic_frame
    ptk = ptk_from_pmk(pmk, _mac_bytes(handshake.aa), _mac_bytes(handshake.spa),
                       anonce, frame.nonce, sha256=frame.version == 3)
    try:
        expected = eapol_mic(ptk[:16], frame.zeroed_mic(), frame.version)
    except DeviceFrameError:
        return False  # descriptor version 0 or unknown: not a PSK MIC
    return hmac.compare_digest(expected, frame.mic)


def handshake_matches(handshake: Handshake, pmk: bytes) -> bool:
    """True if the station message's MIC verifies under the PTK that ``pmk`` gives."""
    return _mic_verifies(handshake, pmk, handshake.anonce)


def nonce_corrections(anonce: bytes, limit: int) -> Iterator[tuple[str, bytes]]:
    """hashcat's nonce-error-corrections: the ANonce with its last 4 bytes read as a
    little- or big-endian counter moved by ±1..limit, each with a label."""
    head, tail = anonce[:28], anonce[28:32]
    for step in range(1, limit + 1):
        for delta in (step, -step):
            for order in ("little", "big"):
                value = (int.from_bytes(tail, order) + delta) % (1 << 32)
                yield f"{order}-endian {delta:+d}", head + value.to_bytes(4, order)


@dataclass(frozen=True, slots=True)
class Identification:
    """The key a handshake used, and how it was found."""

    handshake: Handshake
    entry: PskEntry
    correction: str | None = None
    """The nonce-error-correction that made the MIC verify (None: the ANonce as seen)."""


class _PmkCache:
    """One PBKDF2 per psk file line, however many handshakes are tested; the lines that
    already explained a station are tried first for its other messages."""

    def __init__(self, ssid: bytes | str, entries: Sequence[PskEntry]) -> None:
        self._ssid = ssid
        self._entries = entries
        self._pmks: dict[int, bytes] = {}

    def items(self, first: Sequence[int] = ()) -> Iterator[tuple[int, bytes]]:
        """(line index, PMK), the ``first`` lines before the others."""
        order = [*first, *(i for i in range(len(self._entries)) if i not in first)]
        for index in order:
            if index not in self._pmks:
                self._pmks[index] = self._entries[index].pmk(self._ssid)
            yield index, self._pmks[index]


def _search(group: Sequence[Handshake], pmks: _PmkCache, first: Sequence[int],
            corrections: int) -> tuple[int, Handshake, str | None] | None:
    """The first (line, candidate, correction) that verifies: replay-checked candidates,
    then the others, then (only when no candidate is replay-checked: the ANonce the
    station answered may be unseen) nonce corrections of message 1's ANonce."""
    checked = [hs for hs in group if hs.replay_checked]
    unchecked = [hs for hs in group if not hs.replay_checked]
    for tier in (checked, unchecked):
        for index, pmk in pmks.items(first):
            for handshake in tier:
                if handshake_matches(handshake, pmk):
                    return index, handshake, None
    if checked or corrections <= 0:
        return None
    unsure = [hs for hs in unchecked if hs.pairing.startswith("M1")]
    for index, pmk in pmks.items(first):
        for handshake in unsure:
            for label, anonce in nonce_corrections(handshake.anonce, corrections):
                if _mic_verifies(handshake, pmk, anonce):
                    return index, handshake, label
    return None


def identify_handshakes(handshakes: Iterable[Handshake], ssid: bytes | str,
                        entries: Sequence[PskEntry], *,
                        corrections: int = DEFAULT_NONCE_CORRECTIONS) -> list[Identification]:
    """For each station message (PSK kinds only), the entry whose key made its MIC, with
    the first candidate ANonce that verifies (see :func:`_search` for the order and when
    nonce corrections are tried). Station messages no entry explains are left out."""
    groups: dict[tuple[str, str, bytes], list[Handshake]] = {}
    for handshake in handshakes:
        if handshake.kind is HandshakeKind.PSK:
            key = (handshake.aa, handshake.spa, handshake.mic_frame.raw)
            groups.setdefault(key, []).append(handshake)
    pmks = _PmkCache(ssid, entries)
    known: dict[tuple[str, str], list[int]] = {}
    found: list[Identification] = []
    for (aa, spa, _raw), group in groups.items():
        first = known.setdefault((aa, spa), [])
        result = _search(group, pmks, first, corrections)
        if result is not None:
            index, handshake, label = result
            if index not in first:
                first.append(index)
            found.append(Identification(handshake, entries[index], label))
    return found


def identify_key(handshake: Handshake, ssid: bytes | str,
                 entries: Iterable[PskEntry]) -> PskEntry | None:
    """The entry whose key one candidate used (its ANonce as seen), or None."""
    for entry in entries:
        if handshake_matches(handshake, entry.pmk(ssid)):
            return entry
    return None
