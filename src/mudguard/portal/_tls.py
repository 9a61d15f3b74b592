"""The device report's RFC 9761 line: "TLS profile: declared / observed OK / deviation
(reason)" (pure: built from the validated MUD file and the device's stored events).

The reasons are rendered from catalogue keys (``report.tls.dev.<kind>``) with the
offending values as parameters, so the owner reads them in the portal's language; the
values themselves (versions, hex code points, ALPN names) are shown as the gateway saw
them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mudguard.devices import DeviceEvent, EventKind
from mudguard.mud import MudFile


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsDeviationView:
    """One difference, as a catalogue key and its parameters."""

    key: str  # report.tls.dev.<kind>
    offered: str
    allowed: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsView:
    """What the report says about the device's (D)TLS profile."""

    profiles: tuple[str, ...]  # "acl/ace: summary" per profiled ACE
    status: str  # "declared" (nothing observed yet), "fits" or "deviates"
    last_seen: datetime | None = None
    deviations: tuple[TlsDeviationView, ...] = ()
    ace: str | None = None  # the ACE of the last observation

    @property
    def status_key(self) -> str:
        """The catalogue key of the status (``report.tls.<status>``)."""
        return f"report.tls.{self.status}"


KINDS = ("version", "dtls", "tls", "not-tls", "cipher", "extension", "group", "sigalg",
         "sigalg-cert", "alpn", "psk-mode", "cert-compression")


def tls_view(mud: MudFile, events: Iterable[DeviceEvent] = ()) -> TlsView | None:
    """The report's TLS line for ``mud`` (None: the file states no (D)TLS profile);
    ``events`` (oldest first) give the last observed outcome."""
    aces = mud.tls_profiled_aces()
    if not aces:
        return None
    profiles = []
    for acl in mud.acls:
        for ace in acl.aces:
            if ace in aces:
                summary = "; ".join(p.summary() for p in ace.matches.tls_profiles)
                profiles.append(f"{acl.name}/{ace.name}: {summary}")
    last = None
    for event in events:
        if event.kind in (EventKind.TLS_OBSERVED, EventKind.TLS_DEVIATION):
            last = event
    if last is None:
        return TlsView(profiles=tuple(profiles), status="declared")
    deviations = []
    for item in last.details.get("deviations") or ():
        if not isinstance(item, dict) or item.get("kind") not in KINDS:
            continue
        deviations.append(TlsDeviationView(
            key=f"report.tls.dev.{item['kind']}", offered=_join(item.get("offered")),
            allowed=_join(item.get("allowed"))))
    where = last.details.get("ace")
    return TlsView(profiles=tuple(profiles),
                   status="deviates" if last.kind is EventKind.TLS_DEVIATION else "fits",
                   last_seen=last.at, deviations=tuple(deviations),
                   ace=where if isinstance(where, str) else None)


def _join(values: object, limit: int = 4) -> str:
    if not isinstance(values, list):
        return ""
    shown = [str(v) for v in values[:limit]]
    return ", ".join(shown) + (" …" if len(values) > limit else "")
