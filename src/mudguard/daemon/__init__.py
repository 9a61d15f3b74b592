"""The gateway daemon (``mudguard run``): configuration, the event loop, its adapters.

``run(config, json_lines=...)`` builds the gateway (``mudguard.app.build_gateway``) and
serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mudguard.daemon.config import ConfigError, GatewayConfig, load_config, parse_config
from mudguard.daemon.events import EventLog

if TYPE_CHECKING:
    from mudguard.daemon.gateway import Gateway

__all__ = ["ConfigError", "EventLog", "GatewayConfig", "load_config", "parse_config", "run"]


def run(config: GatewayConfig, *, json_lines: bool = False, log_level: str = "WARNING",
        config_path: Path | None = None, events: EventLog | None = None) -> int:
    """Run the gateway for ``config`` until SIGTERM/SIGINT; return the exit status.
    With ``config_path``, SIGHUP re-reads that file (``Gateway.reload``)."""
    from mudguard.app import build_gateway

    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    events = events or EventLog(json_lines=json_lines)
    gateway = build_gateway(config, events)
    if config_path is not None:
        gateway.read_config = functools.partial(load_config, config_path)
    _refresh_base_file(config, gateway)
    asyncio.run(gateway.run())
    return 0


def _refresh_base_file(config: GatewayConfig, gateway: Gateway) -> None:
    """Keep the static base the boot unit loads in step with this configuration."""
    from mudguard.enforce.boot import write_base_ruleset

    try:
        if write_base_ruleset(config.base_file, gateway.enforcer.enforcer.context,
                              config.ruleset):
            logging.getLogger(__name__).info("wrote the boot base ruleset %s",
                                             config.base_file)
    except OSError as exc:  # the running gateway does not need it: the next boot does
        logging.getLogger(__name__).warning("could not write the boot base ruleset %s: %s",
                                            config.base_file, exc)
