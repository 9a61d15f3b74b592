"""The owner's portal and REST API (FastAPI + Jinja2).

``create_app(services, settings)`` builds the app; ``serve(app, host, port)`` runs it
on exactly that address. ``PortalServices`` wraps the shared ``DeviceService`` and a
``KeyIssuer``; ``PortalSettings`` says where the owner account lives.
"""

from mudguard.portal._app import CSP, SECURITY_HEADERS, create_app, serve
from mudguard.portal._auth import AuthInputError, OwnerAccount, check_password
from mudguard.portal._services import (
    Alert,
    FlowBucket,
    IssuedKey,
    KeyIssuer,
    MudPreview,
    Onboarded,
    PortalError,
    PortalServices,
    Report,
    build_report,
)
from mudguard.portal._web import PortalSettings

__all__ = [
    "CSP",
    "SECURITY_HEADERS",
    "Alert",
    "AuthInputError",
    "FlowBucket",
    "IssuedKey",
    "KeyIssuer",
    "MudPreview",
    "Onboarded",
    "OwnerAccount",
    "PortalError",
    "PortalServices",
    "PortalSettings",
    "Report",
    "build_report",
    "check_password",
    "create_app",
    "serve",
]
