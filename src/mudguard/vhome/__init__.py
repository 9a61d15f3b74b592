"""A virtual home in network namespaces: gateway, LAN devices and a fake Internet.

Library code shared by the tests, the benchmarks and ``mudguard demo``. Needs root.

    with VirtualHome(prefix="mge1", devices=2) as home:
        home.serve(home.inet_ns, tcp=[443], udp=[123])
        assert home.tcp(home.nodes[0].ns, INTERNET_HOSTS["cloud"][0], 443)
"""

from mudguard.vhome._home import (
    GW4,
    GW6,
    INET4,
    INET6,
    INTERNET_HOSTS,
    LAN4,
    LAN6,
    VDevice,
    VirtualHome,
)
from mudguard.vhome._netns import NetnsError, call_in, enter, run

__all__ = [
    "GW4",
    "GW6",
    "INET4",
    "INET6",
    "INTERNET_HOSTS",
    "LAN4",
    "LAN6",
    "NetnsError",
    "VDevice",
    "VirtualHome",
    "call_in",
    "enter",
    "run",
]
