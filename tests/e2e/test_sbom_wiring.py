"""The daemon's RFC 9472 wiring (built, not started): the maintenance pass hands a
profiled device whose MUD file publishes an SBOM to the SBOM worker, the outcome is
an event, and the portal's device report shows it."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from mudguard.devices import CachedMud, Device
from mudguard.mud import parse_mud
from mudguard.policy import LifecycleState
from tests.unit.test_mud_parse import base

MAC = "00:11:22:33:44:55"


def test_the_maintenance_pass_checks_the_sbom_and_the_report_shows_the_outcome(
        tmp_path: Path) -> None:
    from mudguard.app import build_gateway
    from mudguard.daemon.config import parse_config
    from mudguard.daemon.events import EventLog

    config = parse_config(
        '[gateway]\nlan_interface = "mgiwnone"\nlan_prefixes = ["192.0.2.0/24"]\n'
        f'addresses = ["192.0.2.1"]\nstate_dir = "{tmp_path}"\n'
        '[discovery]\nneighbours = false\n[portal]\nnames = ["mudguard.home"]\n')
    stream = io.StringIO()
    gateway = build_gateway(config, EventLog(stream=stream, json_lines=True))
    portal = next(s for s in gateway.services if type(s).__name__ == "PortalRunner")
    services = portal.server.config.app.state.portal.services
    try:
        assert gateway.transparency is not None
        assert services.transparency is gateway.transparency
        doc = base()
        doc["ietf-mud:mud"].update({"extensions": ["transparency"],
                                    "ietf-mud-transparency:transparency":
                                        {"sbom-local-well-known": "https"}})
        data = json.dumps(doc).encode()
        mud = parse_mud(data).mud
        assert mud is not None
        store = gateway.service.store
        store.put_mud(CachedMud(url=mud.mud_url, data=data, fetched_at=datetime.now(UTC)))
        # A "device" on loopback: the device fetcher refuses it before any packet.
        device = Device(mac=MAC, state=LifecycleState.PROFILED, mud_url=mud.mud_url,
                        ipv4=("127.0.0.1",), profile_hash=hashlib.sha256(data).hexdigest())
        store.save_device(device)
        gateway._check_transparency()
        gateway._sbom_worker.shutdown(wait=True)
        outcome = gateway.transparency.result(device)
        assert outcome is not None and not outcome.retrieved
        assert "not a device's address" in (outcome.error or "")
        events = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert any(e["event"] == "sbom" and e["mac"] == MAC and e["retrieved"] is False
                   for e in events)
        view = services.device_report(device, mud).transparency
        assert view is not None and view.published and view.retrieved is False
        assert not gateway.transparency.due(device, mud)  # asked once per cache-validity
    finally:
        gateway._worker.shutdown(wait=True)
        gateway.service.store.close()
