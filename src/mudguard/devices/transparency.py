"""Retrieve the SBOM a device's MUD file says is published (RFC 9472), in the background.

Theory of operation: the daemon's maintenance pass hands ``due`` devices (profiled,
their MUD file naming an SBOM, no fresh result) to ``TransparencyChecker.check`` on
a worker of its own, so a slow device or server never holds up device changes. The
SBOM is asked for once per MUD ``cache-validity`` (RFC 8520): from the cloud URL with
the hardened MUD fetcher, or (``sbom-local-well-known``) from the device itself at the
one address the gateway knows for it. Only the outcome is kept (retrieved or why not,
its size and SHA-256), in memory: it is what the device report shows, never policy.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from mudguard.devices._model import Device
from mudguard.errors import RemoteInputError
from mudguard.mud import MudFile

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
FetchCloud = Callable[[str], bytes]
"""Fetch an https SBOM URL with every guard of the MUD fetcher."""
FetchDevice = Callable[[IPAddress, str], bytes]
"""Ask the device at an address for its SBOM over a scheme (http or https)."""

MAX_RESULTS = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SbomCheck:
    """The outcome of one attempt to retrieve a device's SBOM."""

    mac: str
    mud_url: str
    source: str
    """The URL asked (or the device's address and scheme)."""
    retrieved: bool
    error: str | None
    size: int
    sha256: str | None
    checked_at: datetime
    valid_until: datetime


class TransparencyChecker:
    """Retrieves and remembers, per device and MUD file, whether its SBOM could be read."""

    def __init__(self, *, fetch_cloud: FetchCloud, fetch_device: FetchDevice,
                 clock: Callable[[], datetime]) -> None:
        self._fetch_cloud = fetch_cloud
        self._fetch_device = fetch_device
        self._clock = clock
        self._results: OrderedDict[str, SbomCheck] = OrderedDict()
        self._asking: set[str] = set()
        self._lock = threading.Lock()

    def result(self, device: Device) -> SbomCheck | None:
        """The last outcome for the device's current MUD file, fresh or not."""
        with self._lock:
            found = self._results.get(device.mac)
        return found if found is not None and found.mud_url == device.mud_url else None

    def due(self, device: Device, mud: MudFile) -> bool:
        """True when the file publishes an SBOM and no fresh outcome exists for it."""
        if _source(device, mud) is None:
            return False
        found = self.result(device)
        return found is None or self._clock() >= found.valid_until

    def claim(self, device: Device, mud: MudFile) -> bool:
        """``due``, and not already being asked: then marked as being asked until its
        ``check`` ends (a slow device is never queued twice)."""
        if not self.due(device, mud):
            return False
        with self._lock:
            if device.mac in self._asking:
                return False
            self._asking.add(device.mac)
        return True

    def check(self, device: Device, mud: MudFile) -> SbomCheck | None:
        """Retrieve the SBOM now (no fresh-ness test: see ``due``); None if the file
        names none the gateway can ask for."""
        try:
            return self._check(device, mud)
        finally:
            with self._lock:
                self._asking.discard(device.mac)

    def _check(self, device: Device, mud: MudFile) -> SbomCheck | None:
        source = _source(device, mud)
        if source is None:
            return None
        now = self._clock()
        try:
            if source.address is not None:
                body = self._fetch_device(source.address, source.scheme)
            else:
                body = self._fetch_cloud(source.url or "")
            error = None
        except RemoteInputError as exc:
            body, error = b"", str(exc)[:300]
        outcome = SbomCheck(
            mac=device.mac, mud_url=mud.mud_url, source=source.label, retrieved=error is None,
            error=error, size=len(body),
            sha256=hashlib.sha256(body).hexdigest() if error is None else None,
            checked_at=now, valid_until=now + timedelta(hours=mud.cache_validity_hours))
        with self._lock:
            self._results[device.mac] = outcome
            self._results.move_to_end(device.mac)
            while len(self._results) > MAX_RESULTS:
                self._results.popitem(last=False)
        return outcome


@dataclass(frozen=True, slots=True)
class _Ask:
    """Where to ask: a cloud URL, or the device's address and scheme."""

    url: str | None = None
    address: IPAddress | None = None
    scheme: str = "https"

    @property
    def label(self) -> str:
        if self.url is not None:
            return self.url
        host = f"[{self.address}]" if self.address and self.address.version == 6 \
            else str(self.address)
        return f"{self.scheme}://{host}/.well-known/sbom"


def _source(device: Device, mud: MudFile) -> _Ask | None:
    tx = mud.transparency
    if tx is None or device.mud_url != mud.mud_url:
        return None
    if tx.local_well_known is not None:
        address = _device_address(device)
        return None if address is None else _Ask(address=address,
                                                  scheme=tx.local_well_known.value)
    archive = (tx.sbom_archive_list,) if tx.sbom_archive_list else ()
    for url in (*tx.sbom_urls, *archive):
        if url.startswith("https://"):
            return _Ask(url=url)
    return None


def _device_address(device: Device) -> IPAddress | None:
    """The device's address to ask: its IPv4 lease first, else a global IPv6 address."""
    for text in (*device.ipv4, *device.ipv6):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not address.is_link_local:
            return address
    return None
