import Logging
import PostgresNIO

/// The tables, in their own schema `presence`, and their migrations. A later version appends a
/// migration and never edits an earlier one. Several processes starting at once migrate one at
/// a time (an advisory lock), and a process refuses a schema that is newer than it knows.
enum PostgresSchema {
    static let application = "swift-presence"
    /// Serialises migrations of processes that start together.
    static let migrationLockKey: Int64 = 0x5052_4553_4D49_4752

    /// Each migration is a list of statements (the extended protocol takes one statement at a time).
    static let migrations: [[String]] = [
        [
            """
            CREATE TABLE presence.head (
                id integer PRIMARY KEY CHECK (id = 1),
                seq bigint NOT NULL,
                last_version bigint NOT NULL
            )
            """,
            """
            INSERT INTO presence.head VALUES (1, 0, 0)
            """,
            """
            CREATE TABLE presence.log (
                seq bigint PRIMARY KEY,
                written_at timestamptz NOT NULL DEFAULT now(),
                entry text NOT NULL
            )
            """,
            """
            CREATE TABLE presence.rooms (
                room_id text PRIMARY KEY,
                token text NOT NULL UNIQUE,
                version bigint NOT NULL
            )
            """,
            """
            CREATE TABLE presence.users (
                room_id text NOT NULL,
                user_id text NOT NULL,
                online boolean NOT NULL,
                online_since bigint NOT NULL,
                last_disconnected bigint NOT NULL,
                data text,
                name text,
                image text,
                away boolean NOT NULL,
                away_since bigint NOT NULL,
                PRIMARY KEY (room_id, user_id)
            )
            """,
            """
            CREATE TABLE presence.sessions (
                session_id text PRIMARY KEY,
                room_id text NOT NULL,
                user_id text NOT NULL,
                token text NOT NULL UNIQUE,
                "interval" bigint NOT NULL,
                away boolean NOT NULL,
                deadline bigint NOT NULL
            )
            """,
            """
            CREATE TABLE presence.nodes (
                node_id text PRIMARY KEY,
                started_at timestamptz NOT NULL DEFAULT now(),
                lease_until timestamptz NOT NULL
            )
            """,
            """
            CREATE TABLE presence.leader (
                id integer PRIMARY KEY CHECK (id = 1),
                node_id text NOT NULL,
                lease_until timestamptz NOT NULL
            )
            """,
            """
            INSERT INTO presence.leader VALUES (1, '', '-infinity')
            """,
        ],
        [
            "ALTER TABLE presence.head ADD COLUMN last_event bigint NOT NULL DEFAULT 0",
            "ALTER TABLE presence.head ADD COLUMN events_forgotten_through bigint NOT NULL DEFAULT 0",
            """
            CREATE TABLE presence.events (
                seq bigint PRIMARY KEY,
                room_id text NOT NULL,
                user_id text NOT NULL,
                type text NOT NULL,
                reason text,
                at bigint NOT NULL,
                room_version bigint NOT NULL,
                name text,
                image text,
                data text
            )
            """,
            "CREATE INDEX events_by_room ON presence.events (room_id, seq)",
            """
            CREATE TABLE presence.webhook_cursors (
                endpoint text PRIMARY KEY,
                delivered_through bigint NOT NULL,
                failed_at bigint
            )
            """,
        ],
        [
            // The process that last stored the session: a session whose process was lost leaves
            // with the reason server_lost.
            "ALTER TABLE presence.sessions ADD COLUMN node_id text NOT NULL DEFAULT ''",
        ],
        [
            // A session id belongs to its user: sessions are keyed by user id, U+001F, session id
            // (PresenceState.sessionKey). Processes of the earlier schema refuse to start on this one.
            "UPDATE presence.sessions SET session_id = user_id || chr(31) || session_id WHERE strpos(session_id, chr(31)) = 0",
        ],
    ]

    /// Creates or upgrades the schema; throws a clear error for a database that is not ours.
    static func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLockKey))", logger: logger)
            let schemaExists = try await connection.query(
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'presence'", logger: logger
            ).collect().first?.decode(Int64.self) ?? 0
            var version = 0
            if schemaExists > 0 {
                let marked = try await connection.query(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'presence' AND tablename = 'meta'", logger: logger
                ).collect().first?.decode(Int64.self) ?? 0
                guard marked > 0 else {
                    throw PostgresStoreError(
                        "the database has a schema \"presence\" that presence-server did not create; use another database")
                }
                var meta: [String: String] = [:]
                for try await (key, value) in try await connection.query("SELECT key, value FROM presence.meta", logger: logger)
                    .decode((String, String).self)
                {
                    meta[key] = value
                }
                guard meta["application"] == application else {
                    throw PostgresStoreError(
                        "the schema \"presence\" of this database belongs to another application; use another database")
                }
                version = Int(meta["schema_version"] ?? "") ?? 0
                guard version <= migrations.count else {
                    throw PostgresStoreError(
                        "the database was written by a newer presence-server (schema \(version), this one knows \(migrations.count)); upgrade this server")
                }
            } else {
                try await connection.query("CREATE SCHEMA presence", logger: logger)
                try await connection.query(
                    "CREATE TABLE presence.meta (key text PRIMARY KEY, value text NOT NULL)", logger: logger)
                try await connection.query(
                    "INSERT INTO presence.meta VALUES ('application', \(application)), ('schema_version', '0')",
                    logger: logger)
            }
            for index in version..<migrations.count {
                logger.info("migrating the PostgreSQL schema", metadata: ["to": "\(index + 1)"])
                for statement in migrations[index] {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    "UPDATE presence.meta SET value = \(String(index + 1)) WHERE key = 'schema_version'", logger: logger)
            }
        }
    }
}
