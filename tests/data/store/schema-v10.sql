BEGIN TRANSACTION;
CREATE TABLE activity (
        mac TEXT NOT NULL REFERENCES devices(mac) ON DELETE CASCADE,
        hour TEXT NOT NULL,
        destination TEXT NOT NULL,
        allowed INTEGER NOT NULL DEFAULT 0,
        blocked INTEGER NOT NULL DEFAULT 0,
        last_at TEXT NOT NULL,
        PRIMARY KEY (mac, hour, destination)
    );
INSERT INTO "activity" VALUES('02:00:5e:00:53:01','2026-12-02T10:00:00+00:00','mud.example.com',12,0,'2026-12-02T10:00:00+00:00');
INSERT INTO "activity" VALUES('02:00:5e:00:53:01','2026-12-02T10:00:00+00:00','198.51.100.30',0,4,'2026-12-02T10:00:00+00:00');
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
    , pinned_signer TEXT, root_mud_url TEXT, past_root_urls TEXT NOT NULL DEFAULT '[]', quarantine_exceptions TEXT NOT NULL DEFAULT '[]', kind TEXT, reason_keys TEXT NOT NULL DEFAULT '[]');
INSERT INTO "devices" VALUES('02:00:5e:00:53:01','profiled','["MUD profile from https://mud.example.com/plug-v2.json enforced"]','["192.0.2.10"]','["2001:db8::10"]','kitchen plug','plug-1','https://mud.example.com/plug-v2.json','dhcp4',NULL,NULL,'mud.example.com','Plug 1','abababababababababababababababababababababababababababababababab','signed_valid','CN=Example','2027-12-02T10:00:00+00:00',NULL,'2026-12-02T10:00:00+00:00','2026-12-02T10:00:00+00:00','CN=Example','https://mud.example.com/plug.json','["https://mud.example.com/plug-v1.json"]','[]',NULL,'[{"key": "profiled", "fields": {"url": "https://mud.example.com/plug-v2.json"}}]');
INSERT INTO "devices" VALUES('02:00:5e:00:53:02','quarantined','["scan"]','["192.0.2.11"]','[]',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,'unknown',NULL,NULL,NULL,'2026-12-02T10:00:00+00:00','2026-12-02T10:00:00+00:00',NULL,NULL,'[]','["cl0-frdev"]','camera','[null]');
INSERT INTO "devices" VALUES('02:00:5e:00:53:03','learning','[]','["192.0.2.12"]','[]',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,'unknown',NULL,NULL,NULL,'2026-12-02T10:00:00+00:00','2026-12-02T10:00:00+00:00',NULL,NULL,'[]','[]',NULL,'[]');
CREATE TABLE dns_grants (
        address TEXT NOT NULL,
        name TEXT NOT NULL,
        remote TEXT NOT NULL,
        mac TEXT NOT NULL,
        expires REAL NOT NULL,
        lifetime INTEGER NOT NULL,
        PRIMARY KEY (address, name, remote)
    );
INSERT INTO "dns_grants" VALUES('192.0.2.10','ntp.example.com','198.51.100.123','02:00:5e:00:53:01',1796209200.0,3600);
CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        mac TEXT,
        details TEXT NOT NULL DEFAULT '{}'
    );
INSERT INTO "events" VALUES(1,'2026-12-02T10:00:00+00:00','joined','02:00:5e:00:53:01','{"ipv4": "192.0.2.10"}');
INSERT INTO "events" VALUES(2,'2026-12-02T10:00:00+00:00','violation','02:00:5e:00:53:02','{"count": 3}');
CREATE TABLE grants (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mac TEXT NOT NULL REFERENCES devices(mac) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        host TEXT,
        protocol INTEGER,
        port INTEGER,
        expires TEXT,
        created_at TEXT NOT NULL
    , schedule TEXT);
INSERT INTO "grants" VALUES(1,'02:00:5e:00:53:01','service','ntp.example.com',17,123,'2026-12-03T10:00:00+00:00','2026-12-02T10:00:00+00:00',NULL);
INSERT INTO "grants" VALUES(2,'02:00:5e:00:53:01','pause',NULL,NULL,NULL,NULL,'2026-12-02T10:00:00+00:00','21:30-07:00 UTC');
INSERT INTO "grants" VALUES(3,'02:00:5e:00:53:02','deny','198.51.100.0/24',NULL,NULL,NULL,'2026-12-02T10:00:00+00:00',NULL);
CREATE TABLE identity (
        mac TEXT PRIMARY KEY REFERENCES devices(mac) ON DELETE CASCADE,
        decided TEXT NOT NULL,
        record TEXT NOT NULL
    );
INSERT INTO "identity" VALUES('02:00:5e:00:53:03','2026-12-02T10:00:00+00:00','{"evidence":[{"field":"hostname","label":"DHCP hostname (option 12/81)","supports":{"kind":"speaker"},"value":"example-speaker","weight":0.7}],"kind":"speaker","kind_confidence":0.7,"manufacturer":"Example Audio","manufacturer_confidence":0.8,"model":null,"platform":null,"trusted_candidate":false}');
CREATE TABLE learning (
        mac TEXT PRIMARY KEY REFERENCES devices(mac) ON DELETE CASCADE,
        started TEXT NOT NULL,
        until TEXT NOT NULL,
        flows TEXT NOT NULL DEFAULT '[]',
        dropped INTEGER NOT NULL DEFAULT 0,
        proposal BLOB
    );
INSERT INTO "learning" VALUES('02:00:5e:00:53:03','2026-12-02T10:00:00+00:00','2026-12-05T10:00:00+00:00','[["udp", "198.51.100.53", 53]]',0,X'7B22696574662D6D75643A6D7564223A207B226D75642D76657273696F6E223A20317D7D');
CREATE TABLE mud_cache (
        url TEXT PRIMARY KEY,
        data BLOB NOT NULL,
        signature BLOB,
        fetched_at TEXT NOT NULL,
        cache_validity_hours INTEGER NOT NULL
    );
INSERT INTO "mud_cache" VALUES('https://mud.example.com/plug-v2.json',X'7B22696574662D6D75643A6D7564223A207B7D7D',X'3000','2026-12-02T10:00:00+00:00',24);
CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
INSERT INTO "settings" VALUES('home_default','lan');
INSERT INTO "settings" VALUES('allow_unsigned','0');
INSERT INTO "settings" VALUES('learning_days','7.0');
INSERT INTO "settings" VALUES('lock_automatically','1');
INSERT INTO "settings" VALUES('time_zone','Europe/Paris');
CREATE INDEX grants_mac ON grants(mac);
CREATE INDEX events_mac ON events(mac);
CREATE INDEX activity_hour ON activity(hour);
CREATE INDEX dns_grants_mac ON dns_grants(mac);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('grants',3);
INSERT INTO "sqlite_sequence" VALUES('events',2);
PRAGMA user_version = 10;
COMMIT;
