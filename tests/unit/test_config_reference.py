"""The configuration's reference cannot drift from its parser: ``CONFIG_KEYS`` is what
``parse_config`` accepts (and nothing else), every key changes the configuration it
names, the example file (``mudguard run --print-example-config``) holds every key and
parses back to the defaults, and ``docs/configuration.md`` is exactly the generated text."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from typing import Any

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app
from mudguard.daemon.config import (
    CONFIG_KEYS,
    CONFIG_SECTIONS,
    ConfigError,
    ConfigKey,
    GatewayConfig,
    parse_config,
)
from mudguard.daemon.config_reference import (
    example_config,
    reference_markdown,
    toml_value,
)
from tests.conftest import REPO

REGENERATE = ".venv/bin/python -m mudguard.daemon.config_reference > docs/configuration.md"


def toml(tables: dict[str, dict[str, Any]]) -> str:
    """A configuration file for ``{section: {key: value}}``."""
    return "".join(f"[{section}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
                   for section, keys in tables.items())


def minimal(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The required keys at their example values, plus ``extra`` sections' keys."""
    tables: dict[str, dict[str, Any]] = {"gateway": {
        key.name: key.example for key in CONFIG_KEYS if key.required}}
    for section, keys in extra.items():
        tables.setdefault(section, {}).update(keys)
    return tables


def uncommented(example: str) -> str:
    """The example with its commented-out ``# key = value`` lines switched on."""
    names = "|".join(re.escape(key.name) for key in CONFIG_KEYS)
    return re.sub(rf"^# ((?:{names}) = .*)$", r"\1", example, flags=re.MULTILINE)


def test_every_field_of_the_configuration_has_exactly_one_key() -> None:
    fields = [f.name for f in dataclasses.fields(GatewayConfig)]
    assert sorted(key.field for key in CONFIG_KEYS) == sorted(fields)
    assert len({(key.section, key.name) for key in CONFIG_KEYS}) == len(CONFIG_KEYS)
    assert {key.section for key in CONFIG_KEYS} == set(CONFIG_SECTIONS)


@pytest.mark.parametrize("key", CONFIG_KEYS, ids=lambda key: key.dotted)
def test_each_key_is_accepted_and_sets_its_field(key: ConfigKey) -> None:
    base = parse_config(toml(minimal()))
    changed = parse_config(toml(minimal(**{key.section: {key.name: key.example}})))
    if key.required:
        assert getattr(changed, key.field) == getattr(base, key.field)
    else:
        assert getattr(changed, key.field) != getattr(base, key.field), key.dotted
        others = {f.name: getattr(changed, f.name) for f in dataclasses.fields(GatewayConfig)
                  if f.name != key.field}
        assert others == {f: getattr(base, f) for f in others}, f"{key.dotted} sets more"


@pytest.mark.parametrize("key", CONFIG_KEYS, ids=lambda key: key.dotted)
def test_each_documented_default_is_the_parsers(key: ConfigKey) -> None:
    """Left out, a key takes the default ``CONFIG_KEYS`` gives it (written in explicitly,
    the same value gives the same configuration); dataclass defaults agree too."""
    base = parse_config(toml(minimal()))
    if key.default is not None:
        explicit = parse_config(toml(minimal(**{key.section: {key.name: key.default}})))
        assert explicit == base, key.dotted
    else:
        assert key.required or key.default_text, f"{key.dotted}: say what unset means"
    field = next(f for f in dataclasses.fields(GatewayConfig) if f.name == key.field)
    if field.default is not dataclasses.MISSING:
        assert getattr(base, key.field) == field.default, key.dotted


def test_unknown_sections_and_keys_are_refused_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"unknown key gateway\.lan_interfce.*lan_interface"):
        parse_config(toml(minimal(gateway={"lan_interfce": "br0"})))
    with pytest.raises(ConfigError, match=r"unknown key wifi\.pasphrase; \[wifi\] takes ssid"):
        parse_config(toml(minimal(wifi={"pasphrase": "x"})))
    with pytest.raises(ConfigError, match=r"unknown section \[firewall\].*\[gateway\]"):
        parse_config(toml(minimal(firewall={"policy": "drop"})))
    with pytest.raises(ConfigError, match=r"\[dns\] must be a table"):
        parse_config("dns = 1\n" + toml(minimal()))


def test_the_example_holds_every_key_and_parses_back_to_the_defaults() -> None:
    example = example_config()
    assert parse_config(example) == parse_config(toml(minimal()))
    everything = tomllib.loads(uncommented(example))
    assert {(s, k) for s, table in everything.items() for k in table} == {
        (key.section, key.name) for key in CONFIG_KEYS}
    for key in CONFIG_KEYS:  # commented out exactly when unset by default
        commented = key.default is None and not key.required
        shown = key.default if key.default is not None else key.example
        line = f"{key.name} = {toml_value(shown)}"
        assert re.search(rf"^{'# ' if commented else ''}{re.escape(line)}$", example,
                         re.MULTILINE), key.dotted
    parse_config(uncommented(example))  # every example value is valid


def test_the_reference_names_every_key_with_its_default() -> None:
    text = reference_markdown()
    for section in CONFIG_SECTIONS:
        body = text.split(f"## [{section}]\n", 1)[1].split("\n## ", 1)[0]
        for key in (k for k in CONFIG_KEYS if k.section == section):
            row = next((line for line in body.splitlines()
                        if line.startswith(f"| `{key.name}` |")), None)
            assert row is not None, key.dotted
            assert key.meaning.replace("|", "\\|") in row
            expected = "required" if key.required else key.default_text or toml_value(key.default)
            assert expected in row, key.dotted
    assert example_config().rstrip("\n") in text


def test_docs_configuration_md_is_the_generated_reference() -> None:
    document = REPO / "docs" / "configuration.md"
    assert document.read_text() == reference_markdown(), f"regenerate it: {REGENERATE}"


def test_print_example_config_prints_the_example_without_reading_a_file() -> None:
    result = CliRunner().invoke(app, ["run", "--config", "/nonexistent/gateway.toml",
                                      "--print-example-config"])
    assert result.exit_code == 0, result.output
    assert result.output == example_config()
    help_text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    assert "--print-example-config" in help_text
