"""Request helpers shared by the pages and the API: the portal's state, sessions,
CSRF checks, language, error keys and statuses.

Local rule: every error reaches the owner as a stable key (``bad_mac``) plus
fields; the pages translate the key, the API returns it as JSON.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from mudguard.errors import MudguardError
from mudguard.portal._auth import LoginLimiter, OwnerAccount, Session, SessionStore
from mudguard.portal._i18n import pick_language
from mudguard.portal._services import PortalServices

SESSION_COOKIE = "mg_session"
PRE_COOKIE = "mg_pre"  # double-submit CSRF token for the forms shown before login
LANG_COOKIE = "mg_lang"

# HTTP status per error key; anything else a remote input error raises is a 400.
STATUS = {
    "device_not_found": 404, "not_found": 404, "not_logged_in": 401, "bad_login": 401,
    "bad_csrf": 403, "rate_limited": 429, "owner_exists": 409, "bad_transition": 409,
    "not_quarantined": 409, "not_dismissable": 409, "mac_in_use": 409, "no_fetcher": 503,
    "store_failed": 503, "bug": 500,
    "internal": 500, "error": 500,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PortalSettings:
    """How the portal runs. ``state_dir`` holds the owner account file."""

    state_dir: Path
    secure_cookies: bool | None = None  # None: Secure when the request came over https
    monotonic: Callable[[], float] = field(default=time.monotonic)
    max_upload_bytes: int = 12 * 1024 * 1024
    allowed_hosts: tuple[str, ...] | None = None
    """Host names/addresses the portal answers to (DNS-rebinding defence); None: any."""


@dataclass(slots=True)
class PortalState:
    """Everything the routes share, hung on ``app.state.portal``."""

    services: PortalServices
    settings: PortalSettings
    owner: OwnerAccount
    sessions: SessionStore = field(default_factory=SessionStore)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)


class PortalHTTPError(MudguardError):
    """An error the portal itself raises while handling a request (auth, CSRF, input)."""

    def __init__(self, key: str, reason: str = "", **fields: Any) -> None:
        super().__init__(reason or key)
        self.key = key
        self.reason = reason or key
        self.fields = fields


def state(request: Request) -> PortalState:
    """The portal state of the app serving ``request``."""
    portal: PortalState = request.app.state.portal
    return portal


def now_mono(request: Request) -> float:
    """The monotonic clock sessions and the limiter run on."""
    return state(request).settings.monotonic()


def current_session(request: Request) -> Session | None:
    """The logged-in session of this request, if any."""
    return state(request).sessions.get(request.cookies.get(SESSION_COOKIE), now_mono(request))


def language(request: Request) -> str:
    """The request's language (query, cookie, Accept-Language)."""
    return pick_language(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                         request.headers.get("accept-language"))


def secure(request: Request) -> bool:
    """Whether cookies get the Secure flag (configured, or the request used TLS)."""
    configured = state(request).settings.secure_cookies
    return configured if configured is not None else request.url.scheme == "https"


def client_key(request: Request) -> str:
    """The address the login limiter counts failures against."""
    return request.client.host if request.client else "unknown"


def error_key(exc: BaseException) -> str:
    """The stable key of an error."""
    return str(getattr(exc, "key", "internal"))


def error_status(exc: BaseException) -> int:
    """The HTTP status for an error (by key)."""
    return STATUS.get(error_key(exc), 400)


def error_fields(exc: BaseException) -> dict[str, Any]:
    """The structured fields an error carries (JSON-safe)."""
    fields = getattr(exc, "fields", None) or {}
    return {str(k): v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
            for k, v in fields.items()}


def new_token() -> str:
    """A fresh random token."""
    return secrets.token_urlsafe(32)
