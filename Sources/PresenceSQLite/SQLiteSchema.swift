import GRDB

/// The schema and its migrations. A later version adds a migration here and
/// never edits an earlier one, so every file ever written still opens.
enum SQLiteSchema {
    /// `PRAGMA application_id` of a presence database ("PRES"), so a foreign SQLite file is refused.
    static let applicationId: Int32 = 0x5052_4553

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
                CREATE TABLE rooms (
                    room_id TEXT PRIMARY KEY NOT NULL,
                    token TEXT NOT NULL UNIQUE,
                    version INTEGER NOT NULL
                );
                CREATE TABLE users (
                    room_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    online INTEGER NOT NULL,
                    online_since INTEGER NOT NULL,
                    last_disconnected INTEGER NOT NULL,
                    data TEXT,
                    name TEXT,
                    image TEXT,
                    PRIMARY KEY (room_id, user_id)
                ) WITHOUT ROWID;
                CREATE TABLE sessions (
                    session_id TEXT PRIMARY KEY NOT NULL,
                    room_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    token TEXT NOT NULL UNIQUE,
                    interval INTEGER NOT NULL
                );
                PRAGMA application_id = \(applicationId);
                """)
        }
        migrator.registerMigration("v2-away") { db in
            try db.execute(sql: """
                ALTER TABLE users ADD COLUMN away INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE users ADD COLUMN away_since INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE sessions ADD COLUMN away INTEGER NOT NULL DEFAULT 0;
                """)
        }
        migrator.registerMigration("v3-events") { db in
            try db.execute(sql: """
                CREATE TABLE events (
                    seq INTEGER PRIMARY KEY NOT NULL,
                    room_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    type TEXT NOT NULL,
                    reason TEXT,
                    at INTEGER NOT NULL,
                    room_version INTEGER NOT NULL,
                    name TEXT,
                    image TEXT,
                    data TEXT
                );
                CREATE INDEX events_by_room ON events (room_id, seq);
                CREATE TABLE webhook_cursors (
                    endpoint TEXT PRIMARY KEY NOT NULL,
                    delivered_through INTEGER NOT NULL,
                    failed_at INTEGER
                );
                """)
        }
        migrator.registerMigration("v4-session-keys") { db in
            // A session id belongs to its user: sessions are keyed by user id, U+001F, session id
            // (PresenceState.sessionKey).
            try db.execute(sql: """
                UPDATE sessions SET session_id = user_id || char(31) || session_id WHERE instr(session_id, char(31)) = 0;
                """)
        }
        return migrator
    }
}
