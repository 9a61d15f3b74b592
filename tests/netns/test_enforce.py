"""Enforcement proved with real packets: real corpus MUD files compiled to nftables in the
gateway namespace of a virtual home, checked with TCP connects, UDP exchanges and pings in
both directions, over IPv4 and IPv6.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from mudguard.enforce import Enforcer, Nft
from mudguard.mud import MudFile
from mudguard.policy import (
    DeviceFacts,
    DevicePolicy,
    HomeContext,
    LifecycleState,
)
from mudguard.vhome import GW4, GW6, INTERNET_HOSTS, VDevice, VirtualHome, call_in, run
from tests.netns.rulesets import fill_answer, make_enforcer

pytestmark = pytest.mark.root

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLOUD4, CLOUD6 = INTERNET_HOSTS["cloud"]
MFG4, MFG6 = INTERNET_HOSTS["mfg"]
OTHER4, OTHER6 = INTERNET_HOSTS["other"]
PORTAL = 8443


@dataclasses.dataclass
class Gateway:
    """A virtual home with an Enforcer in its gateway namespace."""

    home: VirtualHome
    nft: Nft
    enforcer: Enforcer
    fills: list[tuple[str, str, str, str, int]] = dataclasses.field(default_factory=list)
    """The DNS answers granted (name, MAC, device address, answer, timeout)."""

    @property
    def d(self) -> list[VDevice]:
        return self.home.nodes

    def facts(self, node: VDevice, mud: MudFile | None = None,
              state: LifecycleState = LifecycleState.PROFILED) -> DeviceFacts:
        return DeviceFacts(mac=node.mac, ipv4=(node.ipv4,), ipv6=(node.ipv6,),
                           mud_url=mud.mud_url if mud else None, state=state)

    def apply(self, node: VDevice, mud: MudFile | None = None,
              state: LifecycleState = LifecycleState.PROFILED) -> DevicePolicy:
        return self.apply_facts(self.facts(node, mud, state), mud)

    def apply_facts(self, facts: DeviceFacts, mud: MudFile | None) -> DevicePolicy:
        """Apply, then what the daemon's DNS guard does under policy as data when the
        device's DNS answers went with its old rules: its grants for names it may still
        resolve are added back (``GuardedEnforcer._refill``)."""
        policy: DevicePolicy = self.enforcer.apply_device(facts, mud, ())
        take = getattr(self.enforcer, "take_dns_reset", None)
        if take is not None and take(facts.mac):
            allowed = policy.dns_names()
            for name, mac, local, remote, timeout_s in self.fills:
                if mac == facts.mac and name in allowed:
                    fill_answer(self.enforcer, self.nft, name, mac, local, remote, timeout_s)
        return policy

    def trust(self, node: VDevice) -> None:
        self.apply(node, None, LifecycleState.TRUSTED)

    def fill(self, name: str, node: VDevice, *remote: str, timeout_s: int = 60) -> None:
        """What the DNS guard does: (device address, answer address) into the name's sets."""
        for addr in remote:
            local = node.ipv6 if ":" in addr else node.ipv4
            fill_answer(self.enforcer, self.nft, name, node.mac, local, addr, timeout_s)
            self.fills.append((name, node.mac, local, addr, timeout_s))


def _gateway(prefix: str, devices: int, **ctx: object) -> Iterator[Gateway]:
    with VirtualHome(prefix=prefix, devices=devices) as home:
        home.serve(home.inet_ns, tcp=[80, 443, 800, 8080, 50443], udp=[123, 5683])
        for node in home.nodes:
            home.serve(node.ns, tcp=[80, 8010, 9999], udp=[8008, 5683, 39400])
        home.serve(home.gw_ns, tcp=[53, PORTAL], udp=[53])
        context: HomeContext = home.context(portal_ports=(PORTAL,), **ctx)
        nft = Nft.in_namespace(home.gw_ns)
        enforcer = make_enforcer(nft, context, clock=lambda: NOW)
        enforcer.install_home()
        yield Gateway(home=home, nft=nft, enforcer=enforcer)


@pytest.fixture
def gw() -> Iterator[Gateway]:
    yield from _gateway(f"mgeE{os.getpid() % 1000}", 3, controllers={
        "https://controller.nist.local": (MFG4,)},
        my_controllers={"https://iot-device.example.com/my-controller": (MFG4, MFG6)})


def test_before_any_device_is_known_nothing_from_the_lan_is_forwarded(gw: Gateway) -> None:
    h, d0 = gw.home, gw.d[0]
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)
    assert not h.udp(d0.ns, CLOUD6, 123, 0.5)
    # ...but the gateway still answers DHCP/ND, so the device can be sighted (ND: ping6 works
    # only if ND does; use the inet side instead: a managed device needs ND to be reached).
    gw.apply(d0, None, LifecycleState.NEW)
    assert h.tcp(d0.ns, GW4, 53) and h.tcp(d0.ns, GW6, 53)  # baseline: DNS to the gateway
    assert not h.tcp(d0.ns, GW4, PORTAL, 0.5) and not h.tcp(d0.ns, GW6, PORTAL, 0.5)
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)  # NEW: baseline only


def test_dns_name_rule_allows_only_addresses_the_resolver_put_in_the_set(
        gw: Gateway, corpus_mud: Callable[[str], MudFile]) -> None:
    h, d0, d1 = gw.home, gw.d[0], gw.d[1]
    mud = corpus_mud("rfc/mudmaker-cloud-service.json")  # cloud-service.example.com, any proto
    gw.apply(d0, mud)
    gw.apply(d1, mud)
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)  # set still empty: nothing resolved yet
    gw.fill("cloud-service.example.com", d0, CLOUD4, CLOUD6)
    assert h.tcp(d0.ns, CLOUD4, 443) and h.tcp(d0.ns, CLOUD6, 443)
    assert h.udp(d0.ns, CLOUD4, 123) and h.ping(d0.ns, CLOUD6)
    assert not h.tcp(d0.ns, OTHER4, 443, 0.5) and not h.tcp(d0.ns, OTHER6, 443, 0.5)
    # The set is keyed by the asking device: d1 never asked, so d1 gets nothing.
    assert not h.tcp(d1.ns, CLOUD4, 443, 0.5)
    # to-device: the cloud may open connections to the device (the file allows it).
    assert h.tcp(h.inet_ns, d0.ipv4, 80, source=CLOUD4)
    assert h.tcp(h.inet_ns, d0.ipv6, 80, source=CLOUD6)
    assert not h.tcp(h.inet_ns, d0.ipv4, 80, 0.5, source=OTHER4)  # not the named host
    assert not h.tcp(h.inet_ns, d1.ipv4, 80, 0.5, source=CLOUD4)
    # Lateral: the file names no LAN peer.
    assert not h.tcp(d0.ns, d1.ipv4, 80, 0.5) and not h.tcp(d0.ns, d1.ipv6, 80, 0.5)


def test_dns_set_element_timeout_ends_access(gw: Gateway,
                                             corpus_mud: Callable[[str], MudFile]) -> None:
    h, d0 = gw.home, gw.d[0]
    gw.apply(d0, corpus_mud("rfc/mudmaker-cloud-service.json"))
    gw.fill("cloud-service.example.com", d0, CLOUD4, timeout_s=1)
    assert h.tcp(d0.ns, CLOUD4, 443)
    import time
    time.sleep(1.5)
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)


def test_direction_initiated_and_local_networks(gw: Gateway,
                                                corpus_mud: Callable[[str], MudFile]) -> None:
    """nist-mudfile-local-networks-test: the device serves TCP 80 to the LAN and opens TCP
    to www.nist.local:800; nothing else, and never the other way round."""
    h, d0, d1 = gw.home, gw.d[0], gw.d[1]
    gw.apply(d0, corpus_mud("rfc/nist-mudfile-local-networks-test.json"))
    gw.trust(d1)
    gw.fill("www.nist.local", d0, CLOUD4)
    assert h.tcp(d0.ns, CLOUD4, 800)  # from-device, initiated by the device
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)  # wrong port
    assert not h.tcp(h.inet_ns, d0.ipv4, 800, 0.5)  # the cloud may not open to the device
    assert not h.tcp(h.inet_ns, d0.ipv4, 80, 0.5)  # not on the LAN
    assert h.tcp(d1.ns, d0.ipv4, 80)  # a LAN peer opens to the device's port 80
    assert not h.tcp(d1.ns, d0.ipv4, 9999, 0.5)  # other ports: no
    # The device may not open to a LAN peer's port 80 (it may only answer from its own).
    assert not h.tcp(d0.ns, d1.ipv4, 80, 0.5)
    assert not h.tcp(d0.ns, d1.ipv6, 80, 0.5)  # the file is IPv4 only


def test_same_manufacturer_and_lateral_movement(gw: Gateway,
                                                corpus_mud: Callable[[str], MudFile]) -> None:
    h, d0, d1, d2 = gw.home, gw.d[0], gw.d[1], gw.d[2]
    same = corpus_mud("rfc/mudmaker-same-manufacturer.json")  # iot-device.example.com
    gw.apply(d0, same)
    assert not h.tcp(d0.ns, d1.ipv4, 80, 0.5)  # d1 unknown: nothing to talk to
    gw.apply(d1, corpus_mud("rfc/mudmaker-cloud-service.json"))  # same authority
    # d0's chain was recompiled when d1 joined: d0 -> d1 passes d0's out chain, but d1's
    # own profile (cloud only) has no LAN rule, so d1's in chain still refuses.
    assert not h.tcp(d0.ns, d1.ipv4, 80, 0.5)
    gw.apply(d1, same)
    assert h.tcp(d0.ns, d1.ipv4, 80) and h.udp(d1.ns, d0.ipv4, 5683) and h.ping(d1.ns, d0.ipv4)
    assert not h.tcp(d0.ns, d1.ipv6, 80, 0.5)  # the file has IPv4 ACLs only
    # A device of another maker can neither reach them nor be reached.
    gw.apply(d2, corpus_mud("rfc/nist-mudfile-local-networks-test.json"))
    assert not h.tcp(d2.ns, d0.ipv4, 80, 0.5)
    assert not h.tcp(d0.ns, d2.ipv4, 80, 0.5)
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)  # same-manufacturer is not the Internet
    # When d1 leaves, d0 loses it.
    gw.enforcer.remove_device(d1.mac)
    assert not h.tcp(d0.ns, d1.ipv4, 80, 0.5)


def test_manufacturer_rule(gw: Gateway, corpus_mud: Callable[[str], MudFile]) -> None:
    """nist-mudfile-mfg-test: UDP 8008 with toothbrush.nist.local devices, TCP 8010 opened to
    hairbrush.nist.local devices."""
    h, d0, d1, d2 = gw.home, gw.d[0], gw.d[1], gw.d[2]
    gw.apply(d0, corpus_mud("rfc/nist-mudfile-mfg-test.json"))
    tooth = DeviceFacts(mac=d1.mac, ipv4=(d1.ipv4,), ipv6=(d1.ipv6,), state=LifecycleState.TRUSTED,
                        mud_url="https://toothbrush.nist.local/tb")
    hair = DeviceFacts(mac=d2.mac, ipv4=(d2.ipv4,), ipv6=(d2.ipv6,), state=LifecycleState.TRUSTED,
                       mud_url="https://hairbrush.nist.local/hb")
    gw.enforcer.apply_device(tooth, None, ())
    gw.enforcer.apply_device(hair, None, ())
    assert h.udp(d0.ns, d1.ipv4, 8008)
    assert not h.udp(d0.ns, d2.ipv4, 8008, 0.5)
    assert h.tcp(d0.ns, d2.ipv4, 8010)
    assert not h.tcp(d0.ns, d1.ipv4, 8010, 0.5)
    assert not h.tcp(d2.ns, d0.ipv4, 8010, 0.5)  # direction-initiated: only d0 opens


def test_controller_and_my_controller(gw: Gateway, corpus_mud: Callable[[str], MudFile]) -> None:
    h, d0, d1 = gw.home, gw.d[0], gw.d[1]
    gw.apply(d0, corpus_mud("rfc/nist-mudfile-controllerclass-test.json"))  # tcp 80, v4
    assert h.tcp(d0.ns, MFG4, 80)  # the configured controller of that class
    assert not h.tcp(d0.ns, CLOUD4, 80, 0.5)
    assert not h.tcp(d0.ns, MFG4, 443, 0.5)
    gw.apply(d1, corpus_mud("rfc/mudmaker-my-controller.json"))  # anything with my-controller
    assert h.tcp(d1.ns, MFG4, 443) and h.tcp(d1.ns, MFG6, 443) and h.ping(d1.ns, MFG4)
    assert h.tcp(h.inet_ns, d1.ipv4, 80, source=MFG4)  # my-controller may open to it
    assert not h.tcp(h.inet_ns, d1.ipv4, 80, 0.5, source=CLOUD4)
    assert not h.tcp(d1.ns, CLOUD4, 443, 0.5) and not h.tcp(d1.ns, CLOUD6, 443, 0.5)


def test_quarantine_keeps_only_the_makers_update_server(gw: Gateway,
                                                        corpus_mud: Callable[[str], MudFile],
                                                        ) -> None:
    """SmartThings hub (UNSW): quarantined, it keeps dc.connect.smartthings.com (its maker's
    domain, TCP 443) and loses NTP (pool.ntp.org) and its LAN services (UDP 39400)."""
    h, d0, d1 = gw.home, gw.d[0], gw.d[1]
    mud = corpus_mud("unsw/SmartThingsMud.json")
    gw.apply(d0, mud)
    gw.trust(d1)
    gw.fill("pool.ntp.org", d0, CLOUD4)
    gw.fill("dc.connect.smartthings.com", d0, MFG4)
    assert h.udp(d0.ns, CLOUD4, 123) and h.tcp(d0.ns, MFG4, 443)
    assert h.udp(d1.ns, d0.ipv4, 39400)  # the LAN may reach its UDP 39400 (profiled)
    gw.apply(d0, mud, LifecycleState.QUARANTINED)
    assert h.tcp(d0.ns, MFG4, 443)  # the maker's server stays reachable (updates)
    assert not h.udp(d0.ns, CLOUD4, 123, 0.5)
    assert not h.udp(d1.ns, d0.ipv4, 39400, 0.5)
    assert h.tcp(d0.ns, GW4, 53)  # baseline survives quarantine
    policy = gw.enforcer.policy(d0.mac)
    assert policy is not None and policy.dns_names() == {
        "dc.connect.smartthings.com", "dc-na02-useast1.connect.smartthings.com"}


def test_out_of_support_is_lan_only_and_default_is_internet_only(gw: Gateway) -> None:
    h, d0, d1, d2 = gw.home, gw.d[0], gw.d[1], gw.d[2]
    gw.apply(d0, None, LifecycleState.OUT_OF_SUPPORT)
    gw.apply(d1, None, LifecycleState.OUT_OF_SUPPORT)
    gw.apply(d2, None, LifecycleState.DEFAULT)  # home default: Internet only
    assert h.tcp(d0.ns, d1.ipv4, 80) and h.tcp(d1.ns, d0.ipv6, 80)
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5) and not h.tcp(d0.ns, CLOUD6, 443, 0.5)
    assert h.tcp(d2.ns, CLOUD4, 443) and h.tcp(d2.ns, CLOUD6, 443)
    assert not h.tcp(d2.ns, d0.ipv4, 80, 0.5)  # no lateral LAN for the default
    assert not h.tcp(h.inet_ns, d2.ipv4, 80, 0.5)  # and nobody outside may open to it


def test_forgotten_device_gets_nothing_and_trusted_everything(gw: Gateway) -> None:
    h, d0, d1 = gw.home, gw.d[0], gw.d[1]
    gw.apply(d0, None, LifecycleState.FORGOTTEN)
    assert not h.tcp(d0.ns, GW4, 53, 0.5) and not h.tcp(d0.ns, CLOUD4, 443, 0.5)
    gw.trust(d1)
    assert h.tcp(d1.ns, CLOUD6, 443) and h.tcp(d1.ns, GW4, PORTAL)  # the owner's phone


def test_a_device_cannot_use_another_devices_address(gw: Gateway) -> None:
    """Anti-spoofing: d0 sends with d1's IPv4 source; the Internet host must not see it."""
    h, d0, d1 = gw.home, gw.d[0], gw.d[1]
    gw.apply(d0, None, LifecycleState.TRUSTED)
    gw.apply(d1, None, LifecycleState.TRUSTED)
    run(["ip", "addr", "add", f"{d1.ipv4}/32", "dev", d0.iface], ns=d0.ns)

    def sent_from(source: str) -> bool:
        got: dict[str, bool] = {}
        listener = threading.Thread(
            target=lambda: got.setdefault("rx", call_in(h.inet_ns, _receive_one, 7777, 1.5)))
        listener.start()
        import time
        time.sleep(0.3)
        call_in(d0.ns, _send_one, source, CLOUD4, 7777)
        listener.join()
        return got["rx"]

    assert sent_from(d0.ipv4)  # its own address passes
    assert not sent_from(d1.ipv4)  # another device's address is dropped at the gateway


def _receive_one(port: int, timeout: float) -> bool:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CLOUD4, port))
        sock.settimeout(timeout)
        try:
            sock.recvfrom(100)
        except OSError:
            return False
        return True


def _send_one(source: str, dest: str, port: int) -> None:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(b"x", (dest, port))


def test_new_connection_rate_cap() -> None:
    for gw in _gateway(f"mgeR{os.getpid() % 1000}", 1, new_conn_rate=5, new_conn_burst=5):
        h, d0 = gw.home, gw.d[0]
        gw.trust(d0)
        passed = h.call(d0.ns, _burst_of_udp, CLOUD4, 5683, 40)
        assert 5 <= passed < 30, passed


def _burst_of_udp(address: str, port: int, count: int) -> int:
    from mudguard.vhome.probe import udp_exchange
    return sum(udp_exchange(address, port, 0.05) for _ in range(count))


def test_icmp_type_rules_and_port_ranges(gw: Gateway,
                                         corpus_mud: Callable[[str], MudFile]) -> None:
    """NetatmoCamera (UNSW): ICMP echo to v7.netatmo.net only; the cloud may not ping it.
    tplinkcamera (UNSW): UDP to any host on ports 1023-65535 (a range), nothing below."""
    h, d0, d1 = gw.home, gw.d[0], gw.d[1]
    gw.apply(d0, corpus_mud("unsw/NetatmoCameraMud.json"))
    gw.fill("v7.netatmo.net", d0, CLOUD4)
    assert h.ping(d0.ns, CLOUD4)
    assert not h.ping(d0.ns, OTHER4, 0.5)  # not a name it resolved
    assert not h.tcp(d0.ns, CLOUD4, 443, 0.5)  # echo only, not TCP
    assert not h.ping(h.inet_ns, d0.ipv4, 0.5)  # to-device allows echo replies, not requests
    gw.apply(d1, corpus_mud("unsw/tplinkcameraMud.json"))
    assert h.udp(d1.ns, OTHER4, 5683) and h.udp(d1.ns, CLOUD4, 5683)  # 5683 in 1023-65535
    assert not h.udp(d1.ns, CLOUD4, 123, 0.5)  # below the range
    assert not h.tcp(d1.ns, CLOUD4, 8080, 0.5)  # UDP only
