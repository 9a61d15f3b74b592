"""A device whose log mark (or profile id) another device's already is stays out of the
kernel (``enforce/data.py``): one update refused, a whole home installed without it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mudguard.enforce import Nft
from mudguard.enforce.data import DataEnforcer
from mudguard.policy import DeviceFacts, DevicePolicy, HomeContext, LifecycleState, decide
from mudguard.policy._data import KNOWN_MACS, ProfileCollision
from mudguard.policy._names import TABLE
from mudguard.vhome import _netns
from tests.unit.test_profile_collision import SAME_MARK

pytestmark = pytest.mark.root

NS = "mgD5col"
CTX = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",),
                  lan_interface="mgD5lan")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def nft() -> Iterator[Nft]:
    _netns.delete(NS)
    _netns.add(NS)
    try:
        yield Nft.in_namespace(NS)
    finally:
        _netns.delete(NS)


def policy(mac: str, address: str) -> DevicePolicy:
    return decide(DeviceFacts(mac=mac, ipv4=(address,), state=LifecycleState.DEFAULT),
                  None, (), CTX, now=NOW)


def known(nft: Nft) -> int:
    return len(nft.read_elements(TABLE, [KNOWN_MACS])[KNOWN_MACS])


def test_a_colliding_device_is_refused_and_left_out(nft: Nft) -> None:
    first, second = (policy(SAME_MARK[0], "192.0.2.10"), policy(SAME_MARK[1], "192.0.2.11"))
    data = DataEnforcer(nft, CTX)
    data.install_home([first])
    with pytest.raises(ProfileCollision, match=SAME_MARK[1]):
        data.apply_policy(second)
    assert known(nft) == 1 and set(data.installed) == {SAME_MARK[0]}
    data.install_home([first, second])  # a whole home: installed without it
    assert known(nft) == 1 and set(data.installed) == {SAME_MARK[0]}
    data.reconcile([second, first])  # the earlier one wins, the other is taken out
    assert set(data.installed) == {SAME_MARK[1]}
    assert known(nft) == 1
