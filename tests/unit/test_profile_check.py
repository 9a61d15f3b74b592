"""``mudguard profile check``: flows a profile does not allow, by decide() and evaluate()."""

from __future__ import annotations

import json
from pathlib import Path

import dpkt
import pytest
from rich.console import Console
from typer.testing import CliRunner

from mudguard.cli import profile_cmd
from mudguard.cli.main import app
from tests.unit.test_profile_learn import (
    DEV4,
    DEV_MAC,
    GW_MAC,
    MADEA_FIRST,
    MADEA_KASA_LATER,
    ether,
    home_frames,
    ip4,
    tcp,
    write_capture,
)

runner = CliRunner()
MADEA = "pcap/madea-smarthome"
KASA = "d8:0d:17:33:c2:52"


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["profile", *args, "-q"])
    return result.exit_code, result.stdout


def test_a_capture_passes_the_profile_learned_from_it(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "home.pcap", home_frames())
    mud = tmp_path / "dev.json"
    code, _ = run("learn", str(capture), "--device", DEV_MAC, "-o", str(mud))
    assert code == 0
    code, out = run("check", str(capture), "--device", DEV_MAC, "--mud", str(mud), "--json")
    assert (code, json.loads(out)) == (0, [])


def test_doing_something_else_is_reported(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The virtual-home story: a device behaves as learned, then telnets around the LAN."""
    mud = tmp_path / "dev.json"
    code, _ = run("learn", str(write_capture(tmp_path / "a.pcap", home_frames())), "--device",
                  DEV_MAC, "-o", str(mud))
    assert code == 0
    bad = home_frames()
    for host in range(30, 34):  # telnet SYNs to four LAN hosts
        bad.append(ether(DEV_MAC, GW_MAC, ip4(DEV4, f"192.0.2.{host}",
                                              tcp(41000 + host, 23, dpkt.tcp.TH_SYN), 6)))
    bad.append(ether(DEV_MAC, GW_MAC, ip4(DEV4, "203.0.113.80", tcp(42000, 8443,
                                                                    dpkt.tcp.TH_SYN), 6)))
    capture = write_capture(tmp_path / "b.pcap", bad)
    code, out = run("check", str(capture), "--device", DEV_MAC, "--mud", str(mud), "--json")
    assert code == 1
    deviations = json.loads(out)
    telnet = [d for d in deviations if d["dst_port"] == 23]
    assert sorted(d["dst"] for d in telnet) == [f"192.0.2.{h}" for h in range(30, 34)]
    assert all(d["direction"] == "from-device" and d["protocol"] == 6 and d["packets"] == 1
               and d["rule"] == "default-drop" and d["device"] == DEV_MAC for d in telnet)
    # The cloud name is known (a DNS answer), but port 8443 is not in the profile.
    other = [d for d in deviations if d["dst_port"] == 8443]
    assert other and other[0]["dst_name"] == "cloud.example.com"
    assert other[0]["first_seen"].startswith("2023-11-14T22:13")
    assert len(deviations) == 5
    # The table names the same flows.
    monkeypatch.setattr(profile_cmd, "console", Console(width=200, highlight=False))
    result = runner.invoke(app, ["profile", "check", str(capture), "--device", DEV_MAC,
                                 "--mud", str(mud), "-q"])
    assert result.exit_code == 1
    assert "5 of" in result.stdout and "192.0.2.33" in result.stdout


def test_corpus_device_against_its_own_learned_profile(corpus: Path, tmp_path: Path) -> None:
    folder = corpus / MADEA
    first = folder / MADEA_FIRST
    later = folder / MADEA_KASA_LATER
    mud = tmp_path / "kasa.json"
    assert run("learn", str(first), "--device", KASA, "-o", str(mud))[0] == 0
    assert run("check", str(first), "--device", KASA, "--mud", str(mud))[0] == 0
    code, out = run("check", str(later), "--device", KASA, "--mud", str(mud), "--json")
    assert code in (0, 1)
    assert isinstance(json.loads(out), list)


def test_another_device_deviates_from_the_kasa_profile(corpus: Path, tmp_path: Path) -> None:
    first = corpus / MADEA / MADEA_FIRST
    mud = tmp_path / "kasa.json"
    assert run("learn", str(first), "--device", KASA, "-o", str(mud))[0] == 0
    code, out = run("check", str(first), "--device", "50:8a:06:4b:c5:c7", "--mud", str(mud),
                    "--json")
    deviations = json.loads(out)
    assert code == 1 and deviations
    assert {d["device"] for d in deviations} == {"50:8a:06:4b:c5:c7"}
    assert all({"src", "dst", "protocol", "packets", "first_seen", "direction"} <= d.keys()
               for d in deviations)


def test_invalid_mud_file_is_refused(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "home.pcap", home_frames())
    mud = tmp_path / "bad.json"
    mud.write_text('{"ietf-mud:mud": {"mud-version": 1}}')
    result = runner.invoke(app, ["profile", "check", str(capture), "--mud", str(mud), "-q"])
    assert result.exit_code == 1 and "not a usable MUD file" in result.output


def _self_check(corpus: Path, tmp_path: Path) -> dict[str, list[dict[str, object]]]:
    """Each MADEA device (first file) against the profile learned from the same file."""
    import csv

    folder = corpus / MADEA
    capture = folder / MADEA_FIRST
    out: dict[str, list[dict[str, object]]] = {}
    with (folder / "Device_MAC_Name_Mapping.csv").open() as fh:
        for row in csv.DictReader(fh):
            mac = row["MAC Address"].lower()
            mud = tmp_path / f"{mac.replace(':', '')}.json"
            if run("learn", str(capture), "--device", mac, "-o", str(mud))[0] != 0:
                continue  # no traffic in this window
            code, text = run("check", str(capture), "--device", mac, "--mud", str(mud), "--json")
            assert code in (0, 1)
            out[row["Device Name"]] = json.loads(text)
    return out


def test_learned_profiles_round_trip_completely(corpus: Path, tmp_path: Path) -> None:
    """Every MADEA device passes the profile learned from its own traffic, including
    what the gateway receives itself (mDNS, SSDP, IGMP/MLD, broadcasts: ``_local.py``)."""
    results = _self_check(corpus, tmp_path)
    assert len(results) >= 12
    assert all(not found for found in results.values()), {
        name: found for name, found in results.items() if found}


def test_profile_without_group_rules_flags_group_traffic(corpus: Path, tmp_path: Path) -> None:
    """The round trip above can fail: drop the learned multicast/broadcast ACEs and the
    same devices' group traffic is reported again, by the gw chain's final drop."""
    import csv
    import ipaddress

    folder = corpus / MADEA
    capture = folder / MADEA_FIRST
    flagged = 0
    with (folder / "Device_MAC_Name_Mapping.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        mac = row["MAC Address"].lower()
        mud = tmp_path / f"{mac.replace(':', '')}.json"
        if run("learn", str(capture), "--device", mac, "-o", str(mud))[0] != 0:
            continue
        doc = json.loads(mud.read_text())
        removed = 0
        for acl in doc["ietf-access-control-list:acls"]["acl"]:
            kept = []
            for ace in acl["aces"]["ace"]:
                ip = ace["matches"].get("ipv4") or ace["matches"].get("ipv6") or {}
                dst = ip.get("destination-ipv4-network") or ip.get("destination-ipv6-network")
                group = dst is not None and (ipaddress.ip_network(dst).is_multicast
                                             or dst.startswith("255.255.255.255")
                                             or dst.endswith(".255/32"))
                removed += group
                if not group:
                    kept.append(ace)
            acl["aces"]["ace"] = kept
        if not removed:
            continue
        mud.write_text(json.dumps(doc))
        code, text = run("check", str(capture), "--device", mac, "--mud", str(mud), "--json")
        found = json.loads(text)
        assert code == 1 and found, row["Device Name"]
        for d in found:
            dst = ipaddress.ip_address(str(d["dst"]))
            assert dst.is_multicast or str(dst).endswith(".255"), d
            assert d["rule"] == "default-drop"
        flagged += 1
    assert flagged >= 4
