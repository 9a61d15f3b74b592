"""Fetch MUD files and their signatures over HTTPS (RFC 8520 §13 and §16).

Theory of operation: a MUD URL comes from a device, so it is hostile until
proven otherwise. ``fetch_mud_bytes`` resolves the host itself, refuses any
address that would reach the gateway or the home (loopback, private, link-local,
ULA, multicast, unspecified, reserved, the configured home prefixes, and every
address the kernel says is the gateway's own, on any interface, read live at each
check: ``own_address.gateway_reason``), then
connects to *that checked address*, sending the name only as SNI and Host, so a
second DNS answer cannot move the connection somewhere else (no DNS-rebinding
window). Each redirect is a new URL and goes through the same checks. The body is
streamed and abandoned at the size cap; every stage has a time bound.

Every failure is a ``FetchError`` with a stable ``key`` (for UIs), the URL and a
reason. ``MudCache`` is pure: it is told the time.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from mudguard.errors import RemoteInputError
from mudguard.mud._parse import MAX_MUD_BYTES, parse_mud
from mudguard.mud.own_address import gateway_reason

if TYPE_CHECKING:  # imported where a request is made: the daemon may run days without one
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MUD_MEDIA_TYPE = "application/mud+json"
"""RFC 8520 registers this media type for MUD files; it is what the fetcher asks for."""
SIGNATURE_MEDIA_TYPE = "application/pkcs7-signature"
"""RFC 8520 §13.2: the signature is a detached CMS (PKCS #7) signature."""
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_URL_LENGTH = 2048

# Addresses a MUD URL must never reach: the gateway itself and anything local to the
# home or the ISP's side of it. Documentation prefixes are *not* here: the demo home
# uses them as its Internet; a real home's LAN goes in FetchConfig.blocked_prefixes.
FORBIDDEN_NETWORKS: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4", "::/128", "::1/128", "64:ff9b:1::/48", "fc00::/7", "fe80::/10",
    "fec0::/10", "ff00::/8",
))


class FetchError(RemoteInputError):
    """A MUD file or signature could not be fetched; ``key`` says why, for UIs."""

    def __init__(self, *, key: str, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.key = key
        self.url = url
        self.reason = reason


def _resolve_failure(host: str, exc: BaseException) -> str:
    """Why ``host`` did not resolve, saying "cannot resolve" once: a resolver whose own
    message already names the host (the daemon's upstream resolver) is not repeated."""
    detail = str(exc)
    if host in detail:
        return detail
    return f"cannot resolve {host}: {detail}" if detail else f"cannot resolve {host}"


Resolver = Callable[[str, int], Sequence[str]]
GatewayCheck = Callable[[IPAddress], str | None]
"""Why an address reaches the gateway itself (its own, on any interface), or None."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (TCP)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchConfig:
    """How fetching behaves; the defaults suit a home gateway."""

    ca_bundle: Path | None = None
    """PEM file of trust anchors for the servers; None uses the system's CAs."""
    blocked_prefixes: tuple[IPNetwork, ...] = ()
    """The home's own prefixes and the gateway's public addresses: never fetched from."""
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    max_redirects: int = 3
    resolver: Resolver = system_resolver
    gateway_check: GatewayCheck = gateway_reason
    """Asked for every address about to be connected to (after each resolution and
    redirect); the default reads the gateway's addresses from the kernel, live."""
    unsafe_allow: tuple[IPNetwork, ...] = field(default=())
    """For tests only: prefixes exempt from the address refusal (e.g. 127.0.0.1/32)."""


def fetch_mud_bytes(url: str, *, config: FetchConfig | None = None) -> bytes:
    """Fetch the MUD file at ``url`` (https only) and return its exact bytes.

    Raises:
        FetchError: for every failure, with a ``key`` such as ``not_https``,
            ``blocked_address``, ``tls``, ``timeout``, ``too_large``,
            ``http_status``, ``content_type`` or ``redirect``.
    """
    return _fetch(url, config or FetchConfig(), accept=MUD_MEDIA_TYPE,
                  allowed_types=(MUD_MEDIA_TYPE, "application/json"), limit=MAX_MUD_BYTES)


def fetch_signature_bytes(url: str, *, config: FetchConfig | None = None) -> bytes:
    """Fetch the detached CMS signature named by a MUD file's ``mud-signature``."""
    return _fetch(url, config or FetchConfig(), accept=SIGNATURE_MEDIA_TYPE,
                  allowed_types=(SIGNATURE_MEDIA_TYPE, "application/pkcs7-mime",
                                 "application/octet-stream"),
                  limit=MAX_SIGNATURE_BYTES)


def check_address(address: IPAddress, config: FetchConfig) -> str | None:
    """Why ``address`` must not be fetched from, or None if it may."""
    if any(address in net for net in config.unsafe_allow if net.version == address.version):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            # An IPv4 address carried inside IPv6 (mapped, NAT64, 6to4) reaches that IPv4
            # address in the end, so it is judged as one.
            why = check_address(embedded, config)
            if why is not None:
                return f"{address} carries {why}"
    for net in FORBIDDEN_NETWORKS + config.blocked_prefixes:
        if net.version == address.version and address in net:
            return f"{address} is in {net}, which a MUD URL must never reach"
    # The gateway's own addresses change while it runs (DHCP on the WAN, SLAAC): asked
    # of the kernel at each check, never taken from the configuration alone.
    return config.gateway_check(address)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def host_name_problem(host: str) -> str | None:
    """Why ``host`` cannot be a DNS host name (None when it can): labels of letters,
    digits, '-' and '_' (1–63 characters, no '-' at either end), 253 characters in all,
    an internationalised name in its IDNA form. Checked before any DNS query, so a
    malformed name is a clear error, never a lookup."""
    name = host.removesuffix(".")
    try:
        ascii_name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        return f"{host!r} is not a valid internationalised host name"
    if not ascii_name or len(ascii_name) > 253 or \
            not all(_LABEL.fullmatch(label) for label in ascii_name.split(".")):
        return f"{host!r} is not a valid host name"
    return None


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    host: str
    port: int
    address: IPAddress


def _target(url: str, config: FetchConfig) -> _Target:
    if len(url) > MAX_URL_LENGTH:
        raise FetchError(key="bad_url", url=url[:80] + "...", reason="URL too long")
    try:
        parts = urlsplit(url)
        port = parts.port or 443
        host = parts.hostname
    except ValueError as exc:
        raise FetchError(key="bad_url", url=url, reason=f"not a URL: {exc}") from None
    if parts.scheme != "https":
        # RFC 8520 §3.3: MUD URLs MUST use the "https" scheme; §16: fetch with TLS.
        raise FetchError(key="not_https", url=url, reason="only https URLs are fetched")
    if not host:
        raise FetchError(key="bad_url", url=url, reason="no host in the URL")
    if parts.username is not None or parts.password is not None:
        raise FetchError(key="bad_url", url=url, reason="credentials in a MUD URL are refused")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        candidates: list[IPAddress] = [literal]
    else:
        problem = host_name_problem(host)
        if problem is not None:
            raise FetchError(key="bad_url", url=url, reason=problem)
        try:
            candidates = [ipaddress.ip_address(a.split("%", 1)[0])
                          for a in config.resolver(host, port)]
        except (OSError, UnicodeError, ValueError) as exc:
            raise FetchError(key="dns", url=url, reason=_resolve_failure(host, exc)) from None
    if not candidates:
        raise FetchError(key="dns", url=url, reason=f"{host} has no address")
    for candidate in candidates:
        # Any forbidden answer condemns the name: a hostile zone mixing a public and a
        # private address must not get a second chance.
        why = check_address(candidate, config)
        if why is not None:
            raise FetchError(key="blocked_address", url=url, reason=why)
    return _Target(url=url, host=host, port=port, address=candidates[0])


def _ssl_context(config: FetchConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(config.ca_bundle) if config.ca_bundle else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _fetch(url: str, config: FetchConfig, *, accept: str, allowed_types: tuple[str, ...],
           limit: int) -> bytes:
    import httpx  # on the first request (#19)

    deadline = time.monotonic() + config.total_timeout
    timeout = httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
    try:
        context = _ssl_context(config)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(key="ca_bundle", url=url, reason=f"cannot load the CA bundle: {exc}"
                         ) from None
    # trust_env=False: no proxy from the environment may carry the request elsewhere.
    with httpx.Client(verify=context, timeout=timeout, follow_redirects=False,
                      trust_env=False) as client:
        current = url
        for _hop in range(config.max_redirects + 1):
            target = _target(current, config)
            location = _get(client, target, accept, allowed_types, limit, deadline)
            if isinstance(location, bytes):
                return location
            current = location
    raise FetchError(key="redirect", url=url,
                     reason=f"more than {config.max_redirects} redirects")


def _pinned_url(target: _Target) -> str:
    parts = urlsplit(target.url)
    host = f"[{target.address}]" if target.address.version == 6 else str(target.address)
    return urlunsplit((parts.scheme, f"{host}:{target.port}", parts.path or "/", parts.query,
                       ""))


def _get(client: httpx.Client, target: _Target, accept: str, allowed_types: tuple[str, ...],
         limit: int, deadline: float) -> bytes | str:
    """One request to the checked address: the body, or the next URL of a redirect."""
    import httpx  # on the first request (#19)

    url = target.url
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    if target.port != 443:
        host_header += f":{target.port}"
    headers = {"Host": host_header, "Accept": accept, "Accept-Encoding": "identity",
               "User-Agent": "mudguard"}
    extensions = {} if _is_literal(target.host) else {"sni_hostname": target.host}
    try:
        with client.stream("GET", _pinned_url(target), headers=headers,
                           extensions=extensions) as response:
            if response.status_code in (301, 302, 303, 307, 308):
                return _redirect(url, response.headers.get("location"))
            if response.status_code != 200:
                raise FetchError(key="http_status", url=url,
                                 reason=f"the server answered {response.status_code}")
            media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media not in allowed_types:
                raise FetchError(key="content_type", url=url,
                                 reason=f"content type {media or 'missing'!r}, expected {accept}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise FetchError(key="too_large", url=url,
                                 reason=f"{declared} bytes announced; the limit is {limit}")
            return _read_capped(response, url, limit, deadline)
    except httpx.TimeoutException:
        raise FetchError(key="timeout", url=url, reason="the server was too slow") from None
    except httpx.ConnectError as exc:
        key = "tls" if _is_tls_failure(exc) else "connect"
        raise FetchError(key=key, url=url, reason=f"cannot connect: {exc}") from None
    except httpx.HTTPError as exc:
        raise FetchError(key="protocol", url=url, reason=f"HTTP failure: {exc}") from None


def _read_capped(response: httpx.Response, url: str, limit: int, deadline: float) -> bytes:
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > limit:
            raise FetchError(key="too_large", url=url, reason=f"more than {limit} bytes")
        if time.monotonic() > deadline:
            raise FetchError(key="timeout", url=url, reason="the transfer took too long")
    return bytes(body)


def _redirect(url: str, location: str | None) -> str:
    import httpx  # on the first request (#19)

    if not location:
        raise FetchError(key="redirect", url=url, reason="a redirect without a Location")
    following = httpx.URL(url).join(location)
    if following.scheme != "https":
        # RFC 8520 §16: the file's integrity rests on TLS; a downgrade is never followed.
        raise FetchError(key="redirect", url=url,
                         reason=f"redirect to another scheme ({following.scheme}) refused")
    return str(following)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE" in str(seen).upper():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheEntry:
    """A fetched MUD file and when it stops being fresh."""

    url: str
    data: bytes
    fetched_at: datetime
    valid_for: timedelta

    def fresh(self, now: datetime) -> bool:
        """True until ``cache-validity`` hours after the fetch (ietf-mud YANG, cache-validity)."""
        return self.fetched_at <= now < self.fetched_at + self.valid_for


class MudCache:
    """MUD files by URL, honouring each file's ``cache-validity``; told the time, never reads it.

    The ietf-mud YANG module: cache-validity is the number of hours "after which it should be
    refreshed"; MUD managers "need not discard MUD files beyond this period", so a
    stale entry stays available (``stale``) for use when a refresh fails.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._max = max_entries

    def put(self, url: str, data: bytes, *, now: datetime) -> CacheEntry:
        """Store ``data`` fetched from ``url`` at ``now``; validity comes from the file."""
        parsed = parse_mud(data)
        hours = parsed.mud.cache_validity_hours if parsed.mud is not None else 48
        entry = CacheEntry(url=url, data=data, fetched_at=now, valid_for=timedelta(hours=hours))
        self._entries[url] = entry
        self._entries.move_to_end(url)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return entry

    def get(self, url: str, *, now: datetime) -> CacheEntry | None:
        """The entry for ``url`` if it is still fresh at ``now``."""
        entry = self._entries.get(url)
        return entry if entry is not None and entry.fresh(now) else None

    def stale(self, url: str) -> CacheEntry | None:
        """The entry for ``url`` however old (for use when a refresh fails)."""
        return self._entries.get(url)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchResult:
    """A MUD file's bytes and where they came from."""

    data: bytes
    url: str
    from_cache: bool
    stale: bool = False


def fetch_mud(url: str, *, now: datetime, cache: MudCache, config: FetchConfig | None = None,
              allow_stale: bool = False) -> FetchResult:
    """Fetch through ``cache``: a fresh entry is used as is, otherwise the file is fetched.

    With ``allow_stale``, a failed refresh falls back to the old copy (``stale=True``).
    """
    entry = cache.get(url, now=now)
    if entry is not None:
        return FetchResult(data=entry.data, url=url, from_cache=True)
    try:
        data = fetch_mud_bytes(url, config=config)
    except FetchError:
        old = cache.stale(url)
        if allow_stale and old is not None:
            return FetchResult(data=old.data, url=url, from_cache=True, stale=True)
        raise
    cache.put(url, data, now=now)
    return FetchResult(data=data, url=url, from_cache=False)


# -- RFC 9472: SBOMs and vulnerability information ----------------------------------------

TRANSPARENCY_MEDIA_TYPES = ("application/json", "application/spdx+json",
                            "application/vnd.cyclonedx+json", "application/csaf+json",
                            "application/vnd.cyclonedx+xml", "application/xml", "text/spdx")
"""What an SBOM (SPDX, CycloneDX) or vulnerability document (CSAF, VEX) is served as."""
MAX_TRANSPARENCY_BYTES = 4 << 20
LOCAL_SCHEMES = {"https": 443, "http": 80}
WELL_KNOWN_SBOM = "/.well-known/sbom"
"""RFC 9472 registers the ``sbom`` well-known URI: a device serves its own SBOM there."""
_TRANSPARENCY_ACCEPT = ", ".join(TRANSPARENCY_MEDIA_TYPES[:4])


def fetch_transparency_bytes(url: str, *, config: FetchConfig | None = None) -> bytes:
    """Fetch an SBOM or vulnerability document a MUD file names (``sbom-url``,
    ``vuln-url``), with every guard of ``fetch_mud_bytes``: https only, never the
    LAN or the gateway, each redirect checked again, size and time capped."""
    return _fetch(url, config or FetchConfig(), accept=_TRANSPARENCY_ACCEPT,
                  allowed_types=TRANSPARENCY_MEDIA_TYPES, limit=MAX_TRANSPARENCY_BYTES)


def fetch_local_sbom(device: IPAddress, scheme: str, *, config: FetchConfig | None = None,
                     port: int | None = None) -> bytes:
    """Ask the device itself for its SBOM (RFC 9472 ``sbom-local-well-known``).

    The one exception to "never fetch from the LAN": exactly ``device``, the address
    the gateway knows for it, at ``/.well-known/sbom``. A redirect is followed only
    to the same address (and never from https down to http); anything else, in the
    LAN or not, is refused. A device has no certificate a CA vouches for, so https
    here gives privacy on the air, not proof of identity: the answer is shown as the
    device's own claim, never used for policy.

    Raises:
        FetchError: ``unsupported_scheme`` (coap, coaps), ``blocked_address`` (the
            gateway itself, loopback, multicast, unspecified), ``redirect``, and
            the fetch failures of ``fetch_mud_bytes``.
    """
    import httpx  # on the first request (#19)

    cfg = config or FetchConfig()
    url = _local_url(device, scheme, port)
    _check_device_address(device, url, cfg)
    deadline = time.monotonic() + cfg.total_timeout
    timeout = httpx.Timeout(cfg.read_timeout, connect=cfg.connect_timeout)
    with httpx.Client(verify=_device_tls(), timeout=timeout, follow_redirects=False,
                      trust_env=False) as client:
        current = url
        for _hop in range(cfg.max_redirects + 1):
            parts = urlsplit(current)
            target = _Target(url=current, host=str(device),
                             port=parts.port or LOCAL_SCHEMES[parts.scheme], address=device)
            answer = _get(client, target, _TRANSPARENCY_ACCEPT, TRANSPARENCY_MEDIA_TYPES,
                          MAX_TRANSPARENCY_BYTES, deadline)
            if isinstance(answer, bytes):
                return answer
            current = _device_redirect(current, answer, device)
    raise FetchError(key="redirect", url=url, reason=f"more than {cfg.max_redirects} redirects")


def _local_url(device: IPAddress, scheme: str, port: int | None) -> str:
    if scheme not in LOCAL_SCHEMES:
        raise FetchError(key="unsupported_scheme", url=f"{scheme}://{device}{WELL_KNOWN_SBOM}",
                         reason=f"mudguard asks devices over http or https, not {scheme}")
    host = f"[{device}]" if device.version == 6 else str(device)
    return f"{scheme}://{host}:{port or LOCAL_SCHEMES[scheme]}{WELL_KNOWN_SBOM}"


def _check_device_address(device: IPAddress, url: str, config: FetchConfig) -> None:
    if (device.is_loopback or device.is_multicast or device.is_unspecified
            or device.is_link_local):
        raise FetchError(key="blocked_address", url=url,
                         reason=f"{device} is not a device's address")
    why = config.gateway_check(device)
    if why is not None:
        raise FetchError(key="blocked_address", url=url, reason=why)


def _device_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _device_redirect(url: str, location: str, device: IPAddress) -> str:
    import httpx  # on the first request (#19)

    following = httpx.URL(url).join(location)
    try:
        same = ipaddress.ip_address(following.host) == device
    except ValueError:
        same = False
    if not same or following.scheme not in LOCAL_SCHEMES:
        raise FetchError(key="redirect", url=url,
                         reason=f"the device redirected to {following}; only its own address "
                         "is asked")
    return str(following)
