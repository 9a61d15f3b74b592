"""The device lifecycle as data: states, allowed transitions, and one pure function per
event.

Theory of operation (h11 ``_state.py`` style): every change of a device's state goes
through a function here that takes the current ``Device`` (or None), the facts of the
event and ``now``, and returns an ``Outcome``: the new ``Device`` and the events the
owner is told about. Nothing here does I/O; the services in ``service.py`` persist
the outcome (after the kernel accepted the matching rules) and ``TRANSITIONS`` is the
only place that says which state may follow which.

House rules:
- A device never gains access silently: a new MUD URL on a device that already has
  one is held as ``pending_mud_url`` (the stricter, old profile stays) until the
  owner approves it (RFC 8520 §1.6 and §4, below). The one exception is
  draft-ietf-iotops-mud-acceptable-urls: a URL under the same base whose file is
  signed by the signer pinned from the device's first signed file (``accept_url``).
- Out of support (``is-supported: false`` or past its end-of-support date) means
  LAN only, with the reason recorded.
- Quarantine wins over everything but ``forget``; release re-derives the state.
- Learn, then lock (``devices.learning``): a device with no MUD file anywhere may be
  LEARNING (home default, flows recorded) then PROPOSED (home default, a learned
  profile waits); only the owner's lock (or their "lock automatically" setting) makes
  it PROFILED, and only from NEW or DEFAULT can learning start.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from mudguard.devices._model import (
    Device,
    EventKind,
    HomeDefault,
    MudSource,
    Settings,
    SignatureStatus,
)
from mudguard.devices.reasons import Reason
from mudguard.errors import BugError, RemoteInputError
from mudguard.mud import MudFile
from mudguard.policy import LifecycleState

State = LifecycleState

_ANY_LIVE: Final[set[State]] = {State.PROFILED, State.DEFAULT, State.OUT_OF_SUPPORT,
                                State.QUARANTINED, State.TRUSTED, State.FORGOTTEN}

TRANSITIONS: Final[dict[State, set[State]]] = {
    State.NEW: _ANY_LIVE | {State.NEW, State.LEARNING},
    State.PROFILED: _ANY_LIVE,
    State.DEFAULT: _ANY_LIVE | {State.LEARNING},
    # Learn, then lock: the home default while the flows are recorded; at the end a
    # proposal waits for the owner (or is locked at once when the owner chose that).
    State.LEARNING: _ANY_LIVE | {State.LEARNING, State.PROPOSED},
    State.PROPOSED: _ANY_LIVE | {State.LEARNING},
    State.OUT_OF_SUPPORT: _ANY_LIVE,
    # Leaving quarantine happens only through ``release()`` (an owner decision).
    State.QUARANTINED: _ANY_LIVE,
    State.TRUSTED: _ANY_LIVE,
    # A forgotten device that shows up again is a new device.
    State.FORGOTTEN: {State.NEW, State.FORGOTTEN},
}

MAX_MUD_URL_LENGTH: Final[int] = 255  # DHCPv4 option 161 carries at most 255 octets


class MudUrlError(RemoteInputError):
    """A MUD URL a device announced that RFC 8520 does not allow (``reason``: why, with
    its catalogue key: ``devices.reasons.Reason``)."""

    key = "bad_mud_url"

    def __init__(self, reason: str) -> None:
        """The error saying ``reason``."""
        super().__init__(reason)
        self.reason = reason


class LifecycleError(RemoteInputError):
    """An owner action that does not apply to the device's current state."""

    key = "bad_transition"


@dataclass(frozen=True, slots=True)
class Notice:
    """An event to record: what happened and the details the owner sees."""

    kind: EventKind
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one lifecycle event: the device as it now is, and what to tell."""

    device: Device
    notices: tuple[Notice, ...] = ()

    @property
    def changed(self) -> bool:
        """True if anything is to be stored or told."""
        return bool(self.notices)


def check_mud_url(url: str) -> str:
    """Return ``url`` if RFC 8520 allows it as a MUD URL; raise ``MudUrlError`` if not.

    RFC 8520 §1.6: "The MUD URL MUST use the "https" scheme." It must be short enough
    for DHCP option 161, printable ASCII (RFC 3986: a look-alike host such as Cyrillic
    "аpple.com" would otherwise read as another maker's), and name a host.
    """
    if not isinstance(url, str):
        raise MudUrlError(Reason("url_rejected.text", "a MUD URL must be text"))
    if len(url) > MAX_MUD_URL_LENGTH:
        raise MudUrlError(Reason(
            "url_rejected.long",
            f"MUD URL is {len(url)} characters; the limit is {MAX_MUD_URL_LENGTH}",
            length=len(url), limit=MAX_MUD_URL_LENGTH))
    if not url.isprintable() or any(c.isspace() for c in url):
        raise MudUrlError(Reason("url_rejected.spaces",
                                 "MUD URL contains spaces or control characters"))
    if not url.isascii():  # RFC 3986: a URL is ASCII (a look-alike host cannot hide)
        raise MudUrlError(Reason(
            "url_rejected.malformed",
            "MUD URL is malformed: not ASCII (an internationalised host is written in "
            "its xn-- form, other characters %-encoded)",
            detail="not ASCII (an internationalised host is written in its xn-- form, "
                   "other characters %-encoded)"))
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise MudUrlError(Reason("url_rejected.malformed", f"MUD URL is malformed: {exc}",
                                 detail=str(exc))) from None
    if parts.scheme != "https":
        scheme = repr(parts.scheme or "none")
        raise MudUrlError(Reason("url_rejected.not_https",
                                 f"MUD URL must use https (RFC 8520 §1.6), not {scheme}",
                                 scheme=scheme))
    if not host:
        raise MudUrlError(Reason("url_rejected.no_host", "MUD URL names no host"))
    if parts.username is not None or parts.password is not None:
        raise MudUrlError(Reason("url_rejected.credentials",
                                 "MUD URL must not carry credentials"))
    return url


def transition(device: Device, state: State, reasons: tuple[str, ...], now: datetime) -> Device:
    """The device in ``state`` with ``reasons``; raise ``BugError`` if not allowed."""
    if state not in TRANSITIONS[device.state]:
        raise BugError(f"transition {device.state.value} -> {state.value} is not allowed")
    return replace(device, state=state, reasons=reasons, last_seen=device.last_seen or now)


def _state_notice(before: Device, after: Device) -> tuple[Notice, ...]:
    if before.state is after.state and before.reasons == after.reasons:
        return ()
    return (Notice(EventKind.STATE_CHANGED, {"from": before.state.value,
                                             "to": after.state.value,
                                             "reasons": list(after.reasons)}),)


# -- sightings ---------------------------------------------------------------------------

def _is_usable_address(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (addr.is_link_local or addr.is_loopback or addr.is_unspecified
                or addr.is_multicast)


def on_seen(device: Device | None, *, mac: str, now: datetime, ip: str | None = None,
            hostname: str | None = None, mud_url: str | None = None,
            source: MudSource | None = None) -> Outcome:
    """A device was seen (DHCP, LLDP, certificate, QR, owner).

    A new device starts in NEW and takes its first MUD URL as announced. A known
    device's address and hostname are refreshed; a different MUD URL is only held
    as pending (URL_CHANGED) and the current profile stays. A MUD URL that breaks
    RFC 8520 raises ``MudUrlError`` and changes nothing.
    """
    if mud_url is not None:
        check_mud_url(mud_url)
    notices: list[Notice] = []
    if device is None or device.state is State.FORGOTTEN:
        device = Device(mac=mac, state=State.NEW, first_seen=now, last_seen=now,
                        reasons=(Reason("new", "new device: deciding its access"),))
        notices.append(Notice(EventKind.JOINED, {"source": source.value if source else None}))
    updated = _with_address(device, ip)
    if hostname is not None and hostname != device.hostname:
        updated = replace(updated, hostname=hostname)
    if updated != device and not notices:
        notices.append(Notice(EventKind.SEEN, {"ip": ip, "hostname": hostname}))
    updated = replace(updated, last_seen=now)
    if mud_url is not None:
        updated, url_notices = _announce_url(updated, mud_url, source, now)
        notices.extend(url_notices)
    return Outcome(updated, tuple(notices))


def _with_address(device: Device, ip: str | None) -> Device:
    if ip is None or not _is_usable_address(ip):
        return device
    addr = ipaddress.ip_address(ip)
    text = addr.compressed
    if addr.version == 4:
        # One IPv4 lease per device: the newest replaces the old, which dnsmasq may
        # hand to another device next.
        return device if device.ipv4 == (text,) else replace(device, ipv4=(text,))
    return device if text in device.ipv6 else replace(device, ipv6=(text, *device.ipv6)[:8])


def without_addresses(device: Device, addresses: frozenset[str] | set[str]) -> Device:
    """``device`` without ``addresses`` (canonical text), keeping its other addresses."""
    return replace(device, ipv4=tuple(a for a in device.ipv4 if a not in addresses),
                   ipv6=tuple(a for a in device.ipv6 if a not in addresses))


def addresses_moving(taker: Device, holders: list[Device]) -> list[Device]:
    """The devices in ``holders`` that hold one of ``taker``'s addresses, each without
    them: a lease handed on (or a renumbered device's address given out again) leaves
    its previous holder at once, which keeps the rest of its addresses."""
    held = frozenset(taker.ipv4) | frozenset(taker.ipv6)
    moved: dict[str, Device] = {}
    for other in holders:
        if other.mac != taker.mac and held & (set(other.ipv4) | set(other.ipv6)):
            moved[other.mac] = without_addresses(other, held)
    return list(moved.values())


def on_lease_ended(device: Device, *, ip: str, now: datetime) -> Outcome:
    """The DHCP server says the device's lease of ``ip`` ended (released or expired):
    the device no longer holds the address. Unchanged if it did not hold it (a lease
    it had already given up, or an address since handed to another device)."""
    try:
        text = ipaddress.ip_address(ip).compressed
    except ValueError:
        return Outcome(device)
    if text not in device.ipv4 and text not in device.ipv6:
        return Outcome(device)
    return Outcome(replace(without_addresses(device, {text}), last_seen=now),
                   (Notice(EventKind.SEEN, {"lease_ended": text}),))


FIRST_URL_GRACE: Final = timedelta(minutes=10)
"""How long after a device is first seen a MUD URL it announces itself is still its
first one (a WiFi station is seen at association, its DHCP option 161 a moment later)."""

# Sources anyone on the LAN can forge for another device's MAC: an LLDP frame's source
# address and a DHCP request's chaddr are whatever the sender writes.
_FORGEABLE: Final = frozenset({MudSource.DHCP4, MudSource.DHCP6, MudSource.LLDP})


def _takes_first_url(device: Device, source: MudSource | None, now: datetime) -> bool:
    if device.mud_url is not None or device.state not in (State.NEW, State.DEFAULT,
                                                          State.LEARNING, State.PROPOSED):
        return False
    if device.state is State.NEW or source not in _FORGEABLE or device.first_seen is None:
        return True
    # A device long on the home default suddenly "announcing" a MUD URL may be another
    # device forging its MAC to give it access (local-networks, …): the owner decides.
    return now - device.first_seen <= FIRST_URL_GRACE


def _announce_url(device: Device, url: str, source: MudSource | None, now: datetime
                  ) -> tuple[Device, tuple[Notice, ...]]:
    if _takes_first_url(device, source, now):
        # First MUD URL of the device: nothing to be stricter than, take it.
        return replace(device, mud_url=url, mud_source=source,
                       pending_mud_url=None, pending_source=None), ()
    if url in (device.mud_url, device.pending_mud_url):
        return device, ()
    # RFC 8520 §4: the MUD URL may only change with a firmware update the owner
    # accepts; the old (stricter) profile stays in force until approved.
    notice = Notice(EventKind.URL_CHANGED, {"old": device.mud_url, "new": url,
                                            "source": source.value if source else None,
                                            "action": "approve with: device approve-url"})
    return replace(device, pending_mud_url=url, pending_source=source), (notice,)


def approve_url(device: Device, now: datetime) -> Outcome:
    """The owner approved the pending MUD URL: it becomes the device's MUD URL.

    The services then fetch and apply its profile. The owner's decision replaces the
    trust-on-first-use pin: the approved file's signer (if it is signed) is pinned
    afresh. The owner's quarantine exceptions named ACEs of the old file: they go (an
    ACE of the same name in the new file may allow something else). Raises
    ``LifecycleError`` if nothing is pending.
    """
    if device.pending_mud_url is None:
        raise LifecycleError(f"{device.mac} has no pending MUD URL to approve")
    updated = replace(device, mud_url=device.pending_mud_url, mud_source=device.pending_source,
                      pending_mud_url=None, pending_source=None, last_seen=device.last_seen or now,
                      pinned_signer=None, root_mud_url=None, quarantine_exceptions=())
    notice = Notice(EventKind.URL_APPROVED, {"old": device.mud_url, "new": updated.mud_url,
                                             "by": "owner"})
    return Outcome(updated, (notice,))


# -- acceptable MUD URL updates (draft-ietf-iotops-mud-acceptable-urls-00 §5) -----------

MAX_PAST_ROOTS: Final = 64
"""How many earlier root MUD URLs a device keeps, to refuse rollbacks automatically."""


def url_base(url: str) -> str:
    """The URL up to and including its last "/" (the draft's simplified Base-URI test:
    "remove everything to the right of the last (rightmost) '/'"), query and fragment
    dropped first so that a "/" in them does not count."""
    cut = url.split("#", 1)[0].split("?", 1)[0]
    return cut[: cut.rfind("/") + 1]


def url_update_problem(device: Device, new_url: str) -> str | None:
    """Why ``new_url`` cannot replace the device's MUD URL without the owner, judged
    before anything is fetched; None when only its file's signer is left to check."""
    if device.state is State.QUARANTINED:
        # A quarantined device is suspect: its new file could enable more in quarantine.
        return Reason("url.quarantined",
                      "it is quarantined: only the owner may change its MUD URL")
    if device.pinned_signer is None or device.root_mud_url is None:
        return Reason("url.no_pin", "no signed MUD file has been accepted for this device "
                      "yet, so there is no signer to trust on first use")
    base = url_base(device.root_mud_url)
    if url_base(new_url) != base:
        return Reason("url.other_base",
                      f"{new_url} is not under {base}, the base of its accepted MUD URL",
                      url=new_url, base=base)
    if new_url in device.past_root_urls:
        # draft §5.1: "if a device ever suggests a URL that was previously used, then
        # the MUD manager should suspect that is a rollback attack".
        return Reason("url.rollback",
                      f"{new_url} was accepted before and replaced since: a possible rollback",
                      url=new_url)
    return None


def signer_problem(device: Device, signature: SignatureStatus, signer: str | None
                   ) -> str | None:
    """Why the new URL's MUD file (checked: ``signature``, ``signer``) cannot be accepted
    automatically; None when it is signed by the pinned signer."""
    if signature is SignatureStatus.UNSIGNED:
        return Reason("url.unsigned", "the new MUD file is unsigned")
    if signature is not SignatureStatus.SIGNED_VALID:
        detail = signer or signature.value
        return Reason("url.bad_signature", f"the new MUD file's signature is not valid: {detail}",
                      detail=detail)
    if signer != device.pinned_signer:
        return Reason("url.other_signer",
                      f"the new MUD file is signed by {signer}, not by {device.pinned_signer}",
                      signer=str(signer), pinned=str(device.pinned_signer))
    return None


def accept_url(device: Device, now: datetime) -> Outcome:
    """The pending MUD URL passed both acceptable-URL tests (same base, same signer):
    it becomes the device's MUD URL without the owner, and the event says why. The
    pin stays; the services then apply the new file, which becomes the root. The
    owner's quarantine exceptions (ACEs of the old file) go, as with ``approve_url``."""
    if device.pending_mud_url is None:
        raise BugError(f"{device.mac} has no pending MUD URL to accept")
    base = url_base(device.root_mud_url or "")
    updated = replace(device, mud_url=device.pending_mud_url, mud_source=device.pending_source,
                      pending_mud_url=None, pending_source=None, last_seen=now,
                      quarantine_exceptions=())
    notice = Notice(EventKind.URL_APPROVED, {
        "old": device.mud_url, "new": updated.mud_url, "by": "acceptable-url",
        "reason": Reason("url.acceptable",
                         f"same base ({base}) and same signer ({device.pinned_signer}) as its "
                         "accepted signed MUD file (draft-ietf-iotops-mud-acceptable-urls)",
                         base=base, signer=str(device.pinned_signer))})
    return Outcome(updated, (notice,))


def _pinned(device: Device, mud: MudFile, signature: SignatureStatus,
            signer: str | None) -> Device:
    """The device with its trust-on-first-use pin after ``mud`` was accepted: the
    first valid signer is pinned; a file from the pinned signer becomes the root."""
    if signature is not SignatureStatus.SIGNED_VALID or signer is None:
        return device
    if device.pinned_signer is not None and signer != device.pinned_signer:
        return device  # another signer (a refresh): the pin and root stay
    past = device.past_root_urls
    if mud.mud_url not in past:
        past = (*past, mud.mud_url)[-MAX_PAST_ROOTS:]
    return replace(device, pinned_signer=signer, root_mud_url=mud.mud_url,
                   past_root_urls=past)


# -- profiles ----------------------------------------------------------------------------

def on_profile(device: Device, mud: MudFile, *, profile_hash: str,
               signature: SignatureStatus, signer: str | None, settings: Settings,
               now: datetime, end_of_support: datetime | None = None) -> Outcome:
    """A MUD file for the device's MUD URL was fetched and parsed.

    Decides PROFILED, OUT_OF_SUPPORT (``is-supported: false`` or past the
    end-of-support date) or, when the signature is invalid or unsigned files are
    not allowed, the home default with the reason.
    """
    if signature is SignatureStatus.INVALID or (
            signature is SignatureStatus.UNSIGNED and not settings.allow_unsigned):
        why = (Reason("signature_invalid", "the MUD file's signature is invalid")
               if signature is SignatureStatus.INVALID else
               Reason("unsigned", "the MUD file is unsigned and this home requires signatures"))
        kind = EventKind.SIGNATURE_INVALID
        return _refuse_profile(device, why, kind, settings, now)
    eos = end_of_support or device.end_of_support
    updated = replace(_pinned(device, mud, signature, signer), profile_hash=profile_hash,
                      signature_status=signature, signer=signer,
                      manufacturer=mud.mfg_name or device.manufacturer,
                      model=mud.model_name or device.model, end_of_support=eos)
    notices: list[Notice] = []
    if device.profile_hash is None:
        notices.append(Notice(EventKind.PROFILE_APPLIED, {"mud_url": mud.mud_url,
                                                          "hash": profile_hash}))
    elif device.profile_hash != profile_hash:
        notices.append(Notice(EventKind.PROFILE_CHANGED, {"mud_url": mud.mud_url,
                                                          "old": device.profile_hash,
                                                          "new": profile_hash}))
    support = _support_reason(mud.is_supported, eos, now)
    reasons: tuple[str, ...]
    if device.state is State.QUARANTINED:
        return Outcome(updated, tuple(notices))  # only release() leaves quarantine
    if support is not None:
        target, reasons = State.OUT_OF_SUPPORT, (support,)
    elif device.state is State.TRUSTED:
        target, reasons = State.TRUSTED, device.reasons
    else:
        target, reasons = State.PROFILED, (_profiled_reason(mud.mud_url),)
    updated = transition(updated, target, reasons, now)
    if support is not None and device.state is not State.OUT_OF_SUPPORT:
        notices.append(Notice(EventKind.OUT_OF_SUPPORT, {"reason": support}))
    notices.extend(_state_notice(device, updated))
    return Outcome(updated, tuple(notices))


def _profiled_reason(url: str) -> Reason:
    return Reason("profiled", f"MUD profile from {url} enforced", url=url)


def _support_reason(is_supported: bool, eos: datetime | None, now: datetime) -> str | None:
    if not is_supported:
        return Reason("unsupported", "its maker no longer supports it (is-supported: false): "
                      "restricted to the home LAN")
    if eos is not None and now >= eos:
        date = eos.date().isoformat()
        return Reason("end_of_support",
                      f"its end of support was {date}: restricted to the home LAN", date=date)
    return None


def _refuse_profile(device: Device, why: str, kind: EventKind, settings: Settings,
                    now: datetime) -> Outcome:
    notices = [Notice(kind, {"reason": why, "mud_url": device.mud_url})]
    if device.profile_hash is not None or device.state in (State.QUARANTINED, State.TRUSTED):
        return Outcome(device, tuple(notices))  # keep the profile already enforced
    updated = transition(replace(device, signature_status=SignatureStatus.INVALID
                                 if kind is EventKind.SIGNATURE_INVALID else
                                 device.signature_status),
                         State.DEFAULT, (why, _default_reason(settings)), now)
    notices.extend(_state_notice(device, updated))
    return Outcome(updated, tuple(notices))


def _default_reason(settings: Settings, article: str = "the ") -> Reason:
    if settings.home_default is HomeDefault.LAN:
        return Reason("default.lan", f"{article}home's default applies: home LAN only, "
                      "no Internet")
    return Reason("default.internet", f"{article}home's default applies: Internet only, "
                  "no other devices on the LAN")


def on_no_mud(device: Device, *, why: str, settings: Settings, now: datetime) -> Outcome:
    """No MUD file for the device anywhere: the home's limited default, and ask the owner.

    A device that already has an enforced profile keeps it (a fetch failure must
    not widen or narrow access silently); the failure is still told.
    """
    if device.profile_hash is not None or device.state in (
            State.QUARANTINED, State.TRUSTED, State.OUT_OF_SUPPORT):
        return Outcome(device, (Notice(EventKind.FETCH_FAILED, {"reason": why}),))
    updated = transition(device, State.DEFAULT, (why, _default_reason(settings)), now)
    ask = Notice(EventKind.NO_MUD, {"reason": why, "default": settings.home_default.value,
                                    "action": "grant LAN/Internet/services with: device grant"})
    return Outcome(updated, (ask, *_state_notice(device, updated)))


def start_learning(device: Device, *, why: str, until: datetime, settings: Settings,
                   now: datetime) -> Outcome:
    """No MUD file and no repository match: LEARNING until ``until`` (the home default
    applies meanwhile while the gateway records the device's flows).

    A device with an enforced profile, quarantined, trusted or out of support is not
    put to learning (``on_no_mud`` decides for it).
    """
    if device.profile_hash is not None or device.state in (
            State.QUARANTINED, State.TRUSTED, State.OUT_OF_SUPPORT, State.PROFILED):
        return on_no_mud(device, why=why, settings=settings, now=now)
    when = until.strftime("%Y-%m-%d %H:%M UTC")
    meanwhile = _default_reason(settings, article="")
    updated = transition(device, State.LEARNING, (
        why, Reason("learning", f"learning what it does until {when}; {meanwhile}",
                    when=when, until=until.isoformat(), rest=meanwhile)), now)
    ask = Notice(EventKind.NO_MUD, {"reason": why, "default": settings.home_default.value,
                                    "learning_until": until.isoformat(),
                                    "action": "end learning early with: device learn --end-now"})
    return Outcome(updated, (ask, *_state_notice(device, updated)))


def end_learning(device: Device, *, proposal_ready: bool, settings: Settings,
                 now: datetime) -> Outcome:
    """The learning period ended (or the owner ended it early): PROPOSED when a profile
    could be learned, else back to the home default. Raises ``LifecycleError`` if the
    device is not learning."""
    if device.state is not State.LEARNING:
        raise LifecycleError(f"{device.mac} is not learning")
    if proposal_ready:
        updated = transition(device, State.PROPOSED, (
            Reason("proposed", "learning ended: a profile learned from its traffic awaits "
                   "the owner (lock it with: device learn --lock; or --keep-default)"),
            _default_reason(settings)), now)
    else:
        updated = transition(device, State.DEFAULT, (
            Reason("learned_nothing", "learning ended with no traffic to learn from"),
            _default_reason(settings)), now)
    return Outcome(updated, _state_notice(device, updated))


def keep_default(device: Device, *, settings: Settings, now: datetime) -> Outcome:
    """The owner keeps the home default instead of a learned profile. Raises
    ``LifecycleError`` unless the device is learning or has a proposal waiting."""
    if device.state not in (State.LEARNING, State.PROPOSED):
        raise LifecycleError(f"{device.mac} is not learning and has no proposal")
    updated = transition(device, State.DEFAULT, (Reason("kept_default",
                                                        "the owner kept the home default"),
                                                 _default_reason(settings)), now)
    return Outcome(updated, _state_notice(device, updated))


def unlock_learned(device: Device, *, settings: Settings, now: datetime) -> Outcome:
    """The owner learns a device locked to a learned profile again: the profile is
    dropped and the home default applies until the next one is locked (learning then
    starts from DEFAULT). Raises ``LifecycleError`` unless the device is PROFILED with
    a learned profile (a maker's MUD file is never dropped this way)."""
    if device.state is not State.PROFILED or device.mud_source is not MudSource.LEARNED:
        raise LifecycleError(f"{device.mac} is not locked to a learned profile")
    cleared = replace(device, mud_url=None, mud_source=None, profile_hash=None,
                      signature_status=SignatureStatus.UNKNOWN, signer=None)
    updated = transition(cleared, State.DEFAULT, (Reason("owner_learns",
                                                         "the owner asked to learn it again"),
                                                  _default_reason(settings)), now)
    return Outcome(updated, _state_notice(device, updated))


def check_support(device: Device, now: datetime) -> Outcome:
    """Move a device past its end-of-support date to OUT_OF_SUPPORT (run periodically)."""
    if device.end_of_support is None or now < device.end_of_support or device.state in (
            State.OUT_OF_SUPPORT, State.QUARANTINED, State.FORGOTTEN, State.TRUSTED):
        return Outcome(device)
    reason = _support_reason(True, device.end_of_support, now)
    assert reason is not None
    updated = transition(device, State.OUT_OF_SUPPORT, (reason,), now)
    return Outcome(updated, (Notice(EventKind.OUT_OF_SUPPORT, {"reason": reason}),
                             *_state_notice(device, updated)))


# -- owner and watcher actions -----------------------------------------------------------

def quarantine(device: Device, *, reason: str, now: datetime) -> Outcome:
    """Deviation detected: QUARANTINED with the reason (the watcher calls this)."""
    if device.state is State.QUARANTINED:
        return Outcome(device)
    updated = transition(device, State.QUARANTINED, (reason,), now)
    return Outcome(updated, (Notice(EventKind.QUARANTINED, {"reason": reason}),
                             *_state_notice(device, updated)))


def _derived(device: Device, settings: Settings, now: datetime, mud: MudFile | None,
             why: str) -> tuple[State, tuple[str, ...]]:
    """The state a device's profile gives it (after quarantine or trust ends)."""
    if mud is not None and device.profile_hash is not None:
        support = _support_reason(mud.is_supported, device.end_of_support, now)
        if support is not None:
            return State.OUT_OF_SUPPORT, (support,)
        return State.PROFILED, (_profiled_reason(mud.mud_url),)
    return State.DEFAULT, (Reason("no_profile", f"{why}; no MUD profile", why=why),
                           _default_reason(settings))


def release(device: Device, *, settings: Settings, now: datetime,
            mud: MudFile | None = None) -> Outcome:
    """The owner released a quarantined device: back to the state its profile gives."""
    if device.state is not State.QUARANTINED:
        raise LifecycleError(f"{device.mac} is not quarantined")
    target, reasons = _derived(device, settings, now, mud,
                               Reason("released", "released from quarantine"))
    updated = transition(device, target, reasons, now)
    return Outcome(updated, (Notice(EventKind.RELEASED, {"to": target.value}),
                             *_state_notice(device, updated)))


def trust(device: Device, *, now: datetime) -> Outcome:
    """The owner marks the device as one of their own computers or phones (unrestricted).

    A quarantined device must be released first.
    """
    if device.state is State.QUARANTINED:
        raise LifecycleError(f"{device.mac} is quarantined: release it first")
    if device.state is State.TRUSTED:
        return Outcome(device)
    updated = transition(device, State.TRUSTED, (Reason("trusted", "trusted by the owner"),), now)
    return Outcome(updated, _state_notice(device, updated))


def untrust(device: Device, *, settings: Settings, now: datetime,
            mud: MudFile | None = None) -> Outcome:
    """The owner withdraws trust: back to the state the device's profile gives."""
    if device.state is not State.TRUSTED:
        raise LifecycleError(f"{device.mac} is not trusted")
    target, reasons = _derived(device, settings, now, mud,
                               Reason("untrusted", "no longer trusted"))
    updated = transition(device, target, reasons, now)
    return Outcome(updated, _state_notice(device, updated))


def forget(device: Device, *, now: datetime) -> Outcome:
    """End of use: FORGOTTEN, with every personal field cleared."""
    updated = transition(device, State.FORGOTTEN,
                         (Reason("forgotten", "forgotten by the owner"),), now)
    cleared = Device(mac=device.mac, state=updated.state, reasons=updated.reasons,
                     first_seen=None, last_seen=now)
    return Outcome(cleared, (Notice(EventKind.FORGOTTEN, {}),))
