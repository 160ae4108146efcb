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
        /// Online but away (every session of theirs in the room is): draw dimmed, with a clock.
        public let away: Bool
        /// "Online now", "Away for 3 min", or "Last seen 5 min ago" / "2 hours ago" / "3 days ago".
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
    /// How many users are not among `visible` (the "+N"): of the room's `userCount` when given.
    public let overflowCount: Int
    /// "+1,190": the count with a comma every three digits, as the browser face pile writes it.
    public var overflowLabel: String {
        let digits = Array(String(overflowCount))
        var grouped = ""
        for (index, digit) in digits.enumerated() {
            if index > 0, (digits.count - index).isMultiple(of: 3) { grouped.append(",") }
            grouped.append(digit)
        }
        return "+" + grouped
    }
    /// The first of the overflow, at most ten, for the "+N" popover.
    public let overflow: [Face]

    /// - Parameter userCount: the room's count (`RoomCounts.users`) when `users` holds only the
    ///   first users of a big room; the "+N" counts the whole room then.
    public init(users: [UserRecord], nowMillis: Int64, userCount: Int? = nil) {
        let faces = users.prefix(Self.visibleLimit + Self.overflowListLimit).map { Self.face(for: $0, nowMillis: nowMillis) }
        visible = Array(faces.prefix(Self.visibleLimit))
        overflow = Array(faces.dropFirst(Self.visibleLimit))
        overflowCount = max(0, max(userCount ?? 0, users.count) - visible.count)
    }

    static func face(for user: UserRecord, nowMillis: Int64) -> Face {
        Face(
            userId: user.userId, title: user.name ?? user.userId, imageURL: user.image, emoji: emoji(for: user.userId),
            online: user.online, away: user.online && user.away,
            status: status(of: user, nowMillis: nowMillis),
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

    /// The line under a face's name, the same as the browser face pile's (shared test vectors).
    public static func status(of user: UserRecord, nowMillis: Int64) -> String {
        if user.online, user.away { return "Away " + elapsed(since: user.awaySince, nowMillis: nowMillis, prefix: "for ", suffix: "") }
        if user.online { return "Online now" }
        return lastSeen(user.lastDisconnected, nowMillis: nowMillis)
    }

    public static func lastSeen(_ lastDisconnected: Int64, nowMillis: Int64) -> String {
        "Last seen " + elapsed(since: lastDisconnected, nowMillis: nowMillis, prefix: "", suffix: " ago")
    }

    /// "just now", or "5 min", "2 hours", "3 days" with the prefix and suffix around it.
    private static func elapsed(since start: Int64, nowMillis: Int64, prefix: String, suffix: String) -> String {
        let minutes = max(0, nowMillis - start) / 60_000
        if minutes < 1 { return "just now" }
        if minutes < 60 { return "\(prefix)\(minutes) min\(suffix)" }
        let hours = minutes / 60
        if hours < 24 { return "\(prefix)\(hours) \(hours == 1 ? "hour" : "hours")\(suffix)" }
        let days = hours / 24
        return "\(prefix)\(days) \(days == 1 ? "day" : "days")\(suffix)"
    }

    static func rows(_ data: JSONValue?) -> [DataRow] {
        guard let data else { return [] }
        if case .object(let members) = data {
            return members.keys.sorted().map { DataRow(key: $0, value: text(members[$0]!)) }
        }
        return [DataRow(key: "data", value: text(data))]
    }

    /// Nested data as the browser face pile shows it (`JSON.stringify`, keys sorted), so both
    /// piles print `100`, `1e-7` and `\b` alike (shared test vectors).
    static func text(_ value: JSONValue) -> String {
        if case .string(let string) = value { return string }
        var writer = JSONWriter(style: .javaScript)
        writer.write(value)
        return writer.output
    }
}

extension [UserRecord] {
    /// The list as a user sees it: themselves first, everyone else in PROTOCOL.md's order.
    public func youFirst(_ userId: String) -> [UserRecord] {
        var list = self
        if let index = list.firstIndex(where: { $0.userId == userId }) {
            list.insert(list.remove(at: index), at: 0)
        }
        return list
    }
}
