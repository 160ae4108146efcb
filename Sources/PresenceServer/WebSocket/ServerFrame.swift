import NIOCore
import PresenceCore

/// The frames the server sends on a WebSocket, written by hand once into bytes that every
/// subscriber of a view shares.
enum ServerFrame {
    static func reply(type: String, id: JSONValue?, _ fields: (inout JSONWriter) -> Void = { _ in }) -> ByteBuffer {
        var writer = JSONWriter()
        writer.object { object in
            object.field("type", type)
            object.field("id", id)
            fields(&object)
        }
        return ByteBuffer(string: writer.output)
    }

    static func heartbeat(id: JSONValue?, tokens: SessionTokens) -> ByteBuffer {
        reply(type: "heartbeat", id: id) { tokens.writeFields(into: &$0) }
    }

    /// A room's counts as the frames carry them: users online, users with a record.
    struct Counts: Sendable, Hashable {
        var online: Int
        var users: Int
    }

    static func snapshot(id: JSONValue?, roomToken: String, version: UInt64, users: [UserRecord], counts: Counts) -> ByteBuffer {
        reply(type: "snapshot", id: id) { object in
            object.field("roomToken", roomToken)
            object.field("roomVersion", Int64(version))
            object.field("users", users)
            object.field("onlineCount", Int64(counts.online))
            object.field("userCount", Int64(counts.users))
        }
    }

    /// `counts` only when they changed since the view's last frame.
    static func diff(roomToken: String, from: UInt64, to: UInt64, diff: RoomDiff, counts: Counts? = nil) -> ByteBuffer {
        reply(type: "diff", id: nil) { object in
            object.field("roomToken", roomToken)
            object.field("from", Int64(from))
            object.field("roomVersion", Int64(to))
            object.field("upsert", diff.upsert)
            object.field("remove") { $0.write(diff.remove) }
            if let counts {
                object.field("onlineCount", Int64(counts.online))
                object.field("userCount", Int64(counts.users))
            }
        }
    }

    static func unsubscribed(id: JSONValue?, roomToken: String, reason: String? = nil) -> ByteBuffer {
        reply(type: "unsubscribed", id: id) { object in
            object.field("roomToken", roomToken)
            object.field("reason", reason)
        }
    }

    /// The server ended a socket's watches itself (its user token expired).
    static func unwatched(userIds: [String], reason: String) -> ByteBuffer {
        reply(type: "unwatched", id: nil) { object in
            object.field("userIds") { $0.write(userIds) }
            object.field("reason", reason)
        }
    }

    /// `users` (the answer to `watchUsers`) and `usersChanged`.
    static func users(type: String, id: JSONValue?, _ statuses: [UserStatus]) -> ByteBuffer {
        reply(type: type, id: id) { $0.field("users") { $0.write(statuses) } }
    }

    static func error(id: JSONValue?, _ error: PresenceError) -> ByteBuffer {
        reply(type: "error", id: id) { object in
            object.field("error") { error.writeErrorObject(into: &$0) }
        }
    }
}
