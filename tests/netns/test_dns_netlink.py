"""NetlinkSetFiller against the real kernel: elements, timeouts, refresh, atomic failure."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mudguard.dns.core import AddSetElements
from mudguard.policy._names import TABLE, dns_set_name
from mudguard.vhome import call_in, run

pytestmark = pytest.mark.root

S4 = dns_set_name("cloud.example.com", 4)
S6 = dns_set_name("cloud.example.com", 6)


@pytest.fixture
def ns() -> Iterator[str]:
    """A bare namespace holding the ``inet mudguard`` table with two DNS sets."""
    name = f"mgdN{os.getpid() % 10000}"
    run(["ip", "netns", "delete", name], check=False)
    run(["ip", "netns", "add", name])
    try:
        fam = {"family": "inet", "table": TABLE}
        batch = {"nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"add": {"table": {"family": "inet", "name": TABLE}}},
            {"add": {"set": {**fam, "name": S4, "type": ["ipv4_addr", "ipv4_addr"],
                             "flags": ["timeout"]}}},
            {"add": {"set": {**fam, "name": S6, "type": ["ipv6_addr", "ipv6_addr"],
                             "flags": ["timeout"]}}},
        ]}
        run(["nft", "-j", "-f", "-"], ns=name, input_text=json.dumps(batch))
        yield name
    finally:
        run(["ip", "netns", "delete", name], check=False)


def _fill(commands: list[AddSetElements]) -> str | None:
    from mudguard.dns.netlink import NetlinkFillError, NetlinkSetFiller

    filler = NetlinkSetFiller()
    try:
        filler.fill(commands)
    except NetlinkFillError as exc:
        return f"{exc.code}:{exc.set_name}"
    finally:
        filler.close()
    return None


def fill(ns: str, *commands: AddSetElements) -> str | None:
    return call_in(ns, _fill, list(commands), timeout=20)


def elements(ns: str, set_name: str) -> dict[tuple[str, ...], dict[str, Any]]:
    out = run(["nft", "-j", "list", "set", "inet", TABLE, set_name], ns=ns).stdout
    found = {}
    for item in json.loads(out)["nftables"]:
        for e in item.get("set", {}).get("elem", []):
            elem = e["elem"]
            found[tuple(elem["val"]["concat"])] = elem
    return found


def test_fill_adds_pairs_with_their_timeout(ns: str) -> None:
    assert fill(ns,
                AddSetElements(1, S4, 4, (("192.0.2.10", "198.51.100.1"),
                                          ("192.0.2.10", "198.51.100.2")), 300, TABLE),
                AddSetElements(1, S6, 6, (("2001:db8:1::10", "2001:db8:ff::1"),), 40,
                               TABLE)) is None
    got4, got6 = elements(ns, S4), elements(ns, S6)
    assert set(got4) == {("192.0.2.10", "198.51.100.1"), ("192.0.2.10", "198.51.100.2")}
    assert all(e["timeout"] == 300 and e["expires"] >= 298 for e in got4.values())
    assert set(got6) == {("2001:db8:1::10", "2001:db8:ff::1")}
    assert got6[("2001:db8:1::10", "2001:db8:ff::1")]["timeout"] == 40


def test_refill_restarts_the_expiry(ns: str) -> None:
    cmd = AddSetElements(1, S4, 4, (("192.0.2.10", "198.51.100.1"),), 10, TABLE)
    assert fill(ns, cmd) is None
    time.sleep(2.2)
    (before,) = elements(ns, S4).values()
    assert before["expires"] <= 8
    assert fill(ns, cmd) is None
    (after,) = elements(ns, S4).values()
    assert after["expires"] >= 9


def test_missing_set_fails_the_whole_batch(ns: str) -> None:
    good = AddSetElements(1, S4, 4, (("192.0.2.10", "198.51.100.1"),), 60, TABLE)
    bad = AddSetElements(1, dns_set_name("absent.example", 4), 4,
                         (("192.0.2.10", "198.51.100.2"),), 60, TABLE)
    assert fill(ns, good, bad) == f"2:{bad.set_name}"  # ENOENT
    assert elements(ns, S4) == {}  # atomic: the good half was rolled back too
    assert fill(ns, good) is None


def test_wrong_family_is_refused_by_the_kernel_or_before(ns: str) -> None:
    with pytest.raises(ValueError, match="mixed families"):
        fill(ns, AddSetElements(1, S4, 4, (("192.0.2.10", "2001:db8:ff::1"),), 60, TABLE))
    # An IPv6 pair into the IPv4 set: the key length is wrong, the kernel says so.
    assert fill(ns, AddSetElements(1, S4, 6, (("2001:db8:1::10", "2001:db8:ff::1"),), 60,
                                   TABLE)) is not None


def test_a_large_answer_goes_in_one_batch(ns: str) -> None:
    pairs = tuple((f"192.0.2.{10 + d}", f"198.51.100.{a}") for d in range(4) for a in range(1, 65))
    assert fill(ns, AddSetElements(1, S4, 4, pairs, 120, TABLE)) is None
    assert len(elements(ns, S4)) == 256
