"""Hostile identities: a MAC that names no single station is never a device.

The all-zero MAC, the broadcast MAC, every group (multicast) MAC and every string that is
not a 48-bit address are refused on every path a device can come in by: the DHCP hook
(the daemon's listener and ``mudguard dhcp listen``, which runs the same checks), LLDP,
the neighbour table, the intake that all discovery shares, a QR label (parsed and read
from a picture by the portal), the owner's manual add, the portal's API, the control
socket, a WiFi key binding, and the store itself. Each refusal is a clear error and
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mudguard.daemon.control import ControlServer
from mudguard.devices import Device, MacError, MudSource, device_mac
from mudguard.devices.service import DeviceService
from mudguard.discovery.dhcp import (
    DhcpHookListener,
    hook_message,
    hook_verdict,
    parse_hook_message,
)
from mudguard.discovery.lldp import LldpError, build_lldp_frame, parse_lldp_frame
from mudguard.discovery.neighbour import parse_neigh_messages
from mudguard.discovery.qr import QrError, QrRecord, build_qr, parse_qr
from mudguard.discovery.sighting import Intake, Sighting, SightingError
from mudguard.policy import LifecycleState
from mudguard.store import Store
from tests.unit.test_discovery_parsers import neigh_message, run_dhcp_listen

NOW = datetime(2026, 1, 1, tzinfo=UTC)
GOOD = "02:00:5e:00:53:01"  # locally administered unicast: a device
URL = "https://mud.example.com/plug.json"

NOT_A_DEVICE = [
    "00:00:00:00:00:00",  # all zero
    "ff:ff:ff:ff:ff:ff",  # broadcast
    "01:00:5e:00:00:01",  # IPv4 multicast
    "33:33:00:00:00:01",  # IPv6 multicast
    "01:80:c2:00:00:0e",  # LLDP's own group address
    "03:00:00:00:00:01",  # group bit with the local bit
    "FF-FF-FF-FF-FF-FF",  # another notation of broadcast
    "0000.0000.0000",  # and of zero
]
MALFORMED = [
    "", "zz", "02:00:5e:00:53", "02:00:5e:00:53:01:02",  # short, long
    "02:00:5e:00:53:01:02:03",  # EUI-64
    "02:00:5e:00:53:0g", "06-" + GOOD, "02:00:5e:00:53:01\x00", GOOD + " " * 40,
]
HOSTILE = NOT_A_DEVICE + MALFORMED


@pytest.mark.parametrize("text", HOSTILE)
def test_device_mac_refuses_what_names_no_station(text: str) -> None:
    with pytest.raises(MacError) as caught:
        device_mac(text)
    assert caught.value.key == "bad_mac" and str(caught.value)


def test_device_mac_keeps_unicast_in_any_notation() -> None:
    assert device_mac("02-00-5E-00-53-01") == GOOD
    assert device_mac("0200.5e00.5301") == GOOD
    assert device_mac("00:11:22:33:44:55") == "00:11:22:33:44:55"  # universal, unicast


@pytest.mark.parametrize("mac", NOT_A_DEVICE)
def test_the_error_names_what_the_mac_is(mac: str) -> None:
    with pytest.raises(MacError, match=r"all-zero|broadcast|multicast"):
        device_mac(mac)


# -- discovery: DHCP hook, LLDP, neighbour table, the shared intake ----------------------

@pytest.fixture
def service(tmp_path: Path) -> Iterator[DeviceService]:
    store = Store(tmp_path / "m.db")
    yield DeviceService(store=store, clock=lambda: NOW)
    store.close()


@pytest.mark.parametrize("mac", HOSTILE)
def test_the_dhcp_hook_listener_refuses_the_lease(mac: str) -> None:
    message = hook_message(["add", mac, "192.0.2.50", "plug"], {"DNSMASQ_MUD_URL": URL})
    assert message is not None
    data = json.dumps(message).encode()
    with pytest.raises(SightingError):
        parse_hook_message(data)
    verdict = hook_verdict(data)
    assert verdict["verdict"] == "refused" and verdict["reason"], verdict


def test_a_dhcpv6_lease_with_a_hostile_mac_is_refused() -> None:
    message = hook_message(["add", "00:01:00:01:aa", "2001:db8::50"],
                           {"DNSMASQ_MAC": "00:00:00:00:00:00"})
    assert message is not None
    with pytest.raises(SightingError, match="all-zero"):
        parse_hook_message(json.dumps(message).encode())


def test_the_daemons_listener_passes_on_nothing_for_a_hostile_lease(tmp_path: Path) -> None:
    from mudguard.discovery.dhcp_hook import main as hook_main

    path = tmp_path / "dhcp.sock"
    with DhcpHookListener(path) as listener:
        env = {"MUDGUARD_DHCP_SOCKET": str(path), "DNSMASQ_MUD_URL": URL}
        for mac in ("ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", GOOD):
            assert hook_main(["add", mac, "192.0.2.50"], env) == 0
        got: list[Sighting] = []
        assert listener.serve(got.append, max_messages=3, timeout=2.0) == 1
    assert [s.mac for s in got] == [GOOD]


@pytest.mark.parametrize("mac", NOT_A_DEVICE[:6])
def test_an_lldp_frame_from_a_hostile_source_is_refused(mac: str) -> None:
    frame = build_lldp_frame(device_mac(GOOD), mud_url=URL)
    forged = frame[:6] + bytes.fromhex(mac.replace(":", "")) + frame[12:]
    with pytest.raises(LldpError, match="source"):
        parse_lldp_frame(forged)
    assert parse_lldp_frame(frame).mac == GOOD


@pytest.mark.parametrize("mac", NOT_A_DEVICE[:6])
def test_a_neighbour_entry_with_a_hostile_link_address_is_no_sighting(mac: str) -> None:
    lladdr = bytes.fromhex(mac.replace(":", ""))
    assert parse_neigh_messages(neigh_message(lladdr=lladdr)) == []
    assert [s.mac for s in parse_neigh_messages(neigh_message())] == ["02:00:5e:00:53:01"]


@pytest.mark.parametrize("source", list(MudSource))
@pytest.mark.parametrize("mac", ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01"])
def test_the_intake_refuses_from_every_source(service: DeviceService, source: MudSource,
                                              mac: str) -> None:
    intake = Intake(service)
    assert intake.on_sighting(Sighting(mac=mac, ip="192.0.2.50", source=source,
                                       mud_url=URL)) is None
    assert service.store.list_devices() == []


# -- the owner's paths: QR label, manual add, portal, control socket, key binding --------

@pytest.mark.parametrize("mac", NOT_A_DEVICE[:6])
def test_a_label_naming_a_hostile_mac_is_refused(mac: str) -> None:
    payload = build_qr(QrRecord(mud_url=URL, mac=GOOD))
    forged = payload.replace(GOOD.replace(":", "").upper(), mac.replace(":", "").upper())
    assert forged != payload
    with pytest.raises(QrError) as caught:
        parse_qr(forged)
    assert caught.value.key == "qr_bad_mac"
    with pytest.raises(QrError):  # nor will we print one
        build_qr(QrRecord(mud_url=URL, mac=mac))


@pytest.mark.parametrize("mac", HOSTILE)
def test_manual_add_refuses(service: DeviceService, mac: str) -> None:
    with pytest.raises(MacError):
        service.add_device(mac=mac, name="printer")
    with pytest.raises(MacError):
        service.observe(mac=mac, ip="192.0.2.9")
    assert service.store.list_devices() == [] and service.store.list_events() == []


def test_a_wifi_key_bound_to_a_hostile_mac_makes_no_device(service: DeviceService) -> None:
    with pytest.raises(MacError):
        service.set_key("00:00:00:00:00:00", "key-1")
    assert service.store.list_devices() == []


@pytest.mark.parametrize("mac", NOT_A_DEVICE[:6])
def test_the_store_never_holds_one(service: DeviceService, mac: str) -> None:
    device = Device(mac=mac, state=LifecycleState.NEW, first_seen=NOW, last_seen=NOW)
    with pytest.raises(MacError):
        service.store.save_device(device)
    assert service.store.count_devices() == 0


def test_the_control_socket_refuses_an_add(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db")
    service = DeviceService(store=store, clock=lambda: NOW)
    path = tmp_path / "control.sock"

    async def ask(requests: list[dict[str, str]]) -> list[dict[str, object]]:
        async def direct(call):  # type: ignore[no-untyped-def]
            return call()

        server = ControlServer(path, service, direct)
        await server.start()
        try:
            return [await asyncio.to_thread(_exchange, path, request) for request in requests]
        finally:
            await server.stop()

    try:
        replies = asyncio.run(ask([{"op": "add", "mac": mac} for mac in NOT_A_DEVICE[:4]]
                                  + [{"op": "add", "mac": GOOD}]))
    finally:
        devices = store.list_devices()
        store.close()
    assert [r["ok"] for r in replies] == [False] * 4 + [True]
    assert {r.get("error") for r in replies[:4]} == {"bad_mac"}
    assert [d.mac for d in devices] == [GOOD]


def _exchange(path: Path, request: dict[str, str]) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        for _ in range(64):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    answer: dict[str, object] = json.loads(reply)
    return answer


def test_the_portal_refuses_a_hostile_mac_by_api_form_and_label(tmp_path: Path) -> None:
    from mudguard.labels import qr_png
    from tests.unit.test_portal_support import mud_document, page_csrf, portal, text_of

    with portal(tmp_path) as (client, st, _):
        url = st.server.url("/bulb.json")
        st.server.put_json("/bulb.json", mud_document(url))
        login = client.post("/api/session", json={"username": "owner",
                                                   "password": "correct horse battery staple"})
        headers = {"X-CSRF-Token": login.json()["csrf_token"]}
        for mac in ("ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "01:00:5e:00:00:01"):
            answer = client.post("/api/onboard", headers=headers,
                                 json={"mud_url": url, "mac": mac})
            assert answer.status_code == 400 and "bad_mac" in answer.text, answer.text
        token = page_csrf(client, "/onboard")
        form = client.post("/onboard/check", data={"csrf": token, "mud_url": url,
                                                    "mac": "ff:ff:ff:ff:ff:ff"})
        assert form.status_code == 400
        assert "not a MAC address a device can have" in text_of(form.text)
        payload = build_qr(QrRecord(mud_url=url, mac=GOOD)).replace(
            GOOD.replace(":", "").upper(), "FFFFFFFFFFFF")
        label = client.post("/onboard/check", data={"csrf": token, "mud_url": "", "mac": ""},
                            files={"label": ("label.png", qr_png(payload), "image/png")})
        assert label.status_code == 400
        assert "MAC address is not valid" in text_of(label.text)
        assert st.store.list_devices() == []


# -- `mudguard dhcp listen` runs the daemon's checks ---------------------------------------

def test_dhcp_listen_prints_what_the_daemon_would_refuse(tmp_path: Path) -> None:
    lines, code, err = run_dhcp_listen(tmp_path, [
        (["add", mac, ip], {"DNSMASQ_MUD_URL": mud} if mud else {})
        for mac, ip, mud in (("00:00:00:00:00:00", "192.0.2.50", URL),
                             ("ff:ff:ff:ff:ff:ff", "192.0.2.51", None),
                             (GOOD.upper(), "192.0.2.52", "http://mud.example.com/x.json"),
                             (GOOD.upper(), "169.254.3.4", URL))])
    assert [line["verdict"] for line in lines] == ["refused", "refused", "refused", "accepted"]
    assert "all-zero" in lines[0]["reason"] and "broadcast" in lines[1]["reason"]
    assert lines[2]["error"] == "bad_mud_url"
    assert (lines[3]["mac"], lines[3]["ip"], lines[3]["ignored_ip"]) == (GOOD, None, "169.254.3.4")
    assert code == 0, err
