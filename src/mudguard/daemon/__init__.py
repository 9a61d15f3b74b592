"""The gateway daemon (``mudguard run``): configuration, the event loop, its adapters.

``run(config, json_lines=...)`` builds the gateway (``mudguard.app.build_gateway``) and
serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from mudguard.daemon.config import ConfigError, GatewayConfig, load_config, parse_config
from mudguard.daemon.events import EventLog

__all__ = ["ConfigError", "EventLog", "GatewayConfig", "load_config", "parse_config", "run"]


def run(config: GatewayConfig, *, json_lines: bool = False, log_level: str = "WARNING") -> int:
    """Run the gateway for ``config`` until a signal; return the exit status."""
    from mudguard.app import build_gateway

    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    events = EventLog(json_lines=json_lines)
    gateway = build_gateway(config, events)
    asyncio.run(gateway.run())
    return 0
