"""The DNS guard with the real compiler: corpus MUD files with ``dst-dnsname``, compiled
and applied by the ``Enforcer``, their names resolved through the guard process.

Proves the contract between ``policy`` (sets named by ``dns_set_name``, matched as
``saddr . daddr``) and ``dns`` end to end: the first connection right after the answer
passes on the port the MUD file allows and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from mudguard.enforce import Enforcer, Nft
from mudguard.mud import MudFile
from mudguard.policy import DeviceFacts, LifecycleState
from mudguard.vhome import INTERNET_HOSTS, VirtualHome
from tests.netns.test_dns_guard import Guard, ask, connects, start_dnsmasq

pytestmark = pytest.mark.root

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLOUD4 = INTERNET_HOSTS["cloud"][0]  # www.nist.local
MFG4 = INTERNET_HOSTS["mfg"][0]  # cloud-service.example.com


@pytest.fixture(scope="module")
def enforced() -> Iterator[tuple[VirtualHome, Enforcer]]:
    with VirtualHome(prefix=f"mgdF{os.getpid() % 10000}", devices=2) as vh:
        vh.serve(vh.inet_ns, tcp=[80, 443])
        dnsmasq = start_dnsmasq(vh)
        try:
            enforcer = Enforcer(Nft.in_namespace(vh.gw_ns), vh.context(), clock=lambda: NOW)
            enforcer.install_home()
            yield vh, enforcer
        finally:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=5)


def _apply(vh: VirtualHome, enforcer: Enforcer, index: int, mud: MudFile) -> list[str]:
    node = vh.nodes[index]
    facts = DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,), mud_url=mud.mud_url,
                        state=LifecycleState.PROFILED)
    return sorted(enforcer.apply_device(facts, mud, ()).dns_names())


def test_compiled_mud_names_open_on_the_first_packet_and_only_their_port(
        enforced: tuple[VirtualHome, Enforcer],
        corpus_mud: Callable[[str], MudFile]) -> None:
    vh, enforcer = enforced
    nist = _apply(vh, enforcer, 0, corpus_mud("rfc/nist-mudfile-dns-test.json"))
    cloud = _apply(vh, enforcer, 1, corpus_mud("rfc/mudmaker-cloud-service.json"))
    assert (nist, cloud) == (["www.nist.local"], ["cloud-service.example.com"])
    assert not connects(vh, 0, CLOUD4, 0.3)  # nothing resolved yet
    with Guard(vh, [(0, nist), (1, cloud)], own_table=False):
        ((_, addrs, ok),) = vh.call(vh.nodes[0].ns, _resolve_port, "www.nist.local", 80)
        assert addrs == [CLOUD4] and ok  # TCP 80 is what the MUD file allows
        assert not vh.tcp(vh.nodes[0].ns, CLOUD4, 443, 0.3)  # another port: dropped
        # d0's file does not name cloud-service.example.com: it resolves, grants nothing.
        ((_, addrs, ok),) = vh.call(vh.nodes[0].ns, _resolve_port,
                                    "cloud-service.example.com", 80)
        assert addrs == [MFG4] and not ok
        assert not connects(vh, 1, MFG4, 0.3)  # d1 has not asked yet
        ((_, _, ok4),) = ask(vh, 1, ["cloud-service.example.com"], "A")
        ((_, _, ok6),) = ask(vh, 1, ["cloud-service.example.com"], "AAAA")
        assert ok4 and ok6
        assert not connects(vh, 1, CLOUD4, 0.3)  # d1's file does not name www.nist.local


def _resolve_port(name: str, port: int) -> list[tuple[str, list[str], bool]]:
    from tests.netns.test_dns_guard import resolve_and_connect

    return resolve_and_connect([name], "A", port, 0.5)
