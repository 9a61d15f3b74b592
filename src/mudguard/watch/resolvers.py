"""Devices that resolve names somewhere else than the gateway (RFC 9726, BCP 241), pure.

Why it matters. A MUD profile names Internet peers by DNS name; the gateway can only
open a name's addresses for a device when the device asks *the gateway's* resolver
(``mudguard.dns``: the answer fills the device's sets). RFC 9726 §5 says the MUD
controller needs to see the same answers as the device, and §6.5 ("Prefer DNS Servers
Learned from DHCP/Route Advertisements") says devices SHOULD use the resolver the
network provides; public resolvers (Do53, DoT, DoQ or DoH) are discouraged, allowed
only as a fallback when the local one never answers, and then MUST be listed in the
MUD file. A device that resolves elsewhere is therefore told to the owner, with the
reason its named peers may not work.

What counts as resolving elsewhere (a packet the device sent, ``classify``):

- **do53**: UDP or TCP port 53 to an address that is not one of the gateway's;
- **dot** / **doq**: TCP / UDP port 853 (DNS over TLS, RFC 7858; DNS over QUIC,
  RFC 9250) to anywhere but the gateway (which serves neither);
- **doh**: TCP or UDP port 443 to a known DNS-over-HTTPS endpoint: an address of the
  packaged list (``doh_endpoints.json``, with its provenance), an address the
  gateway's own resolver gave for one of the list's names (``learn_answer``: the list's
  addresses go stale, the names do not; only answers whose question is one of the
  names), or a flow whose remote name (the watcher's
  ``remote_name``) is one of the names.

A flow the device's policy *allowed* (seen as a conntrack NEW event) to a resolver on
the home LAN (a Pi-hole the owner allowed) is not reported: the owner chose it. An
allowed flow to an Internet resolver is reported (the manufacturer listed it in the
MUD file as a fallback, RFC 9726 §6.5; the owner should still know the gateway does
not see those lookups).

Each device is told once per server (``ResolverWatch.first``), not once per packet,
and bounded: ``max_devices`` devices, ``max_servers`` servers each (least recently seen
forgotten first). Flows to a device's first ``max_exempt`` resolvers do not count
toward the deviation quarantine (``exempt``, ``DeviationTracker.observe``): RFC 9726
makes using the network's resolver a SHOULD and allows a listed fallback, so a device
with a hard-wired public resolver pair (two addresses per family) is misconfigured,
not compromised. Beyond that many distinct servers the flows count again (malware
must not get a free pass by talking on port 53 or 853), and all of them always count
toward scan and flood detection.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.rdatatype

from mudguard.mud import Direction
from mudguard.watch.nflog import TCP, UDP, FlowEvent

DNS_PORT = 53
DOT_PORT = 853  # DNS over TLS (RFC 7858) and DNS over QUIC (RFC 9250)
HTTPS_PORT = 443
MAX_LEARNED = 4096  # DoH endpoint addresses learned from answers


class Transport(StrEnum):
    """How the device reached the other resolver."""

    DO53 = "do53"
    DOT = "dot"
    DOQ = "doq"
    DOH = "doh"


_WHAT = {
    Transport.DO53: "plain DNS (port 53)",
    Transport.DOT: "DNS over TLS (port 853)",
    Transport.DOQ: "DNS over QUIC (UDP port 853)",
    Transport.DOH: "DNS over HTTPS (port 443)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolverUse:
    """A device used a DNS resolver other than the gateway's."""

    device_id: str
    transport: Transport
    server: str  # the resolver's address
    server_name: str | None  # its DoH name, when known
    allowed: bool  # its policy let the flow through (conntrack) rather than dropping it
    event: FlowEvent

    @property
    def message_key(self) -> str:
        """The portal catalogue key of the explanation (``dns_elsewhere.<transport>``)."""
        return f"dns_elsewhere.{self.transport.value}"

    @property
    def where(self) -> str:
        """The server as the owner reads it, e.g. ``dns.google (8.8.8.8)``."""
        return f"{self.server_name} ({self.server})" if self.server_name else self.server

    def explain(self) -> str:
        """The owner's explanation, in English (the portal translates ``message_key``)."""
        outcome = ("its profile allows this server, so it was not blocked" if self.allowed
                   else "the gateway blocked it")
        return (f"It resolves names with another DNS server: {_WHAT[self.transport]} to "
                f"{self.where} ({outcome}). The names in its MUD profile only work when it "
                "asks the gateway, which the network announces by DHCP and router "
                "advertisements (RFC 9726), so some of its connections may fail. Check the "
                "device's network settings, or ask its manufacturer to use the network's "
                "DNS server.")

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (stored with the event)."""
        return {"kind": "dns-elsewhere", "transport": self.transport.value,
                "server": self.server, "server_name": self.server_name,
                "allowed": self.allowed, "reason": self.explain(),
                "message_key": self.message_key,
                "params": {"server": self.where},
                "evidence": [self.event.as_dict()]}


@dataclass(frozen=True, slots=True)
class DohEndpoints:
    """Known DNS-over-HTTPS endpoints: names and addresses (normalised)."""

    names: frozenset[str]
    addresses: Mapping[str, str]  # address -> the name it belongs to

    @classmethod
    def parse(cls, doc: object) -> DohEndpoints:
        """From the ``doh_endpoints.json`` document; ``ValueError`` names a bad entry."""
        if not isinstance(doc, dict) or not isinstance(doc.get("endpoints"), list):
            raise ValueError("DoH endpoint list: expected an object with an 'endpoints' list")
        names: set[str] = set()
        addresses: dict[str, str] = {}
        for index, entry in enumerate(doc["endpoints"]):
            name = entry.get("name") if isinstance(entry, dict) else None
            listed = entry.get("addresses", []) if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name.strip(".") or not isinstance(listed, list):
                raise ValueError(f"DoH endpoint list: entry {index} needs a name and an "
                                 "addresses list")
            names.add(_name(name))
            for address in listed:
                try:
                    addresses[_address(str(address))] = _name(name)
                except ValueError:
                    raise ValueError(f"DoH endpoint list: {name}: {address!r} is not an IP "
                                     "address") from None
        return cls(frozenset(names), addresses)


def load_doh_endpoints() -> DohEndpoints:
    """The packaged list (``mudguard/watch/doh_endpoints.json``)."""
    text = resources.files("mudguard.watch").joinpath("doh_endpoints.json").read_text("utf-8")
    return DohEndpoints.parse(json.loads(text))


def _name(name: str) -> str:
    return name.strip().rstrip(".").lower()


@functools.lru_cache(maxsize=4096)
def _address(address: str) -> str:
    """The normal form of an address (cached: classifying runs per logged packet)."""
    return str(ipaddress.ip_address(address))


@dataclass(slots=True)
class _Told:
    servers: OrderedDict[str, None] = field(default_factory=OrderedDict)  # LRU, bounded
    exempt: set[str] = field(default_factory=set)  # the first ``max_exempt`` servers


class ResolverWatch:
    """Classifies flows as resolving elsewhere and tells each device+server once.

    Thread-safe: ``learn_answer`` runs on the DNS server's loop, the rest on the
    watcher's (the same loop in the daemon; tests may differ).
    """

    def __init__(self, gateway_addresses: Iterable[str], *,
                 lan_prefixes: Iterable[str] = (), doh: DohEndpoints | None = None,
                 max_devices: int = 4096, max_servers: int = 64,
                 max_exempt: int = 4) -> None:
        self.gateway = frozenset(_address(a) for a in gateway_addresses)
        self.lan = tuple(ipaddress.ip_network(p, strict=False) for p in lan_prefixes)
        self.doh = doh if doh is not None else load_doh_endpoints()
        self.max_devices = max_devices
        self.max_servers = max_servers
        self.max_exempt = max_exempt
        self._learned: OrderedDict[str, str] = OrderedDict()  # address -> DoH name
        # The names' wire forms, searched in an answer's bytes before anything is parsed.
        self._forms = re.compile(b"|".join(
            re.escape(dns.name.from_text(n).to_wire() or b"") for n in sorted(self.doh.names)))
        self._told: OrderedDict[str, _Told] = OrderedDict()
        self._lock = threading.Lock()

    # -- classification ----------------------------------------------------------------

    def classify(self, event: FlowEvent, *, allowed: bool = False) -> ResolverUse | None:
        """The ``ResolverUse`` this packet shows, or None (not DNS, or the gateway's)."""
        if event.direction is not Direction.FROM_DEVICE or event.protocol not in (TCP, UDP):
            return None
        port = event.dst_port
        if port not in (DNS_PORT, DOT_PORT, HTTPS_PORT):
            return None
        try:
            server = _address(event.dst)
        except ValueError:
            return None
        if server in self.gateway:
            return None
        name = self._doh_name(server, event.remote_name)
        if port == HTTPS_PORT and name is None:
            return None
        if allowed and self._on_lan(server):
            return None
        if port == DNS_PORT:
            transport = Transport.DO53
        elif port == DOT_PORT:
            transport = Transport.DOT if event.protocol == TCP else Transport.DOQ
        else:
            transport = Transport.DOH
        return ResolverUse(device_id=event.device_id, transport=transport, server=server,
                           server_name=name, allowed=allowed, event=event)

    def _doh_name(self, server: str, remote_name: str | None) -> str | None:
        if remote_name is not None and _name(remote_name) in self.doh.names:
            return _name(remote_name)
        listed = self.doh.addresses.get(server)
        if listed is not None:
            return listed
        with self._lock:
            return self._learned.get(server)

    def _on_lan(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in self.lan)

    # -- telling once ------------------------------------------------------------------

    def first(self, use: ResolverUse) -> bool:
        """True the first time this device is seen using this server (then False)."""
        with self._lock:
            told = self._told.pop(use.device_id, None)
            if told is None:
                told = _Told()
                if len(self._told) >= self.max_devices:
                    self._told.popitem(last=False)
            self._told[use.device_id] = told
            if len(told.exempt) < self.max_exempt:
                told.exempt.add(use.server)
            if use.server in told.servers:
                told.servers.move_to_end(use.server)
                return False
            told.servers[use.server] = None
            if len(told.servers) > self.max_servers:
                told.servers.popitem(last=False)
            return True

    def exempt(self, use: ResolverUse) -> bool:
        """True if this server is one of the device's first ``max_exempt`` resolvers
        (after ``first``): its flows do not count toward deviation quarantine."""
        with self._lock:
            told = self._told.get(use.device_id)
            return told is not None and use.server in told.exempt

    # -- learning DoH addresses from the gateway's own answers -------------------------

    def learn_answer(self, wire: bytes) -> None:
        """Note the addresses an answer the gateway served gives for a known DoH name.

        Cheap when it is not one: the answer's bytes are searched for the names'
        wire forms before anything is parsed. Malformed answers are ignored.
        """
        if self._forms.search(wire.lower()) is None:
            return
        try:
            response = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError):
            return
        for name, address in doh_answer_addresses(response, self.doh.names):
            with self._lock:
                self._learned.pop(address, None)
                self._learned[address] = name
                while len(self._learned) > MAX_LEARNED:
                    self._learned.popitem(last=False)


def doh_answer_addresses(response: dns.message.Message,
                         names: frozenset[str]) -> list[tuple[str, str]]:
    """(DoH name, address) for each A/AAAA record of the answer's CNAME chain, when the
    question itself is a known DoH name.

    Only the question counts: a name the device chose (``x.example CNAME dns.google``
    with forged records for ``dns.google``) would otherwise let a device mark any
    address as a DoH endpoint, and its blocked flows there would stop counting
    toward quarantine.
    """
    if not response.question:
        return []
    asked = _name(response.question[0].name.to_text())
    if asked not in names:
        return []
    chain = {asked}
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.CNAME and _name(rrset.name.to_text()) in chain:
            chain.update(_name(r.target.to_text()) for r in rrset)
    found: list[tuple[str, str]] = []
    for rrset in response.answer:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) \
                and _name(rrset.name.to_text()) in chain:
            found.extend((asked, _address(r.address)) for r in rrset)
    return found


def describe_use(use: ResolverUse) -> dict[str, Any]:
    """The event-log fields of a ``ResolverUse`` (``events.emit("dns-elsewhere", ...)``)."""
    return {"device_id": use.device_id, "transport": use.transport.value,
            "server": use.server, "server_name": use.server_name, "allowed": use.allowed,
            "message": use.explain()}
