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
    let users: [UserRecord]?
    let upsert: [UserRecord]?
    let remove: [String]?
    let reason: String?
    let error: ErrorBody?

    var requestId: Int? {
        if case .integer(let value) = id { return Int(value) }
        return nil
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
struct RoomKey: Hashable, Sendable {
    let roomId: String
    let userId: String
    let sessionId: String
}
