@_exported import PresenceCore

/// Everything the server needs from storage, by role: the presence calls and reads
/// (`PresenceCalls`), the event log and webhook cursors (`PresenceEventLog`), and what only a
/// store shared by several processes has (`PresenceCluster`). `StoreEngine` is the one
/// implementation, over a journal (memory, SQLite, PostgreSQL); every journal passes the store
/// conformance suite in the tests.
///
/// ```swift
/// let store = MemoryStore()
/// let tokens = try await store.heartbeat(HeartbeatRequest(roomId: "doc", userId: "alice", sessionId: "tab-1"))
/// let snapshot = try await store.snapshot(roomToken: tokens.roomToken, limit: 10)
/// ```
public typealias PresenceStore = PresenceCalls & PresenceEventLog & PresenceCluster

/// The operations of PROTOCOL.md, the reads behind them, expiry, and the feed of what was
/// committed (published only after it is stored).
public protocol PresenceCalls: Sendable {
    /// The clock that stamps every change and decides expiry.
    var clock: any WallClock { get }
    /// Rings when a deadline is queued that may be earlier than the one the expiry loop sleeps until.
    var deadlineAlarm: DeadlineAlarm { get }

    /// Starts or keeps a session; answers once any change it makes is stored.
    func heartbeat(_ request: HeartbeatRequest) async throws -> SessionTokens
    /// The same heartbeat answered without waiting, when the store can do it from memory (most
    /// often: it only moves a live session's deadline); nil when it must go through `heartbeat(_:)`,
    /// which then also reports any error. A socket's event loop answers most heartbeats here, with
    /// no task started for them.
    func heartbeatAtOnce(_ request: HeartbeatRequest) -> SessionTokens?
    /// Ends a session at once; an unknown token is a no-op.
    func disconnect(sessionToken: String) async throws
    /// The same disconnect done without waiting, when the store applies changes in memory only;
    /// false when it must go through `disconnect(sessionToken:)`. Answers most of a small room's
    /// leaves on the HTTP connection's event loop, with no task started for them.
    func disconnectAtOnce(sessionToken: String) -> Bool
    /// Sets (or with `nil` clears) the data of the session's user; throws `not_found` for an unknown token.
    func update(sessionToken: String, data: JSONValue?) async throws
    /// Sets (or with `nil` clears) a user's data; throws `not_found` if the user was never in the room.
    func updateRoomUser(roomId: String, userId: String, data: JSONValue?) async throws
    /// A room's list by its token; an unknown token reads as an empty room at version 0.
    func snapshot(roomToken: String, limit: Int) async throws -> RoomSnapshot
    /// The same read answered without waiting, when the store can read its memory now (not
    /// during a commit); nil when it must go through `snapshot(roomToken:limit:)`. A room's read
    /// is O(limit), so the fan-out reads here in its own step, without a task.
    func snapshotAtOnce(roomToken: String, limit: Int) -> RoomSnapshot?
    /// A room's list by its id (the admin's `listRoom`).
    func roomUsers(roomId: String, onlineOnly: Bool, limit: Int) async throws -> RoomSnapshot
    /// The rooms a user is in or was in (the admin's `listUser`).
    func userRooms(userId: String, onlineOnly: Bool, limit: Int) async throws -> [UserRoomStatus]
    /// Each user's presence across all rooms, in the order asked.
    func userStatuses(userIds: [String]) async throws -> [UserStatus]
    /// Ends a user's sessions in a room and forgets the user there.
    func removeRoomUser(roomId: String, userId: String) async throws
    /// Ends every session of a room and forgets the room; subscriptions to it end.
    func removeRoom(roomId: String) async throws
    /// Gives the room a new token (nil for an unknown room); subscriptions to the old one end.
    func rotateRoomToken(roomId: String) async throws -> String?
    /// Forgets up to `limit` offline users who went offline before `cutoff` (and rooms left empty);
    /// returns how many it forgot. A shared store sweeps on one process only.
    func forgetOfflineUsers(before cutoff: Int64, limit: Int) async throws -> Int
    /// The room a token reads, or nil for an unknown (or rotated) token.
    func roomId(forToken roomToken: String) async throws -> String?
    /// The room and user of a live session, or nil for an unknown token.
    func sessionOwner(sessionToken: String) async throws -> SessionOwner?
    /// Counts of rooms, users and sessions.
    func statistics() async throws -> PresenceStatistics

    /// Expires at most `limit` sessions whose deadline has passed; returns how many it expired.
    func expireDueSessions(limit: Int) async throws -> Int
    /// When `expireDueSessions` next has work: the earliest deadline, or `nil` when no session is
    /// alive (or this process does not expire sessions now).
    func nextDeadline() async throws -> Int64?

    /// A new stream of every committed batch from now on, in commit order.
    func commits() -> AsyncStream<CommittedBatch>
    /// The same batches handed to `body` as they are committed, on the committing thread and
    /// under the lock that orders them (see `Feed.listen`): `body` must not wait, nor call the store.
    func listenToCommits(_ body: @escaping @Sendable (CommittedBatch) -> Void) -> FeedListening

    /// Throws 503 `unavailable` while the store cannot commit (a full disk, a lost database), so
    /// `/health` tells a load balancer to send traffic elsewhere.
    func checkCanCommit() throws(PresenceError)
    /// Figures of the store's own work for `/metrics` (commits, heartbeats answered from memory;
    /// a shared store: serving, leading, catching up).
    var gauges: [StoreGauge] { get }
    /// The store's own work while it serves (a durable store's writer and its "alive at" mark);
    /// runs until cancelled, then finishes what it accepted. Operations of a durable store wait for it.
    func run() async throws
}

/// What only a store shared by several processes has to say. A store of one process answers:
/// nothing to catch up with, never cut off, always leading.
public protocol PresenceCluster: Sendable {
    /// Returns once this process's reads show every change committed anywhere before the call.
    func synchronize() async throws
    /// Yields each time the store stops serving (cut off from its database), so the server closes
    /// its sockets with 1013 and their clients reconnect, perhaps to another process.
    func outages() -> AsyncStream<Void>
    /// Whether this process does the work one process does for all now (webhook delivery).
    var deliversWebhooks: Bool { get }
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

extension PresenceCalls {
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

    /// The room changes of every committed batch, one by one: for tests and tools.
    public func roomChanges() -> AsyncStream<RoomChange> { committed { $0.changes } }

    /// The events of every committed batch, one by one: for tests and tools.
    public func committedEvents() -> AsyncStream<PresenceEvent> { committed { $0.events } }

    private func committed<Element: Sendable>(_ part: @escaping @Sendable (CommittedBatch) -> [Element]) -> AsyncStream<Element> {
        // Made before returning, so nothing committed after the call is missed.
        let batches = commits()
        return AsyncStream { continuation in
            let reader = Task {
                for await batch in batches {
                    for element in part(batch) { continuation.yield(element) }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in reader.cancel() }
        }
    }
}
