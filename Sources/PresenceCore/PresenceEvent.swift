/// One change of a user's presence in a room, as PROTOCOL.md's "Presence events" gives it.
/// Events are numbered by one counter (`sequence`) in commit order; events of one change
/// share its `roomVersion`.
///
/// Beyond the protocol's fields, an event carries what it changed, so that replaying the events
/// of a room rebuilds its records exactly: `join` and `profile` carry `name` and `image`, `data`
/// carries the new `data` (absent when cleared).
public struct PresenceEvent: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case join, leave, away, back, data, profile, removed
    }

    public enum LeaveReason: String, Sendable, Hashable, CaseIterable {
        case disconnect, timeout, removed
        case roomRemoved = "room_removed"
        case serverLost = "server_lost"
        case expiredAfterRestart = "expired_after_restart"
    }

    public var sequence: UInt64
    public var roomId: String
    public var userId: String
    public var kind: Kind
    public var reason: LeaveReason?
    public var at: Int64
    public var roomVersion: UInt64
    public var name: String?
    public var image: String?
    public var data: JSONValue?

    public init(
        sequence: UInt64, roomId: String, userId: String, kind: Kind, reason: LeaveReason? = nil, at: Int64,
        roomVersion: UInt64, name: String? = nil, image: String? = nil, data: JSONValue? = nil
    ) {
        self.sequence = sequence
        self.roomId = roomId
        self.userId = userId
        self.kind = kind
        self.reason = reason
        self.at = at
        self.roomVersion = roomVersion
        self.name = name
        self.image = image
        self.data = data
    }

    /// `e_` and 16 digits: ids of equal length compare as strings in commit order.
    public var id: String { Self.id(forSequence: sequence) }

    public static func id(forSequence sequence: UInt64) -> String {
        let digits = String(sequence)
        return "e_" + String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }

    /// The sequence an id names, or nil for text that is not an event id.
    public static func sequence(fromId id: String) -> UInt64? {
        guard id.hasPrefix("e_"), id.utf8.count == 18 else { return nil }
        let digits = id.dropFirst(2)
        guard digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return UInt64(digits)
    }

    public func writeJSON(into writer: inout JSONWriter) {
        writer.object { object in
            object.field("id", id)
            object.field("roomId", roomId)
            object.field("userId", userId)
            object.field("type", kind.rawValue)
            object.field("reason", reason?.rawValue)
            object.field("at", at)
            object.field("roomVersion", Int64(roomVersion))
            object.field("name", name)
            object.field("image", image)
            object.field("data", data)
        }
    }

    /// The events between two states of one user's record in a room (nil: no record), in
    /// PROTOCOL.md's order, not yet numbered (sequence and roomVersion 0). `reason` is a leave's.
    static func transitions(
        roomId: String, userId: String, from before: UserRecord?, to after: UserRecord?, reason: LeaveReason, at: Int64
    ) -> [PresenceEvent] {
        var events: [PresenceEvent] = []
        func add(_ kind: Kind, reason: LeaveReason? = nil, at: Int64, name: String? = nil, image: String? = nil, data: JSONValue? = nil) {
            events.append(PresenceEvent(
                sequence: 0, roomId: roomId, userId: userId, kind: kind, reason: reason, at: at, roomVersion: 0,
                name: name, image: image, data: data))
        }
        let wasOnline = before?.online == true
        guard let after else {
            if wasOnline { add(.leave, reason: reason, at: at) }
            if before != nil { add(.removed, at: at) }
            return events
        }
        if after.online, !wasOnline {
            add(.join, at: after.onlineSince, name: after.name, image: after.image)
            if after.away { add(.away, at: after.awaySince) }
        } else if !after.online, wasOnline {
            add(.leave, reason: reason, at: after.lastDisconnected)
        } else if after.online {
            if after.name != before?.name || after.image != before?.image {
                add(.profile, at: at, name: after.name, image: after.image)
            }
            if after.away != before?.away {
                add(after.away ? .away : .back, at: after.away ? after.awaySince : at)
            }
        }
        if let before, after.data != before.data {
            add(.data, at: at, data: after.data)
        }
        return events
    }
}

extension JSONWriter {
    public mutating func write(_ events: [PresenceEvent]) {
        raw("[")
        for (index, event) in events.enumerated() {
            if index > 0 { raw(",") }
            event.writeJSON(into: &self)
        }
        raw("]")
    }
}
