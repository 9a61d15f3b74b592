"""Adapter: a RADIUS server that gives hostapd each device's key (``wpa_psk_radius``
with ``macaddr_acl=2``).

hostapd sends an Access-Request whose User-Name is the station's MAC. For a MAC
with a bound key the answer is Access-Accept with the passphrase in a tagged,
salt-encrypted ``Tunnel-Password`` (RFC 2868 §3.5) and, if the key has a VLAN,
``Tunnel-Type=VLAN``, ``Tunnel-Medium-Type=IEEE-802``, ``Tunnel-Private-Group-Id``
(RFC 3580 §3.31). Any other MAC gets Access-Reject: unbound onboarding keys are
never handed out by MAC. Requests must carry a valid Message-Authenticator
(RFC 2869 §5.14; the BlastRADIUS countermeasure) and replies always do.

The packet codec is pyrad's; the socket loop is here.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pyrad import packet as radpacket
from pyrad.dictionary import Dictionary

from mudguard.errors import MudguardError
from mudguard.keys.core import KeyFormatError, PskEntry, normalise_mac

__all__ = [
    "RadiusConfig",
    "RadiusError",
    "RadiusServer",
    "answer",
    "hostapd_radius_config",
    "radius_dictionary",
]

log = logging.getLogger(__name__)

_DICTIONARY = """
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE NAS-Port 5 integer
ATTRIBUTE Session-Timeout 27 integer
ATTRIBUTE Called-Station-Id 30 string
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Proxy-State 33 octets
ATTRIBUTE NAS-Port-Type 61 integer
ATTRIBUTE Tunnel-Type 64 integer has_tag
ATTRIBUTE Tunnel-Medium-Type 65 integer has_tag
ATTRIBUTE Tunnel-Password 69 string has_tag,encrypt=2
ATTRIBUTE Message-Authenticator 80 octets
ATTRIBUTE Tunnel-Private-Group-Id 81 string has_tag
ATTRIBUTE Connect-Info 77 string
VALUE Tunnel-Type VLAN 13
VALUE Tunnel-Medium-Type IEEE-802 6
"""
_MAX_PACKET = 4096
_TAG = 1


class RadiusError(MudguardError):
    """The RADIUS server cannot start (bad address, port in use)."""

    key = "radius_failed"


def radius_dictionary() -> Dictionary:
    """The attributes mudguard reads and writes (a subset of FreeRADIUS's dictionaries)."""
    return Dictionary(io.StringIO(_DICTIONARY))


@dataclass(frozen=True, slots=True)
class RadiusConfig:
    """Where to listen, the shared secret, and which NAS addresses may ask."""

    host: str
    port: int
    secret: bytes
    clients: frozenset[str]
    """Source addresses allowed to send requests (hostapd's address)."""


def _station_mac(request: radpacket.AuthPacket) -> str | None:
    for attribute in ("User-Name", "Calling-Station-Id"):
        values = request.get(attribute) or []
        for value in values:
            try:
                return normalise_mac(str(value))
            except KeyFormatError:
                continue
    return None


def answer(data: bytes, secret: bytes, lookup: Callable[[str], PskEntry | None],
           dictionary: Dictionary) -> tuple[bytes | None, str]:
    """Decode one request and build the reply; returns (reply bytes or None to drop,
    a short reason for the log; never a secret)."""
    if len(data) > _MAX_PACKET:
        return None, "oversized packet"
    try:
        request = radpacket.AuthPacket(packet=data, secret=secret, dict=dictionary)
    except (radpacket.PacketError, KeyError, ValueError, IndexError) as exc:
        return None, f"undecodable packet: {type(exc).__name__}"
    if request.code != radpacket.AccessRequest:
        return None, f"not an Access-Request (code {request.code})"
    if not request.message_authenticator or not request.verify_message_authenticator():
        return None, "missing or wrong Message-Authenticator"
    reply = request.CreateReply()
    mac = _station_mac(request)
    entry = lookup(mac) if mac else None
    if entry is None or entry.is_onboarding or entry.mac != mac:
        reply.code = radpacket.AccessReject
        return reply.ReplyPacket(), f"reject {mac or 'no MAC'}"
    reply.code = radpacket.AccessAccept
    reply.AddAttribute(f"Tunnel-Password:{_TAG}", entry.passphrase)
    if entry.vlan:
        reply.AddAttribute(f"Tunnel-Type:{_TAG}", "VLAN")
        reply.AddAttribute(f"Tunnel-Medium-Type:{_TAG}", "IEEE-802")
        reply.AddAttribute(f"Tunnel-Private-Group-Id:{_TAG}", str(entry.vlan))
    return reply.ReplyPacket(), f"accept {mac} keyid={entry.keyid}"


def hostapd_radius_config(host: str, port: int, secret: bytes, *,
                          own_ip: str = "127.0.0.1") -> str:
    """The hostapd.conf lines that make hostapd ask this server for each station's key:
    ``macaddr_acl=2`` (ask RADIUS per MAC) and ``wpa_psk_radius=2`` (the PSK must come
    from the Tunnel-Password). hostapd.conf then holds the secret: write it 0600."""
    text = secret.decode("ascii", errors="replace")
    if not text or any(not 0x21 <= ord(ch) <= 0x7E for ch in text):
        raise RadiusError("the shared secret must be printable ASCII without spaces")
    return "".join(f"{line}\n" for line in (
        "macaddr_acl=2", "wpa_psk_radius=2", f"auth_server_addr={host}",
        f"auth_server_port={int(port)}", f"auth_server_shared_secret={text}",
        f"own_ip_addr={own_ip}", "nas_identifier=mudguard"))


class RadiusServer:
    """A UDP RADIUS authentication server answering from ``lookup(mac)``.

    ``serve()`` runs until ``stop()``; each receive waits at most ``poll`` seconds
    so a stop request is seen promptly.
    """

    def __init__(self, config: RadiusConfig, lookup: Callable[[str], PskEntry | None],
                 *, poll: float = 0.2) -> None:
        """Bind the UDP socket now (RadiusError if the address is unusable)."""
        self.config = config
        self._lookup = lookup
        self._dictionary = radius_dictionary()
        self._stop = threading.Event()
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.bind((config.host, config.port))
        except OSError as exc:
            self._sock.close()
            raise RadiusError(f"cannot listen on {config.host}:{config.port}: "
                              f"{exc.strerror}") from exc
        self._sock.settimeout(poll)
        self.handled = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (useful with port 0)."""
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def handle_once(self) -> bool:
        """Answer at most one datagram; False if none arrived within the poll time."""
        try:
            data, peer = self._sock.recvfrom(_MAX_PACKET + 1)
        except TimeoutError:
            return False
        if peer[0] not in self.config.clients:
            log.warning("RADIUS request from %s dropped: not a configured client", peer[0])
            return True
        reply, reason = answer(data, self.config.secret, self._lookup, self._dictionary)
        log.info("RADIUS %s: %s", peer[0], reason)
        if reply is not None:
            self._sock.sendto(reply, peer)
            self.handled += 1
        return True

    def serve(self) -> None:
        """Answer requests until ``stop()`` is called."""
        while not self._stop.is_set():
            self.handle_once()

    def stop(self) -> None:
        """Ask ``serve()`` to return."""
        self._stop.set()

    def close(self) -> None:
        """Release the socket."""
        self._sock.close()
