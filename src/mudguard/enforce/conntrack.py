"""Adapter: forget the kernel's tracked connections of a device whose access narrowed.

Every table accepts ``ct state established,related`` before any device rule (only the
source binding comes first), so a connection the old policy let in would outlive a
narrower one (a quarantined camera
keeping its line to a command server). After such an update the ``Enforcer`` has the
connections deleted that have one of the device's addresses at either end (behind the
update, on the ``Nft`` handle's worker: the kernel walks its whole conntrack table for
each dump, ≈7 ms per family whatever it holds); the next
packet of a flow the new policy still allows is looked at afresh (a TCP flow whose
rule wants a device-initiated SYN starts over), the others are dropped.

ctnetlink (``include/uapi/linux/netfilter/nfnetlink_conntrack.h``): one
``IPCTNL_MSG_CT_GET`` dump per family, then an ``IPCTNL_MSG_CT_DELETE`` per match
carrying the entry's own original tuple (and zone) back, byte for byte.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Iterable

from mudguard.enforce.nfnetlink import NfnetlinkSocket, iter_raw_attrs, parse_attrs
from mudguard.watch.conntrack import (
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_IP_V6_DST,
    CTA_IP_V6_SRC,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    NFNL_SUBSYS_CTNETLINK,
)

log = logging.getLogger(__name__)

IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 1, 2
CTA_TUPLE_REPLY, CTA_ZONE = 2, 18
_MAX_ENTRIES = 1_000_000


def _ends(tuple_attr: bytes) -> set[str]:
    """The source and destination addresses of a CTA_TUPLE_* payload."""
    ip = parse_attrs(parse_attrs(tuple_attr).get(CTA_TUPLE_IP, b""))
    return {str(ipaddress.ip_address(ip[key])) for key in
            (CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST) if key in ip}


def forget_connections(sock: NfnetlinkSocket, addresses: Iterable[str]) -> int:
    """Delete every tracked connection with one of ``addresses`` at either end, in
    either direction; how many were deleted (one already gone is not an error)."""
    wanted = {str(ipaddress.ip_address(a)) for a in addresses}
    deleted = 0
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        if not any(ipaddress.ip_address(a).version == version for a in wanted):
            continue
        for payload in sock.dump(IPCTNL_MSG_CT_GET, b"", _MAX_ENTRIES,
                                 subsystem=NFNL_SUBSYS_CTNETLINK, family=family):
            raw = {kind: (whole, value) for kind, whole, value in iter_raw_attrs(payload)}
            orig, reply = raw.get(CTA_TUPLE_ORIG), raw.get(CTA_TUPLE_REPLY)
            if orig is None:
                continue
            ends = _ends(orig[1]) | (_ends(reply[1]) if reply else set())
            if not ends & wanted:
                continue
            body = orig[0] + (raw[CTA_ZONE][0] if CTA_ZONE in raw else b"")
            code = sock.request(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE, family, body)
            if code == 0:
                deleted += 1
            elif code != errno.ENOENT:
                log.warning("conntrack delete refused: %s", errno.errorcode.get(code, code))
    return deleted

