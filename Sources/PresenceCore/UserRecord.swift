/// One user's presence in one room, as every list, snapshot and diff shows it.
///
/// ```swift
/// let alice = UserRecord(userId: "alice", online: true, lastDisconnected: 0, onlineSince: 1_764_393_600_000)
/// ```
public struct UserRecord: Sendable, Hashable {
    public var userId: String
    public var online: Bool
    /// 0 while online; when the user went offline otherwise.
    public var lastDisconnected: Int64
    /// When the current online stretch began; 0 while offline.
    public var onlineSince: Int64
    public var data: JSONValue?
    public var name: String?
    public var image: String?
    /// Online, and every live session of theirs in the room says it is away; false while offline.
    public var away: Bool
    /// When the user became away; 0 when not away.
    public var awaySince: Int64

    public init(
        userId: String, online: Bool, lastDisconnected: Int64, onlineSince: Int64,
        data: JSONValue? = nil, name: String? = nil, image: String? = nil, away: Bool = false, awaySince: Int64 = 0
    ) {
        self.userId = userId
        self.online = online
        self.lastDisconnected = lastDisconnected
        self.onlineSince = onlineSince
        self.data = data
        self.name = name
        self.image = image
        self.away = away
        self.awaySince = awaySince
    }

    /// PROTOCOL.md's order: online first by `onlineSince` ascending, then offline by
    /// `lastDisconnected` descending, ties by `userId`.
    public static func precedes(_ a: UserRecord, _ b: UserRecord) -> Bool {
        if a.online != b.online { return a.online }
        if a.online {
            if a.onlineSince != b.onlineSince { return a.onlineSince < b.onlineSince }
        } else if a.lastDisconnected != b.lastDisconnected {
            return a.lastDisconnected > b.lastDisconnected
        }
        return a.userId.precedesAsID(b.userId)
    }

    public func writeJSON(into writer: inout JSONWriter) {
        writer.object { object in
            object.field("userId", userId)
            object.field("online", online)
            object.field("lastDisconnected", lastDisconnected)
            object.field("onlineSince", onlineSince)
            object.field("away", away)
            object.field("awaySince", awaySince)
            object.field("data", data)
            object.field("name", name)
            object.field("image", image)
        }
    }
}

extension UserRecord: Codable {
    enum CodingKeys: String, CodingKey {
        case userId, online, lastDisconnected, onlineSince, data, name, image, away, awaySince
    }

    /// `away` and `awaySince` came with protocol 1.1: a record from an older server has neither.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            userId: try container.decode(String.self, forKey: .userId),
            online: try container.decode(Bool.self, forKey: .online),
            lastDisconnected: try container.decode(Int64.self, forKey: .lastDisconnected),
            onlineSince: try container.decode(Int64.self, forKey: .onlineSince),
            data: try container.decodeIfPresent(JSONValue.self, forKey: .data),
            name: try container.decodeIfPresent(String.self, forKey: .name),
            image: try container.decodeIfPresent(String.self, forKey: .image),
            away: try container.decodeIfPresent(Bool.self, forKey: .away) ?? false,
            awaySince: try container.decodeIfPresent(Int64.self, forKey: .awaySince) ?? 0)
    }
}

extension JSONWriter {
    public mutating func write(_ records: [UserRecord]) {
        raw("[")
        for (index, record) in records.enumerated() {
            if index > 0 { raw(",") }
            record.writeJSON(into: &self)
        }
        raw("]")
    }

    public mutating func field(_ name: String, _ records: [UserRecord]) {
        field(name) { $0.write(records) }
    }
}

/// A room's ordered list at one `roomVersion`, cut at a limit, with the whole room's counts.
public struct RoomSnapshot: Sendable, Hashable {
    public var roomVersion: UInt64
    public var users: [UserRecord]
    /// Users online in the room, whatever the limit.
    public var onlineCount: Int
    /// Users with a record in the room, whatever the limit.
    public var userCount: Int

    public init(roomVersion: UInt64, users: [UserRecord], onlineCount: Int? = nil, userCount: Int? = nil) {
        self.roomVersion = roomVersion
        self.users = users
        self.onlineCount = onlineCount ?? users.count { $0.online }
        self.userCount = userCount ?? users.count
    }

    public static let empty = RoomSnapshot(roomVersion: 0, users: [])
}

/// One room of a user, as listUser returns it.
public struct UserRoomStatus: Sendable, Hashable, Codable {
    public var roomId: String
    public var online: Bool
    public var lastDisconnected: Int64

    public init(roomId: String, online: Bool, lastDisconnected: Int64) {
        self.roomId = roomId
        self.online = online
        self.lastDisconnected = lastDisconnected
    }

    /// Online rooms first by `roomId`, then offline ones by `lastDisconnected` descending.
    public static func precedes(_ a: UserRoomStatus, _ b: UserRoomStatus) -> Bool {
        if a.online != b.online { return a.online }
        if !a.online, a.lastDisconnected != b.lastDisconnected { return a.lastDisconnected > b.lastDisconnected }
        return a.roomId.precedesAsID(b.roomId)
    }
}
