import Logging
import PostgresNIO
import PresenceStore

/// The whole stored state and the log position it stands at.
struct Loaded: Sendable {
    var state: PresenceState
    var seq: Int64
    var storedDeadlines: IDDictionary<Int64>

    /// The whole stored state, read in one snapshot of the database.
    static func read(
        _ connection: PostgresConnection, now: Int64, quotas: PresenceState.UserQuotas, logger: Logger
    ) async throws -> Loaded {
        try await connection.withTransaction(logger: logger) { connection in
            try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
            var seq: Int64 = 0
            var lastVersion: Int64 = 0
            var lastEvent: Int64 = 0
            for try await (headSeq, version, event) in try await connection.query(
                "SELECT seq, last_version, last_event FROM presence.head", logger: logger
            ).decode((Int64, Int64, Int64).self) {
                seq = headSeq
                lastVersion = version
                lastEvent = event
            }
            var rooms: [DurableChanges.RoomRow] = []
            for try await (roomId, token, version) in try await connection.query(
                "SELECT room_id, token, version FROM presence.rooms", logger: logger
            ).decode((String, String, Int64).self) {
                rooms.append(.init(roomId: roomId, token: token, version: UInt64(version)))
            }
            var users: [DurableChanges.UserRow] = []
            for try await row in try await connection.query(
                """
                SELECT room_id, user_id, online, online_since, last_disconnected, data, name, image, away, away_since
                FROM presence.users
                """, logger: logger
            ).decode((String, String, Bool, Int64, Int64, String?, String?, String?, Bool, Int64).self) {
                let user = LogEntry.User(
                    roomId: row.0, userId: row.1, online: row.2, onlineSince: row.3, lastDisconnected: row.4, data: row.5,
                    name: row.6, image: row.7, away: row.8, awaySince: row.9)
                users.append(try user.row)
            }
            var sessions: [DurableChanges.SessionRow] = []
            var storedDeadlines: IDDictionary<Int64> = [:]
            for try await row in try await connection.query(
                #"SELECT session_id, room_id, user_id, token, "interval", away, deadline FROM presence.sessions"#, logger: logger
            ).decode((String, String, String, String, Int64, Bool, Int64).self) {
                sessions.append(.init(
                    sessionId: row.0, roomId: row.1, userId: row.2, token: row.3, interval: row.4, away: row.5, deadline: row.6))
                storedDeadlines[row.0] = row.6
            }
            let state = PresenceState.restoring(
                rooms: rooms, users: users, sessions: sessions, lastVersion: UInt64(lastVersion),
                lastEventSequence: UInt64(lastEvent), aliveAt: nil, now: now, storedDeadlines: true, quotas: quotas)
            return Loaded(state: state, seq: seq, storedDeadlines: storedDeadlines)
        }
    }
}
