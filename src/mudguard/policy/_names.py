"""Names of nftables objects. They are mudguard's own, derived from hashes, never from
text in a MUD file, so a hostile name cannot reach the ruleset's syntax.

The DNS resolver and the compiler both call these, so they agree on set names
without sharing state.
"""

from __future__ import annotations

import hashlib

TABLE = "mudguard"
"""The one ``inet`` table that holds all of mudguard's rules."""


def _digest(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def device_id(mac: str) -> str:
    """A short stable id for a device, from its MAC (lower-case, colon separated)."""
    return _digest("device:" + mac.lower())


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
