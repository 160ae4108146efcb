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

    static func snapshot(id: JSONValue?, roomToken: String, version: UInt64, users: [UserRecord]) -> ByteBuffer {
        reply(type: "snapshot", id: id) { object in
            object.field("roomToken", roomToken)
            object.field("roomVersion", Int64(version))
            object.field("users", users)
        }
    }

    static func diff(roomToken: String, from: UInt64, to: UInt64, diff: RoomDiff) -> ByteBuffer {
        reply(type: "diff", id: nil) { object in
            object.field("roomToken", roomToken)
            object.field("from", Int64(from))
            object.field("roomVersion", Int64(to))
            object.field("upsert", diff.upsert)
            object.field("remove") { $0.write(diff.remove) }
        }
    }

    static func unsubscribed(id: JSONValue?, roomToken: String, reason: String? = nil) -> ByteBuffer {
        reply(type: "unsubscribed", id: id) { object in
            object.field("roomToken", roomToken)
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
