"""The REST API under ``/api``: the same services as the pages, JSON in and out.

Authentication is the owner's session cookie (from ``POST /api/session``); every
state-changing call must also send the session's CSRF token in ``X-CSRF-Token``.
Errors are ``{"error": <stable key>, "message": <sentence>, ...fields}``.
"""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Header, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from mudguard.devices import Device, DeviceEvent, GrantRecord
from mudguard.devices.wiring import with_zone
from mudguard.discovery.qr import QrError, QrRecord
from mudguard.guidance import load_guidance
from mudguard.identify.record import IdentityRecord
from mudguard.mud import describe_policy
from mudguard.policy import GrantKind
from mudguard.portal._allowance import Allowance, describe_allowance
from mudguard.portal._auth import Session, tokens_match
from mudguard.portal._i18n import translate
from mudguard.portal._incidents import AlertKind, Incident, service_text
from mudguard.portal._learning import learning_view
from mudguard.portal._services import MudPreview, Report, build_report
from mudguard.portal._web import (
    SESSION_COOKIE,
    PortalHTTPError,
    client_key,
    current_session,
    error_fields,
    error_key,
    error_status,
    language,
    now_mono,
    secure,
    state,
)

router = APIRouter(prefix="/api", tags=["api"])

MAC_PATTERN = r"^[0-9A-Fa-f]{2}([:.-]?[0-9A-Fa-f]{2}){5}$"
Mac = Annotated[str, Path(pattern=MAC_PATTERN, max_length=17,
                          description="The device's MAC address, e.g. 00:11:22:33:44:55")]


class Credentials(BaseModel):
    """The owner's user name and password."""

    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class NameIn(BaseModel):
    """A name for a device."""

    name: str = Field(min_length=1, max_length=256)


class GrantIn(BaseModel):
    """An extra permission: LAN, Internet, one service, or a block; optional expiry."""

    kind: Literal["lan", "internet", "service", "deny", "pause"]
    host: str | None = Field(default=None, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["tcp", "udp"] | None = None
    expires_in_seconds: int | None = Field(default=None, ge=60, le=366 * 86400)
    schedule: str | None = Field(default=None, max_length=80,
                                 description="daily window 'HH:MM-HH:MM [ZONE]' (pause at "
                                             "bedtime); the owner's time zone when none")


class ForgetIn(BaseModel):
    """Forget, or transfer to a new owner."""

    transfer: bool = False


class UrlIn(BaseModel):
    """A MUD URL."""

    mud_url: str = Field(min_length=1, max_length=2048)


class OnboardIn(BaseModel):
    """Accept a device: its MUD URL, its MAC, and optionally a name."""

    mud_url: str = Field(min_length=1, max_length=2048)
    mac: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, max_length=256)
    manufacturer: str | None = Field(default=None, max_length=256)
    model: str | None = Field(default=None, max_length=256)


def error_response(exc: BaseException) -> JSONResponse:
    """The JSON error body for ``exc`` (stable key, message, fields)."""
    message = str(getattr(exc, "reason", "") or exc)[:500]
    body: dict[str, Any] = {**error_fields(exc), "error": error_key(exc), "message": message}
    response = JSONResponse(body, status_code=error_status(exc))
    if "retry_after" in body:
        response.headers["Retry-After"] = str(body["retry_after"])
    return response


def owner(request: Request,
          x_csrf_token: Annotated[str | None, Header(max_length=128)] = None) -> Session:
    """The owner's session; unsafe methods must carry the session's CSRF token."""
    session = current_session(request)
    if session is None:
        raise PortalHTTPError("not_logged_in", "log in first (POST /api/session)")
    if request.method not in ("GET", "HEAD", "OPTIONS") and \
            not tokens_match(session.csrf, x_csrf_token):
        raise PortalHTTPError("bad_csrf", "send the session's CSRF token in X-CSRF-Token")
    return session


Owner = Annotated[Session, Depends(owner)]


# -- account and session -----------------------------------------------------------------

@router.post("/setup", status_code=201)
def setup(body: Credentials, request: Request) -> dict[str, Any]:
    """First start: create the owner account (refused once it exists)."""
    portal = state(request)
    portal.owner.create(body.username, body.password)
    return {"username": portal.owner.username()}


@router.post("/session")
def login(body: Credentials, request: Request) -> JSONResponse:
    """Log in; returns the CSRF token to send with every change. Rate limited."""
    portal = state(request)
    client, now = client_key(request), now_mono(request)
    wait = portal.limiter.retry_after(client, now)
    if wait > 0:
        raise PortalHTTPError("rate_limited", "too many failed logins",
                              retry_after=int(wait) + 1, seconds=int(wait) + 1)
    if not portal.owner.verify(body.username, body.password):
        portal.limiter.failed(client, now)
        raise PortalHTTPError("bad_login", "wrong user name or password")
    portal.limiter.succeeded(client)
    token, session = portal.sessions.open(body.username, now)
    response = JSONResponse({"csrf_token": session.csrf, "username": session.username})
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure(request))
    return response


@router.delete("/session", status_code=204)
def logout(request: Request, session: Owner) -> Response:
    """Log out."""
    state(request).sessions.close(request.cookies.get(SESSION_COOKIE))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


# -- devices -----------------------------------------------------------------------------

@router.get("/devices")
def list_devices(request: Request, session: Owner) -> list[dict[str, Any]]:
    """Every device the gateway knows."""
    services = state(request).services
    return [{**d.as_dict(), "identity": services.identity(d).as_dict()}
            for d in services.list_devices()]


@router.get("/devices/{mac}")
def get_device(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """One device, what it may do (in words), and its extra permissions."""
    services = state(request).services
    device = services.device(mac)
    mud = services.mud_for(device)
    words = functools.partial(translate, language(request))
    return {**device.as_dict(),
            "identity": services.identity(device, mud).as_dict(),
            "identification": _identification(services.devices.identity_record(device.mac)),
            "allowed": describe_policy(mud) if mud else None,
            "allowance": _allowance(describe_allowance(services.effective_policy(device),
                                                       words, services.controllers)),
            "grants": [g.as_dict() for g in services.devices.active_grants(device.mac)],
            "activity": _activity(services, device.mac)}


def _identification(record: IdentityRecord | None) -> dict[str, Any] | None:
    """How the gateway recognised the device (null: nothing recognised yet)."""
    return None if record is None else record.to_json()


def _activity(services: Any, mac: str) -> dict[str, Any]:
    """The last 24 hours: allowed and blocked connections, and per destination."""
    buckets = services.flow_history(mac)
    return {"allowed": sum(b.allowed for b in buckets),
            "blocked": sum(b.blocked for b in buckets),
            "destinations": [a.as_dict() for a in services.recent_activity(mac)]}


@router.get("/devices/{mac}/events")
def device_events(mac: Mac, request: Request, session: Owner,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """The device's events, newest first."""
    return [_event(e) for e in state(request).services.events(mac, limit=limit)]


@router.get("/devices/{mac}/flows")
def device_flows(mac: Mac, request: Request, session: Owner,
                 hours: Annotated[int, Query(ge=1, le=168)] = 24) -> list[dict[str, Any]]:
    """Allowed vs blocked flows over time."""
    buckets = state(request).services.flow_history(mac, hours=hours)
    return [{"start": b.start.isoformat(), "allowed": b.allowed, "blocked": b.blocked}
            for b in buckets]


@router.put("/devices/{mac}/name")
def rename(mac: Mac, body: NameIn, request: Request, session: Owner) -> dict[str, Any]:
    """Name the device."""
    return state(request).services.rename(mac, body.name).as_dict()


@router.post("/devices/{mac}/grants", status_code=201)
def add_grant(mac: Mac, body: GrantIn, request: Request, session: Owner) -> dict[str, Any]:
    """Give the device an extra permission (optionally until an expiry)."""
    services = state(request).services
    expires = services.now() + timedelta(seconds=body.expires_in_seconds) \
        if body.expires_in_seconds else None
    protocol = {"tcp": 6, "udp": 17}.get(body.protocol or "")
    record: GrantRecord = services.grant(
        mac, GrantKind(body.kind), host=body.host, port=body.port, protocol=protocol,
        expires=expires, schedule=with_zone(body.schedule, services.zone()))
    return record.as_dict()


@router.delete("/devices/{mac}/grants/{grant_id}", status_code=204)
def revoke_grant(mac: Mac, grant_id: Annotated[int, Path(ge=0, le=2**62)],
                 request: Request, session: Owner) -> Response:
    """Remove one permission."""
    state(request).services.revoke_grant(mac, grant_id)
    return Response(status_code=204)


@router.post("/devices/{mac}/release")
def release(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """Release a quarantined device."""
    return state(request).services.release(mac).as_dict()


@router.post("/devices/{mac}/keep-quarantined")
def keep(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """Keep a device quarantined (decides its alerts)."""
    return state(request).services.keep_quarantined(mac).as_dict()


@router.post("/devices/{mac}/approve-url")
def approve(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """Approve the new MUD URL the device announced."""
    return state(request).services.approve_url(mac).as_dict()


@router.post("/devices/{mac}/trust")
def trust(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """One of the owner's own computers or phones: not restricted."""
    return state(request).services.trust(mac).as_dict()


@router.post("/devices/{mac}/untrust")
def untrust(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """Withdraw trust: back to what the device's profile allows."""
    return state(request).services.untrust(mac).as_dict()


@router.post("/devices/{mac}/forget")
def forget(mac: Mac, body: ForgetIn, request: Request, session: Owner) -> dict[str, Any]:
    """End of use: remove its access, key and data; returns the reset steps."""
    steps = state(request).services.forget(mac, transfer=body.transfer)
    return {"mac": steps.mac, "key_revoked": steps.key_revoked, "steps": list(steps.steps),
            "documentation": steps.documentation}


# -- learn, then lock (issue #16) -----------------------------------------------------

@router.get("/devices/{mac}/learning")
def device_learning(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """The device's learning: its period and, once learning ended, the proposed
    (learned) profile in words and as a MUD file; ``learning`` is null when none."""
    services = state(request).services
    return _learning(request, services.device(mac))


@router.post("/devices/{mac}/learning/start")
def start_learning(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """Learn a device on the home default (again)."""
    return _learning(request, state(request).services.start_learning(mac))


@router.post("/devices/{mac}/learning/end")
def end_learning(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """End the learning period now: the proposal is made."""
    return _learning(request, state(request).services.end_learning(mac))


@router.post("/devices/{mac}/learning/lock")
def lock_learned(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """Lock the device to its learned profile (ends learning first if needed)."""
    return _learning(request, state(request).services.lock_learned(mac))


@router.post("/devices/{mac}/learning/keep-default")
def keep_default(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """Keep the home default; what was learned is forgotten."""
    return _learning(request, state(request).services.keep_default(mac))


def _learning(request: Request, device: Device) -> dict[str, Any]:
    services = state(request).services
    words = functools.partial(translate, language(request))
    view = learning_view(device, services.learning(device), now=services.now(), t=words,
                         policy_of=services.profile_policy, controllers=services.controllers)
    proposal = None
    if view is not None and view.proposal_text is not None:
        proposal = {"sentence": view.sentence,
                    "allowance": _allowance(view.allowance) if view.allowance else None,
                    "mud": json.loads(view.proposal_text)}
    return {"device": device.as_dict(),
            "learning": view.as_dict() if view is not None else None,
            "proposal": proposal}


@router.get("/devices/{mac}/report")
def device_report(mac: Mac, request: Request, session: Owner) -> dict[str, Any]:
    """The device report of a known device (null report without a MUD file)."""
    services = state(request).services
    device = services.device(mac)
    mud = services.mud_for(device)
    report = services.device_report(device, mud) if mud else None
    return {"mac": device.mac, "report": _report(report) if report else None}


# -- alerts ------------------------------------------------------------------------------

@router.get("/alerts")
def alerts(request: Request, session: Owner) -> list[dict[str, Any]]:
    """The alerts as incidents (one per device and kind while it lasts), open ones first
    (``open``: awaits the owner), then the decided ones. ``id``/``at``/``kind``/``details``
    are the incident's newest event; ``alert`` is the incident's kind."""
    return [_incident(i) for i in state(request).services.alerts()]


@router.post("/alerts/{mac}/{kind}/dismiss")
def dismiss_alert(mac: Mac, kind: Literal["violation", "new-device", "url-changed",
                                          "signature", "quarantine"],
                  request: Request, session: Owner) -> dict[str, Any]:
    """The owner saw an alert that needs no decision (a quarantine needs one: 409)."""
    return state(request).services.dismiss_alert(mac, AlertKind(kind)).as_dict()


# -- onboarding and reports ------------------------------------------------------------

@router.post("/labels/read")
async def read_label_image(request: Request, session: Owner,
                           image: Annotated[UploadFile, File()]) -> dict[str, Any]:
    """Read the RFC 9238 label in a picture."""
    from mudguard.labels import read_label  # Pillow and zxing-cpp: on first use (#19)

    limit = state(request).settings.max_upload_bytes
    data = await image.read(limit + 1)
    if len(data) > limit:
        raise QrError("image_too_large", "the picture is too large")
    return read_label(data).as_dict()


@router.get("/labels/make", response_class=Response,
            responses={200: {"content": {"image/svg+xml": {}, "image/png": {}},
                             "description": "The printable label."}})
def make_label(request: Request, session: Owner,
               mud_url: Annotated[str, Query(min_length=1, max_length=1024)],
               mac: Annotated[str | None, Query(max_length=32)] = None,
               company: Annotated[str | None, Query(max_length=256)] = None,
               product: Annotated[str | None, Query(max_length=256)] = None,
               model: Annotated[str | None, Query(max_length=256)] = None,
               format: Annotated[Literal["svg", "png"], Query()] = "svg") -> Response:
    """A printable RFC 9238 label (for manufacturers), as a download."""
    from mudguard.labels import label_png, label_svg  # Pillow, segno: on first use (#19)

    record = QrRecord(mud_url=mud_url, mac=mac, company=company, product=product,
                      model=model)
    if format == "png":
        body, media = label_png(record), "image/png"
    else:
        body, media = label_svg(record).encode("utf-8"), "image/svg+xml"
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="mud-label.{format}"'})


@router.post("/onboard/preview")
def preview(body: UrlIn, request: Request, session: Owner) -> dict[str, Any]:
    """Fetch and check a MUD file and say what the device would be allowed (stores nothing)."""
    return _preview(state(request).services.preview(body.mud_url))


@router.post("/onboard", status_code=201)
def onboard(body: OnboardIn, request: Request, session: Owner) -> dict[str, Any]:
    """Accept a device: enforce its profile and issue its own WiFi key."""
    done = state(request).services.onboard(url=body.mud_url, mac=body.mac, name=body.name,
                                           manufacturer=body.manufacturer, model=body.model)
    wifi = None
    if done.credentials is not None:
        from mudguard.keys.core import wifi_qr_payload

        wifi = {"ssid": done.credentials.ssid, "passphrase": done.credentials.passphrase,
                "qr_payload": wifi_qr_payload(done.credentials)}
    return {"device": done.device.as_dict(), "wifi": wifi, "key_error": done.key_error}


@router.get("/report")
def report(request: Request, session: Owner,
           mud_url: Annotated[str, Query(min_length=1, max_length=2048)]) -> dict[str, Any]:
    """The device report for a MUD URL, before purchase."""
    return _preview(state(request).services.preview(mud_url))


@router.get("/guidance")
def guidance(lang: Annotated[Literal["en", "fr"], Query()] = "en") -> dict[str, Any]:
    """The consumer guidance matrix (privacy, security, functionality x four moments)."""
    g = load_guidance(lang)
    return {"language": g.language, "title": g.title, "aspects": g.aspects,
            "moments": g.moments, "advice": g.advice,
            "contacts": [{"topic": c.topic, "name": c.name, "url": c.url}
                         for c in g.contacts]}


def _event(event: DeviceEvent) -> dict[str, Any]:
    return event.as_dict()


def _incident(incident: Incident) -> dict[str, Any]:
    words = functools.partial(translate, "en")
    return {**_event(incident.latest), "open": incident.open,
            "device": incident.device.as_dict() if incident.device else None,
            "alert": incident.kind.value, "count": incident.count,
            "events": incident.events, "first_at": incident.first_at.isoformat(),
            "last_at": incident.last_at.isoformat(), "reason": incident.reason,
            "reasons": list(incident.reasons),
            "destinations": [{"name": d.name, "outgoing": d.outgoing, "flows": d.flows,
                              "home_device": d.home_device, "gateway": d.gateway,
                              "services": [service_text(s, words) for s in d.services]}
                             for d in incident.destinations],
            "destination_count": incident.destination_count,
            "actions": list(incident.actions),
            "closed_at": incident.closed_at.isoformat() if incident.closed_at else None,
            "closed_by": incident.closed_by}


def _allowance(allowance: Allowance) -> dict[str, Any]:
    return {"state": allowance.state.value, "summary": allowance.summary,
            "risks": list(allowance.risks),
            "groups": [{"key": g.key, "title": g.title, "items": list(g.items)}
                       for g in allowance.groups],
            "technical": list(allowance.technical)}


def _preview(p: MudPreview) -> dict[str, Any]:
    report = build_report(p.mud, p.signature, p.signer) if p.mud else None
    return {
        "mud_url": p.url, "usable": p.usable, "fetch_error": p.fetch_error,
        "findings": [f.as_dict() for f in p.findings],
        "signature": p.signature.value, "signer": p.signer,
        "signature_detail": p.signature_detail, "signature_error": p.signature_error,
        "allowed": describe_policy(p.mud) if p.mud else None,
        "report": _report(report) if report else None,
    }


def _report(r: Report) -> dict[str, Any]:
    return {
        "url": r.url, "manufacturer": r.manufacturer, "model": r.model,
        "documentation": r.documentation, "supported": r.supported,
        "last_update": r.last_update.isoformat(), "firmware": r.firmware,
        "software": r.software, "signature": r.signature.value, "signer": r.signer,
        "systeminfo": r.systeminfo, "draft_era": r.draft_era,
        "signer_subject": r.signer_subject, "identity_source": r.identity_source,
        "destinations": [{"name": d.name, "company": d.company, "country": d.country}
                         for d in r.destinations],
        "tls": None if r.tls is None else {
            "profiles": list(r.tls.profiles), "status": r.tls.status, "ace": r.tls.ace,
            "last_seen": r.tls.last_seen.isoformat() if r.tls.last_seen else None,
            "deviations": [{"key": d.key, "offered": d.offered, "allowed": d.allowed}
                           for d in r.tls.deviations]},
    }
