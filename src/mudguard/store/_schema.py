"""Schema migrations, versioned by ``PRAGMA user_version``.

Each entry of ``MIGRATIONS`` moves the database from version ``i`` to ``i + 1``;
the store runs the missing ones in one transaction at open. Never edit a
migration that has shipped: append a new one.
"""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: devices, grants, events, cached MUD files, settings.
    """
    CREATE TABLE devices (
        mac TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        reasons TEXT NOT NULL DEFAULT '[]',
        ipv4 TEXT NOT NULL DEFAULT '[]',
        ipv6 TEXT NOT NULL DEFAULT '[]',
        name TEXT,
        hostname TEXT,
        mud_url TEXT,
        mud_source TEXT,
        pending_mud_url TEXT,
        pending_source TEXT,
        manufacturer TEXT,
        model TEXT,
        profile_hash TEXT,
        signature_status TEXT NOT NULL DEFAULT 'unknown',
        signer TEXT,
        end_of_support TEXT,
        key_id TEXT,
        first_seen TEXT,
        last_seen TEXT
    );
    CREATE TABLE grants (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mac TEXT NOT NULL REFERENCES devices(mac) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        host TEXT,
        protocol INTEGER,
        port INTEGER,
        expires TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX grants_mac ON grants(mac);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        mac TEXT,
        details TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_mac ON events(mac);
    CREATE TABLE mud_cache (
        url TEXT PRIMARY KEY,
        data BLOB NOT NULL,
        signature BLOB,
        fetched_at TEXT NOT NULL,
        cache_validity_hours INTEGER NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: learning (issue #16): a device without a MUD file learned for a period; its
    # distinct flows (bounded JSON list) and, at the end, the proposed MUD file.
    """
    CREATE TABLE learning (
        mac TEXT PRIMARY KEY REFERENCES devices(mac) ON DELETE CASCADE,
        started TEXT NOT NULL,
        until TEXT NOT NULL,
        flows TEXT NOT NULL DEFAULT '[]',
        dropped INTEGER NOT NULL DEFAULT 0,
        proposal BLOB
    );
    """,
    # 3 (issue #18 item 4): acceptable MUD URL updates, trust on first use: the
    # signer pinned from the device's first accepted signed MUD file and the root URL.
    """
    ALTER TABLE devices ADD COLUMN pinned_signer TEXT;
    ALTER TABLE devices ADD COLUMN root_mud_url TEXT;
    ALTER TABLE devices ADD COLUMN past_root_urls TEXT NOT NULL DEFAULT '[]'
    """,
    # 4 (issue #18 item 5): the owner's per-device quarantine exceptions (ACE names).
    """
    ALTER TABLE devices ADD COLUMN quarantine_exceptions TEXT NOT NULL DEFAULT '[]'
    """,
    # 5: activity (issue #15): a device's allowed connections (conntrack) and blocked
    # packets (drop log), counted per hour and destination by the daemon (one row per
    # device, hour and destination: never a row per packet or per connection).
    """
    CREATE TABLE activity (
        mac TEXT NOT NULL REFERENCES devices(mac) ON DELETE CASCADE,
        hour TEXT NOT NULL,
        destination TEXT NOT NULL,
        allowed INTEGER NOT NULL DEFAULT 0,
        blocked INTEGER NOT NULL DEFAULT 0,
        last_at TEXT NOT NULL,
        PRIMARY KEY (mac, hour, destination)
    );
    CREATE INDEX activity_hour ON activity(hour);
    """,
    # 6 (issue #15): a grant's daily schedule, "HH:MM-HH:MM ZONE" (bedtime pause).
    """
    ALTER TABLE grants ADD COLUMN schedule TEXT;
    """,
    # 7 (issue #16): the device's kind (camera, plug, bulb, …) as ``mudguard.identify``
    # inferred it from its DHCP options and traffic; shown to the owner, never a grant.
    """
    ALTER TABLE devices ADD COLUMN kind TEXT;
    """,
    # 8 (issue #15): the catalogue key and fields of each of the device's reasons
    # (``devices.reasons``), a JSON list beside ``reasons`` (null for a plain sentence;
    # rows from before have none and are read through the portal's patterns).
    """
    ALTER TABLE devices ADD COLUMN reason_keys TEXT NOT NULL DEFAULT '[]';
    """,
    # 9 (issue #16): the daemon's last identification of the device: its decision,
    # confidences and strongest clues (``identify.record.IdentityRecord``, JSON).
    """
    CREATE TABLE identity (
        mac TEXT PRIMARY KEY REFERENCES devices(mac) ON DELETE CASCADE,
        decided TEXT NOT NULL,
        record TEXT NOT NULL
    );
    """,
    # 10 (issue #17): the DNS guard's grants (a device may reach ``remote`` from
    # ``address`` because it resolved ``name``) with their expiry (Unix time) and the
    # lifetime left when written: restored at start, so a restart or a reboot does not
    # cut a device that still holds the answer in its own cache.
    """
    CREATE TABLE dns_grants (
        address TEXT NOT NULL,
        name TEXT NOT NULL,
        remote TEXT NOT NULL,
        mac TEXT NOT NULL,
        expires REAL NOT NULL,
        lifetime INTEGER NOT NULL,
        PRIMARY KEY (address, name, remote)
    );
    CREATE INDEX dns_grants_mac ON dns_grants(mac);
    """,
)

SCHEMA_VERSION: Final[int] = len(MIGRATIONS)
