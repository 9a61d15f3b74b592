"""``mudguard base``: the static base ruleset an early-boot unit loads (issue #20)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.daemon.config import load_config
from mudguard.enforce.boot import write_base_ruleset
from mudguard.policy import (
    TABLE,
    HomeContext,
    base_mark,
    base_ruleset,
    compile_base,
    set_shard_count,
    shard_count,
)
from mudguard.policy._data import data_mark, data_ruleset


def config(tmp_path: Path, lan: str = "br-lan", tables: int | None = None,
           ruleset: str = "chains") -> Path:
    path = tmp_path / "gateway.toml"
    extra = f"device_tables = {tables}\n" if tables else ""
    extra += f'ruleset = "{ruleset}"\n' if ruleset else ""
    path.write_text(f'[gateway]\nlan_interface = "{lan}"\nlan_prefixes = ["192.0.2.0/24"]\n'
                    f'addresses = ["192.0.2.1"]\nstate_dir = "{tmp_path / "state"}"\n{extra}')
    return path


@pytest.fixture(autouse=True)
def _shards() -> object:
    before = shard_count()
    yield None
    set_shard_count(before)


def first_forward_rule(doc: dict[str, object]) -> dict[str, object]:
    items = doc["nftables"]
    assert isinstance(items, list)
    return next(i["add"]["rule"] for i in items if "rule" in i.get("add", {})
                and i["add"]["rule"]["table"] == TABLE and i["add"]["rule"]["chain"] == "forward")


def test_prints_the_base_of_the_configuration_marked(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["base", "--config", str(config(tmp_path))])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["nftables"][0] == {"metainfo": {"json_schema_version": 1}}
    context = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",),
                          lan_interface="br-lan")
    assert doc == json.loads(json.dumps(base_ruleset(context)))
    assert first_forward_rule(doc)["comment"] == base_mark(context)
    chains = [i["add"]["chain"] for i in doc["nftables"] if "chain" in i.get("add", {})]
    assert {"name": "forward", "policy": "drop"}.items() <= next(
        c for c in chains if c["table"] == TABLE and c["name"] == "forward").items()


def test_policy_as_data_prints_the_fixed_ruleset_of_the_configuration(tmp_path: Path) -> None:
    path = config(tmp_path, ruleset="")  # the default: policy as data
    result = CliRunner().invoke(app, ["base", "--config", str(path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    context = load_config(path).home_context()
    assert doc == json.loads(json.dumps(data_ruleset(context)))
    assert data_mark(context) in [r["comment"] for r in (
        i["add"]["rule"] for i in doc["nftables"] if "rule" in i.get("add", {}))
        if r["chain"] == "forward" and "comment" in r]
    assert base_mark(context) not in result.output
    out = tmp_path / "state" / "base.json"
    assert CliRunner().invoke(app, ["base", "-c", str(path), "-o", str(out)]).exit_code == 0
    assert write_base_ruleset(out, context, "data") is False  # already this fixed ruleset
    assert write_base_ruleset(out, context, "chains") is True


def test_the_mark_tells_another_lan_or_table_count_apart(tmp_path: Path) -> None:
    marks = set()
    for lan, tables in (("br-lan", None), ("br-other", None), ("br-lan", 4)):
        result = CliRunner().invoke(app, ["base", "-c", str(config(tmp_path, lan, tables))])
        assert result.exit_code == 0, result.output
        marks.add(first_forward_rule(json.loads(result.output))["comment"])
    assert len(marks) == 3


def test_writes_the_file_atomically_and_only_when_it_changes(tmp_path: Path) -> None:
    out = tmp_path / "state" / "base.json"
    result = CliRunner().invoke(app, ["base", "-c", str(config(tmp_path)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o644
    context = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",),
                          lan_interface="br-lan")
    assert json.loads(out.read_text())["nftables"][1:] == json.loads(
        json.dumps(compile_base(context)))
    assert write_base_ruleset(out, context) is False  # already this base
    other = HomeContext(lan_prefixes=("192.0.2.0/24",), gateway_addresses=("192.0.2.1",),
                        lan_interface="br-x")
    assert write_base_ruleset(out, other) is True
    assert [p.name for p in out.parent.iterdir()] == ["base.json"]  # no temporary left


def test_a_bad_configuration_exits_2_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.toml"
    bad.write_text("[gateway]\nlan_prefixes = 3\n")
    result = CliRunner().invoke(app, ["base", "-c", str(bad)])
    assert result.exit_code == 2
    assert "mudguard base:" in result.output
