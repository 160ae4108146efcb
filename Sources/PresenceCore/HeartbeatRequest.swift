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
