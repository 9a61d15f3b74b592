"""The daemon's start-up against the kernel, as a process of its own (so a test can kill it).

Run inside the gateway's namespace with one JSON argument: ``lan_if``, ``wan_if``,
``synthetic`` (how many made-up devices with corpus MUD profiles), ``corpus`` (the
``mud`` folder) and ``real`` (the home's real devices: mac, ipv4, ipv6, state). It does
what ``Gateway.restore`` does with the Enforcer: ``close_lan`` first, then every
device's policy decided, then ``reconcile`` in batches; it prints one JSON line per
step with the wall-clock time: ``start``, ``base`` (``installed``: whether it had to),
``batch`` (the MACs the kernel just accepted), ``done``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mudguard.enforce import Enforcer, Nft
from mudguard.mud import MudFile, parse_mud
from mudguard.policy import DeviceFacts, HomeContext, LifecycleState, decide

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LAN6 = ipaddress.ip_network("2001:db8:1::/64")


def say(event: str, **fields: Any) -> None:
    """One JSON line on stdout, flushed at once."""
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


def profiles(folder: Path) -> list[MudFile]:
    """Every valid MUD file under ``folder``."""
    files = []
    for path in sorted(folder.rglob("*.json")):
        result = parse_mud(path.read_bytes())
        if result.ok and result.mud is not None:
            files.append(result.mud)
    return files


def main() -> None:
    """Start up as the daemon does; tell each step."""
    args = json.loads(sys.argv[1])
    context = HomeContext(lan_prefixes=("192.0.2.0/24", str(LAN6)),
                          gateway_addresses=("192.0.2.1", "2001:db8:1::1"),
                          lan_interface=args["lan_if"], wan_interface=args["wan_if"])
    say("start")
    enforcer: Any = Enforcer(Nft(), context, clock=lambda: NOW)
    if os.environ.get("MUDGUARD_TEST_RULESET") == "data":  # policy as data
        from mudguard.enforce.data_gateway import DataGatewayEnforcer

        enforcer = DataGatewayEnforcer(Nft(), context, clock=lambda: NOW)
    say("base", installed=enforcer.close_lan())
    files = profiles(Path(args["corpus"]))
    devices: list[tuple[DeviceFacts, MudFile | None]] = [
        (DeviceFacts(mac=r["mac"], ipv4=(r["ipv4"],), ipv6=(r["ipv6"],),
                     state=LifecycleState(r["state"])), None) for r in args["real"]]
    for i in range(args["synthetic"]):
        mud = files[i % len(files)]
        devices.append((DeviceFacts(mac=f"02:6d:67:01:{i >> 8:02x}:{i & 0xFF:02x}",
                                    ipv6=(str(LAN6[0x10000 + i]),), mud_url=mud.mud_url,
                                    state=LifecycleState.PROFILED), mud))
    home = dataclasses.replace(context, devices=tuple(d for d, _ in devices))
    policies = [decide(d, mud, (), home, now=NOW) for d, mud in devices]
    say("decided", devices=len(policies))
    enforcer.reconcile(policies, on_batch=lambda macs: say("batch", macs=macs))
    say("done", installed=len(enforcer.installed()))


if __name__ == "__main__":
    main()
