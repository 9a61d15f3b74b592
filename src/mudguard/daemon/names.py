"""DNS names for the watcher's evidence: which name a device looked up to get an address.

The DNS guard fills a set per allowed DNS name with (device address, answer address)
pairs (``dns.core.AddSetElements``); the set's name is a digest of the DNS name
(``policy.dns_set_name``). ``DnsNames`` wraps the set filler to remember, per device,
which name each answer address came from, and learns the digest → name map from
the policies the gateway enforces. A dropped packet to an address the device resolved
is then shown as ``tcp v2.broker.lifx.co port 443`` rather than a bare address.

Bounded (oldest pairs forgotten first), thread-safe (fills may run in a worker
thread), and never in the way: a fill is applied before anything is recorded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from mudguard.dns.core import AddSetElements
from mudguard.policy import DevicePolicy, device_id, dns_set_name

MAX_PAIRS = 65_536
MAX_NAMES = 16_384


class DnsNames:
    """``Watcher(names=...)``: (device id, remote address) -> the DNS name it came from."""

    def __init__(self, *, max_pairs: int = MAX_PAIRS) -> None:
        """Empty; fed by ``learn`` (each enforced policy) and the wrapped filler."""
        self.max_pairs = max_pairs
        self._sets: dict[str, str] = {}
        self._devices: dict[str, str] = {}  # LAN address -> device id, as enforced
        # (device address, remote address) -> name; which device holds the address is
        # looked up when asked (a lease may have moved since the fill).
        self._pairs: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._by_remote: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def learn(self, policy: DevicePolicy) -> None:
        """Take an enforced policy: its device's addresses and the set name of each DNS
        name it may use (both families)."""
        facts = policy.device
        dev_id = device_id(facts.mac)
        with self._lock:
            for address, holder in list(self._devices.items()):
                if holder == dev_id:
                    del self._devices[address]
            for address in (*facts.ipv4, *facts.ipv6):
                self._devices[address] = dev_id
            for name in policy.dns_names():
                if len(self._sets) >= 2 * MAX_NAMES:
                    break
                for family in (4, 6):
                    self._sets[dns_set_name(name, family)] = name.rstrip(".").lower()

    def record(self, commands: Sequence[AddSetElements]) -> None:
        """Note the pairs of fills the kernel accepted."""
        with self._lock:
            for command in commands:
                name = self._sets.get(command.set_name)
                if name is None:
                    continue
                for device_address, remote in command.elements:
                    key = (device_address, remote)
                    self._pairs[key] = name
                    self._pairs.move_to_end(key)
                    self._by_remote.setdefault(remote, set()).add(device_address)
            while len(self._pairs) > self.max_pairs:
                (device_address, remote), _ = self._pairs.popitem(last=False)
                holders = self._by_remote.get(remote, set())
                holders.discard(device_address)
                if not holders:
                    self._by_remote.pop(remote, None)

    def __call__(self, dev_id: str, address: str) -> str | None:
        """The DNS name device ``dev_id`` resolved to get ``address``, if any."""
        with self._lock:
            holders = list(self._by_remote.get(address, ()))
            for device_address in holders:
                if self._devices.get(device_address) == dev_id:
                    return self._pairs.get((device_address, address))
        return None

    def filler(self, inner: Any) -> RecordingFiller:
        """Wrap the DNS server's set filler so its accepted fills are recorded here."""
        return RecordingFiller(inner, self)


class RecordingFiller:
    """A set filler that records what the inner filler applied (same interface)."""

    def __init__(self, inner: Any, names: DnsNames) -> None:
        self.inner = inner
        self.names = names
        self.inline_ok = bool(getattr(inner, "inline_ok", False))

    def fill(self, commands: Sequence[AddSetElements]) -> None:
        """Apply through the inner filler (raises as it does), then record."""
        self.inner.fill(commands)
        self.names.record(commands)
