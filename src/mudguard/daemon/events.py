"""What the daemon tells its operator: one structured event per thing that happened.

``EventLog.emit(event, **fields)`` writes either a JSON line (``--log-format json``,
what ``mudguard demo`` reads) or a readable line, on stdout, thread-safe. Device events
are de-duplicated: the same state, reasons and signature status are told once.
Secrets never reach it: callers pass only public facts (MACs, addresses, states).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any

from mudguard.devices import Device


class EventLog:
    """A thread-safe writer of daemon events."""

    def __init__(self, *, json_lines: bool, stream: IO[str] | None = None) -> None:
        self.json_lines = json_lines
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._last_device: dict[str, tuple[Any, ...]] = {}

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event."""
        record = {"t": round(time.time(), 3), "event": event, **fields}
        if self.json_lines:
            line = json.dumps(record, sort_keys=True, default=str)
        else:
            details = " ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, [], ""))
            line = f"{time.strftime('%H:%M:%S')} {event:<10} {details}"
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def device(self, device: Device) -> None:
        """Tell a device's state if it changed since last told."""
        key = (device.state, device.reasons, device.signature_status, device.ipv4,
               device.ipv6)
        with self._lock:
            if self._last_device.get(device.mac) == key:
                return
            self._last_device[device.mac] = key
        self.emit("device", mac=device.mac, state=device.state.value,
                  reasons=list(device.reasons), signature=device.signature_status.value,
                  ipv4=list(device.ipv4), ipv6=list(device.ipv6), mud_url=device.mud_url)
