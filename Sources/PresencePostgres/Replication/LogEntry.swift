import Foundation
import PresenceStore

/// One committed batch, as stored in `presence.log` and as the JSON the batch's write statement
/// spreads into the tables (`jsonb_populate_recordset`): the rows it wrote, the keys it deleted,
/// and the room changes it published, so every process publishes exactly the same ones.
struct LogEntry: Codable, Sendable {
    struct Room: Codable, Sendable {
        var roomId: String
        var token: String
        var version: Int64
    }

    struct User: Codable, Sendable {
        var roomId: String
        var userId: String
        var online: Bool
        var onlineSince: Int64
        var lastDisconnected: Int64
        /// The user's data as compact JSON text.
        var data: String?
        var name: String?
        var image: String?
        var away: Bool
        var awaySince: Int64
    }

    struct UserKey: Codable, Sendable {
        var roomId: String
        var userId: String
    }

    struct Session: Codable, Sendable {
        var sessionId: String
        var roomId: String
        var userId: String
        var token: String
        var interval: Int64
        var away: Bool
        var deadline: Int64
        /// The process that stored the row (older entries have none).
        var nodeId: String?
    }

    /// Keys are the columns of `presence.events`, so the write statement can spread them.
    struct Event: Codable, Sendable {
        var seq: Int64
        var roomId: String
        var userId: String
        var type: String
        var reason: String?
        var at: Int64
        var roomVersion: Int64
        var name: String?
        var image: String?
        /// The data as compact JSON text.
        var data: String?
    }

    struct Change: Codable, Sendable {
        var roomId: String
        var roomToken: String
        var roomVersion: Int64
        var kind: String
    }

    var rooms: [Room] = []
    var users: [User] = []
    var sessions: [Session] = []
    var deletedRooms: [String] = []
    var deletedUsers: [UserKey] = []
    var deletedSessions: [String] = []
    var lastVersion: Int64 = 0
    var changes: [Change] = []
    var events: [Event] = []
    var lastEvent: Int64 = 0

    init(_ rows: DurableChanges, changes roomChanges: [RoomChange], nodeId: String) {
        rooms = rows.rooms.map { Room(roomId: $0.roomId, token: $0.token, version: Int64($0.version)) }
        users = rows.users.map { row in
            let record = row.record
            return User(
                roomId: row.roomId, userId: record.userId, online: record.online, onlineSince: record.onlineSince,
                lastDisconnected: record.lastDisconnected, data: record.data?.compactJSON, name: record.name,
                image: record.image, away: record.away, awaySince: record.awaySince)
        }
        sessions = rows.sessions.map {
            Session(
                sessionId: $0.sessionId, roomId: $0.roomId, userId: $0.userId, token: $0.token, interval: $0.interval,
                away: $0.away, deadline: $0.deadline, nodeId: nodeId)
        }
        deletedRooms = rows.deletedRooms
        deletedUsers = rows.deletedUsers.map { UserKey(roomId: $0.roomId, userId: $0.userId) }
        deletedSessions = rows.deletedSessions
        lastVersion = Int64(rows.lastVersion)
        events = rows.events.map(Event.init)
        lastEvent = Int64(rows.lastEventSequence)
        changes = roomChanges.map {
            Change(roomId: $0.roomId, roomToken: $0.roomToken, roomVersion: Int64($0.roomVersion), kind: Self.name(of: $0.kind))
        }
    }

    var durableChanges: DurableChanges {
        get throws {
            var rows = DurableChanges()
            rows.rooms = rooms.map { .init(roomId: $0.roomId, token: $0.token, version: UInt64($0.version)) }
            rows.users = try users.map { try $0.row }
            rows.sessions = sessions.map(\.row)
            rows.deletedRooms = deletedRooms
            rows.deletedUsers = deletedUsers.map { ($0.roomId, $0.userId) }
            rows.deletedSessions = deletedSessions
            rows.lastVersion = UInt64(lastVersion)
            // Events are stored in their table; another process only needs the counter.
            rows.lastEventSequence = UInt64(lastEvent)
            return rows
        }
    }

    var roomChanges: [RoomChange] {
        changes.compactMap { change in
            Self.kind(named: change.kind).map {
                RoomChange(roomId: change.roomId, roomToken: change.roomToken, roomVersion: UInt64(change.roomVersion), kind: $0)
            }
        }
    }

    static func name(of kind: RoomChange.Kind) -> String {
        switch kind {
        case .updated: "updated"
        case .removed: "removed"
        case .tokenRotated: "tokenRotated"
        }
    }

    static func kind(named name: String) -> RoomChange.Kind? {
        switch name {
        case "updated": .updated
        case "removed": .removed
        case "tokenRotated": .tokenRotated
        default: nil
        }
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }()

    func encoded() throws -> String {
        String(decoding: try Self.encoder.encode(self), as: UTF8.self)
    }

    static func decode(_ text: String) throws -> LogEntry {
        try decoder.decode(LogEntry.self, from: Data(text.utf8))
    }
}

extension LogEntry.User {
    var row: DurableChanges.UserRow {
        get throws {
            let value = try data.map { try JSONParser.parse($0.utf8) }
            return DurableChanges.UserRow(
                roomId: roomId,
                record: UserRecord(
                    userId: userId, online: online, lastDisconnected: lastDisconnected, onlineSince: onlineSince,
                    data: value, name: name, image: image, away: away, awaySince: awaySince))
        }
    }
}

extension LogEntry.Event {
    init(_ event: PresenceEvent) {
        self.init(
            seq: Int64(event.sequence), roomId: event.roomId, userId: event.userId, type: event.kind.rawValue,
            reason: event.reason?.rawValue, at: event.at, roomVersion: Int64(event.roomVersion), name: event.name,
            image: event.image, data: event.data?.compactJSON)
    }

    var event: PresenceEvent {
        get throws {
            guard let kind = PresenceEvent.Kind(rawValue: type) else {
                throw PostgresStoreError("unknown event type \(type) in presence.events")
            }
            return PresenceEvent(
                sequence: UInt64(seq), roomId: roomId, userId: userId, kind: kind,
                reason: reason.flatMap(PresenceEvent.LeaveReason.init(rawValue:)), at: at, roomVersion: UInt64(roomVersion),
                name: name, image: image, data: try data.map { try JSONParser.parse($0.utf8) })
        }
    }
}

extension LogEntry.Session {
    var row: DurableChanges.SessionRow {
        DurableChanges.SessionRow(
            sessionId: sessionId, roomId: roomId, userId: userId, token: token, interval: interval, away: away,
            deadline: deadline)
    }
}
