@_exported import PresenceCore

/// What the server needs from storage: the operations of PROTOCOL.md, a feed of
/// room changes (published only after a change is stored), and the deadlines
/// the expiry loop works through.
///
/// Every implementation must pass the store conformance suite in the tests.
///
/// ```swift
/// let store = MemoryStore()
/// let tokens = try await store.heartbeat(HeartbeatRequest(roomId: "doc", userId: "alice", sessionId: "tab-1"))
/// let snapshot = try await store.snapshot(roomToken: tokens.roomToken, limit: 10)
/// ```
public protocol PresenceStore: Sendable {
    /// The clock that stamps every change and decides expiry.
    var clock: any WallClock { get }
    /// Rings when a deadline is queued that may be earlier than the one the expiry loop sleeps until.
    var deadlineAlarm: DeadlineAlarm { get }

    func heartbeat(_ request: HeartbeatRequest) async throws -> SessionTokens
    /// The same heartbeat answered without waiting, when the store can do it from memory (most
    /// often: it only moves a live session's deadline); nil when it must go through `heartbeat(_:)`,
    /// which then also reports any error. A socket's event loop answers most heartbeats here, with
    /// no task started for them. The default is nil.
    func heartbeatAtOnce(_ request: HeartbeatRequest) -> SessionTokens?
    /// Ends a session at once; an unknown token is a no-op.
    func disconnect(sessionToken: String) async throws
    /// Sets (or with `nil` clears) the data of the session's user; throws `not_found` for an unknown token.
    func update(sessionToken: String, data: JSONValue?) async throws
    /// Sets (or with `nil` clears) a user's data; throws `not_found` if the user was never in the room.
    func updateRoomUser(roomId: String, userId: String, data: JSONValue?) async throws
    /// An unknown token reads as an empty room at version 0.
    func snapshot(roomToken: String, limit: Int) async throws -> RoomSnapshot
    /// The same read answered without waiting, when the store can read its memory now (not
    /// during a commit); nil when it must go through `snapshot(roomToken:limit:)`. A room's read
    /// is O(limit), so the fan-out reads here in its own step, without a task. The default is nil.
    func snapshotAtOnce(roomToken: String, limit: Int) -> RoomSnapshot?
    func roomUsers(roomId: String, onlineOnly: Bool, limit: Int) async throws -> RoomSnapshot
    func userRooms(userId: String, onlineOnly: Bool, limit: Int) async throws -> [UserRoomStatus]
    /// Each user's presence across all rooms, in the order asked.
    func userStatuses(userIds: [String]) async throws -> [UserStatus]
    func removeRoomUser(roomId: String, userId: String) async throws
    func removeRoom(roomId: String) async throws
    /// Gives the room a new token (nil for an unknown room); subscriptions to the old one end.
    func rotateRoomToken(roomId: String) async throws -> String?
    /// Forgets up to `limit` offline users who went offline before `cutoff` (and rooms left empty);
    /// returns how many it forgot.
    func forgetOfflineUsers(before cutoff: Int64, limit: Int) async throws -> Int
    /// Events after the sequence `after` (nil: from the oldest kept), oldest first, at most `limit`,
    /// of one room or of all. Throws `events_expired` when events after `after` are forgotten.
    func events(after: UInt64?, roomId: String?, limit: Int) async throws -> EventPage
    /// Forgets the events recorded before `cutoff` (retention); returns how many.
    func forgetEvents(before cutoff: Int64) async throws -> Int
    /// Where a webhook endpoint's deliveries stand; an endpoint seen for the first time starts
    /// after the newest event (it is not sent the history).
    func webhookCursor(endpoint: String) async throws -> WebhookCursor
    /// Stores where an endpoint stands; a store shared by several processes never moves
    /// `deliveredThrough` back (a deliverer that lost its lease may save late).
    func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String) async throws
    /// The room a token reads, or nil for an unknown (or rotated) token.
    func roomId(forToken roomToken: String) async throws -> String?
    /// The room and user of a live session, or nil for an unknown token.
    func sessionOwner(sessionToken: String) async throws -> SessionOwner?

    /// Expires at most `limit` sessions whose deadline has passed; returns how many it expired.
    func expireDueSessions(limit: Int) async throws -> Int
    /// The earliest queued deadline, or `nil` when no session is alive.
    func nextDeadline() async throws -> Int64?
    /// A new stream of every room change from now on, in the order they were stored.
    func roomChanges() -> AsyncStream<RoomChange>
    /// The same changes handed to `body` as they are stored, on the storing thread and under the
    /// lock that orders them (see `Feed.listen`): `body` must not wait, nor call the store. The
    /// default reads `roomChanges()` in a task.
    func listenToRoomChanges(_ body: @escaping @Sendable (RoomChange) -> Void) -> FeedListening
    /// A new stream of the events committed from now on (a store shared by several processes:
    /// by any of them), so watchers learn whose presence may have changed.
    func committedEvents() -> AsyncStream<PresenceEvent>
    /// The same events handed to `body` as they are committed, as `listenToRoomChanges` does.
    func listenToCommittedEvents(_ body: @escaping @Sendable (PresenceEvent) -> Void) -> FeedListening
    func statistics() async throws -> PresenceStatistics
    /// Returns once this process's reads show every change committed anywhere before the call:
    /// a store shared by several processes catches up with the others. The default has nothing to do.
    func synchronize() async throws
    /// Yields each time the store stops serving (a shared store cut off from its database), so the
    /// server closes its sockets with 1013 and their clients reconnect, perhaps to another process.
    /// The default never yields.
    func outages() -> AsyncStream<Void>
    /// Yields each time the store replaced what it holds with the stored state (a shared store that
    /// fell behind a trimmed log, or failed a commit): what changed meanwhile came with no events
    /// here, so watchers of users read their statuses again. The default never yields.
    func reloads() -> AsyncStream<Void>
    /// Throws 503 `unavailable` while the store cannot commit (a full disk, a lost database), so
    /// `/health` tells a load balancer to send traffic elsewhere. The default never throws.
    func checkCanCommit() throws(PresenceError)
    /// Whether this process delivers webhooks now: a store shared by several processes lets one
    /// of them at a time. The default is true.
    var deliversWebhooks: Bool { get }
    /// Figures of the store's own work for `/metrics` (a shared store: serving, leading expiry,
    /// transactions). The default has none.
    var gauges: [StoreGauge] { get }
    /// The store's own work while it serves (a durable store's writer and its "alive at" mark);
    /// runs until cancelled, then finishes what it accepted. Operations of a store whose `run()`
    /// needs to run wait for it. The default has nothing to do.
    func run() async throws
}

/// One figure a store reports for `/metrics`, in Prometheus' naming (`presence_…`, `_total` for counts).
public struct StoreGauge: Sendable, Hashable {
    public let name: String
    public let help: String
    public let value: Double
    public init(_ name: String, _ value: Double, help: String) {
        self.name = name
        self.value = value
        self.help = help
    }
}

extension PresenceStore {
    /// Runs `body` while the store's `run()` serves it, then stops `run()` as a shutdown would
    /// (cancellation) and waits for it: for embedding apps, tools and tests.
    public func whileRunning<Value: Sendable>(_ body: () async throws -> Value) async throws -> Value {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.run() }
            do {
                let value = try await body()
                group.cancelAll()
                try await group.waitForAll()
                return value
            } catch {
                group.cancelAll()
                try? await group.waitForAll()
                throw error
            }
        }
    }

    public func synchronize() async throws {}

    public func heartbeatAtOnce(_ request: HeartbeatRequest) -> SessionTokens? { nil }

    public func snapshotAtOnce(roomToken: String, limit: Int) -> RoomSnapshot? { nil }

    public func listenToRoomChanges(_ body: @escaping @Sendable (RoomChange) -> Void) -> FeedListening {
        FeedListening.reading(roomChanges(), body)
    }

    public func listenToCommittedEvents(_ body: @escaping @Sendable (PresenceEvent) -> Void) -> FeedListening {
        FeedListening.reading(committedEvents(), body)
    }

    public var gauges: [StoreGauge] { [] }

    public var deliversWebhooks: Bool { true }

    public func checkCanCommit() throws(PresenceError) {}

    public func outages() -> AsyncStream<Void> {
        // No continuation is kept, so the stream ends at once: this store never stops serving.
        AsyncStream { _ in }
    }

    public func reloads() -> AsyncStream<Void> {
        AsyncStream { _ in }
    }

    public func run() async throws {
        // Nothing to keep up: wait for cancellation, like any service.
        let (never, continuation) = AsyncStream<Void>.makeStream()
        for await _ in never {}
        continuation.finish()
    }
}

extension FeedListening {
    /// A listener fed by a task that reads `stream`: for stores without a `Feed` of their own.
    static func reading<Element: Sendable>(_ stream: AsyncStream<Element>, _ body: @escaping @Sendable (Element) -> Void) -> FeedListening {
        let reader = Task {
            for await element in stream { body(element) }
        }
        return FeedListening { reader.cancel() }
    }
}
