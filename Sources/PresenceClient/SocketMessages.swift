import Foundation
import PresenceCore

/// A message from the server, decoded leniently: every field a message type may carry.
struct IncomingMessage: Decodable {
    struct ErrorBody: Decodable {
        let code: String
        let message: String
    }
    let type: String
    let id: JSONValue?
    let roomToken: String?
    let sessionToken: String?
    let roomVersion: UInt64?
    let from: UInt64?
    /// A snapshot's list.
    let users: [UserRecord]?
    /// `users` and `usersChanged` carry statuses under the same key.
    let statuses: [UserStatus]?
    let upsert: [UserRecord]?
    let remove: [String]?
    let onlineCount: Int?
    let userCount: Int?
    let reason: String?
    let error: ErrorBody?

    enum CodingKeys: String, CodingKey {
        case type, id, roomToken, sessionToken, roomVersion, from, users, upsert, remove, onlineCount, userCount, reason, error
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        type = try container.decode(String.self, forKey: .type)
        id = try container.decodeIfPresent(JSONValue.self, forKey: .id)
        roomToken = try container.decodeIfPresent(String.self, forKey: .roomToken)
        sessionToken = try container.decodeIfPresent(String.self, forKey: .sessionToken)
        roomVersion = try container.decodeIfPresent(UInt64.self, forKey: .roomVersion)
        from = try container.decodeIfPresent(UInt64.self, forKey: .from)
        if type == "users" || type == "usersChanged" {
            statuses = try container.decodeIfPresent([UserStatus].self, forKey: .users)
            users = nil
        } else {
            users = try container.decodeIfPresent([UserRecord].self, forKey: .users)
            statuses = nil
        }
        upsert = try container.decodeIfPresent([UserRecord].self, forKey: .upsert)
        remove = try container.decodeIfPresent([String].self, forKey: .remove)
        onlineCount = try container.decodeIfPresent(Int.self, forKey: .onlineCount)
        userCount = try container.decodeIfPresent(Int.self, forKey: .userCount)
        reason = try container.decodeIfPresent(String.self, forKey: .reason)
        error = try container.decodeIfPresent(ErrorBody.self, forKey: .error)
    }

    /// The counts a snapshot or diff carries (a diff only when they changed).
    var counts: RoomCounts? {
        guard let onlineCount, let userCount else { return nil }
        return RoomCounts(online: onlineCount, users: userCount)
    }

    var requestId: Int? {
        if case .integer(let value) = id { return Int(value) }
        return nil
    }
}

/// A room's counts, whatever the list's limit: a big room's "1,204 online".
public struct RoomCounts: Sendable, Hashable {
    /// Users online in the room.
    public let online: Int
    /// Users with a record in the room (online or last seen).
    public let users: Int

    public init(online: Int, users: Int) {
        self.online = online
        self.users = users
    }
}

/// Client messages, written compactly.
enum OutgoingMessage {
    static func heartbeat(id: Int, room: RoomKey, interval: Int64, name: String?, image: String?, away: Bool) -> String {
        request(type: "heartbeat", id: id) { object in
            object.field("roomId", room.roomId)
            object.field("userId", room.userId)
            object.field("sessionId", room.sessionId)
            object.field("interval", interval)
            object.field("name", name)
            object.field("image", image)
            object.field("away", away)
        }
    }

    static func users(type: String, id: Int, _ userIds: [String]) -> String {
        request(type: type, id: id) { object in
            object.field("userIds") { $0.write(userIds) }
        }
    }

    static func request(type: String, id: Int, _ fields: (inout JSONWriter) -> Void) -> String {
        var writer = JSONWriter()
        writer.object { object in
            object.field("type", type)
            object.field("id", Int64(id))
            fields(&object)
        }
        return writer.output
    }
}

/// One joined room of one user over one session.
/// Ids compare by their bytes (`IDKey`), as the server compares them.
struct RoomKey: Hashable, Sendable {
    let roomId: String
    let userId: String
    let sessionId: String

    static func == (a: RoomKey, b: RoomKey) -> Bool {
        a.roomId.isSameID(as: b.roomId) && a.userId.isSameID(as: b.userId) && a.sessionId.isSameID(as: b.sessionId)
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(IDKey(roomId))
        hasher.combine(IDKey(userId))
        hasher.combine(IDKey(sessionId))
    }
}
