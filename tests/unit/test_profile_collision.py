"""Policy as data keys rules by 32-bit packet marks (a profile id, a device's log mark):
two different profiles, or two devices, on one mark are refused, never merged."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from mudguard.policy import DeviceFacts, HomeContext, LifecycleState, decide
from mudguard.policy._data import (
    DeviceElements,
    ProfileCollision,
    device_elements,
    device_mark,
    profile_collision,
    without_collisions,
)

CTX = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",),
                  lan_interface="mgD5lan")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
# Two MACs whose device ids start with the same 32 bits (found by search, 125,104 MACs).
SAME_MARK = ("02:00:00:00:4a:28", "02:00:00:01:e8:b0")


def record(mac: str, address: str, home_default: str = "internet") -> DeviceElements:
    facts = DeviceFacts(mac=mac, ipv4=(address,), state=LifecycleState.DEFAULT)
    policy = decide(facts, None, (), CTX, home_default=home_default,
                    now=NOW)
    return device_elements(policy, CTX)


def test_devices_with_equal_rules_share_a_profile_without_a_collision() -> None:
    one, two = record("02:00:5e:00:53:01", "192.0.2.10"), record("02:00:5e:00:53:02",
                                                                 "192.0.2.11")
    assert one.profile and one.profile == two.profile
    assert one.profile_digest == two.profile_digest
    assert without_collisions([one, two]) == ([one, two], [])


def test_a_different_profile_on_the_same_mark_is_refused() -> None:
    internet = record("02:00:5e:00:53:01", "192.0.2.10")
    lan = record("02:00:5e:00:53:02", "192.0.2.11", home_default="lan")
    assert lan.profile_digest != internet.profile_digest
    # A real 32-bit collision of two profiles takes ~2^16 distinct profiles to find:
    # the LAN-only profile is given the Internet profile's id, as a collision would.
    clash = replace(lan, profile=internet.profile)
    why = profile_collision(clash, {internet.profile: internet})
    assert why is not None and "02:00:5e:00:53:02" in why and "02:00:5e:00:53:01" in why
    kept, errors = without_collisions([internet, clash])
    assert kept == [internet] and len(errors) == 1  # the LAN-only device is not merged
    assert issubclass(ProfileCollision, ValueError)


def test_two_devices_on_one_log_mark_are_refused() -> None:
    first, second = SAME_MARK
    assert device_mark(first) == device_mark(second)
    one, two = record(first, "192.0.2.10"), record(second, "192.0.2.11")
    kept, errors = without_collisions([one, two])
    assert kept == [one] and len(errors) == 1 and second in errors[0]
    assert profile_collision(one, {}, {device_mark(first): first}) is None  # itself
