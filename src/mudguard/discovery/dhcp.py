"""DHCP discovery: the MUD URL from DHCPv4 option 161 and DHCPv6 option 112.

Two paths bring a lease to the intake. The fast one (``dhcp_sniff``) reads dnsmasq's
DHCPv4 ACK off the LAN interface as it leaves, with the options of the client's own
REQUEST: no process per lease. This one, dnsmasq's ``--dhcp-script`` hook, stays as
the second path: dnsmasq parses options 161 and 112 itself and hands the MUD URL to
the hook as ``DNSMASQ_MUD_URL`` for both families, with the lease's address and the
client's MAC; it alone reports lease ends (``del``) and DHCPv6 leases, and catches
whatever the sniffer missed. The intake drops the hook's copy of a lease the sniffer
already took (an unchanged sighting). The hook is event-driven (run by dnsmasq per
lease change), never a polled log file.

The hook (``mudguard-dhcp-hook``, ``dhcp_hook.main``) is tiny and imports only the
standard library (dnsmasq waits for it on every lease): it turns its arguments
and environment into one JSON object and sends it as one datagram to the daemon's
unix socket. It builds no command and runs nothing; if the daemon is not
listening it says so on stderr (dnsmasq logs it) and exits 0 so DHCP carries on.
The daemon side (``DhcpHookListener``) reads datagrams, parses each strictly
(``parse_hook_message``) into a ``Sighting`` checked as the intake checks it (a MAC
that can name a device, usable addresses, cleaned text: ``sighting.normalise``) and
gives it to the intake. ``hook_verdict`` runs the same checks, plus the MUD URL rule
the device service applies next, for ``mudguard dhcp listen``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mudguard.devices._model import MudSource
from mudguard.devices.lifecycle import MudUrlError, check_mud_url
from mudguard.discovery.dhcp_hook import ACTIONS as _ACTIONS
from mudguard.discovery.dhcp_hook import DEFAULT_SOCKET as _HOOK_SOCKET
from mudguard.discovery.dhcp_hook import MAX_MESSAGE, SOCKET_ENV, hook_message
from mudguard.discovery.dhcp_hook import main as _hook_main
from mudguard.discovery.sighting import Sighting, SightingError, normalise

__all__ = ["DEFAULT_SOCKET", "MAX_MESSAGE", "SOCKET_ENV", "DhcpHookListener", "hook_main",
           "hook_message", "hook_verdict", "parse_hook_message", "read_hook_message"]

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path(_HOOK_SOCKET)


def parse_hook_message(data: bytes) -> Sighting:
    """Parse one datagram from the hook into a ``Sighting`` the intake would take;
    raise ``SightingError``.

    Strict: a JSON object of known keys with string values of bounded size, whose MAC
    can name a device (not all-zero, broadcast, multicast or malformed); the address
    is dropped if unusable and text is cleaned (``sighting.normalise``).
    """
    return normalise(read_hook_message(data))


def read_hook_message(data: bytes) -> Sighting:
    """One datagram from the hook as it came (structure checked, values not yet);
    raise ``SightingError``."""
    if len(data) > MAX_MESSAGE:
        raise SightingError(f"hook message of {len(data)} bytes; limit {MAX_MESSAGE}")
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SightingError(f"hook message is not JSON: {exc}") from None
    except RecursionError:
        # A few kilobytes of brackets exhaust json's recursion: a forged datagram.
        raise SightingError("hook message is nested too deeply") from None
    if not isinstance(message, dict) or message.get("v") != 1:
        raise SightingError("hook message is not a version-1 object")
    if message.get("action") not in _ACTIONS or message.get("family") not in (4, 6):
        raise SightingError("hook message has no valid action or family")
    fields: dict[str, str | None] = {}
    for key in ("mac", "ip", "hostname", "mud_url", "vendor_class", "prl"):
        value = message.get(key)
        if value is not None and not isinstance(value, str):
            raise SightingError(f"hook message field {key} must be text")
        fields[key] = value
    if not fields["mac"]:
        raise SightingError("hook message has no MAC (a DHCPv6 client dnsmasq cannot map)")
    if fields["mac"] and fields["mac"].count("-") == 1:
        raise SightingError("hook message is for a non-Ethernet hardware type")
    ended = message["action"] == "del"
    if ended and not fields["ip"]:
        raise SightingError("hook message ends a lease but names no address")
    return Sighting(mac=fields["mac"], ip=fields["ip"], hostname=fields["hostname"],
                    mud_url=None if ended else fields["mud_url"], lease_ended=ended,
                    vendor_class=fields["vendor_class"], prl=fields["prl"],
                    source=MudSource.DHCP6 if message["family"] == 6 else MudSource.DHCP4)


def hook_verdict(data: bytes) -> dict[str, Any]:
    """What the daemon makes of one hook datagram, by the same checks in the same order:
    the message's structure, the MAC, address and text (``parse_hook_message``), then the
    MUD URL rule the device service applies (RFC 8520, ``check_mud_url``).

    Returns ``{"verdict": "accepted", "mac", "ip", "source", "mud_url", "hostname",
    "vendor_class", "prl"}`` (plus ``lease_ended`` for a released or expired lease,
    ``ignored_ip`` when the address cannot identify a device) or ``{"verdict":
    "refused", "error": KEY, "reason": TEXT}``. Whether an accepted MAC becomes a new
    device also depends on the daemon's store (known devices, new-device budgets).
    """
    try:
        raw = read_hook_message(data)
        clean = normalise(raw)
        if clean.mud_url is not None:
            check_mud_url(clean.mud_url)
    except (SightingError, MudUrlError) as exc:
        return {"verdict": "refused", "error": exc.key, "reason": str(exc)[:300]}
    verdict: dict[str, Any] = {
        "verdict": "accepted", "mac": clean.mac, "ip": clean.ip,
        "source": clean.source.value, "mud_url": clean.mud_url, "hostname": clean.hostname,
        "vendor_class": clean.vendor_class, "prl": clean.prl}
    if clean.lease_ended:
        verdict["lease_ended"] = True
    if raw.ip and clean.ip is None:
        verdict["ignored_ip"] = raw.ip
    return verdict


def hook_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """The hook's entry point (``mudguard.discovery.dhcp_hook.main``)."""
    return _hook_main(argv, env)


class DhcpHookListener:
    """The daemon's end: a unix datagram socket only root (dnsmasq's hook) may write."""

    def __init__(self, path: Path | str = DEFAULT_SOCKET) -> None:
        """Bind the socket at ``path`` (replacing a stale one), mode 0600."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(old)

    @classmethod
    def open(cls, path: Path | str = DEFAULT_SOCKET) -> DhcpHookListener | None:
        """The listener, or None (with one log line) when the socket cannot be made:
        DHCP discovery is then off and everything else runs."""
        try:
            return cls(path)
        except OSError as exc:
            log.error("DHCP discovery off: cannot bind %s: %s", path, exc.strerror or exc)
            return None

    def fileno(self) -> int:
        """The socket's descriptor (for selectors and ``loop.add_reader``)."""
        return self._sock.fileno()

    def receive(self, timeout: float | None = None) -> Sighting | None:
        """Wait up to ``timeout`` s for one message; the sighting, or None on timeout or
        a bad message (logged)."""
        data = self._recv(timeout)
        return None if data is None else self._parse(data)

    def _recv(self, timeout: float | None) -> bytes | None:
        self._sock.settimeout(timeout)
        try:
            return self._sock.recv(MAX_MESSAGE + 1)
        except TimeoutError:
            return None

    @staticmethod
    def _parse(data: bytes) -> Sighting | None:
        try:
            return parse_hook_message(data)
        except SightingError as exc:
            log.warning("ignored a DHCP hook message: %s", exc)
            return None

    def verdicts(self, on_verdict: Callable[[dict[str, Any]], object], *, max_messages: int,
                 timeout: float) -> int:
        """Read up to ``max_messages`` datagrams, waiting at most ``timeout`` s for each,
        and pass ``hook_verdict`` of each (accepted or refused) to ``on_verdict``;
        returns how many were read."""
        read = 0
        for _ in range(max_messages):
            data = self._recv(timeout)
            if data is None:
                break
            on_verdict(hook_verdict(data))
            read += 1
        return read

    def serve(self, on_sighting: Callable[[Sighting], object], *, max_messages: int,
              timeout: float) -> int:
        """Read up to ``max_messages`` datagrams, waiting at most ``timeout`` s for each,
        and pass every valid sighting to ``on_sighting``; returns how many were passed."""
        passed = 0
        for _ in range(max_messages):
            data = self._recv(timeout)
            if data is None:
                break
            sighting = self._parse(data)
            if sighting is not None:
                on_sighting(sighting)
                passed += 1
        return passed

    def close(self) -> None:
        """Close and remove the socket."""
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> DhcpHookListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
