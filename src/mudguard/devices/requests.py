"""Owner requests as data: one JSON object in, one JSON-ready dict out.

The CLI sends these to the running daemon's control socket (the daemon owns the
kernel rules, so an owner action is enforced at once); the daemon answers with
``handle_request(service, request)``. Every field is checked here: a malformed
request raises ``RequestError`` (key ``bad_request``), never reaches SQL or nft as
text, and changes nothing. Operations (all but ``devices``/``events``/``settings``
take ``mac``)::

    devices | device | events [limit] | settings [home_default] [allow_unsigned]
    add [mud_url] [source=manual|qr|cert] [manufacturer] [model] [name] | rename [name]
    grant kind=lan|internet|service|deny|pause [host] [port] [protocol] [expires ISO]
          [schedule "HH:MM-HH:MM [ZONE]" (the owner's zone when none)]
    revoke grant_id | approve-url | release | quarantine [reason] | forget [transfer]
    quarantine-exception ace action=add|remove
    trust | untrust | apply-profile mud (the learned MUD file's JSON text)
    learn action=start|end-now|lock|keep-default|show (learn, then lock)
    settings also takes [learning_days] [lock_automatically]
             [time_zone (an IANA name; "system": the gateway's own)]
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from mudguard.devices._model import HomeDefault, MudSource, Settings
from mudguard.devices.service import DeviceService
from mudguard.devices.wiring import check_time_zone, owner_zone, with_zone
from mudguard.errors import RemoteInputError
from mudguard.mud import MAX_MUD_BYTES
from mudguard.policy import GrantKind

MAX_TEXT = 512
MAX_INT = 2 ** 62


class RequestError(RemoteInputError):
    """A request that is malformed or names no known operation."""

    key = "bad_request"


def _text(request: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = request.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise RequestError(f"'{key}' must be a non-empty string")
    if not value.isprintable():
        # Control characters would forge log lines; lone surrogates cannot be stored.
        raise RequestError(f"'{key}' must be printable text")
    return value


def _int(request: dict[str, Any], key: str) -> int | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"'{key}' must be an integer")
    if not -MAX_INT <= value <= MAX_INT:
        raise RequestError(f"'{key}' is out of range")  # SQLite integers are 64-bit
    return value


def _bool(request: dict[str, Any], key: str) -> bool | None:
    value = request.get(key)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"'{key}' must be true or false")
    return value


def _when(request: dict[str, Any], key: str) -> datetime | None:
    text = _text(request, key, required=False)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise RequestError(f"'{key}' must be an ISO date/time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _settings(service: DeviceService, request: dict[str, Any]) -> dict[str, Any]:
    current = service.store.get_settings()
    default = _text(request, "home_default", required=False)
    unsigned = _bool(request, "allow_unsigned")
    auto_lock = _bool(request, "lock_automatically")
    days = request.get("learning_days")
    zone = _text(request, "time_zone", required=False)
    time_zone = current.time_zone
    if zone is not None:
        try:
            time_zone = None if zone.strip() == "system" else check_time_zone(zone)
        except ValueError as exc:
            raise RequestError(f"'time_zone': {exc}") from None
    if days is not None and (isinstance(days, bool) or not isinstance(days, int | float)
                             or not 0 <= days <= 365):
        raise RequestError("'learning_days' must be a number of days from 0 (off) to 365")
    if any(v is not None for v in (default, unsigned, auto_lock, days, zone)):
        try:
            home_default = HomeDefault(default) if default else current.home_default
        except ValueError:
            raise RequestError("'home_default' must be internet or lan") from None
        current = replace(current, home_default=home_default,
                          allow_unsigned=current.allow_unsigned if unsigned is None
                          else unsigned,
                          lock_automatically=current.lock_automatically if auto_lock is None
                          else auto_lock,
                          learning_days=current.learning_days if days is None
                          else float(days), time_zone=time_zone)
        before = owner_zone(service.store.get_settings())
        service.store.save_settings(current)
        service.rezone_schedules(before, owner_zone(current))
    return {"settings": _settings_dict(current)}


def _settings_dict(settings: Settings) -> dict[str, Any]:
    return {"home_default": settings.home_default.value,
            "allow_unsigned": settings.allow_unsigned,
            "learning_days": settings.learning_days,
            "lock_automatically": settings.lock_automatically,
            "time_zone": settings.time_zone, "zone": owner_zone(settings)}


def _learn(service: DeviceService, mac: str, request: dict[str, Any]) -> dict[str, Any]:
    action = request.get("action")
    actions = {"start": service.start_learning, "end-now": service.end_learning,
               "lock": service.lock_learned, "keep-default": service.keep_default}
    if action == "show":
        device = service.device(mac)
    elif isinstance(action, str) and action in actions:
        device = actions[action](mac)
    else:
        raise RequestError("'action' must be start, end-now, lock, keep-default or show")
    record = service.store.get_learning(device.mac)
    proposal = record.proposal if record is not None else None
    return {"device": device.as_dict(), "learning": None if record is None else {
        "started": record.started.isoformat(), "until": record.until.isoformat(),
        "flows": len(record.flows), "dropped": record.dropped,
        "proposal": proposal.decode() if proposal is not None else None}}


def handle_request(service: DeviceService, request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one owner request with ``service`` and return its JSON-ready result.

    Raises ``RequestError`` for a malformed request and the services' own errors
    (``DeviceNotFound``, ``GrantError``, …) for refused actions.
    """
    op = request.get("op")
    if op == "devices":
        return {"devices": [d.as_dict() | {"grants": [g.as_dict() for g in
                                                      service.store.list_grants(d.mac)]}
                            for d in service.store.list_devices()]}
    if op == "events":
        limit = _int(request, "limit") or 200
        return {"events": [e.as_dict() for e in
                           service.store.list_events(limit=max(1, limit), newest=True)]}
    if op == "settings":
        return _settings(service, request)
    mac = _text(request, "mac")
    assert mac is not None
    if op == "add":
        try:
            source = MudSource(request.get("source", "manual"))
        except ValueError:
            raise RequestError("'source' must be manual, qr or cert") from None
        if source not in (MudSource.MANUAL, MudSource.QR, MudSource.CERT):
            raise RequestError("'source' must be manual, qr or cert")
        device = service.add_device(
            mac=mac, mud_url=_text(request, "mud_url", required=False), source=source,
            manufacturer=_text(request, "manufacturer", required=False),
            model=_text(request, "model", required=False),
            name=_text(request, "name", required=False))
        return {"device": device.as_dict()}
    if op == "rename":
        name = request.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_TEXT):
            raise RequestError("'name' must be text")
        return {"device": service.rename(mac, name).as_dict()}
    if op == "device":
        device = service.device(mac)
        identity = service.identity_record(device.mac)
        return {"device": device.as_dict() | {
            "identification": None if identity is None else identity.to_json(),
            "grants": [g.as_dict() for g in service.store.list_grants(device.mac)],
            "events": [e.as_dict() for e in service.store.list_events(device.mac)]}}
    if op == "grant":
        try:
            kind = GrantKind(str(request.get("kind")))
        except ValueError:
            raise RequestError("'kind' must be lan, internet, service, deny or pause") \
                from None
        record = service.grant(mac, kind, host=_text(request, "host", required=False),
                               port=_int(request, "port"), protocol=_int(request, "protocol"),
                               expires=_when(request, "expires"),
                               schedule=with_zone(_text(request, "schedule", required=False),
                                                  owner_zone(service.store.get_settings())))
        return {"grant": record.as_dict()}
    if op == "revoke":
        grant_id = _int(request, "grant_id")
        if grant_id is None:
            raise RequestError("'grant_id' is required")
        service.revoke_grant(mac, grant_id)
        return {"revoked": grant_id}
    if op == "approve-url":
        return {"device": service.approve_url(mac).as_dict()}
    if op == "apply-profile":
        mud = request.get("mud")
        if not isinstance(mud, str) or not mud or len(mud) > MAX_MUD_BYTES:
            raise RequestError(f"'mud' must be the MUD file's JSON text "
                               f"(at most {MAX_MUD_BYTES} characters)")
        try:
            data = mud.encode()
        except UnicodeEncodeError:
            raise RequestError("'mud' must be valid text") from None
        return {"device": service.apply_learned(mac, data).as_dict()}
    if op == "learn":
        return _learn(service, mac, request)
    if op == "trust":
        return {"device": service.trust(mac).as_dict()}
    if op == "untrust":
        return {"device": service.untrust(mac).as_dict()}
    if op == "release":
        return {"device": service.release(mac).as_dict()}
    if op == "quarantine":
        reason = _text(request, "reason", required=False) or "quarantined by the owner"
        return {"device": service.quarantine(mac, reason).as_dict()}
    if op == "quarantine-exception":
        action = request.get("action")
        if action not in ("add", "remove"):
            raise RequestError("'action' must be add or remove")
        ace = _text(request, "ace")
        assert ace is not None
        if len(ace) > 64 or not ace.isprintable():
            raise RequestError("'ace' must be an ACE name (1-64 printable characters)")
        return {"device": service.quarantine_exception(mac, ace, add=action == "add")
                .as_dict()}
    if op == "forget":
        steps = service.forget(mac, transfer=bool(_bool(request, "transfer")))
        return {"forgotten": {"mac": steps.mac, "key_revoked": steps.key_revoked,
                              "steps": list(steps.steps),
                              "documentation": steps.documentation}}
    raise RequestError(f"unknown operation {str(op)[:40]!r}")
