"""Device lifecycle: the records, the state machine and the services the CLI, the
portal and the daemon share (onboarding decisions, grants, URL changes, forget).
"""

from mudguard.devices._model import (
    CachedMud,
    Device,
    DeviceEvent,
    EventKind,
    GrantRecord,
    HomeDefault,
    MacError,
    MudSource,
    Settings,
    SignatureStatus,
    device_mac,
    normalise_mac,
)

__all__ = [
    "CachedMud",
    "Device",
    "DeviceEvent",
    "EventKind",
    "GrantRecord",
    "HomeDefault",
    "MacError",
    "MudSource",
    "Settings",
    "SignatureStatus",
    "device_mac",
    "normalise_mac",
]
