"""Adapter: does an address reach the gateway itself? Asked of the kernel, live.

A MUD URL is device-supplied, so it may name the gateway: its WAN address (the one the
ISP gave by DHCP, or a SLAAC address), a LAN address, any address of any other
interface. The fixed lists in ``fetch.FORBIDDEN_NETWORKS`` and the configured home
prefixes cannot know those addresses: they change while the gateway runs. So the
fetcher asks the kernel of the network namespace it runs in, at every check, two
questions (pyroute2, one netlink socket per check, ≈1.5 ms):

- is the address one of the addresses of an interface (``RTM_GETADDR``)?
- where would the kernel send a connection to it (``RTM_GETROUTE``)? ``local``,
  ``broadcast``, ``anycast`` (the IPv6 subnet-router anycast address a forwarding
  gateway answers on) and ``multicast`` routes all end at the gateway itself, even for
  addresses no interface lists (a ``local`` route over a whole prefix, for instance).

An address the kernel cannot route at all (no route, ``unreachable``, ``prohibit``) is
not the gateway's: no connection can be made to it. If the kernel cannot be asked, the
answer is a refusal (fail closed).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# rtnetlink route types (linux/rtnetlink.h) whose destination is this host itself.
_TO_SELF = {2: "local", 3: "broadcast", 4: "anycast", 5: "multicast"}
# Route lookups that fail this way mean no connection to the address can be made.
_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EINVAL,
             errno.EAGAIN}


def gateway_reason(address: IPAddress) -> str | None:
    """Why ``address`` reaches the gateway itself, or None if it does not.

    Read live from the kernel of the calling thread's network namespace; when the
    kernel cannot be asked, the reason says so (the caller refuses the address).
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with IPRoute() as ipr:
            interface = _interface_holding(ipr, family, address)
            if interface is not None:
                return f"{address} is an address of the gateway itself (interface {interface})"
            try:
                routes = ipr.route("get", dst=str(address))
            except NetlinkError as exc:
                if exc.code in _NO_ROUTE:
                    return None
                raise
    except (OSError, NetlinkError) as exc:
        return f"cannot ask the kernel whether {address} is the gateway's own: {exc}"
    kinds = {_TO_SELF.get(route["type"]) for route in routes} - {None}
    if kinds:
        return (f"{address} reaches the gateway itself (the kernel routes it "
                f"{'/'.join(sorted(k for k in kinds if k))})")
    return None


def _interface_holding(ipr: Any, family: int, address: IPAddress) -> str | None:
    """The name of the interface that has ``address``, or None."""
    for message in ipr.get_addr(family=family):
        held = message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
        try:
            if held is None or ipaddress.ip_address(held) != address:
                continue
        except ValueError:
            continue
        links = ipr.link("get", index=message["index"])
        name = links[0].get_attr("IFLA_IFNAME") if links else None
        return str(name) if name else f"#{message['index']}"
    return None
