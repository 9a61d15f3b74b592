"""Learn, then lock, in the daemon: the watcher's accepted connections of LEARNING devices
become flow records in the database.

The conntrack watcher calls ``on_connection`` once per new connection the kernel
accepted (never per packet) on the event loop: a dict lookup of both ends among
the learning devices' addresses and a set insert, nothing else. Every
``learning_flush_seconds`` the gateway's worker calls ``flush``: the pending
records go to the store (bounded per device there), the index of learning devices
is rebuilt, and learning periods that are due end (``DeviceService.maintain``'s
part): their proposals wait for the owner, or are locked when the owner chose so.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from mudguard.devices import Device
from mudguard.devices.learning import MAX_FLOWS, FlowRecord, flow_record
from mudguard.devices.service import DeviceService
from mudguard.policy import LifecycleState, device_id

log = logging.getLogger(__name__)

MAX_PENDING_DEVICES = 256
MAX_NAMES = 4096  # (device address, remote) -> name pairs kept for learning devices
NameLookup = Callable[[str, str], str | None]


class LearningRecorder:
    """``Watcher(on_connection=...)``: records the connections of learning devices."""

    def __init__(self, names: NameLookup | None = None) -> None:
        """``names``: (device id, remote address) -> the DNS name it resolved (DnsNames)."""
        self.names = names
        self._lock = threading.Lock()
        self._by_address: dict[str, Device] = {}
        self._pending: dict[str, dict[str, FlowRecord]] = {}
        self._names: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.recorded = 0

    def on_answer(self, client: str, name: str, addresses: tuple[str, ...]) -> None:
        """The DNS guard answered ``client`` (event loop): a learning device's answers
        name the peers it then connects to (the home default has no name sets)."""
        with self._lock:
            if client not in self._by_address:
                return
            for address in addresses:
                self._names[(client, address)] = name.rstrip(".").lower()
                self._names.move_to_end((client, address))
            while len(self._names) > MAX_NAMES:
                self._names.popitem(last=False)

    def on_connection(self, conn: Any) -> None:
        """One accepted connection (a ``ConnEvent``), on the event loop."""
        with self._lock:
            device = self._by_address.get(conn.src) or self._by_address.get(conn.dst)
        if device is None:
            return
        dev_id = device_id(device.mac)
        names = self.names
        local = conn.src if conn.src in (*device.ipv4, *device.ipv6) else conn.dst

        def name_of(address: str) -> str | None:
            with self._lock:
                own = self._names.get((local, address))
            return own or (names(dev_id, address) if names is not None else None)

        record = flow_record(device, family=conn.family, src=conn.src, dst=conn.dst,
                             protocol=conn.protocol, dst_port=conn.dst_port, name_of=name_of)
        if record is None:
            return
        key = repr(record)
        with self._lock:
            pending = self._pending.get(device.mac)
            if pending is None:
                if len(self._pending) >= MAX_PENDING_DEVICES:
                    return
                pending = self._pending[device.mac] = {}
            if len(pending) < MAX_FLOWS:
                pending[key] = record

    def follow(self, device: Device) -> None:
        """A device's rules were just installed (the service worker): a device that
        starts learning is recorded from its very first connection."""
        with self._lock:
            for address, known in list(self._by_address.items()):
                if known.mac == device.mac:
                    del self._by_address[address]
            if device.state is LifecycleState.LEARNING:
                for address in (*device.ipv4, *device.ipv6):
                    self._by_address[address] = device

    def flush(self, service: DeviceService) -> list[Device]:
        """Write the pending records, end the learning periods that are due and rebuild
        the index (the gateway's worker). Returns the devices whose learning ended."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for mac, records in pending.items():
            self.recorded += service.record_flows(mac, list(records.values()))
        ended = list(service.maintain_learning())
        index = {}
        for device in service.store.list_devices():
            if device.state is LifecycleState.LEARNING:
                for address in (*device.ipv4, *device.ipv6):
                    index[address] = device
        with self._lock:
            self._by_address = index
        return ended
