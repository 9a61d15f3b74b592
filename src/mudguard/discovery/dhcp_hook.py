"""``mudguard-dhcp-hook``: dnsmasq's ``--dhcp-script``, kept to the standard library.

dnsmasq runs the hook once per lease change and waits for it, so it must start
fast: it imports nothing of mudguard (importing the device model would add
~0.1 s per lease). It turns its arguments and environment into one JSON object
and sends it as one datagram to the daemon's unix socket; it builds no command and
runs nothing. If the daemon is not listening it says so on stderr (dnsmasq logs
it) and exits 0 so DHCP carries on. See ``mudguard.discovery.dhcp`` for the why
and for the daemon's side.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_SOCKET = "/run/mudguard/dhcp.sock"
SOCKET_ENV = "MUDGUARD_DHCP_SOCKET"
MAX_MESSAGE = 4096  # one lease event; option 161 is at most 255 octets
ACTIONS = ("add", "old", "del")  # "del": the lease ended (released or expired)


def hook_message(argv: Sequence[str], env: Mapping[str, str]) -> dict[str, Any] | None:
    """The JSON object the hook sends for one dnsmasq script call, or None to send nothing.

    ``argv`` is dnsmasq's ``action mac-or-duid ip [hostname]``. For DHCPv6 the second
    argument is the DUID and the MAC is in ``DNSMASQ_MAC`` (when dnsmasq knows it).
    """
    if len(argv) < 3 or argv[0] not in ACTIONS:
        return None
    action, hw, ip = argv[0], argv[1], argv[2]
    family = 6 if ":" in ip else 4
    mac = env.get("DNSMASQ_MAC", "") if family == 6 else hw
    return {
        "v": 1, "action": action, "family": family, "mac": mac[:64], "ip": ip[:64],
        "hostname": (argv[3] if len(argv) > 3 else env.get("DNSMASQ_SUPPLIED_HOSTNAME"))
        or None,
        "mud_url": env.get("DNSMASQ_MUD_URL") or None,
        "interface": env.get("DNSMASQ_INTERFACE") or None,
        # for ``mudguard.identify``: DHCPv4 options 60 and 55 (decimal codes, commas)
        "vendor_class": env.get("DNSMASQ_VENDOR_CLASS", "")[:256] or None,
        "prl": env.get("DNSMASQ_REQUESTED_OPTIONS", "")[:512] or None,
    }


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of ``mudguard-dhcp-hook``."""
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if env is None else env
    message = hook_message(args, environ)
    if message is None:
        return 0
    path = environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    payload = json.dumps(message).encode()[:MAX_MESSAGE]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.sendto(payload, path)
        except OSError as exc:
            print(f"mudguard-dhcp-hook: daemon socket {path} unavailable: {exc.strerror}",
                  file=sys.stderr)
    return 0
