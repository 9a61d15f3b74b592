"""``mudguard run`` tells the owner when a device resolves with another DNS server
(RFC 9726): one ``dns-elsewhere`` event per server with its explanation, stored in the
device's history, and no quarantine (real daemon, dnsmasq, nftables, NFLOG)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mudguard.devices import EventKind
from mudguard.store import Store
from tests.e2e.test_daemon import daemon_home
from tests.e2e.test_daemon_wiring import _profiled_bulb

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nftables)"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None,
                       reason="needs dnsmasq and nftables"),
]

PUBLIC_RESOLVER = "198.51.100.99"  # a "public resolver" in the fake Internet (no answer)
DOT_RESOLVER = "198.51.100.98"


@pytest.fixture()
def home(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    with daemon_home(tmp_path, "mgiq") as found:
        yield found


def _ask_elsewhere(resolver: str, dot: str) -> None:
    """Inside the device: three plain DNS queries to ``resolver``, two DoT connects."""
    import socket

    import dns.exception
    import dns.message
    import dns.query

    for _ in range(3):
        with contextlib.suppress(dns.exception.Timeout):  # dropped: no answer comes
            dns.query.udp(dns.message.make_query("example.com", "A"), resolver, timeout=0.3)
    for _ in range(2):
        s = socket.socket()
        s.settimeout(0.3)
        with contextlib.suppress(OSError):
            s.connect((dot, 853))
        s.close()


def test_the_daemon_tells_a_device_resolving_elsewhere_once_per_server(
        home: tuple[Any, Path]) -> None:
    vhome, config = home
    with _profiled_bulb(vhome, config) as (daemon, bulb):
        vhome.call(bulb.ns, _ask_elsewhere, PUBLIC_RESOLVER, DOT_RESOLVER, timeout=20)
        do53 = daemon.wait_for({"event": "dns-elsewhere", "mac": bulb.mac,
                                "server": PUBLIC_RESOLVER}, timeout=10)
        dot = daemon.wait_for({"event": "dns-elsewhere", "mac": bulb.mac,
                               "server": DOT_RESOLVER}, timeout=10)
        assert do53["transport"] == "do53" and "RFC 9726" in do53["message"]
        assert dot["transport"] == "dot" and "DNS over TLS" in dot["message"]
        vhome.call(bulb.ns, _ask_elsewhere, PUBLIC_RESOLVER, DOT_RESOLVER, timeout=20)
        daemon.wait_for({"event": "drops", "mac": bulb.mac}, timeout=10)
        time.sleep(1.5)  # the second round's drops are read by now
        with pytest.raises(AssertionError):  # nothing more to tell, and no quarantine
            daemon.wait_for({"event": "alert", "mac": bulb.mac}, timeout=1)
        told = [e for e in daemon.events if e.get("event") == "dns-elsewhere"]
        assert len(told) == 2, told
        with Store(config.parent / "state" / "mudguard.db") as store:
            stored = [e.details for e in store.list_events(bulb.mac)
                      if e.kind is EventKind.DNS_ELSEWHERE]
        assert {(d["transport"], d["server"]) for d in stored} == {
            ("do53", PUBLIC_RESOLVER), ("dot", DOT_RESOLVER)}
        assert all(d["message_key"].startswith("dns_elsewhere.") for d in stored)
