"""``mudguard policy compile``: clear errors for bad files and options (no kernel needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.mud import parse_mud
from tests.conftest import CORPUS

VALID = [p for p in sorted((CORPUS / "mud").rglob("*.json")) if parse_mud(p.read_bytes()).ok]
INVALID = [p for p in sorted((CORPUS / "mud").rglob("*.json")) if p not in VALID]


def test_json_output_is_a_complete_batch() -> None:
    result = CliRunner().invoke(app, ["policy", "compile", str(VALID[0]), "--mac",
                                      "02:00:00:00:00:01", "--json"])
    assert result.exit_code == 0
    kinds = [next(iter(c[next(iter(c))])) for c in json.loads(result.stdout)["nftables"][1:]]
    assert {"table", "map", "chain", "rule", "element"} <= set(kinds)


def test_table_output_lists_the_device_rules() -> None:
    result = CliRunner().invoke(app, ["policy", "compile", str(VALID[0]), "--mac",
                                      "02:00:00:00:00:01"])
    assert result.exit_code == 0 and "baseline/dns-udp" in result.output


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_file_gets_a_clear_error(path: Path) -> None:
    result = CliRunner().invoke(app, ["policy", "compile", str(path), "--mac", "02:00:00:00:00:01"])
    assert result.exit_code == 2
    assert "error" in result.output


@pytest.mark.parametrize("args", [
    ["--mac", "not-a-mac"],
    ["--mac", "ff:ff:ff:ff:ff:ff"],
    ["--mac", "00:00:00:00:00:00"],
    ["--mac", "01:00:5e:00:00:fb"],
    ["--mac", "02:00:00:00:00:01", "--ipv4", "2001:db8::1"],
    ["--mac", "02:00:00:00:00:01", "--ipv6", "hello"],
    ["--mac", "02:00:00:00:00:01", "--lan-interface", "br lan;x"],
    # no device sends from these: binding rules to them would name nobody (or everybody)
    ["--mac", "02:00:00:00:00:01", "--ipv4", "0.0.0.0"],
    ["--mac", "02:00:00:00:00:01", "--ipv4", "255.255.255.255"],
    ["--mac", "02:00:00:00:00:01", "--ipv4", "127.0.0.1"],
    ["--mac", "02:00:00:00:00:01", "--ipv4", "224.0.0.251"],
    ["--mac", "02:00:00:00:00:01", "--ipv6", "ff02::1"],
    ["--mac", "02:00:00:00:00:01", "--ipv6", "::"],
    ["--mac", "02:00:00:00:00:01", "--ipv6", "::ffff:192.0.2.1"],
])
def test_bad_options_are_refused(args: list[str]) -> None:
    path = VALID[0]
    result = CliRunner().invoke(app, ["policy", "compile", str(path), *args])
    assert result.exit_code == 2 and "error" in result.output


def test_a_mac_written_with_dashes_or_capitals_is_the_same_device() -> None:
    def batch(mac: str) -> str:
        result = CliRunner().invoke(app, ["policy", "compile", str(VALID[0]), "--mac", mac,
                                          "--json"])
        assert result.exit_code == 0, result.output
        return result.stdout

    assert batch("02-00-00-00-00-0A") == batch("02:00:00:00:00:0a")
