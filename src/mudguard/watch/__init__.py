"""Watch devices: NFLOG drop events, the deviation tracker, quarantine alerts.

Pure: ``nflog`` (message building and parsing, ``FlowEvent``) and ``tracker``
(``DeviationTracker.observe(event, now) -> list[Alert]``). Adapter: ``listener``
(``NflogSocket``, and ``Watcher``, the daemon service).
"""

from mudguard.watch.nflog import FlowEvent, NflogPacket, flow_event, parse_datagram, parse_prefix
from mudguard.watch.tracker import Alert, DeviationTracker, Thresholds

__all__ = [
    "Alert",
    "DeviationTracker",
    "FlowEvent",
    "NflogPacket",
    "Thresholds",
    "flow_event",
    "parse_datagram",
    "parse_prefix",
]
