"""The policy layer's data: what is known about the home and a device, and the flat
rules a MUD profile becomes.

Theory of operation: ``decide()`` (``_decide.py``) turns a device, its MUD file
and the owner's grants into a ``DevicePolicy``: an ordered tuple of ``Rule``s in
which every MUD abstraction is still symbolic (``PeerKind``). Two consumers read
the same rules, so they can never disagree:

- the nftables compiler (``_nft.py``) turns each rule into one kernel rule,
  resolving peers to address sets from the ``HomeContext``;
- the flow evaluator (``_evaluate.py``) answers "would this flow pass?" for
  captures (``mudguard profile check``) and for the portal's explanations.

Pure: no I/O, no clock (times are parameters).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mudguard.mud import Direction, Forwarding, MudFile, PortMatch


class PeerKind(StrEnum):
    """Who the far side of a rule is (RFC 8520 §8 abstractions plus plain addresses)."""

    ANY = "any"
    DNSNAME = "dnsname"  # value: the DNS name (ietf-acldns src/dst-dnsname)
    NETWORK = "network"  # value: an IPv4/IPv6 prefix
    LOCAL_NETWORKS = "local-networks"  # the home's LAN prefixes
    CONTROLLER = "controller"  # value: the controller class URI
    MY_CONTROLLER = "my-controller"  # the controllers configured for this MUD URL
    SAME_MANUFACTURER = "same-manufacturer"  # devices whose MUD URL has the same authority
    MANUFACTURER = "manufacturer"  # value: an authority (host) of MUD URLs
    MODEL = "model"  # value: a MUD URL
    GATEWAY = "gateway"  # the gateway itself (draft-era controller classes, baseline services)
    INTERNET = "internet"  # anything outside the home's LAN prefixes (home default, grants)


class LifecycleState(StrEnum):
    """Where a device is in its life on the home network (see ``_lifecycle.py``)."""

    NEW = "new"  # seen, nothing decided yet: onboarding default
    PROFILED = "profiled"  # MUD profile enforced
    DEFAULT = "default"  # no MUD file found: the home's limited default
    LEARNING = "learning"  # no MUD file: home default while its flows are recorded
    PROPOSED = "proposed"  # learning ended: home default, a learned profile awaits the owner
    OUT_OF_SUPPORT = "out-of-support"  # LAN only
    QUARANTINED = "quarantined"  # deviation: only what quarantine allows
    TRUSTED = "trusted"  # the owner's own computers and phones: not restricted
    FORGOTTEN = "forgotten"  # removed: no access at all


class GrantKind(StrEnum):
    """Owner permissions, like a phone's app permissions."""

    LAN = "lan"  # may talk to anything on the home LAN
    INTERNET = "internet"  # may talk to anything outside the home
    SERVICE = "service"  # may talk to one named host (and optional port)
    DENY = "deny"  # may not talk to one named host or network
    PAUSE = "pause"  # Internet paused (LAN basics kept), now or on a daily schedule


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """One owner decision about one device, optionally expiring."""

    kind: GrantKind
    host: str | None = None  # DNS name or address/prefix for SERVICE and DENY
    protocol: int | None = None
    port: int | None = None
    expires: datetime | None = None
    schedule: str | None = None
    """A daily window the grant holds in, ``"HH:MM-HH:MM ZONE"`` (``"21:30-07:00
    Europe/Paris"``; the end may be the next morning); None: at all times."""

    def expired(self, now: datetime) -> bool:
        """True once the grant's expiry has passed (it can be deleted)."""
        return self.expires is not None and now >= self.expires

    def active(self, now: datetime) -> bool:
        """True unless the grant has expired at ``now`` or ``now`` is outside its
        daily window."""
        if self.expired(now):
            return False
        return self.schedule is None or DailyWindow.parse(self.schedule).holds(now)


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """A time of day range in a time zone (bedtime: ``21:30-07:00 Europe/Paris``)."""

    start: int  # minutes after midnight
    end: int  # minutes after midnight; before ``start``: the window runs past midnight
    zone: str = "UTC"

    @staticmethod
    def parse(text: str) -> DailyWindow:
        """Read ``"HH:MM-HH:MM [ZONE]"``; ``ValueError`` with the reason when malformed."""
        times, _, zone = text.strip().partition(" ")
        first, sep, second = times.partition("-")
        if not sep:
            raise ValueError("a schedule is HH:MM-HH:MM")
        window = DailyWindow(_minutes(first), _minutes(second), zone.strip() or "UTC")
        if window.start == window.end:
            raise ValueError("a schedule's start and end differ")
        _zone(window.zone)
        return window

    def holds(self, now: datetime) -> bool:
        """True when ``now`` (aware) falls in the window, in the window's zone."""
        local = now.astimezone(_zone(self.zone))
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def in_zone(self, zone: str) -> DailyWindow:
        """The same times of day read in ``zone`` (``ValueError`` for an unknown zone)."""
        _zone(zone)
        return DailyWindow(self.start, self.end, zone)

    def __str__(self) -> str:
        return (f"{self.start // 60:02d}:{self.start % 60:02d}-"
                f"{self.end // 60:02d}:{self.end % 60:02d} {self.zone}")


def _minutes(text: str) -> int:
    hours, sep, minutes = text.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2
            and int(hours) < 24 and int(minutes) < 60):
        raise ValueError(f"{text[:16]!r} is not a time HH:MM")
    return int(hours) * 60 + int(minutes)


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name[:40]!r} is not a known time zone") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One flat, symbolic rule of a device's policy.

    ``direction`` is the packet's direction relative to the device; ``initiated``
    (TCP only) says which side must have opened the connection.
    """

    direction: Direction
    action: Forwarding
    family: int | None = None  # 4, 6 or None (both / layer 2)
    peer: PeerKind = PeerKind.ANY
    peer_value: str | None = None
    also_local: bool = False  # RFC 8520: local-networks combined with another peer test
    protocol: int | None = None
    src_port: PortMatch | None = None
    dst_port: PortMatch | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    initiated: Direction | None = None
    ethertype: int | None = None
    eth_dst: str | None = None
    origin: str = ""  # "acl-name/ace-name", "baseline/dhcp", "grant/internet": for comments
    # Applies before the device's source address is checked (DHCP from 0.0.0.0,
    # neighbour discovery from :: or link-local): baseline rules to the gateway only.
    any_source: bool = False
    # A MUD rule (not a synthesised one): also applies in the gateway's own input
    # where its peer covers the gateway or a multicast/broadcast group (``_local.py``).
    local_delivery: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFacts:
    """What the gateway knows about one device on the home network."""

    mac: str  # lower-case, colon separated
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    mud_url: str | None = None
    state: LifecycleState = LifecycleState.NEW
    name: str | None = None
    quarantine_exceptions: tuple[str, ...] = ()
    """ACE names of its MUD file the owner keeps open while it is quarantined."""

    @property
    def manufacturer(self) -> str | None:
        """RFC 8520 §8: a device's manufacturer is the authority of its MUD URL."""
        return authority_of(self.mud_url)


@functools.lru_cache(maxsize=4096)
def authority_of(mud_url: str | None) -> str | None:
    """The authority (lower-case host) of a MUD URL: its manufacturer (RFC 8520 §8)."""
    if not mud_url:
        return None
    return (urlsplit(mud_url).hostname or "").lower() or None


@dataclass(frozen=True, slots=True)
class PeerIndex:
    """The home's devices by manufacturer (MUD URL authority) and by model (MUD URL),
    each as MAC -> addresses, forgotten devices left out.

    Kept by the ``Enforcer`` as devices come, change and go, so resolving a
    same-manufacturer, manufacturer or model peer costs the same in any home; without
    one, ``HomeContext.devices`` is scanned.
    """

    makers: Mapping[str, Mapping[str, tuple[str, ...]]]
    models: Mapping[str, Mapping[str, tuple[str, ...]]]

    @classmethod
    def of(cls, devices: Iterable[DeviceFacts]) -> PeerIndex:
        """The index of ``devices`` (built in one pass: ``with_device`` for each would copy
        a group per device)."""
        makers: dict[str, dict[str, tuple[str, ...]]] = {}
        models: dict[str, dict[str, tuple[str, ...]]] = {}
        for device in devices:
            if device.state is LifecycleState.FORGOTTEN:
                continue
            addresses = device.ipv4 + device.ipv6
            if device.manufacturer is not None:
                makers.setdefault(device.manufacturer, {})[device.mac] = addresses
            if device.mud_url is not None:
                models.setdefault(device.mud_url, {})[device.mac] = addresses
        return cls(makers, models)

    def with_device(self, mac: str, previous: DeviceFacts | None,
                    facts: DeviceFacts | None) -> PeerIndex:
        """A new index where ``mac`` (indexed as ``previous``, or absent) is ``facts``
        (None: gone). Costs the number of makers and models plus the two groups touched,
        not the number of devices."""
        makers = dict(self.makers)
        models = dict(self.models)
        if previous is not None:
            _regroup(makers, previous.manufacturer, mac, None)
            _regroup(models, previous.mud_url, mac, None)
        if facts is not None and facts.state is not LifecycleState.FORGOTTEN:
            addresses = facts.ipv4 + facts.ipv6
            _regroup(makers, facts.manufacturer, mac, addresses)
            _regroup(models, facts.mud_url, mac, addresses)
        return PeerIndex(makers, models)


def _regroup(space: dict[str, Mapping[str, tuple[str, ...]]], key: str | None, mac: str,
             addresses: tuple[str, ...] | None) -> None:
    if key is None:
        return
    group = dict(space.get(key, {}))
    if addresses is None:
        group.pop(mac, None)
    else:
        group[mac] = addresses
    if group:
        space[key] = group
    else:
        space.pop(key, None)


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeContext:
    """The home around a device: prefixes, the gateway, controllers, other devices."""

    lan_prefixes: tuple[str, ...]  # e.g. ("192.0.2.0/24", "2001:db8:1::/64")
    gateway_addresses: tuple[str, ...]  # the gateway's LAN-side addresses
    lan_interface: str = "br-lan"
    wan_interface: str = "wan0"
    # Controller class URI -> addresses (RFC 8520 §8 "controller").
    controllers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # MUD URL -> addresses of the controllers the owner assigned (§8 "my-controller").
    my_controllers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    devices: tuple[DeviceFacts, ...] = ()
    # TCP ports of the owner's portal on the gateway: never reachable from managed devices.
    portal_ports: tuple[int, ...] = ()
    # Per-device cap on new connections (a compromised device's damage is bounded).
    new_conn_rate: int = 50  # per second
    new_conn_burst: int = 100  # packets
    log_group: int = 100  # NFLOG group of the "mg <device_id> <out|in>" drop logs
    # NFLOG group of the RFC 9761 ClientHello logs ("mgt"), see ``_nft.tls_watch_rules``.
    tls_log_group: int = 101
    # NFLOG group of the identification logs ("mgic"/"mgis"), see ``_data._identify_rules``.
    identify_log_group: int = 102
    # ``devices`` by manufacturer and model, if the caller keeps one (else they are scanned).
    peers: PeerIndex | None = None


def peer_device_addresses(kind: PeerKind, value: str | None, me: DeviceFacts,
                          context: HomeContext) -> tuple[str, ...]:
    """Addresses of the other devices a manufacturer/model abstraction names (RFC 8520 §8):
    ``SAME_MANUFACTURER`` (``me``'s maker), ``MANUFACTURER`` (``value``: an authority) or
    ``MODEL`` (``value``: a MUD URL)."""
    if kind is PeerKind.SAME_MANUFACTURER:
        key, by_maker = me.manufacturer, True
    elif kind is PeerKind.MANUFACTURER:
        key, by_maker = (value.lower() if value else None), True
    elif kind is PeerKind.MODEL:
        key, by_maker = value, False
    else:
        raise ValueError(f"not a device abstraction: {kind}")
    if key is None:
        return ()
    if context.peers is not None:
        group = (context.peers.makers if by_maker else context.peers.models).get(key, {})
        return tuple(a for mac, addresses in group.items() if mac != me.mac for a in addresses)
    out: list[str] = []
    for other in context.devices:
        if other.mac == me.mac or other.state is LifecycleState.FORGOTTEN:
            continue
        if (other.manufacturer if by_maker else other.mud_url) == key:
            out.extend(other.ipv4 + other.ipv6)
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class DevicePolicy:
    """The decision for one device: its identity, state and ordered rules."""

    device: DeviceFacts
    state: LifecycleState
    rules: tuple[Rule, ...]
    mud: MudFile | None = None
    reasons: tuple[str, ...] = ()  # why this state (shown to the owner)

    def dns_names(self) -> frozenset[str]:
        """The DNS names whose answers must fill this device's sets."""
        return frozenset(r.peer_value for r in self.rules
                         if r.peer is PeerKind.DNSNAME and r.peer_value)
