"""The fail-closed property with real packets: seeded mutants of corpus files installed in
a virtual home's gateway, probed with real TCP connects and UDP exchanges in both
directions; every probe the kernel lets through, the literal oracle
(``tests/mud_oracle.py``) must allow. The interpreted run (``tests/fail_closed.py``)
covers far more flows; this one checks the real kernel on a sample.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudguard.mud import parse_mud
from mudguard.vhome import GW4, GW6, LAN4, LAN6, probe
from tests.fail_closed import corpus_documents, mutate
from tests.mud_oracle import FROM, TO, Home, OFlow, allows
from tests.netns.test_enforce import CLOUD4, CLOUD6, MFG4, OTHER4, OTHER6, Gateway, _gateway

pytestmark = pytest.mark.root

MUTANTS = 6
TCP_OUT = (80, 443, 800, 8080)
UDP_OUT = (123, 5683)


@pytest.fixture
def gw() -> Iterator[Gateway]:
    yield from _gateway(f"mgeS{os.getpid() % 1000}", 1)


def _udp_from(address: str, port: int, source_port: int) -> bool:
    return probe.udp_exchange(address, port, 0.5, source_port=source_port)


def test_real_kernel_never_passes_what_a_mutant_does_not_name(gw: Gateway, corpus: Path) -> None:
    h, d0 = gw.home, gw.d[0]
    docs = dict(corpus_documents(corpus))
    rng = random.Random(8520)
    names = sorted(n for n in docs if "cloud" in n or "Mud" in n)
    checked = passed = 0
    problems: list[str] = []
    tried = 0
    while tried < MUTANTS:
        doc = mutate(docs[rng.choice(names)], rng, rng.randint(1, 3))
        result = parse_mud(json.dumps(doc))
        if result.mud is None:
            continue
        tried += 1
        mud = result.mud
        policy = gw.apply(d0, mud)
        for name in policy.dns_names():  # the device resolved every name to the cloud host
            gw.fill(name, d0, CLOUD4, CLOUD6)
        home = Home(device_mac=d0.mac, device_url=mud.mud_url, lan=(str(LAN4), str(LAN6)),
                    gateway=(GW4, GW6), controllers={}, my_controllers=(), devices={},
                    names={n: frozenset({CLOUD4, CLOUD6}) for n in mud.dns_names()})
        port = 41000 + tried * 10
        probes: list[tuple[OFlow, bool]] = []
        for host in (CLOUD4, CLOUD6, MFG4, OTHER6):
            family = 6 if ":" in host else 4
            me = d0.ipv6 if family == 6 else d0.ipv4
            for dport in TCP_OUT:
                port += 1
                ok = h.tcp(d0.ns, host, dport, 0.5, source_port=port)
                probes.append((OFlow(direction=FROM, family=family, src=me, dst=host,
                                     protocol=6, sport=port, dport=dport), ok))
            for dport in UDP_OUT:
                port += 1
                ok = h.call(d0.ns, _udp_from, host, dport, port)
                probes.append((OFlow(direction=FROM, family=family, src=me, dst=host,
                                     protocol=17, sport=port, dport=dport), ok))
        for host in (CLOUD4, OTHER4):
            port += 1
            ok = h.tcp(h.inet_ns, d0.ipv4, 80, 0.5, source=host, source_port=port)
            probes.append((OFlow(direction=TO, family=4, src=host, dst=d0.ipv4, protocol=6,
                                 sport=port, dport=80, initiator=TO), ok))
        for flow, ok in probes:
            checked += 1
            passed += ok
            if ok and not allows(doc, flow, home):
                problems.append(f"{mud.mud_url}: {flow}")
    assert not problems, "\n".join(problems[:10])
    assert checked == MUTANTS * 26 and passed >= 5, (checked, passed)
