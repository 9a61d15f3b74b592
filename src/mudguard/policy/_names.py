"""Names of nftables objects. They are mudguard's own, derived from hashes, never from
text in a MUD file, so a hostile name cannot reach the ruleset's syntax.

The DNS resolver and the compiler both call these, so they agree on set names
without sharing state.
"""

from __future__ import annotations

import functools
import hashlib

TABLE = "mudguard"
"""The main ``inet`` table: base chains after the shards, known devices, the default drop."""

SHARDS = 16
"""Device tables. The kernel re-validates a whole table (every chain reachable from
its base chains) at each commit that adds a rule, so a device update in one table
holding every device would cost time in proportion to the home. Devices are spread
over ``SHARDS`` tables by a hash of their MAC: an update re-validates one shard.
Every packet passes each shard's base chain once (its first rules accept established
traffic: from the LAN after a verdict-map lookup of the sender's binding), a cost fixed
by ``SHARDS``, not by the number of devices.
A process sets it once, before compiling anything (``set_shard_count``)."""
MAX_SHARDS = 64
"""The most device tables a home may have (names ``mudguard_00`` .. ``mudguard_63``)."""


def set_shard_count(count: int) -> None:
    """Use ``count`` device tables from now on (1 = the best forwarding rate, 16 = a
    device's update flat up to thousands of devices). Call at start-up, before any
    compile; the Enforcer's reconcile then removes the tables beyond ``count``."""
    global SHARDS
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"the number of device tables must be 1-{MAX_SHARDS}, got {count!r}")
    SHARDS = count
    shard_table.cache_clear()


def _digest(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def device_id(mac: str) -> str:
    """A short stable id for a device, from its MAC (lower-case, colon separated)."""
    return _digest("device:" + mac.lower())


def shard_index(mac: str) -> int:
    """The shard (0..SHARDS-1) that holds a device's chains, maps and DNS sets."""
    return int(device_id(mac)[:4], 16) % SHARDS


@functools.lru_cache(maxsize=65536)
def shard_table(mac: str) -> str:
    """The ``inet`` table that holds a device's chains, dispatch entries and DNS sets."""
    return shard_name(shard_index(mac))


def shard_name(index: int) -> str:
    """The name of shard ``index``'s table (any index a home may ever have used)."""
    if not 0 <= index < MAX_SHARDS:
        raise ValueError(f"shard index out of range: {index}")
    return f"{TABLE}_{index:02d}"


def shard_names() -> list[str]:
    """Every shard table's name, in order."""
    return [shard_name(i) for i in range(SHARDS)]


def shard_count() -> int:
    """How many device tables this process uses."""
    return SHARDS


def surplus_shard_names() -> list[str]:
    """The names of shard tables beyond ``SHARDS`` (left from a bigger setting)."""
    return [shard_name(i) for i in range(SHARDS, MAX_SHARDS)]


def dns_set_name(dnsname: str, family: int) -> str:
    """The table-wide set of ``device address . remote address`` pairs for one DNS name.

    One set per distinct name in the home (not per device): the resolver adds the
    pair (asking device, answer address) with the answer's TTL as timeout, and
    only chains of devices whose profile names ``dnsname`` reference the set.
    """
    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, got {family}")
    return f"dns{family}_{_digest('dns:' + dnsname.lower().rstrip('.'))}"


def device_chain(mac: str, direction: str) -> str:
    """The chain that holds one device's rules for one direction.

    ``"out"``: forwarded packets from the device; ``"in"``: forwarded packets to it;
    ``"gw"``: packets from the device to the gateway itself (input hook).
    """
    if direction not in ("out", "in", "gw"):
        raise ValueError(f"direction must be 'out', 'in' or 'gw', got {direction!r}")
    return f"dev_{device_id(mac)}_{direction}"


KNOWN_MACS = "known_macs"
"""Main-table set: the MAC of every managed device (others are unknown: nothing forwarded)."""
MANAGED4 = "managed4"
"""Main-table set: every managed device's IPv4 addresses (its ``in`` chain has run)."""
MANAGED6 = "managed6"
"""Main-table set: every managed device's IPv6 addresses."""
BIND4 = "bind4"
"""Main-table set: ``MAC . IPv4 address`` of every managed device: the source binding
every forwarded LAN packet meets (established ones too) before the established accept."""
BIND6 = "bind6"
"""Main-table set: the same for IPv6."""
PENDING4 = "pending4"
"""Main-table set: IPv4 addresses of devices whose rules are not in yet (start-up): nothing
is forwarded to them, whatever the sender's rules allow, until their own ``in`` chain is."""
PENDING6 = "pending6"
"""Main-table set: the same for IPv6."""

OUT_DISPATCH = "out_dispatch"
"""Verdict map: device MAC -> jump to its ``out`` chain (forward hook)."""
GW_DISPATCH = "gw_dispatch"
"""Verdict map: device MAC -> jump to its ``gw`` chain (input hook)."""
IN_DISPATCH4 = "in_dispatch4"
"""Verdict map: device IPv4 address -> jump to its ``in`` chain."""
IN_DISPATCH6 = "in_dispatch6"
"""Verdict map: device IPv6 address -> jump to its ``in`` chain."""


def log_prefix(mac: str, direction: str) -> str:
    """The NFLOG prefix of a device's final drop: ``mg <device_id> <out|in>``."""
    if direction not in ("out", "in"):
        raise ValueError(f"direction must be 'out' or 'in', got {direction!r}")
    return f"mg {device_id(mac)} {direction}"
