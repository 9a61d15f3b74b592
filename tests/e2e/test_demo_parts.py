"""The demo's parts on their own: the fake Internet's DNS answers, its HTTPS manufacturer
server (real TLS with the test CA), the signed MUD files, and the devices' DHCP client
against real dnsmasq announcing option 161."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from mudguard.demo import dhcp, scenario
from mudguard.demo.internet import dns_answer
from mudguard.mud import parse_mud

RECORDS = {"cloud.example.com": ["198.51.100.10", "2001:db8:ff:1::10"]}


def _ask(name: str, rdtype: str) -> dns.message.Message:
    wire = dns_answer(dns.message.make_query(name, rdtype).to_wire(), RECORDS)
    assert wire is not None
    return dns.message.from_wire(wire)


def test_dns_answers_known_names_with_their_addresses() -> None:
    a = _ask("Cloud.Example.com.", "A")
    assert a.rcode() == dns.rcode.NOERROR
    assert [r.address for r in a.answer[0]] == ["198.51.100.10"]
    aaaa = _ask("cloud.example.com", "AAAA")
    assert [r.address for r in aaaa.answer[0]] == ["2001:db8:ff:1::10"]


def test_dns_unknown_name_is_nxdomain_and_other_types_empty() -> None:
    assert _ask("nowhere.example.com", "A").rcode() == dns.rcode.NXDOMAIN
    mx = _ask("cloud.example.com", "MX")
    assert (mx.rcode(), mx.answer) == (dns.rcode.NOERROR, [])


def test_dns_garbage_gets_formerr_or_nothing() -> None:
    assert dns_answer(b"\x01\x02", RECORDS) is None
    wire = dns_answer(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff", RECORDS)
    assert wire is not None
    assert wire[:2] == b"\x12\x34" and wire[3] & 0x0F == dns.rcode.FORMERR


def test_served_mud_files_parse_with_their_demo_urls() -> None:
    for dev in scenario.DEVICES:
        if dev.mud_url is None:
            continue
        result = parse_mud(scenario.served_mud(dev), expected_url=dev.mud_url)
        assert result.ok, (dev.key, [str(e) for e in result.errors])
        assert result.mud is not None
        assert result.mud.is_supported is dev.supported
        assert result.mud.mud_signature == dev.signature_url
        assert result.mud.mfg_name, dev.key  # every demo maker names itself


def test_dhcp_messages_carry_the_mud_url_in_option_161() -> None:
    import dpkt

    wire = dhcp.build(1, "02:6d:67:00:00:07", 42, hostname="bulb",
                      mud_url="https://mud.lifx.example/lifx/bulb.json")
    msg = dpkt.dhcp.DHCP(wire)
    opts = dict(msg.opts)
    assert opts[161] == b"https://mud.lifx.example/lifx/bulb.json"
    assert (msg.xid, msg.flags, msg.chaddr[:6]) == (42, 0x8000, bytes.fromhex("026d67000007"))
    assert dhcp.parse(wire, 42) is None  # a request is never taken for a reply
    assert dhcp.parse(b"junk", 42) is None


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


@pytest.fixture()
def home():  # type: ignore[no-untyped-def]
    from mudguard.vhome import VirtualHome

    with VirtualHome(prefix="mgip", devices=1) as vhome:
        yield vhome


@pytest.mark.root
@needs_root
def test_internet_serves_signed_mud_over_tls_and_answers_dns(home, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = scenario.prepare(tmp_path, datetime.now(UTC))
    for address in scenario.internet_addresses():
        home.run(home.inet_ns, ["ip", "addr", "replace", f"{address}/32", "dev", "lo"])
    proc = subprocess.Popen(["ip", "netns", "exec", home.inet_ns, sys.executable, "-m",
                             "mudguard.demo.internet", str(run.internet_config),
                             "--lifetime", "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        bulb = scenario.device("bulb")
        fetched = home.call(home.gw_ns, _https_get, str(run.ca_file), bulb.mud_url)
        assert fetched == run.mud_files["bulb"].read_bytes()
        signature = home.call(home.gw_ns, _https_get, str(run.ca_file), bulb.signature_url)
        assert signature[:1] == b"\x30"  # DER SEQUENCE: a CMS ContentInfo
        answer = home.call(home.gw_ns, _resolve, "v2.broker.lifx.co", scenario.INTERNET_DNS)
        assert answer == ["198.51.100.21"]
        assert home.tcp(home.gw_ns, "198.51.100.21", 56700)
    finally:
        proc.terminate()
        proc.wait(5)


def _https_get(cafile: str, url: str) -> bytes:
    """GET ``url`` over TLS checked against the test CA, resolving through the fake DNS."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    address = _resolve(host, scenario.INTERNET_DNS)[0]
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection((address, 443), 5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {host}\r\n"
                    "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def _lease(interface: str, mac: str, url: str) -> dhcp.Lease:
    return dhcp.obtain(interface, mac, hostname="lifx-bulb", mud_url=url, timeout=15.0)


def _resolve(name: str, server: str) -> list[str]:
    import dns.query

    response = dns.query.udp(dns.message.make_query(name, "A"), server, timeout=2)
    return [r.address for rrset in response.answer for r in rrset]


@pytest.mark.root
@needs_root
@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed")
def test_device_dhcp_client_gets_a_lease_from_dnsmasq_announcing_its_mud_url(
        home, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seen = tmp_path / "seen.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(seen)!r}, 'a').write(json.dumps([sys.argv[1:], "
        "os.environ.get('DNSMASQ_MUD_URL')]) + '\\n')\n")
    hook.chmod(0o700)
    node = home.nodes[0]
    home.run(node.ns, ["ip", "addr", "flush", "dev", node.iface])
    dnsmasq = subprocess.Popen(
        ["ip", "netns", "exec", home.gw_ns, "dnsmasq", "--keep-in-foreground",
         "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0",
         f"--interface={home.lan_if}", "--bind-interfaces", "--user=root",
         "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
         f"--dhcp-script={hook}", f"--dhcp-leasefile={tmp_path / 'leases'}",
         f"--pid-file={tmp_path / 'pid'}", "--log-facility=-"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        url = "https://mud.lifx.example/lifx/bulb.json"
        lease = home.call(node.ns, _lease, node.iface, node.mac, url)
        assert lease.address.startswith("192.0.2.")
        assert (lease.router, lease.prefixlen, lease.server) == ("192.0.2.1", 24, "192.0.2.1")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not seen.exists():
            time.sleep(0.05)
        args, mud_url = json.loads(seen.read_text().splitlines()[0])
        assert (args[0], args[1], args[2], mud_url) == ("add", node.mac, lease.address, url)
    finally:
        dnsmasq.terminate()
        dnsmasq.wait(5)
