import PresenceCore

/// Rooms rebuilt from nothing but events: what an app that follows the event log or a webhook
/// holds. Tests compare it with the store's own lists, which is what makes the log trustworthy.
public struct EventReplay: Sendable {
    public private(set) var rooms: [String: [String: UserRecord]] = [:]
    /// The version of each room's last event.
    public private(set) var versions: [String: UInt64] = [:]
    public private(set) var lastSequence: UInt64 = 0

    public init() {}

    /// Applies events in id order; throws on an event that cannot follow what came before.
    public mutating func apply(_ events: [PresenceEvent]) throws {
        for event in events { try apply(event) }
    }

    public mutating func apply(_ event: PresenceEvent) throws {
        guard event.sequence > lastSequence else {
            throw TestFailure("event \(event.id) after \(PresenceEvent.id(forSequence: lastSequence))")
        }
        if let version = versions[event.roomId], event.roomVersion < version {
            throw TestFailure("event \(event.id) of \(event.roomId) at version \(event.roomVersion) after \(version)")
        }
        lastSequence = event.sequence
        versions[event.roomId] = event.roomVersion
        var record = rooms[event.roomId]?[event.userId]
        switch event.kind {
        case .join:
            var joined = record ?? UserRecord(userId: event.userId, online: true, lastDisconnected: 0, onlineSince: event.at)
            joined.online = true
            joined.onlineSince = event.at
            joined.lastDisconnected = 0
            joined.name = event.name
            joined.image = event.image
            joined.away = false
            joined.awaySince = 0
            record = joined
        case .leave:
            guard var left = record, left.online else { throw TestFailure("leave of \(event.userId), not online") }
            left.online = false
            left.onlineSince = 0
            left.lastDisconnected = event.at
            left.away = false
            left.awaySince = 0
            record = left
        case .away, .back:
            guard record?.online == true else { throw TestFailure("\(event.kind) of \(event.userId), not online") }
            record!.away = event.kind == .away
            record!.awaySince = event.kind == .away ? event.at : 0
        case .profile:
            guard record != nil else { throw TestFailure("profile of \(event.userId) without a record") }
            record!.name = event.name
            record!.image = event.image
        case .data:
            guard record != nil else { throw TestFailure("data of \(event.userId) without a record") }
            record!.data = event.data
        case .removed:
            guard record != nil, record?.online == false else { throw TestFailure("removed \(event.userId) while online or unknown") }
            record = nil
        }
        rooms[event.roomId, default: [:]][event.userId] = record
        if rooms[event.roomId]?.isEmpty == true { rooms.removeValue(forKey: event.roomId) }
    }

    /// A room's records in protocol order.
    public func users(of roomId: String) -> [UserRecord] {
        (rooms[roomId] ?? [:]).values.sorted(by: UserRecord.precedes)
    }
}
