"""Writes ``schema-v<N>.sql``: a device database as this code writes it, for the upgrade
test of later releases. Run once per release that changes the schema, from a checkout of
that release: ``python tests/data/store/make_dump.py`` (refuses to overwrite a dump).

Invented data only (documentation addresses, ``02:00:5e:00:53:xx`` example MACs, the
example.com maker); every table and every column later migrations added holds a value.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mudguard.devices import CachedMud, Device, EventKind, Settings
from mudguard.devices._model import DnsGrant, HomeDefault, MudSource, SignatureStatus
from mudguard.devices.reasons import Reason
from mudguard.identify.record import IdentityRecord, RecordedClue
from mudguard.policy import Grant, GrantKind, LifecycleState
from mudguard.store import SCHEMA_VERSION, Store

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
PLUG, CAMERA, SPEAKER = "02:00:5e:00:53:01", "02:00:5e:00:53:02", "02:00:5e:00:53:03"


def fill(store: Store) -> None:
    """The release's rows: a profiled signed plug, a quarantined camera with an
    exception, a learning speaker with a proposal, grants of every kind, events, activity,
    a cached MUD file and the owner's settings."""
    store.save_device(Device(
        mac=PLUG, state=LifecycleState.PROFILED, reasons=(Reason(
            "profiled", "MUD profile from https://mud.example.com/plug-v2.json enforced",
            url="https://mud.example.com/plug-v2.json"),),
        ipv4=("192.0.2.10",), ipv6=("2001:db8::10",), name="kitchen plug", hostname="plug-1",
        mud_url="https://mud.example.com/plug-v2.json", mud_source=MudSource("dhcp4"),
        manufacturer="mud.example.com", model="Plug 1", profile_hash="ab" * 32,
        signature_status=SignatureStatus("signed_valid"), signer="CN=Example",
        end_of_support=NOW + timedelta(days=365), first_seen=NOW, last_seen=NOW,
        pinned_signer="CN=Example", root_mud_url="https://mud.example.com/plug.json",
        past_root_urls=("https://mud.example.com/plug-v1.json",)))
    store.save_device(Device(
        mac=CAMERA, state=LifecycleState.QUARANTINED, reasons=("scan",),
        ipv4=("192.0.2.11",), first_seen=NOW, last_seen=NOW,
        quarantine_exceptions=("cl0-frdev",), kind="camera"))
    store.save_device(Device(
        mac=SPEAKER, state=LifecycleState.LEARNING, ipv4=("192.0.2.12",), first_seen=NOW,
        last_seen=NOW))
    store.add_grant(PLUG, Grant(kind=GrantKind.SERVICE, host="ntp.example.com", protocol=17,
                                port=123, expires=NOW + timedelta(days=1)), NOW)
    store.add_grant(PLUG, Grant(kind=GrantKind.PAUSE, schedule="21:30-07:00 UTC"), NOW)
    store.add_grant(CAMERA, Grant(kind=GrantKind.DENY, host="198.51.100.0/24"), NOW)
    store.add_event(EventKind.JOINED, NOW, PLUG, {"ipv4": "192.0.2.10"})
    store.add_event(EventKind.VIOLATION, NOW, CAMERA, {"count": 3})
    store.add_activity(PLUG, NOW, {"mud.example.com": (12, 0), "198.51.100.30": (0, 4)})
    store.put_mud(CachedMud(url="https://mud.example.com/plug-v2.json",
                            data=b'{"ietf-mud:mud": {}}', fetched_at=NOW,
                            cache_validity_hours=24, signature=b"\x30\x00"))
    store.start_learning(SPEAKER, NOW, NOW + timedelta(days=3))
    store.add_learned_flows(SPEAKER, [["udp", "198.51.100.53", 53]], limit=100)
    store.set_proposal(SPEAKER, b'{"ietf-mud:mud": {"mud-version": 1}}')
    store.save_settings(Settings(home_default=HomeDefault.LAN, allow_unsigned=False,
                                 learning_days=7.0, lock_automatically=True,
                                 time_zone="Europe/Paris"))
    # 9: the daemon's identification record; 10: the DNS guard's grants
    store.set_identity(SPEAKER, NOW, IdentityRecord(
        manufacturer="Example Audio", manufacturer_confidence=0.8, kind="speaker",
        kind_confidence=0.7, model=None, platform=None, clues=(RecordedClue(
            field="hostname", value="example-speaker", supports=(("kind", "speaker"),),
            weight=0.7),)).dumps())
    store.save_dns_grants(["192.0.2.10"], [DnsGrant(
        device=PLUG, address="192.0.2.10", name="ntp.example.com", remote="198.51.100.123",
        expires=NOW.timestamp() + 3600, lifetime_s=3600)])


def main() -> int:
    """Write the current schema's dump beside this script."""
    target = Path(__file__).with_name(f"schema-v{SCHEMA_VERSION}.sql")
    if target.exists():
        print(f"{target} exists: a release's dump is never rewritten", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mudguard.db"
        with Store(path) as store:
            fill(store)
        with sqlite3.connect(path) as db:
            lines = list(db.iterdump())
            version = db.execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION
    lines.insert(-1, f"PRAGMA user_version = {version};")  # before COMMIT
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
