/// A user's presence across every room (PROTOCOL.md 1.1, "Watching users across rooms"):
/// online in at least one room, away when away in every room they are online in, last seen
/// (while offline everywhere) at the latest `lastDisconnected` of their rooms.
public struct UserStatus: Sendable, Hashable, Codable {
    public var userId: String
    public var online: Bool
    public var away: Bool
    public var lastDisconnected: Int64
    /// Rooms the user is online in.
    public var rooms: Int

    public init(userId: String, online: Bool, away: Bool, lastDisconnected: Int64, rooms: Int) {
        self.userId = userId
        self.online = online
        self.away = away
        self.lastDisconnected = lastDisconnected
        self.rooms = rooms
    }

    /// The status of a user seen through their records in every room (none: never seen, or forgotten).
    public init(userId: String, records: some Sequence<UserRecord>) {
        var onlineRooms = 0
        var awayRooms = 0
        var lastDisconnected: Int64 = 0
        for record in records {
            if record.online {
                onlineRooms += 1
                if record.away { awayRooms += 1 }
            } else {
                lastDisconnected = max(lastDisconnected, record.lastDisconnected)
            }
        }
        self.init(
            userId: userId, online: onlineRooms > 0, away: onlineRooms > 0 && awayRooms == onlineRooms,
            lastDisconnected: onlineRooms > 0 ? 0 : lastDisconnected, rooms: onlineRooms)
    }

    public func writeJSON(into writer: inout JSONWriter) {
        writer.object { object in
            object.field("userId", userId)
            object.field("online", online)
            object.field("away", away)
            object.field("lastDisconnected", lastDisconnected)
            object.field("rooms", Int64(rooms))
        }
    }
}

extension JSONWriter {
    public mutating func write(_ statuses: [UserStatus]) {
        raw("[")
        for (index, status) in statuses.enumerated() {
            if index > 0 { raw(",") }
            status.writeJSON(into: &self)
        }
        raw("]")
    }
}

/// `POST /api/users/status` and `watchUsers`: the user ids asked about, validated.
public struct UserIdsRequest: Sendable, Hashable {
    /// At most this many ids per call, and watched per socket.
    public static let maximum = 1_000
    public let userIds: [String]

    public init(json object: JSONObject) throws(PresenceError) {
        guard case .array(let values)? = object["userIds"] else {
            throw .invalidArgument("userIds is required: an array of user ids")
        }
        guard values.count <= Self.maximum else {
            throw .invalidArgument("at most \(Self.maximum) userIds per call, got \(values.count)")
        }
        var userIds: [String] = []
        userIds.reserveCapacity(values.count)
        for value in values {
            guard case .string(let userId) = value else { throw .invalidArgument("userIds must hold strings") }
            try Validate.identifier(userId, field: "userIds")
            userIds.append(userId)
        }
        self.userIds = userIds
    }
}
