"""The configuration's reference and example, generated from the parser's own table.

``example_config()`` is what ``mudguard run --print-example-config`` prints: every key
of ``CONFIG_KEYS``, commented, with its default (keys without one commented out with an
example value), so the file parses back to the defaults. ``reference_markdown()`` is
``docs/configuration.md``. Both come from ``CONFIG_KEYS`` alone, so neither can drift
from what the parser accepts. Regenerate the document with::

    .venv/bin/python -m mudguard.daemon.config_reference > docs/configuration.md
"""

from __future__ import annotations

import json
import textwrap

from mudguard.daemon.config import CONFIG_KEYS, CONFIG_SECTIONS, ConfigKey

_WIDTH = 88
_DEFAULT_PATH = "/etc/mudguard/gateway.toml"


def toml_value(value: object) -> str:
    """``value`` written as TOML (strings, booleans, numbers, lists and inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def default_text(key: ConfigKey) -> str:
    """The key's default, as people read it."""
    if key.required:
        return "required"
    if key.default_text is not None:
        return key.default_text
    return toml_value(key.default)


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, _WIDTH - 2, initial_indent="# ", subsequent_indent="# ",
                         break_on_hyphens=False)


def _example_lines(key: ConfigKey) -> list[str]:
    lines = _comment(key.meaning) + _comment(f"Value: {key.kind}. Default: {default_text(key)}.")
    if key.required:
        lines.append(f"{key.name} = {toml_value(key.example)}")
    elif key.default is None:
        lines.append(f"# {key.name} = {toml_value(key.example)}")
    else:
        lines.append(f"{key.name} = {toml_value(key.default)}")
    return lines


def example_config() -> str:
    """A complete commented configuration: every key, at its default when it has one."""
    lines = [
        "# mudguard gateway configuration (TOML), every key with its default.",
        f"# `mudguard run` reads {_DEFAULT_PATH} unless --config names another file.",
        "# Keys marked required need this home's values; lines starting with `# key =`",
        "# are unset by default. Unknown sections and keys are refused.",
        "# Reference: docs/configuration.md",
    ]
    for section, about in CONFIG_SECTIONS.items():
        lines += ["", *_comment(about), f"[{section}]"]
        for key in CONFIG_KEYS:
            if key.section == section:
                lines += ["", *_example_lines(key)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_default(key: ConfigKey) -> str:
    if key.required or key.default_text is not None:
        return _cell(default_text(key))
    return f"`{_cell(toml_value(key.default))}`"


def reference_markdown() -> str:
    """``docs/configuration.md``: every ``[section] key`` with its form, default and meaning."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from CONFIG_KEYS in src/mudguard/daemon/config.py; do not edit.",
        "     Regenerate: .venv/bin/python -m mudguard.daemon.config_reference "
        "> docs/configuration.md -->",
        "",
        f"`mudguard run` reads a TOML file, `{_DEFAULT_PATH}` unless `--config FILE` names",
        "another. It is checked before anything starts: a bad value, an unknown section or an",
        "unknown key (a typo would otherwise be lost) stops the daemon with a message naming",
        "the key (exit status 2). Only `[gateway]` `lan_interface`, `lan_prefixes` and",
        "`addresses` are required. `mudguard run --print-example-config` prints a complete",
        "commented file with every default (at the end of this page too); `mudguard demo`",
        "writes its own file for the virtual home.",
    ]
    for section, about in CONFIG_SECTIONS.items():
        lines += ["", f"## [{section}]", "", about, "",
                  "| key | value | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{key.name}` | {_cell(key.kind)} | {_markdown_default(key)} | "
                  f"{_cell(key.meaning)} |" for key in CONFIG_KEYS if key.section == section]
    lines += ["", "## Complete example", "", "```toml", example_config().rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
