import NIOCore
import PresenceCore

/// The server's outgoing messages, written by hand once into bytes that every
/// subscriber of a view shares.
enum ServerMessage {
    static func reply(type: String, id: JSONValue?, _ fields: (inout JSONWriter) -> Void = { _ in }) -> ByteBuffer {
        var writer = JSONWriter()
        writer.raw("{")
        writer.key("type", first: true)
        writer.write(type)
        if let id {
            writer.key("id")
            writer.write(id)
        }
        fields(&writer)
        writer.raw("}")
        return ByteBuffer(string: writer.output)
    }

    static func heartbeat(id: JSONValue?, tokens: SessionTokens) -> ByteBuffer {
        reply(type: "heartbeat", id: id) { writer in
            writer.key("roomToken")
            writer.write(tokens.roomToken)
            writer.key("sessionToken")
            writer.write(tokens.sessionToken)
        }
    }

    static func snapshot(id: JSONValue?, roomToken: String, version: UInt64, users: [UserRecord]) -> ByteBuffer {
        reply(type: "snapshot", id: id) { writer in
            writer.key("roomToken")
            writer.write(roomToken)
            writer.key("roomVersion")
            writer.write(Int64(version))
            writer.key("users")
            writer.write(users)
        }
    }

    static func diff(roomToken: String, from: UInt64, to: UInt64, diff: RoomDiff) -> ByteBuffer {
        reply(type: "diff", id: nil) { writer in
            writer.key("roomToken")
            writer.write(roomToken)
            writer.key("from")
            writer.write(Int64(from))
            writer.key("roomVersion")
            writer.write(Int64(to))
            writer.key("upsert")
            writer.write(diff.upsert)
            writer.key("remove")
            writer.raw("[")
            for (index, userId) in diff.remove.enumerated() {
                if index > 0 { writer.raw(",") }
                writer.write(userId)
            }
            writer.raw("]")
        }
    }

    static func unsubscribed(id: JSONValue?, roomToken: String, reason: String? = nil) -> ByteBuffer {
        reply(type: "unsubscribed", id: id) { writer in
            writer.key("roomToken")
            writer.write(roomToken)
            if let reason {
                writer.key("reason")
                writer.write(reason)
            }
        }
    }

    static func error(id: JSONValue?, _ error: PresenceError) -> ByteBuffer {
        reply(type: "error", id: id) { writer in
            writer.key("error")
            error.writeErrorObject(into: &writer)
        }
    }
}
