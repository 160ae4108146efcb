import PresenceCore

/// What a face pile shows, computed from a room's list: the first five faces, the
/// overflow ("+N") with up to ten more, and per face a stable emoji, a status line
/// and the user's data as rows. Platform-neutral, so any UI (SwiftUI, a terminal,
/// a server-side renderer) draws the same thing.
///
/// ```swift
/// let pile = FacePileModel(users: users, nowMillis: nowMillis)
/// for face in pile.visible { print(face.emoji, face.title, face.status) }
/// if pile.overflowCount > 0 { print("+\(pile.overflowCount)") }
/// ```
public struct FacePileModel: Sendable, Equatable {
    public struct Face: Sendable, Equatable, Identifiable {
        public var id: String { userId }
        public let userId: String
        /// The name, or the user id when there is none.
        public let title: String
        public let imageURL: String?
        /// A stable emoji per user id: the same on every client and every run.
        public let emoji: String
        public let online: Bool
        /// "Online now", or "Last seen 5 min ago" / "2 hours ago" / "3 days ago".
        public let status: String
        /// The user's data as key: value rows (objects by key; any other value as one "data" row).
        public let dataRows: [DataRow]
    }

    public struct DataRow: Sendable, Equatable {
        public let key: String
        public let value: String
        public init(key: String, value: String) {
            self.key = key
            self.value = value
        }
    }

    public static let visibleLimit = 5
    public static let overflowListLimit = 10

    public let visible: [Face]
    /// How many users are not among `visible` (the "+N").
    public let overflowCount: Int
    /// The first of the overflow, at most ten, for the "+N" popover.
    public let overflow: [Face]

    public init(users: [UserRecord], nowMillis: Int64) {
        let faces = users.prefix(Self.visibleLimit + Self.overflowListLimit).map { Self.face(for: $0, nowMillis: nowMillis) }
        visible = Array(faces.prefix(Self.visibleLimit))
        overflow = Array(faces.dropFirst(Self.visibleLimit))
        overflowCount = max(0, users.count - Self.visibleLimit)
    }

    static func face(for user: UserRecord, nowMillis: Int64) -> Face {
        Face(
            userId: user.userId, title: user.name ?? user.userId, imageURL: user.image, emoji: emoji(for: user.userId),
            online: user.online,
            status: user.online ? "Online now" : lastSeen(user.lastDisconnected, nowMillis: nowMillis),
            dataRows: rows(user.data))
    }

    /// The emoji set and hash the browser face pile uses too (FNV-1a over the UTF-8 bytes).
    public static let emojis = ["🦊", "🐼", "🐨", "🐯", "🦁", "🐸", "🐵", "🐙", "🦉", "🐧", "🐢", "🦄", "🐝", "🐳", "🦋", "🐞"]

    public static func emoji(for userId: String) -> String {
        var hash: UInt32 = 2_166_136_261
        for byte in userId.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return emojis[Int(hash % UInt32(emojis.count))]
    }

    public static func lastSeen(_ lastDisconnected: Int64, nowMillis: Int64) -> String {
        let minutes = max(0, nowMillis - lastDisconnected) / 60_000
        if minutes < 1 { return "Last seen just now" }
        if minutes < 60 { return "Last seen \(minutes) min ago" }
        let hours = minutes / 60
        if hours < 24 { return "Last seen \(hours) \(hours == 1 ? "hour" : "hours") ago" }
        let days = hours / 24
        return "Last seen \(days) \(days == 1 ? "day" : "days") ago"
    }

    static func rows(_ data: JSONValue?) -> [DataRow] {
        guard let data else { return [] }
        if case .object(let members) = data {
            return members.keys.sorted().map { DataRow(key: $0, value: text(members[$0]!)) }
        }
        return [DataRow(key: "data", value: text(data))]
    }

    static func text(_ value: JSONValue) -> String {
        if case .string(let string) = value { return string }
        return value.compactJSON
    }
}
