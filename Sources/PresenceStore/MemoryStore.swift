import Synchronization

/// The ephemeral store: everything in memory, gone when the process ends, events and webhook
/// progress included (at most `eventCapacity` events are kept).
/// Operations run under one lock and never suspend, so they are short and ordered.
///
/// ```swift
/// let store = MemoryStore(clock: ManualWallClock())
/// ```
public final class MemoryStore: PresenceStore {
    public let clock: any WallClock
    public let deadlineAlarm = DeadlineAlarm()
    private let state: Mutex<PresenceState>
    /// Locked only inside `state`'s lock when appending, so events keep commit order.
    private let eventLog: Mutex<MemoryEventLog>
    private let feed = ChangeFeed()
    private let eventFeed = Feed<PresenceEvent>()

    public init(clock: any WallClock = SystemWallClock(), quotas: PresenceState.UserQuotas = .init(), eventCapacity: Int = 100_000) {
        self.clock = clock
        self.state = Mutex(PresenceState(recordsEvents: true, quotas: quotas))
        self.eventLog = Mutex(MemoryEventLog(capacity: eventCapacity))
    }

    /// Runs a mutation and publishes its changes while still holding the lock, so listeners see store order.
    private func mutate<Result>(_ body: (inout PresenceState, Int64) throws(PresenceError) -> (Result, [RoomChange])) throws(PresenceError) -> Result {
        let now = clock.nowMillis()
        return try state.withLock { (state: inout PresenceState) throws(PresenceError) -> Result in
            let (result, changes) = try body(&state, now)
            let events = state.takeEvents()
            if !events.isEmpty { eventLog.withLock { $0.append(events) } }
            feed.publish(changes)
            eventFeed.publish(events)
            return result
        }
    }

    public func heartbeat(_ request: HeartbeatRequest) async throws -> SessionTokens {
        try heartbeatNow(request)
    }

    /// Every heartbeat this store takes is answered at once: it never waits for anything. One that
    /// only moves a live session's deadline has no events and no changes to hand on.
    public func heartbeatAtOnce(_ request: HeartbeatRequest) -> SessionTokens? {
        let now = clock.nowMillis()
        guard let extended = state.withLock({ $0.extendLiveSession(request, now: now) }) else { return try? heartbeatNow(request) }
        if let deadline = extended.queuedDeadline { deadlineAlarm.note(deadline: deadline) }
        return extended.tokens
    }

    private func heartbeatNow(_ request: HeartbeatRequest) throws(PresenceError) -> SessionTokens {
        let outcome = try mutate { state, now throws(PresenceError) in
            let outcome = try state.heartbeat(request, now: now)
            return (outcome, outcome.changes)
        }
        if let deadline = outcome.queuedDeadline { deadlineAlarm.note(deadline: deadline) }
        return outcome.tokens
    }

    public func disconnect(sessionToken: String) async throws {
        try mutate { state, now in ((), state.disconnect(sessionToken: sessionToken, now: now).changes) }
    }

    public func update(sessionToken: String, data: JSONValue?) async throws {
        try mutate { state, now throws(PresenceError) in ((), try state.update(sessionToken: sessionToken, data: data, now: now).changes) }
    }

    public func updateRoomUser(roomId: String, userId: String, data: JSONValue?) async throws {
        try mutate { state, now throws(PresenceError) in
            ((), try state.updateRoomUser(roomId: roomId, userId: userId, data: data, now: now).changes)
        }
    }

    public func snapshot(roomToken: String, limit: Int) async throws -> RoomSnapshot {
        state.withLock { $0.snapshot(roomToken: roomToken, limit: limit) }
    }

    public func snapshotAtOnce(roomToken: String, limit: Int) -> RoomSnapshot? {
        state.withLock { $0.snapshot(roomToken: roomToken, limit: limit) }
    }

    public func roomUsers(roomId: String, onlineOnly: Bool, limit: Int) async throws -> RoomSnapshot {
        state.withLock { $0.roomUsers(roomId: roomId, onlineOnly: onlineOnly, limit: limit) }
    }

    public func userRooms(userId: String, onlineOnly: Bool, limit: Int) async throws -> [UserRoomStatus] {
        state.withLock { $0.userRooms(userId: userId, onlineOnly: onlineOnly, limit: limit) }
    }

    public func userStatuses(userIds: [String]) async throws -> [UserStatus] {
        state.withLock { state in userIds.map { state.userStatus(userId: $0) } }
    }

    public func removeRoomUser(roomId: String, userId: String) async throws {
        try mutate { state, now in ((), state.removeRoomUser(roomId: roomId, userId: userId, now: now).changes) }
    }

    public func removeRoom(roomId: String) async throws {
        try mutate { state, now in ((), state.removeRoom(roomId: roomId, now: now).changes) }
    }

    public func rotateRoomToken(roomId: String) async throws -> String? {
        try mutate { state, _ in
            guard let (token, outcome) = state.rotateRoomToken(roomId: roomId) else { return (nil, []) }
            return (token, outcome.changes)
        }
    }

    public func forgetOfflineUsers(before cutoff: Int64, limit: Int) async throws -> Int {
        try mutate { state, now in
            let (forgotten, outcome) = state.forgetOfflineUsers(before: cutoff, limit: limit, now: now)
            return (forgotten, outcome.changes)
        }
    }

    public func events(after: UInt64?, roomId: String?, limit: Int) async throws -> EventPage {
        try eventLog.withLock { log throws(PresenceError) in try log.page(after: after, roomId: roomId, limit: limit) }
    }

    public func forgetEvents(before cutoff: Int64) async throws -> Int {
        eventLog.withLock { $0.forget(before: cutoff) }
    }

    public func webhookCursor(endpoint: String) async throws -> WebhookCursor {
        eventLog.withLock { $0.cursor(endpoint: endpoint) }
    }

    public func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String) async throws {
        eventLog.withLock { $0.cursors[endpoint] = cursor }
    }

    public func roomId(forToken roomToken: String) async throws -> String? {
        state.withLock { $0.roomId(forToken: roomToken) }
    }

    public func sessionOwner(sessionToken: String) async throws -> SessionOwner? {
        state.withLock { $0.sessionOwner(sessionToken: sessionToken) }
    }

    public func expireDueSessions(limit: Int) async throws -> Int {
        try mutate { state, now in
            let (expired, outcome) = state.expireDue(now: now, limit: limit)
            return (expired, outcome.changes)
        }
    }

    public func nextDeadline() async throws -> Int64? {
        state.withLock { $0.nextDeadline }
    }

    public func roomChanges() -> AsyncStream<RoomChange> {
        feed.stream()
    }

    public func listenToRoomChanges(_ body: @escaping @Sendable (RoomChange) -> Void) -> FeedListening {
        feed.listen(body)
    }

    public func committedEvents() -> AsyncStream<PresenceEvent> {
        eventFeed.stream()
    }

    public func listenToCommittedEvents(_ body: @escaping @Sendable (PresenceEvent) -> Void) -> FeedListening {
        eventFeed.listen(body)
    }

    public func statistics() async throws -> PresenceStatistics {
        state.withLock { $0.statistics }
    }
}
