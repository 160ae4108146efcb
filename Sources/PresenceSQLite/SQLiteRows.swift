import Foundation
import GRDB
import PresenceStore

/// How presence rows, events and marks are read from and written to the SQLite file.
enum SQLiteRows {
    /// Reads the saved state; sessions get their grace deadlines (see `PresenceState.restoring`).
    static func load(_ database: DatabaseQueue, now: Int64, quotas: PresenceState.UserQuotas) throws -> PresenceState {
        try database.read { db in
            let rooms = try Row.fetchAll(db, sql: "SELECT room_id, token, version FROM rooms").map {
                DurableChanges.RoomRow(roomId: $0["room_id"], token: $0["token"], version: UInt64($0["version"] as Int64))
            }
            let decoder = JSONDecoder()
            let users = try Row.fetchAll(db, sql: "SELECT * FROM users").map { row -> DurableChanges.UserRow in
                let dataText: String? = row["data"]
                let data = try dataText.map { try decoder.decode(JSONValue.self, from: Data($0.utf8)) }
                return DurableChanges.UserRow(
                    roomId: row["room_id"],
                    record: UserRecord(
                        userId: row["user_id"], online: row["online"], lastDisconnected: row["last_disconnected"],
                        onlineSince: row["online_since"], data: data, name: row["name"], image: row["image"],
                        away: row["away"], awaySince: row["away_since"]))
            }
            let sessions = try Row.fetchAll(db, sql: "SELECT * FROM sessions").map {
                DurableChanges.SessionRow(
                    sessionId: $0["session_id"], roomId: $0["room_id"], userId: $0["user_id"], token: $0["token"],
                    interval: $0["interval"], away: $0["away"])
            }
            let lastVersion = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'last_version'") ?? 0
            let lastEvent = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'last_event'") ?? 0
            let aliveAt = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'alive_at'")
            return PresenceState.restoring(
                rooms: rooms, users: users, sessions: sessions, lastVersion: UInt64(lastVersion),
                lastEventSequence: UInt64(lastEvent), aliveAt: aliveAt, now: now, quotas: quotas)
        }
    }

    static func write(_ changes: DurableChanges, aliveAt: Int64, to db: Database) throws {
        for roomId in changes.deletedRooms {
            try db.cachedStatement(sql: "DELETE FROM rooms WHERE room_id = ?").execute(arguments: [roomId])
        }
        for room in changes.rooms {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO rooms (room_id, token, version) VALUES (?, ?, ?)").execute(arguments: [room.roomId, room.token, Int64(room.version)])
        }
        for user in changes.deletedUsers {
            try db.cachedStatement(sql: "DELETE FROM users WHERE room_id = ? AND user_id = ?").execute(arguments: [user.roomId, user.userId])
        }
        for row in changes.users {
            let record = row.record
            try db.cachedStatement(sql: """
                    INSERT OR REPLACE INTO users (room_id, user_id, online, online_since, last_disconnected, data, name, image, away, away_since)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """).execute(arguments: [
                    row.roomId, record.userId, record.online, record.onlineSince, record.lastDisconnected,
                    record.data?.compactJSON, record.name, record.image, record.away, record.awaySince,
                ])
        }
        for sessionId in changes.deletedSessions {
            try db.cachedStatement(sql: "DELETE FROM sessions WHERE session_id = ?").execute(arguments: [sessionId])
        }
        for session in changes.sessions {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO sessions (session_id, room_id, user_id, token, interval, away) VALUES (?, ?, ?, ?, ?, ?)").execute(arguments: [session.sessionId, session.roomId, session.userId, session.token, session.interval, session.away])
        }
        for event in changes.events {
            try db.cachedStatement(sql: """
                    INSERT INTO events (seq, room_id, user_id, type, reason, at, room_version, name, image, data)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """).execute(arguments: [
                    Int64(event.sequence), event.roomId, event.userId, event.kind.rawValue, event.reason?.rawValue,
                    event.at, Int64(event.roomVersion), event.name, event.image, event.data?.compactJSON,
                ])
        }
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_version', ?), ('alive_at', ?), ('last_event', ?)").execute(arguments: [Int64(changes.lastVersion), aliveAt, Int64(changes.lastEventSequence)])
    }

    static func event(from row: Row) throws -> PresenceEvent {
        let dataText: String? = row["data"]
        let typeName: String = row["type"]
        let reasonName: String? = row["reason"]
        guard let kind = PresenceEvent.Kind(rawValue: typeName) else {
            throw SQLiteStoreError(description: "unknown event type \(typeName) in the events table")
        }
        return PresenceEvent(
            sequence: UInt64(row["seq"] as Int64), roomId: row["room_id"], userId: row["user_id"], kind: kind,
            reason: reasonName.flatMap(PresenceEvent.LeaveReason.init(rawValue:)), at: row["at"],
            roomVersion: UInt64(row["room_version"] as Int64), name: row["name"], image: row["image"],
            data: try dataText.map { try JSONParser.parse($0.utf8) })
    }

    static func metaValue(_ key: String, in db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [key]) ?? 0
    }


    static func writeAliveMark(_ now: Int64, to db: Database) throws {
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('alive_at', ?)").execute(arguments: [now])
    }
}
