/// A validated heartbeat: constructing one checks every field against PROTOCOL.md.
///
/// ```swift
/// let request = try HeartbeatRequest(roomId: "doc-1", userId: "alice", sessionId: "tab-1", interval: 5_000)
/// ```
public struct HeartbeatRequest: Sendable, Hashable {
    public let roomId: String
    public let userId: String
    public let sessionId: String
    /// The session's key in the state and the stores: a session id belongs to its user, so two
    /// users may both use `"phone"` (`PresenceState.sessionKey`).
    public let sessionKey: String
    public let interval: Int64
    public let name: String?
    public let image: String?
    /// The session's away state from this heartbeat on; nil leaves it as it is (a new session starts not away).
    public let away: Bool?

    /// The same heartbeat with the profile an identity provider vouches for.
    public func withProfile(name: String?, image: String?) -> HeartbeatRequest {
        HeartbeatRequest(
            validated: (roomId, userId, sessionId, interval), name: name ?? self.name, image: image ?? self.image, away: away)
    }

    private init(validated: (String, String, String, Int64), name: String?, image: String?, away: Bool?) {
        (roomId, userId, sessionId, interval) = validated
        sessionKey = PresenceState.sessionKey(userId: userId, sessionId: sessionId)
        self.name = name
        self.image = image
        self.away = away
    }

    public init(
        roomId: String, userId: String, sessionId: String, interval: Int64? = nil,
        name: String? = nil, image: String? = nil, away: Bool? = nil
    ) throws(PresenceError) {
        try Validate.identifier(roomId, field: "roomId")
        try Validate.identifier(userId, field: "userId")
        try Validate.identifier(sessionId, field: "sessionId")
        try Validate.name(name)
        try Validate.image(image)
        self.roomId = roomId
        self.userId = userId
        self.sessionId = sessionId
        sessionKey = PresenceState.sessionKey(userId: userId, sessionId: sessionId)
        self.interval = try Validate.interval(interval)
        self.name = name
        self.image = image
        self.away = away
    }
}

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

/// A room whose records changed (or that was removed), published after the change is stored.
public struct RoomChange: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case updated
        case removed
        /// The room got a new token; `roomToken` is the old one, whose subscriptions end.
        case tokenRotated
    }
    public var roomId: String
    public var roomToken: String
    public var roomVersion: UInt64
    public var kind: Kind

    public init(roomId: String, roomToken: String, roomVersion: UInt64, kind: Kind) {
        self.roomId = roomId
        self.roomToken = roomToken
        self.roomVersion = roomVersion
        self.kind = kind
    }
}

/// Counts for metrics and health.
public struct PresenceStatistics: Sendable, Hashable {
    public var rooms: Int
    public var sessions: Int
    public var onlineUsers: Int
    public var userRecords: Int
    /// The newest event's number: how many events were ever written (by every process sharing the store).
    public var lastEventSequence: UInt64

    public init(rooms: Int, sessions: Int, onlineUsers: Int, userRecords: Int, lastEventSequence: UInt64 = 0) {
        self.rooms = rooms
        self.sessions = sessions
        self.onlineUsers = onlineUsers
        self.userRecords = userRecords
        self.lastEventSequence = lastEventSequence
    }
}
