"""Per-device WiFi keys, pure: passphrases, hostapd key files, WiFi QR payloads,
WPA/WPA2 key derivation and EAPOL-Key frames (handshake pairing and identification:
``handshake.py``), and the key/MAC binding rule.

Data in, data out: no sockets, no files, no clock (``now`` is a parameter).
The adapters around it are ``hostapd.py`` (control socket, atomic file writer),
``radius.py`` (RADIUS answers for ``wpa_psk_radius``), ``capture.py`` (pcap
reading) and ``ring.py`` (the SQLite key records).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from mudguard.errors import MudguardError, RemoteInputError

__all__ = [
    "ONBOARDING_MAC",
    "PASSPHRASE_ALPHABET",
    "BindingDecision",
    "BindingOutcome",
    "CtrlEvent",
    "DeviceFrameError",
    "EapolKey",
    "EapolObservation",
    "KeyFormatError",
    "KeyRecord",
    "PskEntry",
    "PskFileLine",
    "StationInfo",
    "WifiCredentials",
    "decide_connection",
    "eapol_mic",
    "generate_passphrase",
    "is_raw_psk",
    "normalise_mac",
    "parse_ctrl_event",
    "parse_eapol_key",
    "parse_psk_file",
    "parse_sae_password_line",
    "parse_sta_reply",
    "parse_wifi_qr",
    "pmk_from_passphrase",
    "psk_file_line",
    "ptk_from_pmk",
    "read_psk_file_lines",
    "render_psk_file",
    "render_sae_password_file",
    "sae_password_line",
    "validate_keyid",
    "validate_passphrase",
    "wifi_qr_payload",
]

ONBOARDING_MAC = "00:00:00:00:00:00"
"""In a ``wpa_psk_file``, the all-zero MAC makes a key usable by any station: mudguard
uses it for a one-time onboarding key, bound to the first MAC that connects with it."""

# No 0/o, 1/l/i: a passphrase read off a label and typed on a phone must survive it.
PASSPHRASE_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # noqa: S105 (an alphabet)
_GROUP = 4
_MIN_RANDOM_CHARS = 16
# hostapd reads the psk file with fgets() into char buf[128]: a longer line is cut in two.
_MAX_PSK_LINE = 126
# hostapd's struct hostapd_wpa_psk: char keyid[PSK_MAX_KEYID_LEN = 32], NUL included.
_MAX_KEYID = 31
_KEYID_RE = re.compile(r"[A-Za-z0-9_.-]{1,31}")
_MAC_RE = re.compile(r"([0-9a-f]{2})[:-]?" * 5 + r"([0-9a-f]{2})")
# Characters the WiFi QR format (ZXing's "WIFI:" scheme) reserves; escaped with a backslash.
_QR_SPECIAL = '\\;,":'


class KeyFormatError(MudguardError):
    """A key, key file line, MAC or QR payload is malformed. Never quotes a secret."""

    key = "wifi_key_invalid"


class DeviceFrameError(RemoteInputError):
    """A frame from the air (EAPOL) or a hostapd reply is malformed."""

    key = "wifi_frame_invalid"


# --- passphrases, MACs, key ids ------------------------------------------------------


def generate_passphrase(groups: int = 5) -> str:
    """A new random passphrase: ``groups`` groups of 4 readable characters joined by '-'.

    The default (5 groups) is 24 characters carrying 20 random ones, about 99 bits.
    """
    if groups * _GROUP < _MIN_RANDOM_CHARS:
        raise KeyFormatError(f"at least {_MIN_RANDOM_CHARS // _GROUP} groups are needed")
    chars = [secrets.choice(PASSPHRASE_ALPHABET) for _ in range(groups * _GROUP)]
    return "-".join("".join(chars[i : i + _GROUP]) for i in range(0, len(chars), _GROUP))


def is_raw_psk(text: str) -> bool:
    """True for 64 hex digits: hostapd reads that as the 256-bit PSK itself, not a passphrase."""
    return len(text) == 64 and all(ch in "0123456789abcdefABCDEF" for ch in text)


def validate_passphrase(passphrase: str, *, sae: bool = False) -> str:
    """Check a WPA passphrase: 8..63 printable ASCII characters (IEEE 802.11 Annex J).

    It must also survive hostapd's line formats: no leading/trailing space (the
    psk file keeps the rest of its line verbatim) and, for SAE, no '|' (the
    sae_password separator). The error never contains the passphrase.
    """
    if not 8 <= len(passphrase) <= 63:
        raise KeyFormatError(f"passphrase must be 8..63 characters, got {len(passphrase)}")
    if any(not 0x20 <= ord(ch) <= 0x7E for ch in passphrase):
        raise KeyFormatError("passphrase must be printable ASCII (no control characters)")
    if passphrase != passphrase.strip(" "):
        raise KeyFormatError("passphrase must not start or end with a space")
    if sae and "|" in passphrase:
        raise KeyFormatError("an SAE password must not contain '|'")
    return passphrase


def validate_keyid(keyid: str) -> str:
    """Check a key id: 1..31 characters from ``A-Z a-z 0-9 _ . -`` (hostapd's limit)."""
    if not _KEYID_RE.fullmatch(keyid):
        raise KeyFormatError(
            f"key id must be 1..{_MAX_KEYID} characters of A-Z a-z 0-9 _ . - "
            f"(got {keyid[:40]!r})"
        )
    return keyid


def normalise_mac(text: str) -> str:
    """A MAC in hostapd's form (lower-case, colon-separated) from ``aa:bb..``,
    ``aa-bb..`` or ``aabb..``; raises KeyFormatError otherwise."""
    match = _MAC_RE.fullmatch(text.strip().lower())
    if match is None:
        raise KeyFormatError(f"not a MAC address: {text[:40]!r}")
    return ":".join(match.groups())


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(normalise_mac(mac).replace(":", ""))


def _format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


# --- hostapd key files ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PskEntry:
    """One line of a hostapd ``wpa_psk_file`` / ``sae_password_file``."""

    keyid: str
    mac: str
    """Lower-case colon form; ``ONBOARDING_MAC`` for a key any station may use."""
    passphrase: str = field(repr=False)
    vlan: int = 0
    """0: no VLAN; 1..4094: hostapd puts the station on that VLAN."""

    def __post_init__(self) -> None:
        validate_keyid(self.keyid)
        object.__setattr__(self, "mac", normalise_mac(self.mac))
        if not is_raw_psk(self.passphrase):  # a psk file may hold the PMK in hex
            validate_passphrase(self.passphrase)
        if not 0 <= self.vlan <= 4094:
            raise KeyFormatError(f"VLAN must be 0..4094, got {self.vlan}")

    @property
    def is_onboarding(self) -> bool:
        """True for a one-time key not yet bound to a MAC."""
        return self.mac == ONBOARDING_MAC

    def pmk(self, ssid: bytes | str) -> bytes:
        """The PMK this entry gives on ``ssid`` (a raw-PSK entry is its own PMK)."""
        if is_raw_psk(self.passphrase):
            return bytes.fromhex(self.passphrase)
        return pmk_from_passphrase(self.passphrase, ssid)


def psk_file_line(entry: PskEntry, *, ssid: bytes | str | None = None) -> str:
    """The ``wpa_psk_file`` line: ``keyid=ID [vlanid=N] MAC PASSPHRASE`` (no newline).

    With ``ssid``, the line carries the PMK as 64 hex digits instead of the
    passphrase: hostapd then skips PBKDF2 (4096 rounds) for the line on every
    reload, and the file no longer holds the passphrase the owner sees.
    """
    parts = [f"keyid={entry.keyid}"]
    if entry.vlan:
        parts.append(f"vlanid={entry.vlan}")
    parts += [entry.mac, entry.passphrase if ssid is None else entry.pmk(ssid).hex()]
    line = " ".join(parts)
    if len(line) > _MAX_PSK_LINE:
        raise KeyFormatError(
            f"wpa_psk_file line for {entry.keyid} is {len(line)} characters; "
            f"hostapd reads at most {_MAX_PSK_LINE}"
        )
    return line


def render_psk_file(entries: Iterable[PskEntry], *, ssid: bytes | str | None = None) -> str:
    """The whole ``wpa_psk_file`` text, one entry a line, sorted by key id, key ids unique
    (``ssid``: PMK lines instead of passphrases, see :func:`psk_file_line`)."""
    ordered = sorted(entries, key=lambda e: e.keyid)
    _check_unique(ordered)
    header = "# written by mudguard: one key per device; edits here are overwritten\n"
    return header + "".join(psk_file_line(e, ssid=ssid) + "\n" for e in ordered)


def _check_unique(entries: Sequence[PskEntry]) -> None:
    seen: set[str] = set()
    for entry in entries:
        if entry.keyid in seen:
            raise KeyFormatError(f"duplicate key id {entry.keyid}")
        seen.add(entry.keyid)


def parse_psk_file(text: str) -> list[PskEntry]:
    """Parse a ``wpa_psk_file`` the way hostapd 2.10 does (comments, ``name=value``
    tokens, MAC, rest of line as passphrase). Errors name the line, never the secret.
    mudguard names every key: a line without ``keyid=`` is an error here."""
    entries = [line.entry for line in read_psk_file_lines(text, require_keyid=True)]
    _check_unique(entries)
    return entries


@dataclass(frozen=True, slots=True)
class PskFileLine:
    """One line of a ``wpa_psk_file`` as hostapd reads it, ``keyid=`` optional."""

    number: int
    keyid: str | None
    """None for a line without ``keyid=`` (hostapd accepts it; the entry then holds
    the placeholder ``line-N``)."""
    entry: PskEntry


def read_psk_file_lines(text: str, *, require_keyid: bool = False) -> list[PskFileLine]:
    """Every key line of any hostapd ``wpa_psk_file`` (passphrase or 64-hex PMK), with
    its line number; key ids, where present, unique."""
    lines: list[PskFileLine] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.startswith("#") or raw == "":
            continue
        entry, named = _parse_psk_line(raw, number, require_keyid)
        lines.append(PskFileLine(number, entry.keyid if named else None, entry))
    _check_unique([line.entry for line in lines if line.keyid is not None])
    return lines


def _parse_psk_line(raw: str, number: int, require_keyid: bool) -> tuple[PskEntry, bool]:
    if len(raw) > _MAX_PSK_LINE:
        raise KeyFormatError(f"line {number}: longer than {_MAX_PSK_LINE} characters")
    tokens = raw.split(" ")
    keyid: str | None = None
    vlan = 0
    index = 0
    while index < len(tokens) and "=" in tokens[index]:
        name, _, value = tokens[index].partition("=")
        if name == "keyid":
            keyid = value
        elif name == "vlanid":
            if not value.isdigit():
                raise KeyFormatError(f"line {number}: vlanid must be a number")
            vlan = int(value)
        else:
            # Not echoed: with the MAC missing, this "field" is the passphrase.
            raise KeyFormatError(f"line {number}: unknown field before the MAC (only "
                                 "keyid= and vlanid= are used)")
        index += 1
    if index + 1 >= len(tokens):
        raise KeyFormatError(f"line {number}: needs a MAC and a passphrase")
    named = keyid is not None
    if keyid is None:
        if require_keyid:
            raise KeyFormatError(f"line {number}: no keyid= (mudguard names every key)")
        keyid = f"line-{number}"
    if _MAC_RE.fullmatch(tokens[index].strip().lower()) is None:
        # Not echoed: a line missing its MAC has the passphrase's first word here.
        raise KeyFormatError(f"line {number}: the field after keyid= is not a MAC address")
    try:
        return PskEntry(keyid=keyid, mac=tokens[index], vlan=vlan,
                        passphrase=" ".join(tokens[index + 1 :])), named
    except KeyFormatError as exc:
        raise KeyFormatError(f"line {number}: {exc}") from None


def sae_password_line(entry: PskEntry) -> str:
    """The WPA3 form: ``PASSWORD|mac=MAC|vlanid=N|id=ID``.

    hostapd cuts the password at the first ``|mac=``, ``|vlanid=``, ``|pk=`` or
    ``|id=`` and takes the identifier as the rest of the line, so ``id`` goes last.
    An onboarding key has no ``mac=`` (hostapd's wildcard). hostapd 2.10 reads
    these as repeated ``sae_password=`` lines in hostapd.conf; ``sae_password_file``
    (same syntax) arrived in 2.11.
    """
    if is_raw_psk(entry.passphrase):
        raise KeyFormatError(f"key {entry.keyid} is a raw PSK; SAE needs the passphrase")
    validate_passphrase(entry.passphrase, sae=True)
    parts = [entry.passphrase]
    if not entry.is_onboarding:
        parts.append(f"mac={entry.mac}")
    if entry.vlan:
        parts.append(f"vlanid={entry.vlan}")
    parts.append(f"id={entry.keyid}")
    return "|".join(parts)


def render_sae_password_file(entries: Iterable[PskEntry]) -> str:
    """The whole ``sae_password_file`` text, sorted by key id."""
    ordered = sorted(entries, key=lambda e: e.keyid)
    _check_unique(ordered)
    return "".join(sae_password_line(e) + "\n" for e in ordered)


def parse_sae_password_line(line: str) -> PskEntry:
    """Parse one ``sae_password`` value back into an entry (a key id is required)."""
    password, sep, rest = line.rstrip("\n").partition("|")
    if not sep:
        raise KeyFormatError("sae_password line has no fields (id= is required)")
    fields: dict[str, str] = {}
    for part in rest.split("|"):
        name, eq, value = part.partition("=")
        if not eq or name not in ("mac", "vlanid", "id") or name in fields:
            raise KeyFormatError(f"sae_password field {name[:20]!r} is unknown or repeated")
        fields[name] = value
    if "id" not in fields:
        raise KeyFormatError("sae_password line has no id=")
    vlan_text = fields.get("vlanid", "0")
    if not vlan_text.isdigit():
        raise KeyFormatError("sae_password vlanid must be a number")
    validate_passphrase(password, sae=True)
    return PskEntry(keyid=fields["id"], mac=fields.get("mac", ONBOARDING_MAC),
                    vlan=int(vlan_text), passphrase=password)


# --- WiFi QR payloads -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WifiCredentials:
    """What a ``WIFI:`` QR code carries."""

    ssid: str
    passphrase: str = field(repr=False)
    security: str = "WPA"
    hidden: bool = False


def _qr_escape(text: str) -> str:
    return "".join("\\" + ch if ch in _QR_SPECIAL else ch for ch in text)


def wifi_qr_payload(creds: WifiCredentials) -> str:
    """``WIFI:T:WPA;S:<ssid>;P:<pass>;;`` with ``\\ ; , " :`` escaped by a backslash."""
    if not 1 <= len(creds.ssid.encode("utf-8")) <= 32:
        raise KeyFormatError("SSID must be 1..32 bytes")
    if creds.security not in ("WPA", "SAE", "nopass"):
        raise KeyFormatError(f"unknown security {creds.security[:10]!r}")
    if is_raw_psk(creds.passphrase):
        raise KeyFormatError("a raw PSK cannot be shared as a WiFi QR code")
    validate_passphrase(creds.passphrase)
    payload = f"WIFI:T:{creds.security};S:{_qr_escape(creds.ssid)};"
    payload += f"P:{_qr_escape(creds.passphrase)};"
    if creds.hidden:
        payload += "H:true;"
    return payload + ";"


def parse_wifi_qr(payload: str) -> WifiCredentials:
    """Parse a ``WIFI:`` payload (escapes undone); raises KeyFormatError if malformed."""
    if not payload.startswith("WIFI:") or len(payload) > 512:
        raise KeyFormatError("not a WIFI: QR payload")
    fields: dict[str, str] = {}
    name, value, escaped, in_value = "", "", False, False
    for ch in payload[5:]:
        if escaped:
            value, escaped = value + ch, False
        elif in_value and ch == "\\":
            escaped = True
        elif in_value and ch == ";":
            fields[name], name, value, in_value = value, "", "", False
        elif not in_value and ch == ":":
            in_value = True
        elif in_value:
            value += ch
        elif ch != ";":
            name += ch
    if in_value or escaped or "S" not in fields:
        raise KeyFormatError("WIFI: payload is truncated or has no S: field")
    return WifiCredentials(ssid=fields["S"], passphrase=fields.get("P", ""),
                           security=fields.get("T", "WPA"),
                           hidden=fields.get("H", "false").lower() == "true")


# --- WPA2 key hierarchy (IEEE 802.11-2020 12.7.1) -------------------------------------


def pmk_from_passphrase(passphrase: str, ssid: bytes | str) -> bytes:
    """PMK = PBKDF2-HMAC-SHA1(passphrase, SSID, 4096, 256 bits) (802.11 Annex J.4)."""
    salt = ssid.encode("utf-8") if isinstance(ssid, str) else ssid
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode("ascii"), salt, 4096, 32)


def _prf_sha1(key: bytes, label: bytes, data: bytes, length: int) -> bytes:
    out = b""
    for i in range((length + 19) // 20):
        out += hmac.new(key, label + b"\x00" + data + bytes([i]), hashlib.sha1).digest()
    return out[:length]


def _kdf_sha256(key: bytes, label: bytes, data: bytes, bits: int) -> bytes:
    out = b""
    for i in range(1, (bits + 255) // 256 + 1):
        msg = struct.pack("<H", i) + label + data + struct.pack("<H", bits)
        out += hmac.new(key, msg, hashlib.sha256).digest()
    return out[: bits // 8]


def ptk_from_pmk(pmk: bytes, aa: bytes, spa: bytes, anonce: bytes, snonce: bytes,
                 *, sha256: bool = False) -> bytes:
    """PTK from the PMK, both MACs and both nonces, sorted as 802.11 requires.

    PRF-512 (HMAC-SHA1) for key descriptor versions 1 and 2; the SHA-256 KDF
    (384 bits) for version 3 (AKM 00-0F-AC:6, PSK-SHA256).
    """
    data = min(aa, spa) + max(aa, spa) + min(anonce, snonce) + max(anonce, snonce)
    if sha256:
        return _kdf_sha256(pmk, b"Pairwise key expansion", data, 384)
    return _prf_sha1(pmk, b"Pairwise key expansion", data, 64)


def eapol_mic(kck: bytes, frame: bytes, version: int) -> bytes:
    """The 16-byte MIC of an EAPOL-Key frame (its MIC field zeroed) for a descriptor version:
    1 HMAC-MD5, 2 HMAC-SHA1-128, 3 AES-128-CMAC."""
    if version == 1:
        return hmac.new(kck, frame, hashlib.md5).digest()
    if version == 2:
        return hmac.new(kck, frame, hashlib.sha1).digest()[:16]
    if version == 3:  # cryptography only here: the daemon needs it for nothing else (#19)
        from cryptography.hazmat.primitives import cmac
        from cryptography.hazmat.primitives.ciphers import algorithms

        mac = cmac.CMAC(algorithms.AES(kck))
        mac.update(frame)
        return mac.finalize()
    raise DeviceFrameError(f"unsupported key descriptor version {version}")


# --- EAPOL-Key frames and handshakes --------------------------------------------------

_EAPOL_KEY_TYPE = 3
_MIC_OFFSET = 81  # 4 (EAPOL header) + 77 bytes of key descriptor before the MIC
_KEY_HEADER_LEN = 99  # up to and including the key data length
_KI_PAIRWISE, _KI_INSTALL, _KI_ACK, _KI_MIC = 0x8, 0x40, 0x80, 0x100


@dataclass(frozen=True, slots=True)
class EapolKey:
    """An EAPOL-Key frame (802.1X-2004 type 3), trimmed to its declared length."""

    raw: bytes
    key_info: int
    replay_counter: int
    nonce: bytes
    mic: bytes

    @property
    def version(self) -> int:
        """Key descriptor version (1: MD5/RC4, 2: SHA1/AES, 3: AES-CMAC)."""
        return self.key_info & 0x7

    @property
    def message(self) -> int:
        """Which message of the pairwise 4-way handshake this is (1..4), 0 for any other
        key frame (group key handshake, request, malformed flags).

        ACK marks the authenticator: without MIC message 1, with MIC and Install
        message 3. Without ACK, with MIC, the supplicant: message 2 carries its RSN/WPA
        element in the key data, message 4 carries none. The Secure bit is not used: a
        station re-keying an established PTK sets it in message 2 too.
        """
        ki = self.key_info
        if not ki & _KI_PAIRWISE:
            return 0
        if ki & _KI_ACK:
            if not ki & _KI_MIC:
                return 1
            return 3 if ki & _KI_INSTALL else 0
        if not ki & _KI_MIC or ki & _KI_INSTALL:
            return 0
        return 2 if self.key_data else 4

    @property
    def key_data(self) -> bytes:
        """The key data field (message 2: the station's RSN or WPA element)."""
        (length,) = struct.unpack("!H", self.raw[_KEY_HEADER_LEN - 2 : _KEY_HEADER_LEN])
        return self.raw[_KEY_HEADER_LEN : _KEY_HEADER_LEN + length]

    def zeroed_mic(self) -> bytes:
        """The frame with its MIC field zeroed: what the MIC is computed over."""
        return self.raw[:_MIC_OFFSET] + bytes(16) + self.raw[_MIC_OFFSET + 16 :]


def parse_eapol_key(frame: bytes) -> EapolKey:
    """Parse an EAPOL PDU carrying an RSN/WPA key descriptor; DeviceFrameError if not."""
    if len(frame) < 4 + 95:
        raise DeviceFrameError(f"EAPOL-Key frame too short ({len(frame)} bytes)")
    _version, ptype, body_len = struct.unpack("!BBH", frame[:4])
    if ptype != _EAPOL_KEY_TYPE:
        raise DeviceFrameError(f"EAPOL packet type {ptype} is not a key frame")
    if body_len + 4 > len(frame) or body_len < _KEY_HEADER_LEN - 4:
        raise DeviceFrameError("EAPOL length field does not match the frame")
    raw = frame[: 4 + body_len]
    if raw[4] not in (2, 254):
        raise DeviceFrameError(f"key descriptor type {raw[4]} is not RSN or WPA")
    (key_info,) = struct.unpack("!H", raw[5:7])
    (replay,) = struct.unpack("!Q", raw[9:17])
    return EapolKey(raw=raw, key_info=key_info, replay_counter=replay, nonce=raw[17:49],
                    mic=raw[_MIC_OFFSET : _MIC_OFFSET + 16])


@dataclass(frozen=True, slots=True)
class EapolObservation:
    """An EAPOL frame seen between two stations (link-layer source and destination)."""

    src: str
    dst: str
    eapol: bytes
    ts: float = 0.0
    """Capture time (seconds): pairing tolerates messages minutes apart, not hours."""


# --- hostapd control-interface text ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class CtrlEvent:
    """An unsolicited hostapd message, e.g. ``<3>AP-STA-CONNECTED aa:.. keyid=k1``."""

    level: int
    name: str
    mac: str | None
    params: dict[str, str]
    text: str


def parse_ctrl_event(text: str) -> CtrlEvent:
    """Parse ``<level>NAME [MAC] [key=value ...]``; raises DeviceFrameError if malformed."""
    match = re.fullmatch(r"<(\d)>(\S+)(?: (.*))?", text.rstrip("\n"), flags=re.DOTALL)
    if match is None:
        raise DeviceFrameError(f"not a hostapd event: {text[:60]!r}")
    words = (match.group(3) or "").split()
    mac: str | None = None
    if words and _MAC_RE.fullmatch(words[0].lower()):
        mac = normalise_mac(words.pop(0))
    params = dict(w.partition("=")[::2] for w in words if "=" in w)
    return CtrlEvent(level=int(match.group(1)), name=match.group(2), mac=mac,
                     params=params, text=text.rstrip("\n"))


@dataclass(frozen=True, slots=True)
class StationInfo:
    """A station as ``STA <mac>`` / ``STA-FIRST`` report it."""

    mac: str
    params: dict[str, str]

    @property
    def keyid(self) -> str | None:
        """The psk file key id the station connected with, if hostapd reports one."""
        return self.params.get("keyid")


def parse_sta_reply(text: str) -> StationInfo | None:
    """Parse a station reply (MAC line then ``key=value`` lines); None for an empty or
    ``FAIL`` reply (no such station / no more stations)."""
    lines = [ln for ln in text.splitlines() if ln]
    if not lines or lines[0] == "FAIL":
        return None
    mac = normalise_mac(lines[0])
    params = dict(ln.partition("=")[::2] for ln in lines[1:] if "=" in ln)
    return StationInfo(mac=mac, params=params)


# --- the binding rule: key, VLAN and policy are one record ----------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRecord:
    """A device's key, VLAN and policy as one record.

    ``device`` names the device (and through it the MUD policy) the key admits to.
    """

    entry: PskEntry
    device: str
    created_at: float
    bound_at: float | None = None

    @property
    def keyid(self) -> str:
        """The key id (hostapd's ``keyid=``)."""
        return self.entry.keyid


class BindingOutcome(enum.Enum):
    """What a connection with a given key and MAC means."""

    ACCEPT = "accept"
    """The key is bound to this MAC: the device gets the key's policy."""
    BIND = "bind"
    """A one-time onboarding key was used for the first time: bind it to this MAC."""
    MISMATCH = "mismatch"
    """The key belongs to another MAC: no policy, disconnect, raise an event."""
    UNKNOWN = "unknown"
    """No record has that key id (revoked, or not ours): disconnect."""


@dataclass(frozen=True, slots=True)
class BindingDecision:
    """The outcome plus what to store and report."""

    outcome: BindingOutcome
    record: KeyRecord | None
    """The record after the decision (bound, for BIND); None for UNKNOWN."""
    event: dict[str, str] | None
    """A structured event for the owner (never a secret), or None."""


def decide_connection(records: Iterable[KeyRecord], keyid: str | None, mac: str,
                      now: float) -> BindingDecision:
    """Apply the binding rule to a station that connected with ``keyid`` from ``mac``.

    A device presenting another device's key gets that key's policy only if its
    MAC matches the key's MAC; a mismatch is an event. An onboarding key binds
    to the first MAC that uses it and is then an ordinary key.
    """
    mac = normalise_mac(mac)
    if mac == ONBOARDING_MAC or int(mac[:2], 16) & 0x01:
        # Not a station address (all-zero or group): it must never claim or bind a key.
        event = {"event": "wifi_station_mac_invalid", "mac": mac, "keyid": str(keyid)}
        return BindingDecision(BindingOutcome.UNKNOWN, None, event)
    record = next((r for r in records if r.keyid == keyid), None) if keyid else None
    if record is None:
        event = {"event": "wifi_key_unknown", "mac": mac, "keyid": str(keyid)}
        return BindingDecision(BindingOutcome.UNKNOWN, None, event)
    if record.entry.is_onboarding:
        bound = replace(record, entry=replace(record.entry, mac=mac), bound_at=now)
        event = {"event": "wifi_key_bound", "mac": mac, "keyid": record.keyid,
                 "device": record.device}
        return BindingDecision(BindingOutcome.BIND, bound, event)
    if record.entry.mac == mac:
        return BindingDecision(BindingOutcome.ACCEPT, record, None)
    event = {"event": "wifi_key_mac_mismatch", "mac": mac, "keyid": record.keyid,
             "key_mac": record.entry.mac, "device": record.device}
    return BindingDecision(BindingOutcome.MISMATCH, record, event)
