"""Tell systemd how the daemon is doing (``Type=notify``, sd_notify(3)), without libsystemd.

``notify("READY=1")`` sends one datagram to the socket systemd named in ``NOTIFY_SOCKET``
(a path, or ``@name`` in the abstract namespace); outside systemd it does nothing. The
daemon says ``READY=1`` once every stored device's policy is back in the kernel and every
service is up (the ``ready`` event), so ``systemctl start mudguard`` and the units ordered
after it wait for enforcement, and ``STOPPING=1`` when it stops.
"""

from __future__ import annotations

import os
import socket


def notify(message: str, *, environ: dict[str, str] | None = None) -> bool:
    """Send ``message`` to systemd's notification socket; False if there is none or it
    did not take it (the daemon runs the same either way)."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), target)
    except OSError:
        return False
    return True
