"""Entry point: collects every ``*_cmd`` module of this package into one Typer app.

Each command module defines ``register(app)``; discovering them keeps this file
free of a list that every new command would have to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

import mudguard.cli as cli_package

app = typer.Typer(
    name="mudguard",
    help="mudguard: a home gateway that limits each IoT device to what its maker says it needs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if module_info.name.endswith("_cmd"):
            module = importlib.import_module(f"mudguard.cli.{module_info.name}")
            module.register(app)


_register_commands()


def main() -> None:
    """Run the CLI."""
    app()
