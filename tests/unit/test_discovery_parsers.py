"""Discovery parsers with real bytes: LLDP frames, dnsmasq hook messages, 802.1AR
certificates made with cryptography; and the one intake over a real store."""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from mudguard.devices import EventKind, MudSource
from mudguard.devices.service import DeviceService
from mudguard.discovery.cert import (
    OID_MUD_SIGNER,
    OID_MUD_URL,
    CertificateError,
    parse_device_certificate,
)
from mudguard.discovery.dhcp import hook_message, parse_hook_message
from mudguard.discovery.lldp import LldpError, build_lldp_frame, parse_lldp_frame
from mudguard.discovery.sighting import Intake, Sighting, SightingError, normalise
from mudguard.policy import LifecycleState as S
from mudguard.store import Store

MAC = "02:00:5e:00:53:01"
URL = "https://mud.example.com/plug.json"
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

# -- LLDP ------------------------------------------------------------------------------


def test_lldp_round_trip() -> None:
    frame = build_lldp_frame(MAC, mud_url=URL, system_name="plug-1")
    info = parse_lldp_frame(frame)
    assert (info.mac, info.mud_url, info.system_name, info.ttl) == (MAC, URL, "plug-1", 120)
    s = info.sighting()
    assert (s.source, s.mud_url, s.hostname) == (MudSource.LLDP, URL, "plug-1")


def test_lldp_without_mud_tlv_and_with_vlan_tag() -> None:
    frame = build_lldp_frame(MAC, mud_url=None)
    tagged = frame[:12] + b"\x81\x00\x00\x05" + frame[12:]
    assert parse_lldp_frame(tagged).mud_url is None


def test_lldp_other_org_tlv_is_ignored() -> None:
    frame = build_lldp_frame(MAC, mud_url=None)
    other = struct.pack("!H", (127 << 9) | 6) + bytes.fromhex("0080c2") + b"\x01ab"
    frame = frame[:-2] + other + frame[-2:]
    assert parse_lldp_frame(frame).mud_url is None


@pytest.mark.parametrize("mutate, why", [
    (lambda f: f[:20], "truncated|claims"),
    (lambda f: f[:12] + b"\x08\x00" + f[14:], "not LLDP"),
    (lambda f: f[:10], "shorter"),
    (lambda f: f[:-2], "truncated"),  # no End TLV
    (lambda f: f + b"\x00" * 1600, "larger"),
])
def test_lldp_malformed_frames(mutate: object, why: str) -> None:
    frame = build_lldp_frame(MAC, mud_url=URL)
    with pytest.raises(LldpError, match=why):
        parse_lldp_frame(mutate(frame))  # type: ignore[operator]


@pytest.mark.parametrize("url, why", [("http://mud.example.com/x", "https"),
                                      ("https://mud.example.com/\x01", "control")])
def test_lldp_bad_mud_url(url: str, why: str) -> None:
    with pytest.raises(LldpError, match=why):
        parse_lldp_frame(build_lldp_frame(MAC, mud_url=url))


def test_lldp_non_ascii_and_duplicate_url() -> None:
    frame = build_lldp_frame(MAC, mud_url="https://mud.example.com/é")
    with pytest.raises(LldpError, match="ASCII"):
        parse_lldp_frame(frame)
    one = build_lldp_frame(MAC, mud_url=URL)
    tlv = struct.pack("!H", (127 << 9) | (4 + len(URL))) + bytes.fromhex("00005e01") + URL.encode()
    with pytest.raises(LldpError, match="more than one"):
        parse_lldp_frame(one[:-2] + tlv + one[-2:])


def test_lldp_missing_mandatory_tlvs() -> None:
    frame = build_lldp_frame(MAC, mud_url=URL)
    # Drop the chassis TLV (2 + 7 bytes after the 14-byte header).
    with pytest.raises(LldpError, match="must start"):
        parse_lldp_frame(frame[:14] + frame[23:])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_lldp_parser_never_crashes(payload: bytes) -> None:
    frame = bytes(6) + bytes.fromhex(MAC.replace(":", "")) + b"\x88\xcc" + payload
    with contextlib.suppress(LldpError):
        parse_lldp_frame(frame)


# -- the dnsmasq hook --------------------------------------------------------------------

def test_hook_v4_message_round_trip() -> None:
    msg = hook_message(["add", MAC, "192.0.2.50", "plug"],
                       {"DNSMASQ_MUD_URL": URL, "DNSMASQ_INTERFACE": "mgl0"})
    assert msg is not None
    s = parse_hook_message(json.dumps(msg).encode())
    assert s == Sighting(mac=MAC, ip="192.0.2.50", source=MudSource.DHCP4, mud_url=URL,
                         hostname="plug")


def test_hook_v6_uses_dnsmasq_mac() -> None:
    msg = hook_message(["old", "00:01:00:01:aa", "2001:db8::50"],
                       {"DNSMASQ_MUD_URL": URL, "DNSMASQ_MAC": MAC})
    assert msg is not None
    s = parse_hook_message(json.dumps(msg).encode())
    assert (s.source, s.mac, s.ip) == (MudSource.DHCP6, MAC, "2001:db8::50")


def test_hook_starts_fast_importing_no_mudguard_module() -> None:
    import subprocess
    import sys

    code = ("import sys; import mudguard.discovery.dhcp_hook; "
            "print(' '.join(m for m in sys.modules if m.startswith('mudguard')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=30).stdout.split()
    assert sorted(loaded) == ["mudguard", "mudguard.discovery", "mudguard.discovery.dhcp_hook"]


def test_hook_main_without_daemon_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    from mudguard.discovery.dhcp_hook import main

    env = {"MUDGUARD_DHCP_SOCKET": str(tmp_path / "none.sock"), "DNSMASQ_MUD_URL": URL}
    assert main(["add", MAC, "192.0.2.50"], env) == 0
    assert "unavailable" in capsys.readouterr().err


def test_hook_sends_an_ended_lease_and_ignores_tftp() -> None:
    message = hook_message(["del", MAC, "192.0.2.50"], {})
    assert message is not None and (message["action"], message["ip"]) == ("del", "192.0.2.50")
    sighting = parse_hook_message(json.dumps(message).encode())
    assert sighting.lease_ended and sighting.ip == "192.0.2.50"
    assert hook_message(["tftp", "10", "192.0.2.50", "/file"], {}) is None
    assert hook_message([], {}) is None


@pytest.mark.parametrize("raw, why", [
    (b"not json", "not JSON"),
    (b"[]", "version-1"),
    (json.dumps({"v": 1, "action": "add", "family": 4, "mac": 5}).encode(), "text"),
    (json.dumps({"v": 1, "action": "rm", "family": 4, "mac": MAC}).encode(), "action"),
    (json.dumps({"v": 1, "action": "add", "family": 6, "mac": ""}).encode(), "no MAC"),
    (json.dumps({"v": 1, "action": "add", "family": 4, "mac": "06-" + MAC}).encode(),
     "non-Ethernet"),
    (b"{" + b" " * 5000 + b"}", "limit"),
])
def test_hook_bad_messages(raw: bytes, why: str) -> None:
    with pytest.raises(SightingError, match=why):
        parse_hook_message(raw)


# -- 802.1AR certificates ----------------------------------------------------------------

def make_cert(*extensions: tuple[x509.ObjectIdentifier, bytes]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Plug 1"),
                      x509.NameAttribute(NameOID.SERIAL_NUMBER, "SN-0042")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(42)
               .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=3650)))
    for oid, der in extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, der), critical=False)
    from cryptography.hazmat.primitives.serialization import Encoding

    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)


def signer_der() -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc."),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Example MUD signer")])
    return name.public_bytes()


def test_certificate_mud_url_and_signer() -> None:
    pem = make_cert((OID_MUD_URL, asn1_core.IA5String(URL).dump()), (OID_MUD_SIGNER, signer_der()))
    info = parse_device_certificate(pem)
    assert info.mud_url == URL and info.serial_number == "SN-0042"
    assert info.mud_signer == "CN=Example MUD signer,O=Example\\, Inc.,C=US"
    assert info.sighting(MAC).source is MudSource.CERT


def test_certificate_without_mud_extensions() -> None:
    info = parse_device_certificate(make_cert())
    assert (info.mud_url, info.mud_signer) == (None, None)


@pytest.mark.parametrize("ext, why", [
    ((OID_MUD_URL, asn1_core.IA5String("http://mud.example.com/x").dump()), "https"),
    ((OID_MUD_URL, asn1_core.UTF8String(URL).dump()), "IA5String"),
    ((OID_MUD_URL, b"\x16\x50abc"), "IA5String"),
    ((OID_MUD_SIGNER, b"\x30\x05\x31"), "Name"),
])
def test_certificate_bad_extensions(ext: tuple[x509.ObjectIdentifier, bytes], why: str) -> None:
    with pytest.raises(CertificateError, match=why):
        parse_device_certificate(make_cert(ext))


@pytest.mark.parametrize("data", [b"", b"-----BEGIN CERTIFICATE-----\nxx\n", b"\x30\x03\x02\x01",
                                  b"A" * 20000])
def test_not_certificates(data: bytes) -> None:
    with pytest.raises(CertificateError):
        parse_device_certificate(data)


# -- the intake --------------------------------------------------------------------------

@pytest.fixture
def intake(tmp_path: Path) -> Intake:
    store = Store(tmp_path / "m.db")
    yield Intake(DeviceService(store=store, clock=lambda: NOW))
    store.close()


def test_intake_dedupes_and_normalises(intake: Intake) -> None:
    s = Sighting(mac=MAC.upper(), ip="192.0.2.9", source=MudSource.DHCP4, hostname="tv\x00")
    d = intake.on_sighting(s)
    assert d is not None and d.state is S.DEFAULT and d.hostname == "tv"
    assert intake.on_sighting(s) is None  # unchanged
    events = intake.service.store.list_events(MAC)
    moved = intake.on_sighting(Sighting(mac=MAC, ip="192.0.2.10", source=MudSource.DHCP4,
                                        hostname="tv"))
    assert moved is not None and "192.0.2.10" in moved.ipv4
    assert len(intake.service.store.list_events(MAC)) == len(events) + 1


@pytest.mark.parametrize("sighting", [
    Sighting(mac="not a mac", source=MudSource.DHCP4),
    Sighting(mac="01:00:5e:00:00:01", source=MudSource.LLDP),  # multicast
    Sighting(mac=MAC, source=MudSource.LLDP, mud_url="http://mud.example.com/x"),
])
def test_intake_drops_bad_sightings(intake: Intake, sighting: Sighting) -> None:
    assert intake.on_sighting(sighting) is None
    assert intake.service.store.list_devices() == []


def test_intake_link_local_only_keeps_no_address(intake: Intake) -> None:
    d = intake.on_sighting(Sighting(mac=MAC, ip="fe80::1", source=MudSource.DHCP6))
    assert d is not None and d.ipv6 == ()
    assert normalise(Sighting(mac=MAC, ip="127.0.0.1", source=MudSource.QR)).ip is None


def test_intake_bad_url_from_known_device_is_recorded(intake: Intake) -> None:
    intake.on_sighting(Sighting(mac=MAC, ip="192.0.2.9", source=MudSource.DHCP4))
    intake.on_sighting(Sighting(mac=MAC, ip="192.0.2.9", source=MudSource.DHCP4,
                                mud_url="http://mud.example.com/x"))
    assert intake.service.store.list_events(MAC)[-1].kind is EventKind.URL_REJECTED


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600),
                 st.dictionaries(st.sampled_from(["v", "action", "family", "mac", "ip",
                                                  "hostname", "mud_url"]),
                                 st.one_of(st.none(), st.integers(), st.text(max_size=80),
                                           st.booleans()))
                 .map(lambda d: json.dumps(d).encode())))
def test_hook_parser_never_crashes(data: bytes) -> None:
    try:
        s = parse_hook_message(data)
    except SightingError:
        return
    assert isinstance(s.mac, str) and s.source in (MudSource.DHCP4, MudSource.DHCP6)


def run_dhcp_listen(tmp_path: Path, calls: Sequence[tuple[list[str], dict[str, str]]]
                    ) -> tuple[list[dict[str, Any]], int, str]:
    """``mudguard dhcp listen`` fed by the real ``mudguard-dhcp-hook``, once per (hook
    arguments, extra environment) of ``calls``: its JSON lines, exit code and stderr."""
    import os
    import subprocess
    import sys
    import time

    sock = tmp_path / "dhcp.sock"
    env = {**os.environ, "MUDGUARD_DHCP_SOCKET": str(sock)}
    proc = subprocess.Popen([sys.executable, "-m", "mudguard", "dhcp", "listen", "--count",
                             str(len(calls)), "--timeout", "20"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(500):  # bounded wait for the socket (10 s)
            if sock.exists():
                break
            time.sleep(0.02)
        hook = Path(sys.executable).with_name("mudguard-dhcp-hook")
        for args, extra in calls:
            subprocess.run([str(hook), *args], env={**env, **extra}, check=True, timeout=20)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return [json.loads(line) for line in out.splitlines()], proc.returncode, err


def test_dhcp_listen_command_with_the_real_hook(tmp_path: Path) -> None:
    client = {"DNSMASQ_MAC": MAC, "DNSMASQ_VENDOR_CLASS": "udhcp 1.36.1"}
    lines, code, err = run_dhcp_listen(tmp_path, [
        (["add", MAC, "192.0.2.50", "plug"], {**client, "DNSMASQ_MUD_URL": URL}),
        (["old", "00:01:00:01:aa", "2001:db8::50"], client)])
    assert [(x["source"], x["ip"], x["mud_url"]) for x in lines] == [
        ("dhcp4", "192.0.2.50", URL), ("dhcp6", "2001:db8::50", None)]
    assert lines[0]["vendor_class"] == "udhcp 1.36.1"
    assert code == 0, err


def test_dhcp_listen_says_when_nothing_came(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mudguard.cli.main import app

    result = CliRunner().invoke(app, ["dhcp", "listen", "--socket", str(tmp_path / "s.sock"),
                                      "--timeout", "0.2"])
    assert result.exit_code == 1 and "no lease event" in result.output


# -- rtnetlink neighbour messages ---------------------------------------------------------

def neigh_message(*, family: int = 10, ifindex: int = 3, state: int = 0x02,
                  dst: bytes | None = None, lladdr: bytes | None = None, kind: int = 28) -> bytes:
    """An RTM_NEWNEIGH message laid out as the kernel sends it (nlmsghdr, ndmsg, rtattrs)."""
    import socket as _socket

    def rta(t: int, v: bytes) -> bytes:
        raw = struct.pack("=HH", 4 + len(v), t) + v
        return raw + b"\0" * (-len(raw) % 4)

    if dst is None:
        dst = _socket.inet_pton(_socket.AF_INET6, "2001:db8:1::77")
    if lladdr is None:
        lladdr = bytes.fromhex(MAC.replace(":", ""))
    body = struct.pack("=BxxxiHBB", family, ifindex, state, 0, 1) + rta(1, dst) + rta(2, lladdr)
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_neighbour_messages() -> None:
    from mudguard.discovery.neighbour import parse_neigh_messages

    other = bytes.fromhex("20010db8" + "0" * 22 + "88")
    two = neigh_message() + neigh_message(state=0x04, dst=other)
    found = parse_neigh_messages(two, ifindex=3)
    assert [(s.mac, s.ip, s.source) for s in found] == [
        (MAC, "2001:db8:1::77", MudSource.NEIGHBOUR), (MAC, "2001:db8::88", MudSource.NEIGHBOUR)]
    assert parse_neigh_messages(neigh_message(), ifindex=4) == []


@pytest.mark.parametrize("message", [
    neigh_message(family=2, dst=bytes([192, 0, 2, 7])),  # IPv4: leases are the source
    neigh_message(state=0x20),  # FAILED
    neigh_message(state=0x01),  # INCOMPLETE
    neigh_message(kind=29),  # RTM_DELNEIGH
    neigh_message(dst=bytes.fromhex("fe80" + "0" * 26 + "01")),  # link-local
    neigh_message(lladdr=b"\x01\x02"),  # not Ethernet
    neigh_message()[:30],  # truncated
    b"\xff" * 40,
])
def test_neighbour_messages_ignored(message: bytes) -> None:
    from mudguard.discovery.neighbour import parse_neigh_messages

    assert parse_neigh_messages(message) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_neighbour_parser_never_crashes(data: bytes) -> None:
    from mudguard.discovery.neighbour import parse_neigh_messages

    for s in parse_neigh_messages(neigh_message() + data):
        assert s.source is MudSource.NEIGHBOUR


def test_sources_that_cannot_start_are_off_not_a_crash(tmp_path: Path) -> None:
    from mudguard.discovery.dhcp import DhcpHookListener
    from mudguard.discovery.neighbour import NeighbourWatcher

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert DhcpHookListener.open(blocker / "dhcp.sock") is None  # parent is a file
    assert NeighbourWatcher.open("mgl-no-such-if") is None
