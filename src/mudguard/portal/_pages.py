"""The owner's pages (server-rendered, Jinja2 with autoescape on every template).

Every POST carries the session's CSRF token (or, before login, the double-submit
token); every page but setup and login needs the owner's session. Nothing from a
MUD file, a label or a device is marked safe: the templates never use ``|safe``.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import zoneinfo
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData, UploadFile

from mudguard.devices import Device, MacError, device_mac, normalise_mac
from mudguard.devices.identity import signer_organisation
from mudguard.devices.wiring import local_zone
from mudguard.discovery.qr import QrError
from mudguard.errors import MudguardError
from mudguard.guidance import ASPECTS, MOMENTS, load_guidance
from mudguard.keys.core import wifi_qr_payload
from mudguard.mud import describe_policy
from mudguard.policy import GrantKind, LifecycleState
from mudguard.portal._allowance import describe_allowance
from mudguard.portal._auth import AuthInputError, Session, tokens_match
from mudguard.portal._chart import flow_chart
from mudguard.portal._i18n import translate
from mudguard.portal._identified import identified_view, suggests_trust
from mudguard.portal._incidents import AlertKind, open_incidents, service_text
from mudguard.portal._learning import LearningView, learning_view
from mudguard.portal._reasons import (
    device_reason_text,
    event_reason_text,
    event_text,
    reset_step_text,
)
from mudguard.portal._services import (
    MudPreview,
    PortalServices,
    build_report,
    collapse_history,
)
from mudguard.portal._web import (
    LANG_COOKIE,
    PRE_COOKIE,
    SESSION_COOKIE,
    PortalHTTPError,
    client_key,
    current_session,
    error_key,
    language,
    new_token,
    now_mono,
    secure,
    state,
)

router = APIRouter(include_in_schema=False)

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("mudguard.portal", "templates"),
    autoescape=True,  # every template, whatever its extension
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates = Jinja2Templates(env=_env)

MAX_HISTORY = 50  # decided alerts shown under the open ones
EXPIRY = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7),
          "never": None}


def simple_error(key: str) -> PortalHTTPError:
    """An error with only a key (its message comes from the catalogue)."""
    return PortalHTTPError(key)


def pinned_signer_name(pin: str) -> str:
    """The organisation of a pinned signer (``"<subject> (CA key <SKI>)"``, see
    ``mud.signature``) for the main view; the whole pin goes under technical details."""
    subject = pin.rsplit(" (CA key ", 1)[0]
    return signer_organisation(subject) or subject


def _render(request: Request, name: str, context: dict[str, Any], *,
            status: int = 200, session: Session | None = None) -> HTMLResponse:
    lang = language(request)
    session = session or current_session(request)
    zone = owner_zone_info(state(request).services)
    base = {"lang": lang, "t": lambda key, **kw: translate(lang, key, **kw),
            "session": session, "csrf": session.csrf if session else "",
            "path": request.url.path, "states": LifecycleState,
            "lang_links": {code: _lang_link(request, code) for code in ("en", "fr")},
            "services_text": lambda services: ", ".join(
                service_text(s, functools.partial(translate, lang)) for s in services),
            "short_time": lambda at: short_time(at.astimezone(zone),
                                                state(request).services.now()),
            "local": lambda at: at.astimezone(zone),
            "reason_text": lambda reason: device_reason_text(reason, functools.partial(
                translate, lang), zone),
            "event_text": lambda event: event_text(event.kind.value, event.details,
                                                   functools.partial(translate, lang)),
            "event_reason": lambda details: event_reason_text(details, functools.partial(
                translate, lang)),
            "step_text": lambda step: reset_step_text(step, functools.partial(translate, lang)),
            "signer_name": pinned_signer_name}
    if session is not None and "open_alerts" not in context:
        try:
            base["open_alerts"] = state(request).services.open_alert_count()
        except MudguardError:  # the store's trouble: the page (maybe its error) still shows
            base["open_alerts"] = 0
    return templates.TemplateResponse(request, name, {**base, **context},
                                      status_code=status)


def owner_zone_info(services: PortalServices) -> ZoneInfo:
    """The owner's time zone, which the pages show times in (UTC when the store cannot
    tell: a page, maybe an error page, still shows)."""
    try:
        return ZoneInfo(services.zone())
    except (MudguardError, ValueError, ZoneInfoNotFoundError):
        return ZoneInfo("UTC")


def short_time(at: datetime, now: datetime) -> str:
    """"14:02" today, "2026-05-01 14:02" another day (in the times' own zone)."""
    return at.strftime("%H:%M" if at.date() == now.astimezone(at.tzinfo).date()
                       else "%Y-%m-%d %H:%M")


def _lang_link(request: Request, code: str) -> str:
    """The same page in another language; after a POST, the home page (a POST-only URL
    cannot be re-fetched)."""
    if request.method != "GET":
        return f"/?lang={code}"
    url = request.url.include_query_params(lang=code)
    return f"{url.path}?{url.query}"


def error_page(request: Request, exc: BaseException, status: int) -> Response:
    """The page for an error: login redirect, or the error's message in the layout."""
    key = error_key(exc)
    if key == "not_logged_in":
        target = "/login" if state(request).owner.exists() else "/setup"
        return RedirectResponse(target, status_code=303)
    fields = getattr(exc, "fields", {}) or {}
    return _render(request, "error.html", {"key": key, "fields": fields}, status=status)


def _owner(request: Request) -> Session:
    session = current_session(request)
    if session is None:
        raise PortalHTTPError("not_logged_in")
    return session


async def _form(request: Request, session: Session | None) -> FormData:
    """The request's form, after the CSRF check (session token, or double-submit)."""
    limit = state(request).settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit + 65536):
        raise PortalHTTPError("image_too_large")
    form = await request.form(max_files=1, max_fields=32, max_part_size=64 * 1024)
    given = form.get("csrf")
    expected = session.csrf if session else request.cookies.get(PRE_COOKIE)
    if not tokens_match(expected, given if isinstance(given, str) else None):
        raise PortalHTTPError("bad_csrf")
    return form


def _text(form: FormData, name: str, limit: int = 2048) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _with_pre_cookie(request: Request, name: str, context: dict[str, Any],
                     status: int = 200) -> HTMLResponse:
    token = request.cookies.get(PRE_COOKIE) or new_token()
    response = _render(request, name, {**context, "pre_csrf": token}, status=status)
    response.set_cookie(PRE_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure(request), max_age=3600)
    return response


# -- first start, login, logout ----------------------------------------------------------

@router.get("/")
def home(request: Request) -> Response:
    """Send the owner where they need to go."""
    if not state(request).owner.exists():
        return RedirectResponse("/setup", status_code=303)
    if current_session(request) is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/devices", status_code=303)


@router.get("/setup")
def setup_form(request: Request) -> Response:
    """First start: the owner account form (gone once the account exists)."""
    if state(request).owner.exists():
        return RedirectResponse("/login", status_code=303)
    return _with_pre_cookie(request, "setup.html", {"error": None, "username": ""})


@router.post("/setup")
async def setup(request: Request) -> Response:
    """Create the owner account and log in."""
    portal = state(request)
    if portal.owner.exists():
        raise PortalHTTPError("owner_exists")
    form = await _form(request, None)
    username, password = _text(form, "username", 256), _text(form, "password", 1024)
    if password != _text(form, "password_again", 1024):
        return _with_pre_cookie(request, "setup.html", {"error": "password_mismatch",
                                                        "username": username}, 400)
    try:
        portal.owner.create(username, password)
    except AuthInputError as exc:
        return _with_pre_cookie(request, "setup.html", {"error": exc.key,
                                                        "username": username}, 400)
    return _login_response(request, portal.owner.username() or username)


@router.get("/login")
def login_form(request: Request) -> Response:
    """The login form."""
    if not state(request).owner.exists():
        return RedirectResponse("/setup", status_code=303)
    return _with_pre_cookie(request, "login.html", {"error": None, "fields": {}})


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the password (rate limited) and open a session."""
    portal = state(request)
    form = await _form(request, None)
    client, now = client_key(request), now_mono(request)
    wait = portal.limiter.retry_after(client, now)
    if wait > 0:
        response = _with_pre_cookie(request, "login.html", {
            "error": "rate_limited", "fields": {"seconds": int(wait) + 1}}, 429)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    username = _text(form, "username", 256)
    if not portal.owner.verify(username, _text(form, "password", 1024)):
        portal.limiter.failed(client, now)
        return _with_pre_cookie(request, "login.html", {"error": "bad_login", "fields": {}},
                                401)
    portal.limiter.succeeded(client)
    return _login_response(request, username)


def _login_response(request: Request, username: str) -> Response:
    token, _ = state(request).sessions.open(username, now_mono(request))
    response = RedirectResponse("/devices", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure(request))
    response.delete_cookie(PRE_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Close the session."""
    session = _owner(request)
    await _form(request, session)
    state(request).sessions.close(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# -- devices ----------------------------------------------------------------------------

@router.get("/devices")
def devices(request: Request) -> Response:
    """Every device with its state."""
    session = _owner(request)
    services = state(request).services
    open_alerts = services.open_alert_count()
    listed = services.list_devices()
    return _render(request, "devices.html", {"devices": listed,
                                             "identities": services.identities(listed),
                                             "open_alerts": open_alerts}, session=session)


@router.get("/devices/{mac}")
def device_detail(request: Request, mac: str) -> Response:
    """One device: state, what it may do, flows, permissions, end of use."""
    session = _owner(request)
    services = state(request).services
    device = services.device(mac)
    mud = services.mud_for(device)
    lang = language(request)
    record = services.devices.identity_record(device.mac)
    return _render(request, "device.html", {
        "device": device,
        "identity": services.identity(device, mud),
        "identified": identified_view(record),
        "suggest_trust": suggests_trust(record),
        "policy": describe_policy(mud) if mud else None,
        "allowance": describe_allowance(services.effective_policy(device),
                                        functools.partial(translate, lang),
                                        services.controllers),
        "chart": flow_chart(services.flow_history(device.mac), owner_zone_info(services)),
        "activity": services.recent_activity(device.mac),
        "grants": services.devices.active_grants(device.mac),
        "history": collapse_history(services.events(device.mac, limit=500)),
        "grant_kinds": [k for k in GrantKind if k is not GrantKind.PAUSE],
        "learning": _learning_view(request, device),
        "can_learn": services.devices.learns
        and services.devices.store.get_settings().learning_days > 0,
        "quarantine_aces": mud.quarantine_ace_names if mud else None,
    }, session=session)


def _learning_view(request: Request, device: Device) -> LearningView | None:
    services = state(request).services
    return learning_view(device, services.learning(device), now=services.now(),
                         t=functools.partial(translate, language(request)),
                         policy_of=services.profile_policy,
                         controllers=services.controllers)


LEARNING_ACTIONS = {"start": "start_learning", "end": "end_learning", "lock": "lock_learned",
                    "keep-default": "keep_default"}


@router.post("/devices/{mac}/learning/{action}")
async def learning_action(request: Request, mac: str, action: str) -> Response:
    """Learn, then lock: end learning now, lock the device to its proposal, keep the
    home default, or learn again."""
    await _form(request, _owner(request))
    method = _choice(action, LEARNING_ACTIONS, "bad_input")
    device = getattr(state(request).services, method)(mac)
    return RedirectResponse(f"/devices/{device.mac}", status_code=303)


@router.post("/devices/{mac}/rename")
async def rename(request: Request, mac: str) -> Response:
    """Set the owner's name for the device."""
    form = await _form(request, _owner(request))
    device = state(request).services.rename(mac, _text(form, "name", 256))
    return RedirectResponse(f"/devices/{device.mac}", status_code=303)


@router.post("/devices/{mac}/grants")
async def add_grant(request: Request, mac: str) -> Response:
    """Give the device an extra permission, with an expiry."""
    form = await _form(request, _owner(request))
    services = state(request).services
    kind = _choice(_text(form, "kind"), {k.value: k for k in GrantKind}, "bad_grant")
    expiry = _choice(_text(form, "expires") or "never", EXPIRY, "bad_grant")
    port_text = _text(form, "port")
    protocol = _choice(_text(form, "protocol") or "any", {"any": None, "tcp": 6, "udp": 17},
                       "bad_grant")
    if port_text and not port_text.isdigit():
        raise PortalHTTPError("bad_grant", "a port is a number")
    record = services.grant(
        mac, kind, host=_text(form, "host", 255) or None,
        port=int(port_text) if port_text else None,
        protocol=protocol if port_text else None,
        expires=services.now() + expiry if expiry is not None else None)
    return RedirectResponse(f"/devices/{record.mac}", status_code=303)


@router.post("/devices/{mac}/pause")
async def pause(request: Request, mac: str) -> Response:
    """Pause the device's Internet now (for a while, or until resumed) or every day
    in a window (bedtime), in the gateway's time zone."""
    form = await _form(request, _owner(request))
    services = state(request).services
    length = _choice(_text(form, "for") or "1h", {**EXPIRY, "schedule": "schedule"},
                     "bad_grant")
    schedule = None
    if length == "schedule":
        schedule = f"{_text(form, 'from', 8)}-{_text(form, 'to', 8)} {services.zone()}"
        length = None
    record = services.grant(mac, GrantKind.PAUSE, schedule=schedule,
                            expires=services.now() + length if length is not None else None)
    return RedirectResponse(f"/devices/{record.mac}", status_code=303)


@router.post("/devices/{mac}/grants/{grant_id}/revoke")
async def revoke_grant(request: Request, mac: str, grant_id: int) -> Response:
    """Remove one permission."""
    await _form(request, _owner(request))
    services = state(request).services
    services.revoke_grant(mac, grant_id)
    return RedirectResponse(f"/devices/{normalise_mac(mac)}", status_code=303)


@router.post("/devices/{mac}/release")
async def release(request: Request, mac: str) -> Response:
    """Release a quarantined device."""
    form = await _form(request, _owner(request))
    device = state(request).services.release(mac)
    return RedirectResponse(_back(form, f"/devices/{device.mac}"), status_code=303)


@router.post("/devices/{mac}/keep")
async def keep(request: Request, mac: str) -> Response:
    """Keep a device quarantined (the alert is decided)."""
    form = await _form(request, _owner(request))
    device = state(request).services.keep_quarantined(mac)
    return RedirectResponse(_back(form, f"/devices/{device.mac}"), status_code=303)


@router.post("/devices/{mac}/approve")
async def approve(request: Request, mac: str) -> Response:
    """Approve the MUD URL the device announced."""
    await _form(request, _owner(request))
    device = state(request).services.approve_url(mac)
    return RedirectResponse(f"/devices/{device.mac}", status_code=303)


@router.post("/devices/{mac}/trust")
async def trust(request: Request, mac: str) -> Response:
    """Mark one of the owner's own computers or phones (not restricted), or undo it."""
    form = await _form(request, _owner(request))
    services = state(request).services
    device = services.untrust(mac) if _text(form, "undo") == "1" else services.trust(mac)
    return RedirectResponse(f"/devices/{device.mac}", status_code=303)


@router.get("/devices/{mac}/pending")
def pending(request: Request, mac: str) -> Response:
    """The MUD URL the device announced, beside the profile it has: what would change."""
    session = _owner(request)
    services = state(request).services
    device = services.device(mac)
    if not device.pending_mud_url:
        return RedirectResponse(f"/devices/{device.mac}", status_code=303)
    current = services.mud_for(device)
    now = describe_policy(current) if current else {"from-device": [], "to-device": []}
    preview = services.preview(device.pending_mud_url)
    new = describe_policy(preview.mud) if preview.mud else None
    changes = None
    if new is not None:
        changes = {d: {"added": [x for x in new[d] if x not in now[d]],
                       "removed": [x for x in now[d] if x not in new[d]]} for d in new}
    return _render(request, "pending.html", {"device": device, "preview": preview,
                                             "changes": changes, "current": current},
                   session=session)


@router.post("/devices/{mac}/forget")
async def forget(request: Request, mac: str) -> Response:
    """End of use: forget (or transfer) the device, then show the reset steps."""
    session = _owner(request)
    form = await _form(request, session)
    transfer = _text(form, "transfer") == "1"
    steps = state(request).services.forget(mac, transfer=transfer)
    return _render(request, "forgotten.html", {"steps": steps, "transfer": transfer},
                   session=session)


@router.get("/devices/{mac}/report")
def device_report(request: Request, mac: str) -> Response:
    """The device report for a known device."""
    session = _owner(request)
    services = state(request).services
    device = services.device(mac)
    mud = services.mud_for(device)
    report = services.device_report(device, mud) if mud else None
    return _render(request, "report.html", {"device": device, "report": report,
                                            "preview": None, **_guidance(request)},
                   session=session)


# -- settings ---------------------------------------------------------------------------

@router.get("/settings")
def settings_page(request: Request) -> Response:
    """The home's settings: default for devices without a profile, signed profiles
    only, the WiFi name, the owner's password, the language."""
    session = _owner(request)
    saved = request.query_params.get("saved") == "1"
    return _settings_render(request, session, "settings.saved" if saved else None)


def _settings_render(request: Request, session: Session, message: str | None, *,
                     error: str | None = None, status: int = 200,
                     fields: dict[str, Any] | None = None) -> Response:
    services = state(request).services
    return _render(request, "settings.html", {
        "settings": services.devices.store.get_settings(), "ssid": services.wifi_name(),
        "zone": services.zone(), "system_zone": local_zone(),
        "zones": sorted(zoneinfo.available_timezones()), "message": message, "error": error,
        "fields": fields or {}}, status=status,
        session=session)


@router.post("/settings")
async def save_settings(request: Request) -> Response:
    """Save the home default and the signed-only choice (and the language cookie)."""
    session = _owner(request)
    form = await _form(request, session)
    home_default = _choice(_text(form, "home_default"), {"internet": "internet", "lan": "lan"},
                           "bad_setting")
    days_text = _text(form, "learning_days", 8)  # absent: unchanged
    if days_text and (not days_text.isdigit() or not 0 <= int(days_text) <= 365):
        raise PortalHTTPError("bad_setting", "learning days are 0 (off) to 365")
    zone_text = _text(form, "time_zone", 64)
    try:
        state(request).services.save_settings(
            home_default=home_default, signed_only=_text(form, "signed_only") == "1",
            learning_days=float(days_text) if days_text else None,
            lock_automatically=_text(form, "lock_automatically") == "1",
            time_zone=(zone_text or "system") if "time_zone" in form else None)
    except ValueError:  # nothing saved: the page says why
        return _settings_render(request, session, None, error="bad_time_zone", status=400,
                                fields={"zone": zone_text})
    lang = _choice(_text(form, "lang") or language(request), {"en": "en", "fr": "fr"},
                   "bad_setting")
    response = RedirectResponse(f"/settings?saved=1&lang={lang}", status_code=303)
    response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True,
                        samesite="strict", secure=secure(request))
    return response


@router.post("/settings/password")
async def change_password(request: Request) -> Response:
    """Change the owner's password: the current one is required (login rate limits
    apply to it); every other session is closed."""
    session = _owner(request)
    form = await _form(request, session)
    portal, client, now = state(request), client_key(request), now_mono(request)
    wait = portal.limiter.retry_after(client, now)
    if wait > 0:
        return _settings_render(request, session, None, error="rate_limited", status=429,
                                fields={"seconds": int(wait) + 1})
    new = _text(form, "new_password", 1024)
    if new != _text(form, "new_password_again", 1024):
        return _settings_render(request, session, None, error="password_mismatch", status=400)
    try:
        portal.owner.change_password(_text(form, "current_password", 1024), new)
    except AuthInputError as exc:
        if exc.key == "wrong_password":
            portal.limiter.failed(client, now)
        return _settings_render(request, session, None, error=exc.key, status=400)
    portal.sessions.close_others(request.cookies.get(SESSION_COOKIE))
    return _settings_render(request, session, "settings.password.changed")


# -- alerts -----------------------------------------------------------------------------

@router.get("/alerts")
def alerts(request: Request) -> Response:
    """The open alerts (one per device and kind, with its decisions, the safe one first),
    then the decided ones."""
    session = _owner(request)
    words = functools.partial(translate, language(request))
    incidents = [dataclasses.replace(i, reasons=tuple(
        event_reason_text(i.reason_keys.get(r) or {"reason": r}, words) for r in i.reasons))
        for i in state(request).services.incidents()]
    current = open_incidents(incidents)
    return _render(request, "alerts.html", {
        "alerts": current, "open_alerts": len(current),
        "history": [i for i in incidents if not i.open][:MAX_HISTORY]}, session=session)


@router.post("/alerts/dismiss")
async def dismiss_alert(request: Request) -> Response:
    """The owner saw an alert that needs no decision: it leaves the open list."""
    form = await _form(request, _owner(request))
    kind = _choice(_text(form, "kind"), {k.value: k for k in AlertKind}, "bad_alert")
    state(request).services.dismiss_alert(_text(form, "mac", 64), kind)
    return RedirectResponse("/alerts", status_code=303)


# -- onboarding by label ----------------------------------------------------------------

@router.get("/onboard")
def onboard_form(request: Request) -> Response:
    """Upload or photograph the label, or type the MUD URL."""
    session = _owner(request)
    return _render(request, "onboard.html", {"error": None, "fields": {}, "mud_url": "",
                                             "mac": ""}, session=session)


@router.post("/onboard/check")
async def onboard_check(request: Request) -> Response:
    """Read the label (or the typed URL), fetch and check the MUD file, and show it."""
    session = _owner(request)
    form = await _form(request, session)
    url, mac = _text(form, "mud_url"), _text(form, "mac", 64)
    maker = model = None
    upload = form.get("label")
    try:
        if isinstance(upload, UploadFile) and upload.filename:
            data = await upload.read(state(request).settings.max_upload_bytes + 1)
            if len(data) > state(request).settings.max_upload_bytes:
                raise QrError("image_too_large", "the picture is too large")
            from mudguard.labels import read_label  # Pillow, zxing-cpp: on use (#19)

            record = read_label(data)
            url, mac = record.mud_url, record.mac or mac
            maker, model = record.company, record.model or record.product
        if not url:
            raise PortalHTTPError("need_label_or_url")
        if mac:
            mac = device_mac(mac)
        preview = state(request).services.preview(url)
    except (QrError, PortalHTTPError, MacError, MudguardError) as exc:
        return _render(request, "onboard.html", {
            "error": error_key(exc), "fields": getattr(exc, "fields", {}) or {},
            "mud_url": url, "mac": mac}, status=400, session=session)
    services = state(request).services
    return _render(request, "preview.html", {
        "preview": preview, "mac": mac, "maker": maker, "model": model,
        "policy": describe_policy(preview.mud) if preview.mud else None,
        "allowance": describe_allowance(
            services.profile_policy(preview.mud, mac or None),
            functools.partial(translate, language(request)),
            services.controllers) if preview.mud else None,
        "report": _preview_report(preview), **_guidance(request)}, session=session)


@router.post("/onboard/accept")
async def onboard_accept(request: Request) -> Response:
    """The owner accepted: record and enforce the device, issue its WiFi key."""
    session = _owner(request)
    form = await _form(request, session)
    mac = _text(form, "mac", 64)
    if not mac:
        raise PortalHTTPError("need_mac")
    done = state(request).services.onboard(
        url=_text(form, "mud_url"), mac=mac, name=_text(form, "name", 256) or None,
        manufacturer=_text(form, "maker", 256) or None, model=_text(form, "model", 256) or None)
    wifi_qr = None
    if done.credentials is not None:
        from mudguard.labels import qr_png  # segno and Pillow: on first use (#19)

        png = qr_png(wifi_qr_payload(done.credentials), scale=6)
        wifi_qr = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return _render(request, "onboarded.html", {"done": done, "wifi_qr": wifi_qr},
                   session=session)


@router.post("/onboard/decline")
async def onboard_decline(request: Request) -> Response:
    """Declined: nothing is granted or stored."""
    session = _owner(request)
    await _form(request, session)
    return _render(request, "onboard.html", {"error": None, "fields": {}, "mud_url": "",
                                             "mac": "", "declined": True}, session=session)


# -- device report before purchase -------------------------------------------------------

@router.get("/report")
def report(request: Request, mud_url: str = "") -> Response:
    """The device report for a MUD URL (before buying), with the guidance matrix."""
    session = _owner(request)
    preview = state(request).services.preview(mud_url[:2048]) if mud_url else None
    return _render(request, "report.html", {
        "device": None, "preview": preview, "mud_url": mud_url[:2048], "label_error": None,
        "models": state(request).services.known_models(),
        "report": _preview_report(preview) if preview else None, **_guidance(request)},
        session=session)


@router.post("/report/label")
async def report_from_label(request: Request) -> Response:
    """Before buying: a photo of the box's QR label (RFC 9238) gives the MUD URL, so the
    owner types nothing; then the report, as for a typed URL."""
    session = _owner(request)
    form = await _form(request, session)
    upload = form.get("label")
    limit = state(request).settings.max_upload_bytes
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise PortalHTTPError("need_label_or_url")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise QrError("image_too_large", "the picture is too large")
        from mudguard.labels import read_label  # Pillow, zxing-cpp: on first use (#19)

        record = read_label(data)
        if not record.mud_url:
            raise PortalHTTPError("need_label_or_url")
    except (QrError, PortalHTTPError) as exc:
        return _render(request, "report.html", {
            "device": None, "preview": None, "mud_url": "", "report": None,
            "models": state(request).services.known_models(),
            "label_error": error_key(exc), **_guidance(request)}, status=400, session=session)
    return RedirectResponse(f"/report?{urlencode({'mud_url': record.mud_url})}",
                            status_code=303)


def _preview_report(preview: MudPreview) -> Any:
    if preview.mud is None:
        return None
    return build_report(preview.mud, preview.signature, preview.signer)


def _guidance(request: Request) -> dict[str, Any]:
    return {"guidance": load_guidance(language(request)), "aspects": ASPECTS,
            "moments": MOMENTS}


def _choice(value: str, options: dict[str, Any], key: str) -> Any:
    if value not in options:
        raise PortalHTTPError(key, f"{value[:20]!r} is not one of {', '.join(options)}")
    return options[value]


def _back(form: FormData, default: str) -> str:
    """Where to go after a decision: the alerts page if it came from there."""
    return "/alerts" if _text(form, "from") == "alerts" else default

