"""``mudguard profile learn``: real corpus captures and hand-made ones in, valid MUD files out."""

from __future__ import annotations

import csv
import json
import re
import socket
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.mud import parse_mud
from mudguard.profile.capture import CaptureError, read_packets
from mudguard.profile.core import Limits, Observer

runner = CliRunner()
# The MADEA night's first file without most of its Nest camera packets, and the Kasa
# bulb's packets of the next file (``tests/data/corpus/pcap/madea-smarthome/PROVENANCE.md``).
MADEA_FIRST = "monitoring_2023-6-12_21_50_58.slice.pcapng"
MADEA_KASA_LATER = "monitoring_2023-6-12_22_15_49.kasa.pcapng"
DEV_MAC, GW_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:01"
DEV4, GW4, NET4 = "192.0.2.10", "192.0.2.1", "203.0.113.80"
DEV6, GW6, NET6 = "2001:db8:1::10", "2001:db8:1::1", "2001:db8:f::80"


def mud_check(path: Path) -> None:
    """The learned file passes ``mudguard mud check`` (exit 0)."""
    result = runner.invoke(app, ["mud", "check", str(path)])
    assert result.exit_code == 0, result.output


def learn(tmp_path: Path, capture: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "learned.json"
    result = runner.invoke(app, ["profile", "learn", str(capture), "-o", str(out), "-q", *extra])
    assert result.exit_code == 0, result.output
    mud_check(out)
    document: dict[str, Any] = json.loads(out.read_text())
    return document


def aces(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    acls = document["ietf-access-control-list:acls"]["acl"]
    return [(acl["name"], ace["matches"]) for acl in acls
            for ace in acl["aces"]["ace"]]


# -- the corpus ---------------------------------------------------------------------------


def test_smartercoffee_captures_learn_valid_profiles(corpus: Path, tmp_path: Path) -> None:
    folder = corpus / "pcap" / "smartercoffee"
    device = (folder / "_iotdevice-mac.txt").read_text().strip()
    captures = sorted(folder.glob("*.pcap"))
    assert len(captures) == 15
    for capture in captures:
        document = learn(tmp_path, capture, "--device", device)
        assert device.replace(":", "") in document["ietf-mud:mud"]["mud-url"]
        found = aces(document)
        # DHCP to the broadcast address and to the gateway (10.10.10.1 answers DHCP).
        assert any(m.get("udp", {}).get("destination-port", {}).get("port") == 67
                   and m["ipv4"].get("destination-ipv4-network") == "255.255.255.255/32"
                   for _, m in found)
        assert any(m.get("ietf-mud:mud") == {"my-controller": [None]} for _, m in found)
        # IGMP to 224.0.0.1 is kept, one way only.
        assert any(m["ipv4"].get("protocol") == 2 for _, m in found)


def test_single_device_capture_needs_no_device_option(corpus: Path, tmp_path: Path) -> None:
    document = learn(tmp_path, corpus / "pcap" / "smartercoffee" / "Setup-A-1-STA.pcap")
    assert "5ccf7f07aefb" in document["ietf-mud:mud"]["mud-url"]


def test_smartercoffee_app_connection_is_to_device(corpus: Path, tmp_path: Path) -> None:
    # Setup-A-8: the phone app (10.10.10.30) had a TCP connection to the machine's port 2081.
    document = learn(tmp_path, corpus / "pcap" / "smartercoffee" / "Setup-A-8-STA.pcap",
                     "--device", "5c:cf:7f:07:ae:fb")
    served = [m for name, m in aces(document) if name.endswith("v4to") and "tcp" in m]
    assert served[0]["tcp"] == {"destination-port": {"operator": "eq", "port": 2081},
                                "ietf-mud:direction-initiated": "to-device"}
    assert served[0]["ietf-mud:mud"] == {"local-networks": [None]}


def madea_devices(corpus: Path) -> dict[str, str]:
    with (corpus / "pcap" / "madea-smarthome" / "Device_MAC_Name_Mapping.csv").open() as fh:
        return {row["MAC Address"].lower(): row["Device Name"] for row in csv.DictReader(fh)}


def test_madea_needs_device_choice(corpus: Path, tmp_path: Path) -> None:
    capture = corpus / "pcap" / "madea-smarthome" / MADEA_FIRST
    result = runner.invoke(app, ["profile", "learn", str(capture), "-o",
                                 str(tmp_path / "x.json"), "-q"])
    assert result.exit_code == 2
    assert "--device" in result.output and "64:16:66:49:3e:cb" in result.output
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(("where", "says"), [
    ("folder", "is a folder"), ("missing/x.json", "no such folder")])
def test_an_output_that_cannot_be_written_is_refused_before_reading(
        corpus: Path, tmp_path: Path, where: str, says: str) -> None:
    capture = corpus / "pcap" / "madea-smarthome" / MADEA_KASA_LATER
    (tmp_path / "folder").mkdir()
    result = runner.invoke(app, ["profile", "learn", str(capture), "--device",
                                 "d8:0d:17:33:c2:52", "-o", str(tmp_path / where), "-q"])
    assert result.exit_code == 2 and says in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # no temporary left


def test_madea_every_device_learns_a_valid_profile(corpus: Path, tmp_path: Path) -> None:
    capture = corpus / "pcap" / "madea-smarthome" / MADEA_FIRST
    learned = 0
    for mac, name in madea_devices(corpus).items():
        out = tmp_path / f"{mac.replace(':', '')}.json"
        result = runner.invoke(app, ["profile", "learn", str(capture), "--device", mac,
                                     "-o", str(out), "-q"])
        if result.exit_code == 1 and ("no IP traffic" in result.output
                                      or "no packets" in result.output):
            continue  # e.g. the smoke detector sends nothing in this window
        assert result.exit_code == 0, (name, result.output)
        mud_check(out)
        learned += 1
    assert learned >= 12


def test_madea_kasa_bulb_names_come_from_dns(corpus: Path, tmp_path: Path) -> None:
    capture = corpus / "pcap" / "madea-smarthome" / MADEA_FIRST
    document = learn(tmp_path, capture, "--device", "d8:0d:17:33:c2:52")
    found = aces(document)
    ntp = [m for _, m in found if m["ipv4"].get("ietf-acldns:dst-dnsname") == "pool.ntp.org"]
    assert ntp and ntp[0]["udp"]["destination-port"] == {"operator": "eq", "port": 123}
    # The gateway's DNS service is my-controller, with the port and no address.
    dns = [m for _, m in found if m.get("udp", {}).get("destination-port", {}).get("port") == 53]
    assert dns and all(m.get("ietf-mud:mud") == {"my-controller": [None]} for m in dns)
    # No ephemeral port survives: every port in the file is a server's.
    ports = {m[p][side]["port"] for _, m in found for p in ("tcp", "udp") if p in m
             for side in m[p] if side.endswith("-port")}
    assert ports <= {53, 123, 443, 9999, 80, 8883, 67}


# -- hand-made captures ---------------------------------------------------------------------


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ether(src: str, dst: str, payload: dpkt.Packet, v6: bool = False) -> bytes:
    etype = dpkt.ethernet.ETH_TYPE_IP6 if v6 else dpkt.ethernet.ETH_TYPE_IP
    return bytes(dpkt.ethernet.Ethernet(src=mac(src), dst=mac(dst), type=etype, data=payload))


def ip4(src: str, dst: str, l4: dpkt.Packet, proto: int) -> dpkt.ip.IP:
    packet = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, data=l4)
    packet.len = len(bytes(packet))
    return packet


def ip6(src: str, dst: str, l4: dpkt.Packet, proto: int) -> dpkt.ip6.IP6:
    body = bytes(l4)
    return dpkt.ip6.IP6(src=socket.inet_pton(socket.AF_INET6, src),
                        dst=socket.inet_pton(socket.AF_INET6, dst), nxt=proto, hlim=64,
                        plen=len(body), data=body)


def tcp(sport: int, dport: int, flags: int) -> dpkt.tcp.TCP:
    return dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, off=5)


def dns_answer(name: str, qtype: int, rdata: bytes) -> dpkt.udp.UDP:
    msg = dpkt.dns.DNS(id=1)
    msg.qr = dpkt.dns.DNS_R
    msg.qd = [dpkt.dns.DNS.Q(name=name, type=qtype, cls=1)]
    msg.an = [dpkt.dns.DNS.RR(name=name, type=qtype, cls=1, ttl=60, rdata=rdata)]
    payload = bytes(msg)
    return dpkt.udp.UDP(sport=53, dport=40053, ulen=8 + len(payload), data=payload)


def home_frames() -> list[bytes]:
    """A device that resolves and uses a cloud name (v4 and v6), serves HTTP on the LAN,
    talks NTP to an unnamed address and does IPv6 neighbour discovery."""
    syn, synack, ack = dpkt.tcp.TH_SYN, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, dpkt.tcp.TH_ACK
    frames = [
        ether(GW_MAC, DEV_MAC, ip4(GW4, DEV4, dns_answer("Cloud.Example.com", 1,
                                                        socket.inet_aton(NET4)), 17)),
        ether(GW_MAC, DEV_MAC, ip6(GW6, DEV6, dns_answer(
            "cloud.example.com", 28, socket.inet_pton(socket.AF_INET6, NET6)), 17), v6=True),
    ]
    for port in range(50000, 50010):  # ten connections: one ACE (ephemeral ports collapse)
        frames.append(ether(DEV_MAC, GW_MAC, ip4(DEV4, NET4, tcp(port, 443, syn), 6)))
        frames.append(ether(GW_MAC, DEV_MAC, ip4(NET4, DEV4, tcp(443, port, synack), 6)))
        frames.append(ether(DEV_MAC, GW_MAC, ip4(DEV4, NET4, tcp(port, 443, ack), 6)))
    frames.append(ether(DEV_MAC, GW_MAC, ip6(DEV6, NET6, tcp(51000, 8883, syn), 6), v6=True))
    # A phone on the LAN opens the device's web page (the device is the server).
    frames.append(ether("02:00:00:00:00:0b", DEV_MAC, ip4("192.0.2.20", DEV4,
                                                          tcp(60000, 80, syn), 6)))
    frames.append(ether(DEV_MAC, "02:00:00:00:00:0b", ip4(DEV4, "192.0.2.20",
                                                          tcp(80, 60000, synack), 6)))
    ntp = dpkt.udp.UDP(sport=123, dport=123, ulen=8)
    frames.append(ether(DEV_MAC, GW_MAC, ip4(DEV4, "198.51.100.7", ntp, 17)))
    ns = dpkt.icmp6.ICMP6(type=135, code=0, data=b"\x00" * 20)
    frames.append(ether(DEV_MAC, "33:33:ff:00:00:01", ip6("fe80::a", "ff02::1:ff00:1", ns, 58),
                        v6=True))
    return frames


def write_capture(path: Path, frames: list[bytes], ng: bool = False) -> Path:
    with path.open("wb") as fh:
        writer = dpkt.pcapng.Writer(fh) if ng else dpkt.pcap.Writer(fh)
        for i, frame in enumerate(frames):
            writer.writepkt(frame, ts=1_700_000_000 + i * 0.01)
    return path


@pytest.mark.parametrize("ng", [False, True])
def test_hand_made_home_is_learned_faithfully(tmp_path: Path, ng: bool) -> None:
    capture = write_capture(tmp_path / ("home.pcapng" if ng else "home.pcap"), home_frames(), ng)
    document = learn(tmp_path, capture, "--device", DEV_MAC)
    found = aces(document)
    v4fr = [m for name, m in found if name.endswith("v4fr")]
    v6fr = [m for name, m in found if name.endswith("v6fr")]
    v4to = [m for name, m in found if name.endswith("v4to")]
    cloud = [m for m in v4fr if m["ipv4"].get("ietf-acldns:dst-dnsname") == "cloud.example.com"]
    assert cloud == [{"ipv4": {"protocol": 6, "ietf-acldns:dst-dnsname": "cloud.example.com"},
                      "tcp": {"destination-port": {"operator": "eq", "port": 443},
                              "ietf-mud:direction-initiated": "from-device"}}]
    assert any(m["ipv6"].get("ietf-acldns:dst-dnsname") == "cloud.example.com"
               and m["tcp"]["destination-port"]["port"] == 8883 for m in v6fr)
    # The device serves port 80 to the LAN: initiated by the other side.
    served = [m for m in v4to if m.get("tcp", {}).get("destination-port", {}).get("port") == 80]
    assert served and served[0]["ietf-mud:mud"] == {"local-networks": [None]}
    assert served[0]["tcp"]["ietf-mud:direction-initiated"] == "to-device"
    # NTP to an address no DNS answer named: the address itself.
    assert any(m["ipv4"].get("destination-ipv4-network") == "198.51.100.7/32" for m in v4fr)
    # ICMPv6 neighbour solicitation kept in the IPv6 ACL.
    assert any(m.get("icmp") == {"type": 135} and m["ipv6"]["protocol"] == 58 for m in v6fr)
    assert parse_mud(document).ok


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture at all")
    result = runner.invoke(app, ["profile", "learn", str(bad), "-o", str(tmp_path / "o.json")])
    assert result.exit_code == 1 and "not a pcap or pcapng file" in result.output
    with pytest.raises(CaptureError):
        list(read_packets(bad))


def test_corrupt_record_length_is_a_clear_error(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "c.pcap", home_frames())
    data = bytearray(capture.read_bytes())
    data[24 + 8:24 + 12] = (0x7FFFFFFF).to_bytes(4, "little")  # first record's caplen
    capture.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="corrupt pcap record"):
        list(read_packets(capture))


def test_truncated_capture_keeps_what_is_whole(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "t.pcap", home_frames())
    whole = len(list(read_packets(capture)))
    capture.write_bytes(capture.read_bytes()[:-10])
    assert len(list(read_packets(capture))) == whole - 1


def test_bad_device_mac_is_refused(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "h.pcap", home_frames())
    result = runner.invoke(app, ["profile", "learn", str(capture), "--device", "nonsense",
                                 "-o", str(tmp_path / "o.json")])
    assert result.exit_code == 2 and "not a MAC address" in result.output


def test_tables_are_bounded(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "h.pcap", home_frames())
    observer = Observer(limits=Limits(services=3))
    observer.add_all(read_packets(capture))
    obs = observer.finish()
    assert len(obs.services) + len(obs.datagrams) == 3
    assert obs.overflow > 0


def test_fast_path_equals_the_general_path(corpus: Path, tmp_path: Path) -> None:
    from mudguard.profile.capture import dns_answers, read_frames

    captures = [corpus / "pcap" / "madea-smarthome" / MADEA_FIRST,
                corpus / "pcap" / "smartercoffee" / "Setup-A-8-STA.pcap",
                write_capture(tmp_path / "h.pcapng", home_frames(), ng=True)]
    for capture in captures:
        for device in (None, bytes.fromhex("d80d1733c252"), bytes.fromhex("02000000000a")):
            general = Observer(device=device)
            general.add_all(read_packets(capture))
            fast = Observer(device=device)
            fast.add_frames(read_frames(capture), dns=dns_answers)
            assert fast.finish() == general.finish(), (capture.name, device)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000), st.booleans())
def test_hostile_capture_bytes_never_crash(tmp_path_factory: pytest.TempPathFactory,
                                           tail: bytes, ng: bool) -> None:
    """Any bytes after a valid file header: packets or a CaptureError, nothing else."""
    folder = tmp_path_factory.mktemp("fuzz")
    good = write_capture(folder / "g.cap", home_frames()[:3], ng=ng).read_bytes()
    for data in (good[:32] + tail, good + tail, good[: len(good) // 2] + tail):
        path = folder / "x.cap"
        path.write_bytes(data)
        observer = Observer()
        try:
            observer.add_all(read_packets(path))
        except CaptureError:
            continue
        observer.finish()


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_on_a_terminal_only(corpus: Path, tmp_path: Path, quiet: bool) -> None:
    import os
    import pty
    import select
    import subprocess
    import sys

    capture = corpus / "pcap" / "madea-smarthome" / MADEA_FIRST
    master, slave = pty.openpty()
    mudguard = str(Path(sys.executable).with_name("mudguard"))
    args = [mudguard, "profile", "learn", str(capture), "--device", "d8:0d:17:33:c2:52",
            "-o", str(tmp_path / "o.json"), *(["-q"] if quiet else [])]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave, env={**os.environ, "COLUMNS": "120"})
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=30) == 0
    text = seen.decode("utf-8", "replace")
    assert "learned" in text
    # The bar names the file and counts its bytes ("639.7/639.7 kB").
    bar = "monitoring_2023" in text and re.search(r"[0-9.]+/[0-9.]+ [kM]B", text) is not None
    assert bar is not quiet


def test_mid_stream_reply_first_still_finds_the_server(tmp_path: Path) -> None:
    """A capture that starts mid-connection with the server's packet (no SYN seen)."""
    ack = dpkt.tcp.TH_ACK
    frames = [ether(GW_MAC, DEV_MAC, ip4("198.51.100.5", DEV4, tcp(10101, 51000, ack), 6)),
              ether(DEV_MAC, GW_MAC, ip4(DEV4, "198.51.100.5", tcp(51000, 10101, ack), 6))]
    document = learn(tmp_path, write_capture(tmp_path / "m.pcap", frames), "--device", DEV_MAC)
    found = aces(document)
    assert [m["tcp"] for name, m in found if name.endswith("v4fr")] == [
        {"destination-port": {"operator": "eq", "port": 10101},
         "ietf-mud:direction-initiated": "from-device"}]
