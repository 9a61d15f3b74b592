"""DnsGuard: the sans-IO core of mudguard's resolver (no sockets, no clock, no nft).

Theory of operation
-------------------
The gateway is the home's DNS resolver. A device whose MUD profile allows a DNS
name (``dst-dnsname``/``src-dnsname``) may reach the addresses that name resolves
to *for that device*, and only once the device has asked. The compiler
(``policy``) gives every allowed name two table-wide nft sets,
``dns_set_name(name, 4)`` and ``dns_set_name(name, 6)``, whose elements are
``(asking device's address . answer address)`` pairs with a timeout. This core
decides which elements an answer adds; the adapter (``dns/server.py``) owns the
sockets, the clock and the nft handle.

Why our own resolver and not dnsmasq ``--nftset`` (measured, ``PLATFORM.md``):
dnsmasq fills sets keyed by *domain*, not by device (one device's lookup would
open the address for every device), sets no element timeout from the TTL, does
not refresh an element when it serves the answer again (from its cache or not),
and its insertion delay grows with the whole ruleset. Here every answer served to
a device, cached or not, (re)adds that device's elements with the answer's TTL.

Drivers (like aioquic's ``QuicConnection``), each returning ``list[Command]``:

- ``handle_query(wire, client, now)``: a device's query. Answered from the cache
  or forwarded upstream (``ForwardUpstream``) under a fresh random id.
- ``handle_upstream(wire, now)``: an upstream reply, matched to an outstanding
  query by id *and* question; anything else is dropped.
- ``fill_done(token, ok, now)``: the adapter's report that the ``AddSetElements``
  commands carrying ``token`` were applied (or not).
- ``handle_timer(now)``: upstream queries that timed out get SERVFAIL;
  ``next_timer()`` says when to call it next.

House rules:

- **Fill before answer.** When an answer grants anything, the core emits all its
  ``AddSetElements`` (one token) and holds the ``SendAnswer`` until
  ``fill_done(token, ok=True)``; if the fill failed the device gets SERVFAIL, so
  a device never holds an address it cannot reach yet (no race on the first SYN).
- **Refresh, never cut.** Every answer served (cached or not) re-adds the device's
  elements with the answer's TTL as timeout, but never sooner than an element the
  core granted earlier expires (its own record, never a read-back of the kernel).
- **A restart cuts nobody.** The record of grants is kept in the store by the daemon
  (``take_changed``/``grants_under``, ``daemon/dns_grants.py``) and given back at start
  (``restore_grants``) only where the current policy still gives it.
- **Names match exactly**, case-insensitively, trailing dot ignored. The query
  name and every name of its CNAME chain (``resolve_chaining``) are looked up in
  the device's allowed names; each one allowed gets the chain's final addresses.
- **Nothing hostile is inserted.** Records outside the CNAME chain are ignored;
  answer addresses inside the home's LAN prefixes, the gateway's addresses,
  private ranges (unless configured otherwise), loopback, link-local, multicast,
  unspecified, reserved or broadcast ranges are never inserted (DNS rebinding
  cannot open the LAN); at most
  ``max_addresses`` addresses per answer; TTLs are clamped, and the TTLs served to
  the device never exceed the element's lifetime.
- **Bad input.** A packet shorter than a DNS header is dropped; a malformed query
  whose header parses gets FORMERR; a bug of ours gets SERVFAIL and is logged.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from mudguard.devices._model import DnsGrant
from mudguard.policy._model import DevicePolicy
from mudguard.policy._names import dns_set_name, shard_table

log = logging.getLogger(__name__)

Client = tuple[str, int]
"""A device's (address, port) as seen by the adapter's socket."""

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HEADER_LEN = 12
PRIVATE_PREFIXES: tuple[IpNetwork, ...] = tuple(ipaddress.ip_network(p) for p in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))
UPSTREAM_PAYLOAD = 1232  # the DNS flag day 2020 figure: no IP fragmentation upstream


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class ForwardUpstream:
    """Send ``wire`` to the upstream resolver (over TCP when ``tcp``)."""

    wire: bytes
    query_id: int
    tcp: bool = False


@dataclass(frozen=True, slots=True)
class AddSetElements:
    """Add (device address, answer address) pairs to an nft set of the device's shard.

    All commands of one answer share ``token``; apply them (ideally in one
    batch), then call ``DnsGuard.fill_done(token, ok, now)`` exactly once.
    """

    token: int
    set_name: str
    family: int
    elements: tuple[tuple[str, str], ...]
    timeout_s: int
    table: str  # the asking device's shard table (``policy.shard_table``)
    dns_name: str = ""  # the granted name (policy as data: its templates make the elements)


@dataclass(frozen=True, slots=True)
class SendAnswer:
    """Send ``wire`` to the device ``client`` (on its TCP connection when ``tcp``)."""

    client: Client
    wire: bytes
    tcp: bool = False


@dataclass(frozen=True, slots=True)
class Drop:
    """Nothing to send; ``reason`` is for logs and tests."""

    reason: str


Command = ForwardUpstream | AddSetElements | SendAnswer | Drop


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardConfig:
    """Tunables of the guard; the defaults suit a home."""

    lan_prefixes: tuple[str, ...] = ()
    """The home's LAN prefixes: answers pointing inside them are never inserted."""
    gateway_addresses: tuple[str, ...] = ()
    """The gateway's own addresses: never inserted either."""
    block_private: bool = True
    """Also never insert private ranges (RFC 1918, CGNAT, ULA): the WAN side's modem
    and any other home network behind the gateway stay out of DNS rebinding's reach."""
    min_timeout_s: int = 30
    """Shortest element lifetime before grace (a TTL of 0 still lets a device connect)."""
    max_timeout_s: int = 86_400
    """Longest element lifetime before grace; served TTLs are capped to it."""
    grace_s: int = 10
    """Added to every element timeout: a device may connect just as its cache expires."""
    max_addresses: int = 64
    """Cap on answer addresses inserted per answer (and per family)."""
    upstream_timeout_s: float = 4.0
    """An upstream query unanswered for this long gets SERVFAIL."""
    max_outstanding: int = 4096
    """Cap on upstream queries in flight; beyond it devices get SERVFAIL."""
    max_outstanding_per_client: int = 256
    """Cap per device address: one flooding device cannot starve the others."""
    cache_size: int = 1024
    """Positive A/AAAA answers kept (0 disables the cache)."""
    insert: bool = True
    """False: resolve only, never fill sets (the benchmark's baseline)."""
    max_grants_per_device: int = 512
    """Cap on the grants of one device kept in the record that outlives a restart
    (``grants_under``) and restored from it (``restore_grants``): the latest-expiring."""

    def __post_init__(self) -> None:
        for name in ("min_timeout_s", "max_timeout_s", "grace_s", "max_addresses",
                     "max_outstanding", "max_outstanding_per_client", "cache_size",
                     "max_grants_per_device"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.min_timeout_s > self.max_timeout_s:
            raise ValueError("min_timeout_s must not exceed max_timeout_s")
        if not isinstance(self.upstream_timeout_s, int | float) or self.upstream_timeout_s <= 0:
            raise ValueError(f"upstream_timeout_s must be > 0, got {self.upstream_timeout_s!r}")
        for flag in ("block_private", "insert"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be true or false")


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Device:
    addresses: frozenset[str]
    names: frozenset[str]
    table: str


@dataclass(slots=True)
class _Outstanding:
    client: Client
    query: dns.message.Message
    question: tuple[dns.name.Name, int, int]
    tcp: bool
    deadline: float


@dataclass(slots=True)
class _PendingFill:
    client: Client
    query: dns.message.Message
    answer: bytes
    tcp: bool
    expiries: dict[tuple[str, str, str], float]


@dataclass(slots=True)
class _CacheEntry:
    response: dns.message.Message
    stored_at: float
    ttl: int


@dataclass(slots=True)
class _Counters:
    queries: int = 0
    forwarded: int = 0
    answered: int = 0
    cache_hits: int = 0
    fills: int = 0
    fill_failures: int = 0
    dropped: int = 0
    formerr: int = 0
    servfail: int = 0
    rejected_addresses: int = 0


def normalise_name(name: str) -> str:
    """A DNS name as policy compares it: lower case, no trailing dot."""
    return name.strip().lower().rstrip(".")


def _name_key(name: dns.name.Name) -> str:
    # to_text escapes a label holding a dot ("a\\.b"), so it can never equal "a.b".
    return normalise_name(name.to_text(omit_final_dot=True))


# --------------------------------------------------------------------------- the guard


@dataclass
class DnsGuard:
    """The resolver's decisions: which answers fill which sets, and when to answer.

    Args:
        config: tunables and the home's LAN prefixes and gateway addresses.
    """

    config: GuardConfig = field(default_factory=GuardConfig)
    _devices: dict[str, _Device] = field(default_factory=dict, init=False)
    _by_address: dict[str, str] = field(default_factory=dict, init=False)
    _outstanding: dict[int, _Outstanding] = field(default_factory=dict, init=False)
    _per_client: dict[str, int] = field(default_factory=dict, init=False)
    # (set, device, remote) -> when the element granted last expires (our own record:
    # the kernel is never read back on the hot path).
    _granted: dict[tuple[str, str, str], float] = field(default_factory=dict, init=False)
    _granted_names: dict[str, str] = field(default_factory=dict, init=False)  # set -> name
    # Device addresses whose grants changed since ``take_changed`` (the record kept
    # across restarts is rewritten for them).
    _changed: set[str] = field(default_factory=set, init=False)
    _next_prune: float = field(default=0.0, init=False)
    _pending: dict[int, _PendingFill] = field(default_factory=dict, init=False)
    _cache: OrderedDict[tuple[str, int, int, bool], _CacheEntry] = field(
        default_factory=OrderedDict, init=False)
    _next_token: int = field(default=1, init=False)
    _blocked: tuple[IpNetwork, ...] = field(default=(), init=False)
    counters: _Counters = field(default_factory=_Counters, init=False)
    on_answer: Callable[[str, str, tuple[str, ...]], None] | None = field(
        default=None, init=False)
    """Told (client address, name asked, accepted addresses) of every answer with
    addresses: how a device being learned gets its peers named (``daemon.learning``)."""

    def __post_init__(self) -> None:
        blocked: list[IpNetwork] = []
        for prefix in self.config.lan_prefixes:
            blocked.append(ipaddress.ip_network(prefix, strict=False))
        for address in self.config.gateway_addresses:
            blocked.append(ipaddress.ip_network(address))
        if self.config.block_private:
            blocked.extend(PRIVATE_PREFIXES)
        self._blocked = tuple(blocked)

    # ----------------------------------------------------------------- policy

    def update_device(self, device: str, addresses: Iterable[str],
                      allowed_names: Iterable[str], *, table: str | None = None) -> None:
        """Set (or replace) what one device may resolve into its sets.

        Args:
            device: a stable key for the device (its MAC, or its address).
            addresses: all its IPv4 and IPv6 addresses; an A answer inserts one
                element per IPv4 address, an AAAA answer one per IPv6 address,
                whichever family the query came over.
            allowed_names: its profile's DNS names (``DevicePolicy.dns_names()``).
            table: the nft table holding its DNS sets; by default its shard's
                (``policy.shard_table(device)``: ``device`` is then its MAC).

        An address another device held moves to this one (a lease handed on: the
        newest policy wins, as in the ``Enforcer``); the other device keeps the rest.

        Raises:
            ValueError: an address is not an IP address (nothing is changed).
        """
        canon = frozenset(str(ipaddress.ip_address(a)) for a in addresses)
        self.release_addresses(canon, keep=device)
        held = self._devices.get(device)
        if held is not None:
            self._forget_granted(held.addresses - canon)  # addresses it gave up
        self.remove_device(device)
        self._devices[device] = _Device(canon, frozenset(normalise_name(n) for n in allowed_names),
                                        table or shard_table(device))
        for address in canon:
            self._by_address[address] = device

    def release_addresses(self, addresses: Iterable[str], *, keep: str | None = None) -> None:
        """Addresses leave every device but ``keep`` at once (a lease about to move):
        no later answer grants anything under them to their previous holder, and the
        elements recorded as granted under them are forgotten (the next holder's
        lifetimes start afresh). The enforcer deletes those elements in the kernel.

        Raises:
            ValueError: an address is not an IP address (nothing is changed).
        """
        canon = frozenset(str(ipaddress.ip_address(a)) for a in addresses)
        moved: set[str] = set()
        for address in canon:
            owner = self._by_address.get(address)
            if owner is not None and owner != keep:
                old = self._devices[owner]
                self._devices[owner] = _Device(old.addresses - {address}, old.names, old.table)
                del self._by_address[address]
                moved.add(address)
                log.info("address %s left its device", address)
        self._forget_granted(moved)

    def before_update(self, device: str, addresses: Iterable[str]) -> None:
        """Called before the enforcer gives ``device`` exactly ``addresses``: every other
        device loses them, and ``device`` stops being granted under the addresses it is
        giving up (it learns the new ones with its policy, once the kernel has them).

        Raises:
            ValueError: an address is not an IP address (nothing is changed).
        """
        canon = frozenset(str(ipaddress.ip_address(a)) for a in addresses)
        self.release_addresses(canon, keep=device)
        held = self._devices.get(device)
        if held is not None and held.addresses - canon:
            self.release_addresses(held.addresses - canon)

    def grants_of(self, device: str, now: float) -> list[AddSetElements]:
        """The device's unexpired grants for the names it may still resolve, as fill
        commands with their remaining lifetimes (token 0: no answer waits on them).

        Policy as data: a device whose rules changed has its DNS-answer elements
        deleted (they carry the old rules' protocols and ports) and re-derived from
        these under its new rules, so it keeps what it still may reach without asking
        again."""
        held = self._devices.get(device)
        if held is None:
            return []
        out: list[AddSetElements] = []
        for (set_name, address, remote), until in sorted(self._granted.items()):
            name = self._granted_names.get(set_name)
            if address not in held.addresses or name not in held.names or until <= now:
                continue
            out.append(AddSetElements(0, set_name, 6 if ":" in remote else 4,
                                      ((address, remote),), math.ceil(until - now),
                                      held.table, name))
        return out

    def _forget_granted(self, addresses: Collection[str]) -> None:
        if addresses:
            for element in [k for k in self._granted if k[1] in addresses]:
                del self._granted[element]
                self._changed.add(element[1])

    # ----------------------------------------------------------------- across restarts

    def take_changed(self) -> set[str]:
        """The device addresses whose grants changed (granted, refreshed, forgotten)
        since the last call: the record kept across restarts is rewritten for them."""
        changed, self._changed = self._changed, set()
        return changed

    def mark_changed(self, addresses: Iterable[str]) -> None:
        """Count ``addresses`` as changed again (their record could not be written)."""
        self._changed.update(addresses)

    def grants_under(self, addresses: Iterable[str], now: float) -> list[DnsGrant]:
        """The unexpired grants under ``addresses`` with the device holding each address
        now (an address no device holds has none), at most ``max_grants_per_device`` per
        device (the latest-expiring), ``expires`` on the guard's clock."""
        wanted = set(addresses)
        out: list[DnsGrant] = []
        for (set_name, address, remote), until in self._granted.items():
            device = self._by_address.get(address)
            name = self._granted_names.get(set_name)
            if address not in wanted or device is None or name is None or until <= now:
                continue
            out.append(DnsGrant(device, address, name, remote, until, math.ceil(until - now)))
        return _capped(out, self.config.max_grants_per_device)

    def restore_grants(self, grants: Iterable[DnsGrant], now: float) -> list[AddSetElements]:
        """Take back the grants of a previous run (``expires`` on this guard's clock):
        only those the current policy would give: a device still present, holding that
        address, allowed that name (a quarantined device is allowed none), an answer
        address still acceptable (``_usable``), time left (never more than
        ``lifetime_s`` nor ``max_timeout_s`` + grace); at most ``max_grants_per_device``
        per device. Returns the fill commands (token 0: no answer waits on them).

        Feed every device's policy first (``apply_policy``)."""
        kept: list[DnsGrant] = []
        ceiling = self.config.max_timeout_s + self.config.grace_s
        parsed: dict[str, IpAddress | None] = {}  # thousands of grants share addresses
        usable: dict[IpAddress, bool] = {}

        def parse(text: str) -> IpAddress | None:
            if text not in parsed:
                try:
                    parsed[text] = ipaddress.ip_address(text)
                except ValueError:
                    parsed[text] = None
            return parsed[text]

        for grant in grants:
            held = self._devices.get(grant.device)
            mine, remote = parse(grant.address), parse(grant.remote)
            left = min(grant.expires - now, grant.lifetime_s, ceiling)
            if held is None or mine is None or remote is None or left < 1:
                continue
            if remote not in usable:
                usable[remote] = self._usable(remote)
            address, name = str(mine), normalise_name(grant.name)
            if (address not in held.addresses or name not in held.names
                    or remote.version != mine.version or not usable[remote]):
                continue
            kept.append(DnsGrant(grant.device, address, name, str(remote), now + left,
                                 math.ceil(left)))
        out: list[AddSetElements] = []
        set_names: dict[tuple[str, int], str] = {}
        for grant in _capped(kept, self.config.max_grants_per_device):
            family = 6 if ":" in grant.remote else 4
            if (grant.name, family) not in set_names:
                set_names[grant.name, family] = dns_set_name(grant.name, family)
            set_name = set_names[grant.name, family]
            key = (set_name, grant.address, grant.remote)
            self._granted[key] = max(self._granted.get(key, 0.0), grant.expires)
            self._granted_names[set_name] = grant.name
            timeout = math.ceil(self._granted[key] - now)
            out.append(AddSetElements(0, set_name, family, ((grant.address, grant.remote),),
                                      timeout, self._devices[grant.device].table, grant.name))
        return out

    def apply_policy(self, policy: DevicePolicy) -> None:
        """Feed one device's decided policy: its addresses and its DNS names."""
        facts = policy.device
        mac = facts.mac.lower()
        self.update_device(mac, (*facts.ipv4, *facts.ipv6), policy.dns_names(),
                           table=shard_table(mac))

    def remove_device(self, device: str) -> None:
        """Forget a device: its later queries resolve but grant nothing."""
        old = self._devices.pop(device, None)
        if old is not None:
            for address in old.addresses:
                self._by_address.pop(address, None)

    def update_client(self, address: str, allowed_names: Iterable[str], *,
                      table: str | None = None) -> None:
        """``update_device`` for a device known by one address only."""
        self.update_device(address, (address,), allowed_names, table=table)

    def remove_client(self, address: str) -> None:
        """``remove_device`` for a device registered with ``update_client``."""
        self.remove_device(address)

    # ----------------------------------------------------------------- drivers

    def handle_query(self, wire: bytes, client: Client, now: float, *,
                     tcp: bool = False) -> list[Command]:
        """A device's query arrived.

        Returns: ``ForwardUpstream``; or, from the cache, ``AddSetElements`` (then
        wait for ``fill_done``) or ``SendAnswer``; or an error ``SendAnswer``; or ``Drop``.
        """
        self.counters.queries += 1
        if len(wire) < HEADER_LEN:
            return self._drop("short header")
        try:
            return self._handle_query(wire, client, now, tcp)
        except Exception:
            log.exception("bug while handling a query from %s", client[0])
            return [self._servfail_raw(wire, client, tcp)]

    def handle_upstream(self, wire: bytes, now: float) -> list[Command]:
        """A reply from the upstream resolver arrived.

        Returns: ``AddSetElements`` (then wait for ``fill_done``), or
        ``SendAnswer`` when nothing is granted, or ``Drop`` for a reply that
        matches no outstanding query.
        """
        try:
            return self._handle_upstream(wire, now)
        except Exception:
            log.exception("bug while handling an upstream reply")
            return self._drop("internal error on upstream reply")

    def fill_done(self, token: int, ok: bool, now: float) -> list[Command]:
        """The adapter applied (``ok``) or failed to apply the fill ``token``.

        Returns: the held ``SendAnswer``, or a SERVFAIL one when the fill failed.
        """
        pending = self._pending.pop(token, None)
        if pending is None:
            return self._drop("unknown fill token")
        if ok:
            self.counters.answered += 1
            self._granted.update(pending.expiries)
            self._changed.update(address for _set, address, _remote in pending.expiries)
            return [SendAnswer(pending.client, pending.answer, pending.tcp)]
        self.counters.fill_failures += 1
        log.warning("set fill failed; answering SERVFAIL to %s", pending.client[0])
        return [self._error(pending.query, pending.client, dns.rcode.SERVFAIL, pending.tcp)]

    def handle_timer(self, now: float) -> list[Command]:
        """Expire upstream queries past their deadline (SERVFAIL) and stale cache entries."""
        commands: list[Command] = []
        for query_id in [q for q, o in self._outstanding.items() if o.deadline <= now]:
            out = self._pop_outstanding(query_id)
            commands.append(self._error(out.query, out.client, dns.rcode.SERVFAIL, out.tcp))
        for key in [k for k, e in self._cache.items() if e.stored_at + e.ttl <= now]:
            del self._cache[key]
        if now >= self._next_prune:
            self._next_prune = now + 10.0
            for element in [k for k, until in self._granted.items() if until <= now]:
                del self._granted[element]
        return commands

    def next_timer(self) -> float | None:
        """When ``handle_timer`` should next run (None: nothing outstanding)."""
        if not self._outstanding:
            return None
        return min(o.deadline for o in self._outstanding.values())

    def is_outstanding(self, query_id: int) -> bool:
        """True while the upstream query ``query_id`` awaits its reply."""
        return query_id in self._outstanding

    @property
    def outstanding(self) -> int:
        """Upstream queries in flight."""
        return len(self._outstanding)

    # ----------------------------------------------------------------- queries

    def _handle_query(self, wire: bytes, client: Client, now: float,
                      tcp: bool) -> list[Command]:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return self._formerr(wire, client, tcp)
        if query.flags & dns.flags.QR:
            return self._drop("response sent as a query")
        if query.opcode() != dns.opcode.QUERY:
            return [self._error(query, client, dns.rcode.NOTIMP, tcp)]
        if len(query.question) != 1:
            self.counters.formerr += 1
            return [self._error(query, client, dns.rcode.FORMERR, tcp)]
        q = query.question[0]
        if q.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            return [self._error(query, client, dns.rcode.REFUSED, tcp)]
        cached = self._cache_get(query, now)
        if cached is not None:
            self.counters.cache_hits += 1
            return self._answer(query, client, cached, tcp)
        if len(self._outstanding) >= self.config.max_outstanding:
            log.warning("too many upstream queries in flight; SERVFAIL to %s", client[0])
            return [self._error(query, client, dns.rcode.SERVFAIL, tcp)]
        if self._per_client.get(client[0], 0) >= self.config.max_outstanding_per_client:
            return [self._error(query, client, dns.rcode.REFUSED, tcp)]
        return [self._forward(query, client, now, tcp)]

    def _forward(self, query: dns.message.Message, client: Client, now: float,
                 tcp: bool) -> ForwardUpstream:
        q = query.question[0]
        query_id = self._fresh_id()
        # A clean query of our own: nothing of the device's message but its question
        # (and RD/DO) goes upstream.
        upstream = dns.message.make_query(
            q.name, q.rdtype, q.rdclass, use_edns=0, payload=UPSTREAM_PAYLOAD,
            want_dnssec=bool(query.ednsflags & dns.flags.DO), id=query_id,
            flags=int(query.flags & dns.flags.RD) | int(query.flags & dns.flags.CD))
        self._per_client[client[0]] = self._per_client.get(client[0], 0) + 1
        self._outstanding[query_id] = _Outstanding(
            client, query, (q.name, q.rdtype, q.rdclass), tcp,
            now + self.config.upstream_timeout_s)
        self.counters.forwarded += 1
        return ForwardUpstream(upstream.to_wire(), query_id, tcp)

    def _pop_outstanding(self, query_id: int) -> _Outstanding:
        out = self._outstanding.pop(query_id)
        left = self._per_client[out.client[0]] - 1
        if left:
            self._per_client[out.client[0]] = left
        else:
            del self._per_client[out.client[0]]
        return out

    def _fresh_id(self) -> int:
        for _ in range(64):
            candidate = secrets.randbelow(65536)
            if candidate not in self._outstanding:
                return candidate
        raise RuntimeError("no free query id")  # unreachable below 65536 - 64 outstanding

    # ----------------------------------------------------------------- upstream

    def _handle_upstream(self, wire: bytes, now: float) -> list[Command]:
        if len(wire) < HEADER_LEN:
            return self._drop("short upstream reply")
        query_id = int.from_bytes(wire[:2], "big")
        out = self._outstanding.get(query_id)
        if out is None:
            return self._drop("upstream reply with unknown id")
        try:
            response = dns.message.from_wire(wire)
        except Exception:
            # Keep waiting: a forged garbage packet must not cancel the real answer.
            return self._drop("malformed upstream reply")
        if not response.flags & dns.flags.QR or len(response.question) != 1:
            return self._drop("upstream reply is not a response to one question")
        rq = response.question[0]
        if (rq.name, rq.rdtype, rq.rdclass) != out.question:
            return self._drop("upstream reply for another question")
        self._pop_outstanding(query_id)
        self._cache_put(out.query, response, now)
        return self._answer(out.query, out.client, _Fresh(response, 0, now), out.tcp)

    # ----------------------------------------------------------------- answering

    def _answer(self, query: dns.message.Message, client: Client, source: _Fresh,
                tcp: bool) -> list[Command]:
        chain_ttl, chain_names, addresses, rejected = self._chain(source.response, source.age)
        if rejected:
            self.counters.rejected_addresses += rejected
            log.warning("answer for %s holds %d forbidden address(es); not inserted",
                        chain_names[0], rejected)
        # A granting answer is served with no TTL above the chain's minimum: a device
        # caching the A record longer than the CNAME would outlive its element.
        cap = chain_ttl if addresses else self.config.max_timeout_s
        wire = self._render(query, source.response, source.age, cap, tcp)
        if self.on_answer is not None and addresses and chain_names:
            self.on_answer(client[0], chain_names[0], tuple(str(a) for a in addresses))
        fills = self._fills(client[0], query, chain_names, addresses, chain_ttl)
        if not fills:
            self.counters.answered += 1
            return [SendAnswer(client, wire, tcp)]
        token = self._next_token
        self._next_token += 1
        commands: list[Command] = []
        expiries: dict[tuple[str, str, str], float] = {}
        for name, family, elements, timeout, table, granted in fills:
            timeout = self._never_shorter(name, elements, timeout, source.now)
            expiries.update({(name, d, r): source.now + timeout for d, r in elements})
            self._granted_names[name] = granted
            commands.append(AddSetElements(token, name, family, elements, timeout, table,
                                           granted))
        self._pending[token] = _PendingFill(client, query, wire, tcp, expiries)
        self.counters.fills += 1
        return commands

    def _never_shorter(self, set_name: str, elements: tuple[tuple[str, str], ...],
                       timeout: int, now: float) -> int:
        """``timeout``, raised so that no element already granted expires sooner.

        A device may still hold an earlier answer with a longer TTL than this one;
        refreshing its element to the shorter TTL would cut it off early.
        """
        for device, remote in elements:
            until = self._granted.get((set_name, device, remote))
            if until is not None and until - now > timeout:
                timeout = math.ceil(until - now)
        return timeout

    def _chain(self, response: dns.message.Message,
               age: int) -> tuple[int, list[str], list[IpAddress], int]:
        """The chain's minimum TTL (after ``age``), names, usable addresses, rejected count."""
        rq = response.question[0]
        if (response.rcode() != dns.rcode.NOERROR or response.flags & dns.flags.TC
                or rq.rdclass != dns.rdataclass.IN
                or rq.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA)):
            return 0, [], [], 0
        if not isinstance(response, dns.message.QueryMessage):
            return 0, [], [], 0
        try:
            chain = response.resolve_chaining()
        except (dns.message.ChainTooLong, dns.message.AnswerForNXDOMAIN,
                dns.exception.FormError):
            return 0, [], [], 0
        if chain.answer is None:
            return 0, [], [], 0
        names = [_name_key(rq.name)] + [_name_key(c.name) for c in chain.cnames[1:]]
        names.append(_name_key(chain.canonical_name))
        found = [ipaddress.ip_address(rdata.address) for rdata in chain.answer]
        addresses = [a for a in dict.fromkeys(found) if self._usable(a)]
        ttl = max(0, min(chain.minimum_ttl, self.config.max_timeout_s) - age)
        return ttl, list(dict.fromkeys(names)), addresses[: self.config.max_addresses], (
            len(found) - len(addresses))

    def _usable(self, address: IpAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return False
        if (address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_unspecified or address.is_reserved):
            return False
        if isinstance(address, ipaddress.IPv4Address) and address.packed == b"\xff" * 4:
            return False
        return not any(address in net for net in self._blocked)

    def _fills(self, client_address: str, query: dns.message.Message, chain_names: list[str],
               addresses: list[IpAddress],
               ttl: int) -> list[tuple[str, int, tuple[tuple[str, str], ...], int, str, str]]:
        if not self.config.insert or not addresses:
            return []
        device_key = self._by_address.get(_canon(client_address))
        if device_key is None:
            return []
        device = self._devices[device_key]
        granted = [n for n in chain_names if n in device.names]
        if not granted:
            return []
        family = 4 if addresses[0].version == 4 else 6
        mine = sorted(a for a in device.addresses if ipaddress.ip_address(a).version == family)
        if not mine:
            return []
        elements = tuple((m, str(a)) for m in mine for a in addresses)
        timeout = (min(max(ttl, self.config.min_timeout_s), self.config.max_timeout_s)
                   + self.config.grace_s)
        return [(dns_set_name(name, family), family, elements, timeout, device.table, name)
                for name in granted]

    def _render(self, query: dns.message.Message, response: dns.message.Message, age: int,
                answer_cap: int, tcp: bool) -> bytes:
        """The answer for the device: its id and question, upstream's records, capped TTLs."""
        reply = dns.message.make_response(query, recursion_available=True)
        reply.set_rcode(response.rcode())
        reply.flags |= response.flags & (dns.flags.AD | dns.flags.TC)
        for section_name in ("answer", "authority", "additional"):
            target = reply.sections[_SECTION[section_name]]
            for rrset in response.sections[_SECTION[section_name]]:
                if rrset.rdtype == dns.rdatatype.OPT:
                    continue
                ttl = max(0, min(rrset.ttl, self.config.max_timeout_s) - age)
                if section_name == "answer":
                    ttl = min(ttl, answer_cap)
                target.append(dns.rrset.from_rdata_list(rrset.name, ttl, list(rrset)))
        max_size = 65535 if tcp else (max(512, query.payload) if query.edns >= 0 else 512)
        try:
            return reply.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query, recursion_available=True)
            truncated.flags |= dns.flags.TC
            return truncated.to_wire()

    # ----------------------------------------------------------------- cache

    def _cache_key(self, query: dns.message.Message) -> tuple[str, int, int, bool]:
        q = query.question[0]
        return (_name_key(q.name), int(q.rdtype), int(q.rdclass),
                bool(query.ednsflags & dns.flags.DO))

    def _cache_get(self, query: dns.message.Message, now: float) -> _Fresh | None:
        if self.config.cache_size <= 0:
            return None
        key = self._cache_key(query)
        entry = self._cache.get(key)
        if entry is None:
            return None
        age = int(now - entry.stored_at)
        if age >= entry.ttl:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return _Fresh(entry.response, age, now)

    def _cache_put(self, query: dns.message.Message, response: dns.message.Message,
                   now: float) -> None:
        if self.config.cache_size <= 0:
            return
        ttl, _names, addresses, _rejected = self._chain(response, 0)
        if ttl <= 0 or not addresses:
            return  # only positive, usable A/AAAA answers are cached
        key = self._cache_key(query)
        self._cache[key] = _CacheEntry(response, now, ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    # ----------------------------------------------------------------- errors

    def _drop(self, reason: str) -> list[Command]:
        self.counters.dropped += 1
        return [Drop(reason)]

    def _error(self, query: dns.message.Message, client: Client, rcode: dns.rcode.Rcode,
               tcp: bool) -> SendAnswer:
        if rcode == dns.rcode.SERVFAIL:
            self.counters.servfail += 1
        reply = dns.message.make_response(query, recursion_available=True)
        reply.set_rcode(rcode)
        return SendAnswer(client, reply.to_wire(), tcp)

    def _formerr(self, wire: bytes, client: Client, tcp: bool) -> list[Command]:
        self.counters.formerr += 1
        try:
            query = dns.message.from_wire(wire, question_only=True)
        except Exception:
            query = None
        if query is not None and not query.flags & dns.flags.QR and len(query.question) <= 1:
            return [self._error(query, client, dns.rcode.FORMERR, tcp)]
        if wire[2] & 0x80:
            return self._drop("malformed response sent as a query")
        return [SendAnswer(client, _header_only(wire, dns.rcode.FORMERR), tcp)]

    def _servfail_raw(self, wire: bytes, client: Client, tcp: bool) -> SendAnswer:
        self.counters.servfail += 1
        return SendAnswer(client, _header_only(wire, dns.rcode.SERVFAIL), tcp)


@dataclass(frozen=True, slots=True)
class _Fresh:
    response: dns.message.Message
    age: int
    now: float


_SECTION = {"answer": 1, "authority": 2, "additional": 3}


def _capped(grants: list[DnsGrant], cap: int) -> list[DnsGrant]:
    """At most ``cap`` grants per device, the latest-expiring (ordered for stable output)."""
    by_device: dict[str, list[DnsGrant]] = {}
    for grant in grants:
        by_device.setdefault(grant.device, []).append(grant)
    out: list[DnsGrant] = []
    for device in sorted(by_device):
        mine = sorted(by_device[device], key=lambda g: (-g.expires, g.address, g.name,
                                                        g.remote))
        out += mine[:cap]
    return out


def _canon(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address


def _header_only(wire: bytes, rcode: int) -> bytes:
    """A bare response header echoing the query's id and opcode, no question."""
    flags = 0x8000 | (wire[2] & 0x79) << 8 | 0x80 | (rcode & 0x0F)
    return wire[:2] + flags.to_bytes(2, "big") + bytes(8)
