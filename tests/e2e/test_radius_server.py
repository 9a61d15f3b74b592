"""The RADIUS key server over loopback, asked by the real radclient (FreeRADIUS) and
by pyrad's client, which decrypts the Tunnel-Password itself."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest
from pyrad import packet
from pyrad.client import Client, Timeout

from mudguard.keys.core import ONBOARDING_MAC, PskEntry
from mudguard.keys.radius import RadiusConfig, RadiusServer, radius_dictionary

SECRET = b"radius-shared-secret"
KEYS = {
    "02:00:00:00:00:0a": PskEntry(keyid="dev-a", mac="02:00:00:00:00:0a", vlan=20,
                                  passphrase="camera key; with, specials: \"\\"),
    "02:00:00:00:00:0b": PskEntry(keyid="dev-b", mac="02:00:00:00:00:0b",
                                  passphrase="x" * 63),
}
ONBOARDING = PskEntry(keyid="onb-c", mac=ONBOARDING_MAC, passphrase="one-time-onboarding")


def lookup(mac: str) -> PskEntry | None:
    if mac == "02:00:00:00:00:0c":
        return ONBOARDING  # a lookup bug must still never hand out an unbound key
    return KEYS.get(mac)


@pytest.fixture
def server() -> Iterator[RadiusServer]:
    srv = RadiusServer(RadiusConfig("127.0.0.1", 0, SECRET, frozenset({"127.0.0.1"})), lookup,
                       poll=0.05)
    thread = threading.Thread(target=srv.serve, daemon=True)
    thread.start()
    yield srv
    srv.stop()
    thread.join(timeout=5)
    srv.close()


def _pyrad_client(server: RadiusServer, secret: bytes = SECRET) -> Client:
    host, port = server.address
    client = Client(server=host, authport=port, secret=secret, dict=radius_dictionary())
    client.timeout = 1
    client.retries = 1
    return client


def _ask(client: Client, user_name: str) -> packet.AuthPacket:
    request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name=user_name)
    request["Calling-Station-Id"] = user_name.upper()
    request.add_message_authenticator()
    reply: packet.AuthPacket = client.SendPacket(request)
    return reply


@pytest.mark.parametrize("user_name", ["02000000000a", "02-00-00-00-00-0A", "02:00:00:00:00:0a"])
def test_pyrad_client_gets_key_and_vlan(server: RadiusServer, user_name: str) -> None:
    reply = _ask(_pyrad_client(server), user_name)
    assert reply.code == packet.AccessAccept
    assert reply.message_authenticator
    assert reply["Tunnel-Password"] == [KEYS["02:00:00:00:00:0a"].passphrase]
    assert reply["Tunnel-Type"] == ["VLAN"]
    assert reply["Tunnel-Medium-Type"] == ["IEEE-802"]
    assert reply["Tunnel-Private-Group-Id"] == ["20"]


def test_tunnel_password_is_tagged_and_salted_on_the_wire(server: RadiusServer) -> None:
    client = _pyrad_client(server)
    replies = [_ask(client, "02000000000b") for _ in range(2)]
    raws = [_raw_tunnel_password(r) for r in replies]
    for raw in raws:
        assert raw[0] == 1  # tag 1 (RFC 2868 §3.5)
        assert raw[1] & 0x80  # the salt's most significant bit is set
        assert len(raw) == 1 + 2 + 64  # tag, salt, 1 length octet + 63 padded to 64
        assert b"xxxx" not in raw
    assert raws[0] != raws[1]  # fresh salt and request authenticator each time
    for reply in replies:
        assert reply["Tunnel-Password"] == ["x" * 63]
        assert "Tunnel-Type" not in reply  # no VLAN, no VLAN attributes


def _raw_tunnel_password(reply: packet.AuthPacket) -> bytes:
    """The raw Tunnel-Password attribute value (tag + salt + ciphertext) from the wire."""
    data = reply.raw_packet
    assert data is not None
    pos = 20
    while pos < len(data):
        code, length = data[pos], data[pos + 1]
        if code == 69:
            return bytes(data[pos + 2 : pos + length])
        pos += length
    raise AssertionError("no Tunnel-Password on the wire")


@pytest.mark.parametrize("user_name", ["02000000000d", "02000000000c", "not-a-mac", ""])
def test_unknown_or_unbound_mac_is_rejected(server: RadiusServer, user_name: str) -> None:
    client = _pyrad_client(server)
    request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name=user_name or "x")
    request.add_message_authenticator()
    reply = client.SendPacket(request)
    assert reply.code == packet.AccessReject
    assert "Tunnel-Password" not in reply


def test_wrong_secret_gets_no_answer(server: RadiusServer) -> None:
    with pytest.raises(Timeout):
        _ask(_pyrad_client(server, secret=b"wrong"), "02000000000a")


def test_request_without_message_authenticator_gets_no_answer(server: RadiusServer) -> None:
    client = _pyrad_client(server)
    request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name="02000000000a",
                                      message_authenticator=False)
    assert 80 not in request.RequestPacket()[20:22]
    with pytest.raises(Timeout):
        client.SendPacket(request)


def test_garbage_and_foreign_senders_do_not_stop_the_server(server: RadiusServer) -> None:
    host, port = server.address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (b"", b"\x01", b"\x01\x02\x00\x14" + bytes(16), b"\x01" * 5000,
                     b"\x04\x01\x00\x14" + bytes(16)):
            sock.sendto(junk, (host, port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as foreign:
        foreign.bind(("127.0.0.2", 0))  # loopback, but not a configured client
        foreign.settimeout(0.5)
        request = _pyrad_client(server).CreateAuthPacket(code=packet.AccessRequest,
                                                         User_Name="02000000000a")
        request.add_message_authenticator()
        foreign.sendto(request.RequestPacket(), (host, port))
        with pytest.raises(TimeoutError):
            foreign.recv(4096)
    assert _ask(_pyrad_client(server), "02000000000a").code == packet.AccessAccept


@pytest.mark.skipif(shutil.which("radclient") is None, reason="freeradius-utils not installed")
def test_real_radclient_decrypts_the_key(server: RadiusServer) -> None:
    host, port = server.address
    attrs = 'User-Name = "02-00-00-00-00-0A"\nMessage-Authenticator = 0x00\n'
    result = subprocess.run(["radclient", "-x", "-t", "2", "-r", "1", f"{host}:{port}", "auth",
                             SECRET.decode()], input=attrs, capture_output=True, text=True,
                            timeout=15, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Received Access-Accept" in out
    assert 'Tunnel-Password:1 = "camera key; with, specials: \\"\\\\"' in out
    assert "Tunnel-Type:1 = VLAN" in out
    assert "Tunnel-Medium-Type:1 = IEEE-802" in out
    assert 'Tunnel-Private-Group-Id:1 = "20"' in out


@pytest.mark.skipif(shutil.which("radclient") is None, reason="freeradius-utils not installed")
def test_real_radclient_rejected_for_unknown_mac(server: RadiusServer) -> None:
    host, port = server.address
    attrs = 'User-Name = "02-00-00-00-00-99"\nMessage-Authenticator = 0x00\n'
    result = subprocess.run(["radclient", "-x", "-t", "2", "-r", "1", f"{host}:{port}", "auth",
                             SECRET.decode()], input=attrs, capture_output=True, text=True,
                            timeout=15, check=False)
    assert "Received Access-Reject" in result.stdout


@pytest.mark.parametrize("secret", [b"", b"two words", b"new\nline=1", b"caf\xc3\xa9"])
def test_hostapd_radius_lines_refuse_secrets_that_break_the_config(secret: bytes) -> None:
    from mudguard.keys.radius import RadiusError, hostapd_radius_config

    with pytest.raises(RadiusError):
        hostapd_radius_config("127.0.0.1", 1812, secret)


def test_hostapd_radius_lines() -> None:
    from mudguard.keys.radius import hostapd_radius_config

    lines = hostapd_radius_config("127.0.0.1", 1812, b"s3cret").splitlines()
    assert lines[:2] == ["macaddr_acl=2", "wpa_psk_radius=2"]
    assert "auth_server_shared_secret=s3cret" in lines
