"""The device database (SQLite, WAL): devices, grants, events, cached MUD files, settings.

``Store(path)`` opens and migrates it; its methods return the dataclasses of
``mudguard.devices`` (re-exported here for convenience).
"""

from mudguard.devices._model import (
    CachedMud,
    Device,
    DeviceEvent,
    EventKind,
    GrantRecord,
    HomeDefault,
    MudSource,
    Settings,
    SignatureStatus,
)
from mudguard.store._schema import SCHEMA_VERSION
from mudguard.store.sqlite import DEFAULT_DB, Store, StoreError

__all__ = [
    "DEFAULT_DB",
    "SCHEMA_VERSION",
    "CachedMud",
    "Device",
    "DeviceEvent",
    "EventKind",
    "GrantRecord",
    "HomeDefault",
    "MudSource",
    "Settings",
    "SignatureStatus",
    "Store",
    "StoreError",
]
