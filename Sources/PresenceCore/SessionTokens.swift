/// The room and user a live session belongs to.
public struct SessionOwner: Sendable, Hashable {
    public var roomId: String
    public var userId: String
    public init(roomId: String, userId: String) {
        self.roomId = roomId
        self.userId = userId
    }
}

/// What a heartbeat answers: the room's stable token and the session's own.
public struct SessionTokens: Sendable, Hashable, Codable {
    public var roomToken: String
    public var sessionToken: String

    public init(roomToken: String, sessionToken: String) {
        self.roomToken = roomToken
        self.sessionToken = sessionToken
    }

    /// The two fields of a heartbeat's answer, over HTTP and WebSocket alike.
    public func writeFields(into object: inout JSONWriter) {
        object.field("roomToken", roomToken)
        object.field("sessionToken", sessionToken)
    }

    /// The answer of `POST /api/heartbeat`.
    public var jsonObject: String {
        var writer = JSONWriter()
        writer.object { writeFields(into: &$0) }
        return writer.output
    }
}
