"""What ``systemctl reload`` (SIGHUP) changes in a running gateway: a pure plan.

The daemon re-reads its configuration file; ``plan_reload(running, new)`` says which
changed keys apply at once and which need a restart. Applied at once: the owner's
settings the file pins (``gateway.home_default``, ``mud.allow_unsigned``,
``devices.learning_days``, ``devices.lock_automatically``; each device they concern is
re-enforced) and the periods of the daemon's chores. Everything else (interfaces,
addresses, sockets, children, the rules' shape) is named as needing a restart and keeps
its running value: a reload never closes a socket, never stops DHCP and never touches a
device's rules except to apply a changed setting. A file that does not parse is refused
before this plan is made (the running configuration stays).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mudguard.daemon.config import CONFIG_KEYS, GatewayConfig
from mudguard.devices import HomeDefault, Settings

RELOADABLE_FIELDS: frozenset[str] = frozenset({
    "home_default", "allow_unsigned", "learning_days", "lock_automatically",
    "maintenance_seconds", "report_seconds", "learning_flush_seconds",
})
"""GatewayConfig fields a reload applies without a restart."""

_DOTTED: dict[str, str] = {}
for _key in CONFIG_KEYS:
    _DOTTED.setdefault(_key.field, _key.dotted)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The outcome of comparing the running configuration with the file's."""

    config: GatewayConfig
    """The configuration the daemon runs with afterwards: the file's reloadable values,
    the running values of everything else."""
    applied: tuple[str, ...]
    """Changed keys that apply now (dotted ``section.key`` names)."""
    needs_restart: tuple[str, ...]
    """Changed keys that keep their running value until the daemon restarts."""


def key_name(field_name: str) -> str:
    """The ``section.key`` a GatewayConfig field is set by (the field's name if none)."""
    return _DOTTED.get(field_name, field_name)


def plan_reload(running: GatewayConfig, new: GatewayConfig) -> ReloadPlan:
    """Compare the running configuration with the newly read one (see the module)."""
    applied: dict[str, Any] = {}
    needs_restart: list[str] = []
    for item in dataclasses.fields(GatewayConfig):
        before, after = getattr(running, item.name), getattr(new, item.name)
        if before == after:
            continue
        if item.name in RELOADABLE_FIELDS:
            applied[item.name] = after
        else:
            needs_restart.append(key_name(item.name))
    return ReloadPlan(config=dataclasses.replace(running, **applied),
                      applied=tuple(sorted(key_name(name) for name in applied)),
                      needs_restart=tuple(sorted(set(needs_restart))))


def pinned_settings(settings: Settings, config: GatewayConfig) -> Settings:
    """The owner's settings with what the configuration file pins (at start and at each
    reload): ``mud.allow_unsigned`` always, the others when the file sets them."""
    wanted = dataclasses.replace(settings, allow_unsigned=config.allow_unsigned)
    if config.home_default is not None:
        wanted = dataclasses.replace(wanted, home_default=HomeDefault(config.home_default))
    if config.learning_days is not None:
        wanted = dataclasses.replace(wanted, learning_days=config.learning_days)
    if config.lock_automatically is not None:
        wanted = dataclasses.replace(wanted, lock_automatically=config.lock_automatically)
    return wanted
