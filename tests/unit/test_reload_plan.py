"""``plan_reload``: which changed keys a SIGHUP applies and which need a restart."""

from __future__ import annotations

import dataclasses

from mudguard.daemon import parse_config
from mudguard.daemon.config import CONFIG_KEYS
from mudguard.daemon.reload import RELOADABLE_FIELDS, plan_reload

BASE = """
[gateway]
lan_interface = "br-lan"
lan_prefixes = ["192.0.2.0/24"]
addresses = ["192.0.2.1"]
home_default = "lan"
"""


def test_a_changed_reloadable_key_applies_and_a_restart_key_keeps_its_running_value() -> None:
    running = parse_config(BASE)
    new = parse_config(BASE.replace('"lan"\n', '"internet"\nmaintenance_seconds = 30\n')
                       .replace("br-lan", "br-other") + "[portal]\nport = 8443\n")
    plan = plan_reload(running, new)
    assert plan.applied == ("gateway.home_default", "gateway.maintenance_seconds")
    assert plan.needs_restart == ("gateway.lan_interface", "portal.port")
    assert plan.config.home_default == "internet"
    assert plan.config.maintenance_seconds == 30
    assert plan.config.lan_interface == "br-lan"  # until a restart
    assert plan.config.portal_port == running.portal_port


def test_the_same_file_changes_nothing() -> None:
    running = parse_config(BASE)
    plan = plan_reload(running, parse_config(BASE))
    assert (plan.applied, plan.needs_restart, plan.config) == ((), (), running)


def test_every_reloadable_field_is_a_config_key() -> None:
    fields = {f.name for f in dataclasses.fields(type(parse_config(BASE)))}
    assert fields >= RELOADABLE_FIELDS
    assert {key.field for key in CONFIG_KEYS} >= RELOADABLE_FIELDS
