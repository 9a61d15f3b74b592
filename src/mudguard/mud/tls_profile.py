"""RFC 9761 (D)TLS profiles: what TLS a device's ClientHellos may offer, per ACE.

Theory of operation: the ``ietf-acl-tls`` module (RFC 9761 §5.2, vendored in ``yang/``)
augments an ACE's ``matches`` with container ``client-profiles`` holding list
``tls-dtls-profile`` (key ``name``) of leaf-lists: TLS / DTLS versions, cipher suites,
extension types, supported groups, signature algorithms (and ``-cert``), ALPN protocol
IDs, PSK key-exchange modes, certificate compression algorithms, and the trust anchors
the client accepts (``accept-list-ta-cert``, ``spki-pin-set``, ``certificate-authority``).
``ietf-mud-tls`` (§5.4) adds one boolean to the mud container,
``is-tls-dtls-profile-supported``.

``parse_client_profiles`` validates the container (YANG types, list keys, leaf-list
uniqueness, the RFC's prose rules: no GREASE value in a profile, no space or special
character in a profile name) and returns the typed ``TlsProfile``s with a ``Finding``
per problem, never raising. The parser (``_parse.py``) turns a broken container into
warnings and ignores it: a profile only adds observation, so ignoring one never
widens what the device may reach (its ACE is enforced as the rest of it says).

Pure: no I/O. Matching a ClientHello against a profile is ``mudguard.watch.tls``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mudguard.mud._model import Finding, Findings, PathPart, Severity

CLIENT_PROFILES_KEY = "ietf-acl-tls:client-profiles"
MUD_TLS_MODULE = "ietf-mud-tls"
PROFILE_SUPPORTED_KEY = "ietf-mud-tls:is-tls-dtls-profile-supported"
ACL_TLS_MODULE = "ietf-acl-tls"

TLS_VERSIONS = ("tls12", "tls13")
"""``ianatp:tls-version``: the only TLS versions a profile can name (RFC 9761 §5.3)."""
DTLS_VERSIONS = ("dtls12", "dtls13")
MAX_PROFILES = 16
MAX_ITEMS = 256
_MAX_ALPN = 255  # RFC 7301: ProtocolName<1..2^8-1>
_MAX_CA = 1024
_MAX_BINARY = 16 * 1024
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def is_grease(value: int) -> bool:
    """True for a GREASE code point of a 16-bit registry (RFC 8701: 0x0A0A, 0x1A1A … 0xFAFA)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def is_grease_psk_mode(value: int) -> bool:
    """True for a GREASE PSK key-exchange mode (RFC 8701 §2: 0x0B, 0x2A, … 0xE4)."""
    return value % 0x1F == 0x0B


def is_grease_alpn(value: str) -> bool:
    """True for a GREASE ALPN identifier: two equal bytes 0x?A (RFC 8701 §2)."""
    raw = value.encode("latin-1", "replace")
    return len(raw) == 2 and raw[0] == raw[1] and raw[0] & 0x0F == 0x0A


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsProfile:
    """One ``tls-dtls-profile`` entry: what the device's (D)TLS client offers.

    An empty tuple means the profile does not state that parameter (anything goes)."""

    name: str
    tls_versions: tuple[str, ...] = ()
    dtls_versions: tuple[str, ...] = ()
    cipher_suites: tuple[int, ...] = ()
    extension_types: tuple[int, ...] = ()
    accept_list_ta_cert: tuple[bytes, ...] = ()
    spki_pin_sets: tuple[bytes, ...] = ()
    certificate_authorities: tuple[str, ...] = ()
    supported_groups: tuple[int, ...] = ()
    signature_algorithms_cert: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    application_protocols: tuple[str, ...] = ()
    psk_key_exchange_modes: tuple[int, ...] = ()
    cert_compression_algorithms: tuple[int, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The entry in RFC 7951 JSON (binary values in base64)."""
        out: dict[str, object] = {"name": self.name}
        for spec in _LEAF_LISTS:
            values = getattr(self, spec.attr)
            if values:
                out[spec.key] = [base64.b64encode(v).decode("ascii") if isinstance(v, bytes)
                                 else v for v in values]
        return out

    def summary(self) -> str:
        """Short, language-neutral text, e.g. ``TLS 1.3 · 0x1301 0x1302 · ALPN mqtt``."""
        parts = [", ".join(_VERSION_WORDS[v] for v in (*self.tls_versions, *self.dtls_versions))
                 or "TLS/DTLS *"]
        if self.cipher_suites:
            shown = " ".join(f"{c:#06x}" for c in self.cipher_suites[:4])
            parts.append(shown + (" …" if len(self.cipher_suites) > 4 else ""))
        if self.application_protocols:
            parts.append("ALPN " + " ".join(self.application_protocols))
        return " · ".join(parts)


_VERSION_WORDS = {"tls12": "TLS 1.2", "tls13": "TLS 1.3", "dtls12": "DTLS 1.2",
                  "dtls13": "DTLS 1.3"}


def client_profiles_json(profiles: tuple[TlsProfile, ...]) -> dict[str, object]:
    """The ``client-profiles`` container (RFC 7951 JSON) holding ``profiles``."""
    return {"tls-dtls-profile": [p.to_json() for p in profiles]}


Reader = Callable[[object, tuple[PathPart, ...], Findings], Any]


@dataclass(frozen=True, slots=True)
class _LeafList:
    key: str
    attr: str
    read: Reader


def _uint(bits: int, grease: Callable[[int], bool] | None, what: str) -> Reader:
    top = (1 << bits) - 1

    def read(value: object, path: tuple[PathPart, ...], found: Findings) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            found.error(path, f"expected a {what} (0..{top}), got {_show(value)}")
            return None
        if grease is not None and grease(value):
            found.error(path, f"{value:#06x} is a GREASE value; RFC 9761 §5 says a profile "
                        "MUST NOT include GREASE values")
            return None
        return value
    return read


def _enum(names: tuple[str, ...]) -> Reader:
    def read(value: object, path: tuple[PathPart, ...], found: Findings) -> str | None:
        if not isinstance(value, str) or value not in names:
            found.error(path, f"expected one of {', '.join(names)}, got {_show(value)}")
            return None
        return value
    return read


def _alpn(value: object, path: tuple[PathPart, ...], found: Findings) -> str | None:
    if not isinstance(value, str) or not 0 < len(value.encode("utf-8")) <= _MAX_ALPN:
        found.error(path, f"expected an ALPN protocol ID (1..{_MAX_ALPN} bytes), "
                    f"got {_show(value)}")
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        found.error(path, "control characters in an ALPN protocol ID")
        return None
    if is_grease_alpn(value):
        found.error(path, "a GREASE ALPN value; RFC 9761 §5 says a profile MUST NOT "
                    "include GREASE values")
        return None
    return value


def _binary(value: object, path: tuple[PathPart, ...], found: Findings) -> bytes | None:
    if not isinstance(value, str) or len(value) > _MAX_BINARY * 2:
        found.error(path, f"expected base64 text (YANG binary, RFC 7951 §6.6), got "
                    f"{_show(value)}")
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        found.error(path, "not valid base64 (YANG binary, RFC 7951 §6.6)")
        return None
    if not raw:
        found.error(path, "empty value")
        return None
    return raw


def _authority(value: object, path: tuple[PathPart, ...], found: Findings) -> str | None:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_CA \
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        found.error(path, f"expected a distinguished name (1..{_MAX_CA} printable "
                    f"characters), got {_show(value)}")
        return None
    return value


_LEAF_LISTS = (
    _LeafList("supported-tls-version", "tls_versions", _enum(TLS_VERSIONS)),
    _LeafList("supported-dtls-version", "dtls_versions", _enum(DTLS_VERSIONS)),
    _LeafList("cipher-suite", "cipher_suites", _uint(16, is_grease, "cipher suite")),
    _LeafList("extension-type", "extension_types", _uint(16, is_grease, "extension type")),
    _LeafList("accept-list-ta-cert", "accept_list_ta_cert", _binary),
    _LeafList("spki-pin-set", "spki_pin_sets", _binary),
    _LeafList("certificate-authority", "certificate_authorities", _authority),
    _LeafList("supported-group", "supported_groups", _uint(16, is_grease, "named group")),
    _LeafList("signature-algorithm-cert", "signature_algorithms_cert",
              _uint(16, is_grease, "signature scheme")),
    _LeafList("signature-algorithm", "signature_algorithms",
              _uint(16, is_grease, "signature scheme")),
    _LeafList("application-protocol", "application_protocols", _alpn),
    _LeafList("psk-key-exchange-mode", "psk_key_exchange_modes",
              _uint(8, is_grease_psk_mode, "PSK key exchange mode")),
    _LeafList("cert-compression-algorithm", "cert_compression_algorithms",
              _uint(16, is_grease, "certificate compression algorithm")),
)
_BY_KEY = {spec.key: spec for spec in _LEAF_LISTS}


def parse_client_profiles(value: object, path: tuple[PathPart, ...]
                          ) -> tuple[tuple[TlsProfile, ...], tuple[Finding, ...]]:
    """Validate a ``client-profiles`` container; the profiles (() if it has errors) and
    every finding, each with its JSON path under ``path``."""
    found = Findings()
    profiles: list[TlsProfile] = []
    if not isinstance(value, dict):
        found.error(path, f"expected an object, got {_kind(value)}")
        return (), tuple(found.items)
    for key in value:
        if key != "tls-dtls-profile":
            _unknown(key, path, "client-profiles", found)
    items = value.get("tls-dtls-profile")
    at = path + ("tls-dtls-profile",)
    if not items and isinstance(items, list | None):
        found.warn(path, "no tls-dtls-profile: nothing to observe")
    elif not isinstance(items, list):
        found.error(at, f"expected a list, got {_kind(items)}")
    elif len(items) > MAX_PROFILES:
        found.error(at, f"{len(items)} profiles; mudguard takes at most {MAX_PROFILES}")
    else:
        names: set[str] = set()
        for i, item in enumerate(items):
            profile = _profile(item, at + (i,), found)
            if profile is None:
                continue
            if profile.name in names:
                found.error(at + (i, "name"), f"duplicate key {profile.name!r} in the "
                            "tls-dtls-profile list")
            names.add(profile.name)
            profiles.append(profile)
    errors = any(f.severity is Severity.ERROR for f in found.items)
    return (() if errors else tuple(profiles)), tuple(found.items)


def _profile(value: object, path: tuple[PathPart, ...], found: Findings) -> TlsProfile | None:
    if not isinstance(value, dict):
        found.error(path, f"expected an object, got {_kind(value)}")
        return None
    fields: dict[str, tuple[Any, ...]] = {}
    for key, item in value.items():
        if key == "name":
            continue
        spec = _BY_KEY.get(key)
        if spec is None:
            _unknown(key, path, "tls-dtls-profile", found)
            continue
        fields[spec.attr] = _leaf_list(item, path + (key,), spec.read, found)
    name = value.get("name")
    if name is None:
        found.error(path + ("name",), "missing: the key of the tls-dtls-profile list")
        return None
    if not isinstance(name, str) or not _NAME.match(name):
        found.error(path + ("name",), "expected 1..64 letters, digits, '.', '_' or '-' "
                    f"(RFC 9761: no space or special character), got {_show(name)}")
        return None
    if not fields.get("tls_versions") and not fields.get("dtls_versions"):
        found.warn(path, "no supported-tls-version or supported-dtls-version: any version "
                   "is accepted")
    return TlsProfile(name=name, **fields)


def _leaf_list(value: object, path: tuple[PathPart, ...], read: Reader,
               found: Findings) -> tuple[Any, ...]:
    if not isinstance(value, list):
        found.error(path, f"expected a list (YANG leaf-list), got {_kind(value)}")
        return ()
    if len(value) > MAX_ITEMS:
        found.error(path, f"{len(value)} values; mudguard takes at most {MAX_ITEMS}")
        return ()
    seen: list[Any] = []
    for i, item in enumerate(value):
        parsed = read(item, path + (i,), found)
        if parsed is None:
            continue
        if parsed in seen:
            # RFC 7950 §7.7: the values of a configuration leaf-list are unique.
            found.error(path + (i,), f"duplicate value {_show(item)} in a leaf-list")
            continue
        seen.append(parsed)
    return tuple(seen)


def parse_profile_supported(value: object, path: tuple[PathPart, ...]
                            ) -> tuple[bool | None, tuple[Finding, ...]]:
    """``is-tls-dtls-profile-supported``: a boolean. RFC 9761's own example writes it as
    the string "true": read with a warning (it is informative only)."""
    if isinstance(value, bool):
        return value, ()
    if value in ("true", "false"):
        return value == "true", (Finding(
            path=path, severity=Severity.WARNING,
            message=f"a string {value!r}; RFC 7951 §6.9 encodes a boolean as true or "
                    "false without quotes (read as the boolean)"),)
    return None, (Finding(path=path, severity=Severity.WARNING,
                          message=f"expected a boolean, got {_show(value)}; ignored"),)


def _unknown(key: str, path: tuple[PathPart, ...], where: str, found: Findings) -> None:
    if ":" in key and not key.startswith(ACL_TLS_MODULE + ":"):
        found.warn(path + (key,), "member of a module mudguard does not implement; ignored")
    else:
        found.error(path + (key,), f"unknown member of {where} (RFC 9761)")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
