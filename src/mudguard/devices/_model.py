"""Records of the device lifecycle: what the store keeps and the services return.

Pure data (no I/O). Times are timezone-aware UTC ``datetime``s passed in by the
caller. Everything a device sent (hostname, MUD URL) is kept as a data field and
never becomes SQL text, a command line, a file name or an nft object name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from mudguard.errors import RemoteInputError
from mudguard.policy import Grant, GrantKind, LifecycleState

_MAC_HEX = re.compile(r"^[0-9a-f]{12}$")


class MacError(RemoteInputError):
    """A MAC address that is not six octets."""

    key = "bad_mac"


def normalise_mac(text: str) -> str:
    """Return ``text`` as a lower-case, colon-separated MAC (``aa:bb:cc:dd:ee:ff``).

    Accepts colons, dashes, dots or no separators. Raises ``MacError`` otherwise.
    """
    if not isinstance(text, str) or len(text) > 32:
        raise MacError("a MAC address must be text of at most 32 characters")
    digits = re.sub(r"[:\-.]", "", text.strip().lower())
    if not _MAC_HEX.match(digits):
        raise MacError(f"not a MAC address: {text[:32]!r}")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def device_mac(text: str) -> str:
    """``text`` as a normalised MAC if it can name a device: a unicast 48-bit address.

    A device is an Ethernet station with its own address, so the all-zero MAC, the
    broadcast MAC and every group (multicast) MAC, whose I/G bit (the lowest bit of the
    first octet, IEEE 802 §8.2) is set, are refused: they name no single station, and a
    forged frame or lease with one must not become a device. Raises ``MacError``.
    """
    mac = normalise_mac(text)
    if mac == "00:00:00:00:00:00":
        raise MacError(f"{mac} is the all-zero MAC, not a device")
    if mac == "ff:ff:ff:ff:ff:ff":
        raise MacError(f"{mac} is the broadcast MAC, not a device")
    if int(mac[:2], 16) & 1:
        raise MacError(f"{mac} is a multicast (group) MAC, not a device")
    return mac


class MudSource(StrEnum):
    """Where a device's MUD URL came from."""

    DHCP4 = "dhcp4"  # DHCPv4 option 161
    DHCP6 = "dhcp6"  # DHCPv6 option 112
    LLDP = "lldp"  # LLDP TLV 127, OUI 00-00-5E, subtype 1
    CERT = "cert"  # IEEE 802.1AR certificate extension 1.3.6.1.5.5.7.1.25
    QR = "qr"  # RFC 9238 label
    MANUAL = "manual"  # typed in by the owner
    REPOSITORY = "repository"  # found in a secondary MUD repository
    NEIGHBOUR = "neighbour"  # the gateway's IPv6 neighbour table (addresses only, no URL)
    LEARNED = "learned"  # a profile learned from observed traffic, approved by the owner


class SignatureStatus(StrEnum):
    """What the check of a MUD file's signature said."""

    SIGNED_VALID = "signed_valid"
    UNSIGNED = "unsigned"
    INVALID = "invalid"
    UNKNOWN = "unknown"  # not checked yet (no MUD file)
    OWNER_APPROVED = "owner_approved"  # a learned profile: no maker signed it, the owner did


class HomeDefault(StrEnum):
    """The home's limited default for devices without a MUD file (owner-chosen)."""

    INTERNET = "internet"  # Internet only, no lateral LAN access
    LAN = "lan"  # LAN only, no Internet


class EventKind(StrEnum):
    """Things the owner is told about (the events list)."""

    JOINED = "joined"
    RENAMED = "renamed"
    SEEN = "seen"  # a known device with a new address or name
    PROFILE_APPLIED = "profile-applied"
    PROFILE_CHANGED = "profile-changed"
    URL_CHANGED = "url-changed"  # the device announced another MUD URL: needs approval
    URL_APPROVED = "url-approved"
    URL_REJECTED = "url-rejected"  # a non-https or malformed MUD URL
    NO_MUD = "no-mud"  # no MUD file anywhere: limited default, owner asked
    FETCH_FAILED = "fetch-failed"
    SIGNATURE_INVALID = "signature-invalid"
    OUT_OF_SUPPORT = "out-of-support"
    STATE_CHANGED = "state-changed"
    VIOLATION = "violation"
    DNS_ELSEWHERE = "dns-elsewhere"  # resolves with another DNS server (RFC 9726): told
    TLS_OBSERVED = "tls-observed"  # a ClientHello fit its MUD (D)TLS profile (RFC 9761)
    TLS_DEVIATION = "tls-deviation"  # a ClientHello did not fit it (reason, evidence)
    QUARANTINED = "quarantined"
    RELEASED = "released"
    QUARANTINE_EXCEPTION = "quarantine-exception"  # the owner kept an ACE open in quarantine
    GRANTED = "granted"
    GRANT_REVOKED = "grant-revoked"
    GRANT_EXPIRED = "grant-expired"
    KEY_REVOKED = "key-revoked"
    KEY_BOUND = "key-bound"  # a device's own WiFi key was bound to its MAC
    KEY_MISMATCH = "key-mismatch"  # a station used another device's key
    FORGOTTEN = "forgotten"
    TRANSFERRED = "transferred"
    ALERT_DISMISSED = "alert-dismissed"  # the owner saw an alert (details: "alert" kind)


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """Everything the gateway remembers about one device (the store's row)."""

    mac: str
    state: LifecycleState = LifecycleState.NEW
    reasons: tuple[str, ...] = ()
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    name: str | None = None  # the owner's name for it
    hostname: str | None = None  # what the device called itself (untrusted)
    mud_url: str | None = None  # the approved (enforced) MUD URL
    mud_source: MudSource | None = None
    pending_mud_url: str | None = None  # announced but not approved (RFC 8520 no silent change)
    pending_source: MudSource | None = None
    manufacturer: str | None = None
    model: str | None = None
    profile_hash: str | None = None  # sha256 hex of the enforced MUD file's bytes
    signature_status: SignatureStatus = SignatureStatus.UNKNOWN
    signer: str | None = None
    end_of_support: datetime | None = None
    key_id: str | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    # Acceptable MUD URL updates (draft-ietf-iotops-mud-acceptable-urls), trust on
    # first use: the signer of the first signed MUD file accepted for the device, and
    # the canonical ``mud-url`` of the newest file that signer signed (the "root").
    pinned_signer: str | None = None
    root_mud_url: str | None = None
    # Every root so far, oldest first (bounded): announcing one again is a rollback.
    past_root_urls: tuple[str, ...] = ()
    # draft-richardson-shg-mud-quarantined-access: ACE names of its MUD file the owner
    # keeps open while the device is quarantined (besides those the file names).
    quarantine_exceptions: tuple[str, ...] = ()
    # What kind of device it is (``mudguard.identify``: camera, plug, bulb, phone, …),
    # inferred from its DHCP options and traffic; for the owner's eyes, never a grant.
    kind: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``--json`` output and the portal's API)."""
        return {
            "mac": self.mac,
            "state": self.state.value,
            "reasons": list(self.reasons),
            "ipv4": list(self.ipv4),
            "ipv6": list(self.ipv6),
            "name": self.name,
            "hostname": self.hostname,
            "mud_url": self.mud_url,
            "mud_source": self.mud_source.value if self.mud_source else None,
            "pending_mud_url": self.pending_mud_url,
            "pending_source": self.pending_source.value if self.pending_source else None,
            "manufacturer": self.manufacturer,
            "model": self.model,
            "profile_hash": self.profile_hash,
            "signature_status": self.signature_status.value,
            "signer": self.signer,
            "end_of_support": _iso(self.end_of_support),
            "key_id": self.key_id,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "pinned_signer": self.pinned_signer,
            "root_mud_url": self.root_mud_url,
            "past_root_urls": list(self.past_root_urls),
            "quarantine_exceptions": list(self.quarantine_exceptions),
            "kind": self.kind,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantRecord:
    """An owner grant as stored: its id, the device and when it was made."""

    id: int
    mac: str
    grant: Grant
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "mac": self.mac,
            "kind": self.grant.kind.value,
            "host": self.grant.host,
            "protocol": self.grant.protocol,
            "port": self.grant.port,
            "expires": _iso(self.grant.expires),
            "schedule": self.grant.schedule,
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceEvent:
    """One entry of the events list. ``mac`` is None for home-wide events."""

    id: int
    at: datetime
    kind: EventKind
    mac: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"id": self.id, "at": _iso(self.at), "kind": self.kind.value,
                "mac": self.mac, "details": self.details}


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedMud:
    """A fetched MUD file kept so a restart or an outage does not need the network."""

    url: str
    data: bytes
    fetched_at: datetime
    cache_validity_hours: int = 48  # RFC 8520 default
    signature: bytes | None = None

    def fresh(self, now: datetime) -> bool:
        """True while ``now`` is within the file's cache-validity (RFC 8520 §3.5)."""
        age = (now - self.fetched_at).total_seconds()
        return 0 <= age < self.cache_validity_hours * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Home-wide settings the owner chooses."""

    home_default: HomeDefault = HomeDefault.INTERNET
    allow_unsigned: bool = True
    learning_days: float = 3.0  # how long a device without a MUD file is learned
    lock_automatically: bool = False  # lock a learned profile without asking the owner
    # The owner's IANA time zone (times shown, daily schedules such as a bedtime pause);
    # None: the gateway system's own (``devices.wiring.local_zone``).
    time_zone: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Learning:
    """A device being learned (or learned): its period, flows and proposal."""

    mac: str
    started: datetime
    until: datetime
    flows: tuple[tuple[Any, ...], ...] = ()  # distinct flows, see ``devices.learning``
    dropped: int = 0  # distinct flows past the bound, not kept
    proposal: bytes | None = None  # the learned MUD file, once made


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


__all__ = [
    "CachedMud",
    "Device",
    "DeviceEvent",
    "EventKind",
    "Grant",
    "GrantKind",
    "GrantRecord",
    "HomeDefault",
    "Learning",
    "LifecycleState",
    "MacError",
    "MudSource",
    "Settings",
    "SignatureStatus",
    "device_mac",
    "normalise_mac",
]


@dataclass(frozen=True, slots=True)
class DnsGrant:
    """One element the guard granted: ``device`` (its key) may reach ``remote`` from
    ``address`` because it resolved ``name``, until ``expires`` (on the clock of whoever
    holds the record: the guard's, or the wall clock once stored); ``lifetime_s`` is what
    was left of it when recorded (a restore never gives more, whatever the clocks say)."""

    device: str
    address: str
    name: str
    remote: str
    expires: float
    lifetime_s: int
