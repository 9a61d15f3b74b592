"""``mudguard dns serve`` and the guard's configuration refuse bad input with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.dns.core import GuardConfig
from mudguard.dns.server import load_policy_file


@pytest.mark.parametrize(("content", "message"), [
    ("[", "policy file: not JSON"),
    ("[1, 2]", "top level must be an object"),
    (json.dumps({"devices": [{"addresses": ["192.0.2.10"]}]}), "devices[0] needs an 'id'"),
    (json.dumps({"config": {"nope": 1}}), "unknown config keys ['nope']"),
    (json.dumps({"config": {"min_timeout_s": "soon"}}), "min_timeout_s must be a whole number"),
    (json.dumps({"config": {"grace_s": -1}}), "grace_s must be a whole number"),
    (json.dumps({"config": {"insert": "yes"}}), "insert must be true or false"),
    (json.dumps({"devices": [{"id": "x", "addresses": ["999.1.1.1"]}]}),
     "does not appear to be an IPv4 or IPv6 address"),
    (json.dumps({"lan_prefixes": ["192.0.2.0/33"]}), "192.0.2.0/33"),
])
def test_bad_policy_files_exit_2_with_the_reason(tmp_path: Path, content: str,
                                                 message: str) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(content)
    result = CliRunner().invoke(app, ["dns", "serve", "--listen", "127.0.0.1", "--upstream",
                                      "127.0.0.1", "--policy", str(policy), "--port", "5399"])
    assert result.exit_code == 2
    assert message in result.output


def test_a_good_policy_file_loads(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "lan_prefixes": ["192.0.2.0/24"], "gateway_addresses": ["192.0.2.1"],
        "config": {"min_timeout_s": 5, "cache_size": 0},
        "devices": [{"id": "02:6d:67:00:00:00", "addresses": ["192.0.2.10"],
                     "names": ["cloud.example.com"]}]}))
    config, devices = load_policy_file(str(policy))
    assert (config.min_timeout_s, config.cache_size, config.lan_prefixes) == (
        5, 0, ("192.0.2.0/24",))
    assert devices == [("02:6d:67:00:00:00", ["192.0.2.10"], ["cloud.example.com"], None)]


def test_config_bounds() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        GuardConfig(min_timeout_s=100, max_timeout_s=10)
    with pytest.raises(ValueError, match="upstream_timeout_s"):
        GuardConfig(upstream_timeout_s=0)


def test_serve_with_a_configuration_refuses_bad_input_with_the_reason(tmp_path: Path) -> None:
    """``serve --config``: a configuration that does not load, or one mixed with the JSON
    form's options, exits 2 with the reason (nothing listens)."""
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway]\nruleset = 'sideways'\n")
    result = CliRunner().invoke(app, ["dns", "serve", "--config", str(config)])
    assert result.exit_code == 2 and "mudguard dns serve:" in result.output
    policy = tmp_path / "policy.json"
    policy.write_text("{}")
    mixed = CliRunner().invoke(app, ["dns", "serve", "--config", str(config),
                                     "--policy", str(policy)])
    assert mixed.exit_code == 2 and "--config takes" in mixed.output
    neither = CliRunner().invoke(app, ["dns", "serve"])
    assert neither.exit_code == 2 and "give --config" in neither.output
