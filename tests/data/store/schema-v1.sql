BEGIN TRANSACTION;
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
INSERT INTO "devices" VALUES('02:00:5e:00:53:01','profiled','["profile enforced"]','["192.0.2.10"]','["2001:db8::10"]','kitchen plug','plug-1','https://mud.example.com/plug.json','dhcp4',NULL,NULL,'mud.example.com','Plug 1','abababababababababababababababababababababababababababababababab','signed_valid','CN=Example','2027-11-26T10:00:00+00:00',NULL,'2026-11-26T10:00:00+00:00','2026-11-26T10:00:00+00:00');
INSERT INTO "devices" VALUES('02:00:5e:00:53:02','quarantined','["scan"]','["192.0.2.11"]','[]',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,'unknown',NULL,NULL,NULL,'2026-11-26T10:00:00+00:00','2026-11-26T10:00:00+00:00');
CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        mac TEXT,
        details TEXT NOT NULL DEFAULT '{}'
    );
INSERT INTO "events" VALUES(1,'2026-11-26T10:00:00+00:00','violation','02:00:5e:00:53:02','{"count": 3}');
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
INSERT INTO "grants" VALUES(1,'02:00:5e:00:53:01','internet',NULL,NULL,NULL,'2026-11-26T11:00:00+00:00','2026-11-26T10:00:00+00:00');
CREATE TABLE mud_cache (
        url TEXT PRIMARY KEY,
        data BLOB NOT NULL,
        signature BLOB,
        fetched_at TEXT NOT NULL,
        cache_validity_hours INTEGER NOT NULL
    );
INSERT INTO "mud_cache" VALUES('https://mud.example.com/plug.json',X'7B22696574662D6D75643A6D7564223A207B7D7D',NULL,'2026-11-26T10:00:00+00:00',48);
CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
CREATE INDEX grants_mac ON grants(mac);
CREATE INDEX events_mac ON events(mac);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('grants',1);
INSERT INTO "sqlite_sequence" VALUES('events',1);
COMMIT;
PRAGMA user_version = 1;
