"""Issue #15: the owner pauses a device's Internet now or at bedtime; the gateway's real
nftables drops its Internet packets at once (or when the window opens, at the next
upkeep), while the home network still reaches it (real packets between namespaces)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mudguard.devices.service import DeviceService
from mudguard.enforce import Nft
from mudguard.policy import GrantKind
from mudguard.store import Store
from mudguard.vhome import INTERNET_HOSTS, VirtualHome
from tests.netns.rulesets import make_enforcer

pytestmark = pytest.mark.root

CLOUD4, _ = INTERNET_HOSTS["cloud"]
LAN_PORT = 8080


@pytest.fixture
def home() -> Iterator[VirtualHome]:
    with VirtualHome(prefix=f"mgp{os.getpid() % 10000}", devices=2) as h:
        h.serve(h.inet_ns, tcp=[443])
        h.serve(h.nodes[1].ns, tcp=[LAN_PORT])
        yield h


def test_pause_now_and_at_bedtime_drops_internet_and_keeps_the_lan(
        home: VirtualHome, tmp_path: Path) -> None:
    tablet, laptop = home.nodes
    now = [datetime(2026, 12, 2, 12, 0, tzinfo=UTC)]
    enforcer = make_enforcer(Nft.in_namespace(home.gw_ns), home.context(), clock=lambda: now[0])
    enforcer.install_home()
    with Store(tmp_path / "mudguard.db") as store:
        service = DeviceService(store=store, enforcer=enforcer, clock=lambda: now[0])
        for node in home.nodes:
            service.observe(mac=node.mac, ip=node.ipv4)
            service.trust(node.mac)  # everything out, the LAN in: the widest there is

        def internet() -> bool:
            return home.tcp(tablet.ns, CLOUD4, 443)

        def lan() -> bool:
            return home.tcp(tablet.ns, laptop.ipv4, LAN_PORT)

        assert internet() and lan()
        # Pause now (for an hour): enforced by the time the call returns.
        paused = service.grant(tablet.mac, GrantKind.PAUSE, expires=now[0] + timedelta(hours=1))
        assert not internet() and lan()
        assert home.tcp(laptop.ns, CLOUD4, 443)  # only the paused device
        service.revoke_grant(tablet.mac, paused.id)
        assert internet()

        # Bedtime 21:30-07:00: nothing changes at noon; the upkeep closes the Internet
        # when the window opens and opens it again in the morning.
        service.grant(tablet.mac, GrantKind.PAUSE, schedule="21:30-07:00 UTC")
        assert internet()
        assert service.apply_schedules() == (tablet.mac,)  # first look: recorded
        now[0] = datetime(2026, 12, 2, 22, 0, tzinfo=UTC)
        assert service.apply_schedules() == (tablet.mac,)
        assert not internet() and lan()
        assert service.apply_schedules() == ()  # nothing new: no kernel change
        now[0] = datetime(2026, 12, 3, 7, 30, tzinfo=UTC)
        assert service.maintain().expired_grants == 0  # the upkeep applies schedules
        assert internet() and lan()
