import Logging
import PostgresNIO
import PresenceStore

/// The event log and webhook cursors, read and written straight in their tables: an event is
/// there once its change is acknowledged, on every process.
extension PostgresJournal {
    /// Reads committed events straight from the table: they are there once their change is acknowledged.
    public func events(after: UInt64?, roomId: String?, limit: Int, engine: PostgresStore) async throws -> EventPage {
        try engine.withLock { try checkServing($0) }
        let afterSequence = after
        let after = Int64(after ?? 0)
        let (forgottenThrough, events) = try await client.withConnection { [logger] connection in
            try await connection.withTransaction(logger: logger) { connection in
                try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
                var forgottenThrough: Int64 = 0
                for try await value in try await connection.query(
                    "SELECT events_forgotten_through FROM presence.head", logger: logger
                ).decode(Int64.self) {
                    forgottenThrough = value
                }
                let query: PostgresQuery = if let roomId {
                    """
                    SELECT seq, room_id, user_id, type, reason, at, room_version, name, image, data FROM presence.events
                    WHERE room_id = \(roomId) AND seq > \(after) ORDER BY seq LIMIT \(limit)
                    """
                } else {
                    """
                    SELECT seq, room_id, user_id, type, reason, at, room_version, name, image, data FROM presence.events
                    WHERE seq > \(after) ORDER BY seq LIMIT \(limit)
                    """
                }
                var events: [PresenceEvent] = []
                for try await row in try await connection.query(query, logger: logger).decode(
                    (Int64, String, String, String, String?, Int64, Int64, String?, String?, String?).self)
                {
                    let stored = LogEntry.Event(
                        seq: row.0, roomId: row.1, userId: row.2, type: row.3, reason: row.4, at: row.5, roomVersion: row.6,
                        name: row.7, image: row.8, data: row.9)
                    events.append(try stored.event)
                }
                return (forgottenThrough, events)
            }
        }
        // Checked after the read, in the same snapshot: an error thrown inside would come out wrapped.
        try EventPaging.checkNotExpired(after: afterSequence, forgottenThrough: UInt64(forgottenThrough))
        return EventPage(events: events, after: afterSequence, forgottenThrough: UInt64(forgottenThrough))
    }

    /// The engine asks only the leader: one process sweeps for all of them.
    public func forgetEvents(before cutoff: Int64, engine: PostgresStore) async throws -> Int {
        let rows = try await client.query(
            """
            WITH last AS (SELECT max(seq) AS seq FROM presence.events WHERE at < \(cutoff)),
            forgotten AS (DELETE FROM presence.events WHERE seq <= (SELECT seq FROM last) RETURNING 1),
            head AS (
                UPDATE presence.head
                SET events_forgotten_through = GREATEST(events_forgotten_through, COALESCE((SELECT seq FROM last), 0))
                WHERE id = 1)
            SELECT count(*) FROM forgotten
            """, logger: logger)
        var count: Int64 = 0
        for try await value in rows.decode(Int64.self) { count = value }
        return Int(count)
    }

    public func webhookCursor(endpoint: String, engine: PostgresStore) async throws -> WebhookCursor {
        _ = try await client.query(
            """
            INSERT INTO presence.webhook_cursors (endpoint, delivered_through)
            SELECT \(endpoint), last_event FROM presence.head ON CONFLICT (endpoint) DO NOTHING
            """, logger: logger)
        var cursor = WebhookCursor(deliveredThrough: 0)
        for try await (through, failedAt) in try await client.query(
            "SELECT delivered_through, failed_at FROM presence.webhook_cursors WHERE endpoint = \(endpoint)", logger: logger
        ).decode((Int64, Int64?).self) {
            cursor = WebhookCursor(deliveredThrough: UInt64(through), failedAt: failedAt)
        }
        return cursor
    }

    public func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String, engine: PostgresStore) async throws {
        let through = Int64(cursor.deliveredThrough)
        _ = try await client.query(
            """
            INSERT INTO presence.webhook_cursors (endpoint, delivered_through, failed_at)
            VALUES (\(endpoint), \(through), \(cursor.failedAt))
            ON CONFLICT (endpoint) DO UPDATE SET
                -- A process that lost the lease mid-delivery must not move the cursor back.
                delivered_through = GREATEST(presence.webhook_cursors.delivered_through, EXCLUDED.delivered_through),
                failed_at = EXCLUDED.failed_at
            """, logger: logger)
    }
}
