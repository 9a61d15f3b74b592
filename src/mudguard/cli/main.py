"""Entry point: collects every ``*_cmd`` module of this package into one Typer app.

Each command module defines ``register(app)``; discovering them keeps this file
free of a list that every new command would have to edit. ``main()`` imports only the
module of the command it runs when that module is named after it (``run`` →
``run_cmd``): the daemon does not carry the rest of the tree (labels, capture parsers,
…) in its memory (#19). ``app`` (the whole tree) is built on first access.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import typer

import mudguard.cli as cli_package


def _new_app() -> typer.Typer:
    app = typer.Typer(
        name="mudguard",
        help="mudguard: a home gateway that limits each IoT device to what its maker says "
             "it needs.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    # A group even with one command registered: `mudguard run ...` keeps its word.
    app.callback()(_no_options)
    return app


def _no_options() -> None:
    pass


def _command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(cli_package.__path__)
                  if m.name.endswith("_cmd"))


def _register(app: typer.Typer, module_name: str) -> None:
    importlib.import_module(f"mudguard.cli.{module_name}").register(app)


def _defines(app: typer.Typer, command: str) -> bool:
    names = [info.name for info in app.registered_commands]
    names += [info.name for info in app.registered_groups]
    return command in names


def build_app(command: str | None = None) -> typer.Typer:
    """The CLI: every command module registered, or only ``<command>_cmd`` when that
    module exists and defines ``command`` (otherwise every module, so help and errors
    stay those of the whole CLI)."""
    app = _new_app()
    modules = _command_modules()
    if command is not None and f"{command}_cmd" in modules:
        _register(app, f"{command}_cmd")
        if _defines(app, command):
            return app
        app = _new_app()
    for module_name in modules:
        _register(app, module_name)
    return app


@functools.cache
def _whole_app() -> typer.Typer:
    return build_app()


def __getattr__(name: str) -> typer.Typer:
    """``app``: the whole CLI, built on first access (tests, tools)."""
    if name == "app":
        return _whole_app()
    raise AttributeError(name)


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs: its first word, unless that is an option."""
    if argv and not argv[0].startswith("-"):
        return argv[0]
    return None


def main() -> None:
    """Run the CLI."""
    build_app(_command_of(sys.argv[1:]))()
