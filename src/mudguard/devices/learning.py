"""Learn, then lock: the pure side of learning a device that has no MUD file.

Theory of operation: a device with no MUD URL that no secondary repository knows
enters LEARNING (``lifecycle.start_learning``): the home default applies while the
gateway records each connection the kernel accepts for it (conntrack NEW events,
one per connection, never per packet) as a small *flow record*. At the end of the
learning period (``Settings.learning_days``) or when the owner ends it early, the
records become a MUD file with the same learner as ``mudguard profile learn``
(``profile.core.learn_mud_from_flows``): the proposal. The owner locks the device to
it (``DeviceService.apply_learned``, source ``learned``) or keeps the default;
only ``Settings.lock_automatically`` locks without asking.

A flow record is a JSON-ready list ``[direction, family, protocol, device address,
remote address, server port, remote name]``: direction of the opening packet
relative to the device, the server's port (None without ports), the DNS name the
device resolved for the remote (None if none). At most ``MAX_FLOWS`` distinct
records are kept per device; the rest are counted.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Final

from mudguard.devices._model import Device, Learning, Settings, normalise_mac
from mudguard.mud import Direction, parse_mud
from mudguard.profile.core import (
    CaptureHome,
    LearnOptions,
    NoTrafficError,
    ObservedFlow,
    learn_mud_from_flows,
)

MAX_FLOWS: Final = 512
"""Distinct flow records kept per learning device (the store's bound)."""

FlowRecord = list[str | int | None]
NameOf = Callable[[str], str | None]
"""The DNS name the device was last given for an address (the daemon's DNS names)."""


def learning_until(now: datetime, settings: Settings) -> datetime:
    """When a learning period that starts ``now`` ends."""
    return now + timedelta(days=max(settings.learning_days, 0.0))


def flow_record(device: Device, *, family: int, src: str, dst: str, protocol: int,
                dst_port: int | None, name_of: NameOf | None = None) -> FlowRecord | None:
    """The record of one accepted connection (its original direction), or None if
    neither end is the device."""
    own = set(device.ipv4) | set(device.ipv6)
    if src in own:
        direction, local, remote = Direction.FROM_DEVICE, src, dst
    elif dst in own:
        direction, local, remote = Direction.TO_DEVICE, dst, src
    else:
        return None
    name = name_of(remote) if name_of is not None else None
    return [direction.value, family, protocol, local, remote, dst_port, name]


def _flow(mac: str, record: Sequence[str | int | None]) -> ObservedFlow | None:
    try:
        direction = Direction(str(record[0]))
        family, protocol = int(record[1] or 0), int(record[2] or 0)
        local, remote = str(record[3]), str(record[4])
        port = None if record[5] is None else int(record[5])
        ipaddress.ip_address(local)
        ipaddress.ip_address(remote)
    except (ValueError, IndexError, TypeError):
        return None  # a damaged record is skipped, never trusted
    outgoing = direction is Direction.FROM_DEVICE
    name = record[6] if len(record) > 6 and isinstance(record[6], str) else None
    return ObservedFlow(device=mac, direction=direction, family=family,
                        src=local if outgoing else remote, dst=remote if outgoing else local,
                        protocol=protocol, src_port=None, dst_port=port, icmp_type=None,
                        icmp_code=None, packets=1, bytes=0, first_seen=0.0, last_seen=0.0,
                        remote_name=name)


def learned_names(learning: Learning, limit: int = 64) -> tuple[str, ...]:
    """The DNS names the device's recorded connections went to (distinct, first seen
    first, at most ``limit``): clues to what the device is (``identify``)."""
    names: dict[str, None] = {}
    for record in learning.flows:
        name = record[6] if len(record) > 6 else None
        if isinstance(name, str) and name and len(names) < limit:
            names[name[:253]] = None
    return tuple(names)


def learned_url(mac: str) -> str:
    """The ``mud-url`` of a device's learned profile (never fetched: it is the key the
    owner-approved file is cached under, one per device)."""
    return f"https://learned.mudguard.invalid/{normalise_mac(mac).replace(':', '')}.json"


def propose(learning: Learning, device: Device, *, now: datetime,
            lan_prefixes: Sequence[str] = (), gateway_ips: Sequence[str] = ()) -> bytes | None:
    """The learned MUD file for the owner to approve, or None when nothing was seen.

    Without ``lan_prefixes`` the LAN is the /24 and /64 around the device's addresses.
    """
    flows = [f for f in (_flow(device.mac, r) for r in learning.flows) if f is not None]
    lan = tuple(lan_prefixes) or tuple(
        str(ipaddress.ip_network(f"{a}/{24 if ':' not in a else 64}", strict=False))
        for a in (*device.ipv4, *device.ipv6))
    home = CaptureHome(device=bytes.fromhex(normalise_mac(device.mac).replace(":", "")),
                       device_ips=(*device.ipv4, *device.ipv6), lan_prefixes=lan,
                       gateway_ips=tuple(gateway_ips))
    days = max((now - learning.started).total_seconds() / 86400, 0.0)
    options = LearnOptions(mud_url=learned_url(device.mac),
                           systeminfo=f"Learned by the gateway over {days:.1f} days"[:60],
                           mfg_name=device.manufacturer, model_name=device.model)
    try:
        document = learn_mud_from_flows(flows, home, options, now.timestamp())
    except NoTrafficError:
        return None
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return data if parse_mud(data).mud is not None else None
