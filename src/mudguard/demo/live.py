"""The demo's live view (Rich): one row per device with its address, the state the
gateway gave it and its allowed/blocked flows, the expected outcomes, recent events,
and the portal's URL."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mudguard.demo import scenario
from mudguard.demo.judge import Status

if TYPE_CHECKING:
    from mudguard.demo.runner import Demo

_STATE_STYLE = {"profiled": "green", "default": "yellow", "learning": "yellow",
                "proposed": "yellow", "out-of-support": "magenta",
                "quarantined": "bold red", "trusted": "cyan", "new": "dim"}


def render(demo: Demo) -> Group:
    """The whole screen for the demo's current state."""
    elapsed = time.time() - demo.started_at if demo.started_at else 0.0
    header = Text.assemble(("mudguard demo", "bold"), f"  ·  {elapsed:4.0f}s  ·  portal: ",
                           (demo.portal_url or "starting", "bold cyan underline"),
                           "  ·  Ctrl-C stops and removes the virtual home")
    devices = Table(expand=True, title="devices on the home LAN", title_justify="left")
    devices.add_column("device", ratio=2)
    devices.add_column("address", no_wrap=True)
    devices.add_column("WiFi key", no_wrap=True)
    devices.add_column("state", no_wrap=True)
    devices.add_column("its attempts: ✓ got through / ✗ blocked", ratio=5)
    devices.add_column("dropped", justify="right", no_wrap=True)
    for dev in scenario.DEVICES:
        view = demo.judge.view(dev.key)
        state = view.state or "—"
        flows = Text()
        for flow in dev.flows:
            tally = view.flows[flow.key]
            if tally.last is None:
                continue
            if flows:
                flows.append("\n")
            flows.append(f"{flow.key} ", style="bold")
            flows.append(f"{flow.name or flow.address}:{flow.port} ", style="dim")
            flows.append(f"✓{len(tally.ok)} ✗{len(tally.blocked)}",
                         style="green" if tally.last else "red")
        devices.add_row(dev.label, view.address or "—", view.wifi_key or "—",
                        Text(state, style=_STATE_STYLE.get(state, "")), flows,
                        str(view.dropped))
    outcomes = Table(expand=True, title="expected outcomes", title_justify="left")
    outcomes.add_column("", width=4)
    outcomes.add_column("outcome")
    outcomes.add_column("so far")
    for verdict in demo.judge.outcomes():
        mark = {Status.PASSED: Text("✓", "bold green"), Status.FAILED: Text("✗", "bold red"),
                Status.PENDING: Text("…", "yellow")}[verdict.status]
        outcomes.add_row(mark, verdict.text, verdict.detail)
    events = Panel("\n".join(demo.log_lines) or "waiting for devices…", title="events",
                   title_align="left")
    return Group(Panel(header), devices, outcomes, events)


class LiveView:
    """A Rich ``Live`` display refreshed by the demo's loop."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.live = Live(render(demo), refresh_per_second=4, screen=False)
        self.live.start()

    def refresh_view(self) -> None:
        """Redraw from the demo's current state."""
        self.live.update(render(self.demo))

    def stop(self) -> None:
        """Leave the final screen in the terminal."""
        self.live.update(render(self.demo))
        self.live.stop()


def start_live(demo: Demo) -> LiveView:
    """Start the live view for ``demo``."""
    return LiveView(demo)
