"""What the daemon tells its operator: one structured event per thing that happened.

``EventLog.emit(event, **fields)`` writes either a JSON line (``--log-format json``,
what ``mudguard demo`` reads) or a readable line, on stdout, thread-safe; or, run by
systemd (``--log-format journal``, chosen by ``auto`` when stdout is the journal), one
journal entry per event through journald's native protocol: ``MESSAGE`` is the
readable line, ``PRIORITY`` follows the event's gravity, ``MUDGUARD_EVENT`` its kind
and every field is a ``MUDGUARD_<FIELD>`` (``journalctl -u mudguard MUDGUARD_EVENT=alert``);
``MUDGUARD_JSON`` holds the whole JSON record. An entry journald does not take is
written as a JSON line on stdout instead (nothing is lost). Device events are
de-duplicated: the same state, reasons and signature status are told once.
Secrets never reach it: callers pass only public facts (MACs, addresses, states).
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from mudguard.devices import Device

JOURNAL_SOCKET = "/run/systemd/journal/socket"
"""journald's native protocol socket (systemd.journal-fields(7), sd_journal_sendv(3))."""

_PRIORITY = {"error": 3, "reload-refused": 3, "alert": 4, "drops": 5, "dns-elsewhere": 5,
             "reload": 5, "stopping": 5, "lan-closed": 5}
"""syslog priorities by event (3 err, 4 warning, 5 notice); any other event: 6 info."""


def event_priority(event: str, fields: Mapping[str, Any]) -> int:
    """The syslog priority of an event: errors, then alerts and quarantines, then what
    the owner should notice (drops, reloads), then information."""
    if event == "device" and fields.get("state") == "quarantined":
        return 4
    return _PRIORITY.get(event, 6)


def journal_fields(record: Mapping[str, Any], message: str) -> dict[str, str]:
    """The journal entry of one event record (``t`` and ``event`` plus its fields)."""
    event = str(record["event"])
    fields = {k: v for k, v in record.items() if k not in ("t", "event")}
    entry = {"MESSAGE": message, "PRIORITY": str(event_priority(event, fields)),
             "SYSLOG_IDENTIFIER": "mudguard", "MUDGUARD_EVENT": event}
    for name, value in fields.items():
        if value is None:
            continue
        key = "MUDGUARD_" + re.sub(r"[^A-Z0-9_]", "_", name.upper())
        entry[key] = value if isinstance(value, str) else json.dumps(value, default=str)
    entry["MUDGUARD_JSON"] = json.dumps(record, sort_keys=True, default=str)
    return entry


def encode_journal_entry(fields: Mapping[str, str]) -> bytes:
    """journald's native format: ``KEY=value`` lines; a value with a newline as
    ``KEY``, newline, its length (64-bit little-endian), the bytes, newline."""
    parts: list[bytes] = []
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(key.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def stdout_is_journal() -> bool:
    """True when systemd connected stdout to the journal (``JOURNAL_STREAM`` names its
    device and inode, as systemd.exec(5) says to check) and journald's socket exists."""
    wanted = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return wanted == f"{stat.st_dev}:{stat.st_ino}" and os.path.exists(JOURNAL_SOCKET)


class JournalSink:
    """Sends entries to journald over its datagram socket."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(self, fields: Mapping[str, str]) -> None:
        """Send one entry; raise OSError if journald did not take it."""
        self._sock.sendto(encode_journal_entry(fields), self.path)


class EventLog:
    """A thread-safe writer of daemon events."""

    def __init__(self, *, json_lines: bool, stream: IO[str] | None = None,
                 journal: JournalSink | None = None) -> None:
        self.json_lines = json_lines
        self.stream = stream or sys.stdout
        self.journal = journal
        self._lock = threading.Lock()
        self._last_device: dict[str, tuple[Any, ...]] = {}

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event."""
        record = {"t": round(time.time(), 3), "event": event, **fields}
        details = " ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, [], ""))
        if self.journal is not None:
            try:
                self.journal.send(journal_fields(record, f"{event} {details}".rstrip()))
                return
            except OSError:  # journald gone or the entry too big: stdout keeps it
                line = json.dumps(record, sort_keys=True, default=str)
        elif self.json_lines:
            line = json.dumps(record, sort_keys=True, default=str)
        else:
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
