import Logging
import Synchronization

/// The one store: the presence state (`PresenceState`, pure) and the one owner of it, in the
/// spirit of Phoenix Tracker's state and shard. One lock, one group-commit writer, one read path
/// (waiting and at once), one heartbeat fast path and one feed of committed batches, over a
/// journal that says how batches are loaded, stored and replicated (`MemoryJournal`,
/// `SQLiteJournal`, `PostgresJournal`).
///
/// A durable journal's operations queue up while a batch is being stored, and the writer's next
/// batch takes all of them, so a burst of thousands of joins costs a handful of writes. Reads
/// never see a change that is not stored yet: they wait for the batch being stored. A heartbeat
/// that only moves a live, stored session's deadline is answered from memory, in its caller.
public final class StoreEngine<Journal: StoreJournal>: PresenceCalls, PresenceEventLog, PresenceCluster {
    public let clock: any WallClock
    public let deadlineAlarm = DeadlineAlarm()
    public let journal: Journal
    let logger: Logger
    private let locked: Mutex<EngineState<Journal>>
    private let feed = Feed<CommittedBatch>()
    /// Wakes the writer; one pending wake stands for any number of queued operations.
    private let writerWake: AsyncStream<Void>.Continuation
    private let writerWakes: AsyncStream<Void>

    public init(journal: Journal, presence: PresenceState, memo: Journal.Memo, clock: any WallClock, logger: Logger) {
        self.journal = journal
        self.clock = clock
        self.logger = logger
        locked = Mutex(EngineState(presence: presence, memo: memo))
        (writerWakes, writerWake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    // MARK: - For journals

    /// Runs `body` under the engine's one lock.
    public func withLock<Value>(_ body: (inout EngineState<Journal>) throws -> Value) rethrows -> Value {
        try locked.withLock { try body(&$0) }
    }

    /// Hands a committed batch to every listener. Only the writer calls this (or, inline, the
    /// caller under the lock), so listeners see commit order.
    public func publish(_ batch: CommittedBatch) {
        guard !batch.isEmpty else { return }
        feed.publish([batch])
    }

    /// Wakes the writer, for a journal's own work between batches (`runWriter`'s `afterWake`).
    public func wakeWriter() {
        writerWake.yield()
    }

    /// The writer: commits queued batches as they come, reloads after a failed commit, and gives
    /// the journal `afterWake` between wakes. Returns once `run()` is cancelled and everything it
    /// accepted is committed.
    public func runWriter(afterWake: () async -> Void) async {
        for await _ in writerWakes {
            await commitQueuedBatches()
            if withLock({ $0.stale }) { await reloadStored() }
            await afterWake()
        }
        withLock { $0.writer = .stopped }
        await commitQueuedBatches()
    }

    private func commitQueuedBatches() async {
        while true {
            let operations = withLock { state -> [QueuedOperation] in
                guard !state.queue.isEmpty else { return [] }
                if state.queue.count <= Journal.maximumBatch {
                    defer { state.queue.removeAll(keepingCapacity: true) }
                    return state.queue
                }
                let taken = Array(state.queue.prefix(Journal.maximumBatch))
                state.queue.removeFirst(taken.count)
                return taken
            }
            guard !operations.isEmpty else { return }
            do {
                let committed = try await journal.commit(operations, engine: self)
                withLock { state in
                    state.committing = false
                    state.unstoredSessions.removeAll()
                    state.counters.commits += 1
                    // Reads that waited see exactly the state just stored, before the next batch applies.
                    state.answerWaitingReads()
                }
                publish(committed)
                for operation in operations { operation.finish(nil) }
            } catch {
                // Memory ran ahead of the medium: reads wait (or fail) until a reload replaced it.
                logger.error("commit failed; reloading the stored state", metadata: ["error": "\(error)"])
                withLock { state in
                    state.committing = false
                    state.unstoredSessions.removeAll()
                    state.stale = true
                }
                await reloadStored()
                let storeError = PresenceError.unavailable("the change could not be stored")
                for operation in operations { operation.finish(storeError) }
            }
        }
    }

    private func reloadStored() async {
        do {
            publish(try await journal.reload(engine: self))
        } catch {
            logger.error("could not reload the stored state; retrying at the next wake", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - The paths every call takes

    /// Queues a mutation for the writer and returns once its effects are stored; an inline
    /// journal's is applied and published here, under the lock.
    private func perform<Value: Sendable>(
        expiryLimit: Int? = nil,
        _ body: @escaping @Sendable (inout PresenceState, Int64, [String]?) throws(PresenceError) -> (Value, [RoomChange])
    ) async throws -> Value {
        if Journal.appliesInline { return try performInline { state, now throws(PresenceError) in try body(&state, now, nil) } }
        let (operation, result) = QueuedOperation.make(expiryLimit: expiryLimit, body)
        try locked.withLock { (state: inout EngineState<Journal>) throws(PresenceError) in
            try journal.checkServing(state)
            guard state.writer != .stopped else { throw .unavailable("the store has stopped") }
            state.queue.append(operation)
        }
        writerWake.yield()
        return try await result.value.get()
    }

    private func performInline<Value>(
        _ body: (inout PresenceState, Int64) throws(PresenceError) -> (Value, [RoomChange])
    ) throws(PresenceError) -> Value {
        let now = clock.nowMillis()
        return try locked.withLock { (state: inout EngineState<Journal>) throws(PresenceError) -> Value in
            let (value, changes) = try body(&state.presence, now)
            let events = state.presence.takeEvents()
            journal.recordInline(events, &state)
            state.counters.commits += 1
            // Under the lock that ordered it, so listeners see store order.
            publish(CommittedBatch(changes: changes, events: events))
            return value
        }
    }

    /// Reads the state: waits while a batch is being stored, so it never shows an unstored change.
    private func read<Value: Sendable>(_ body: @escaping @Sendable (PresenceState) -> Value) async throws -> Value {
        let promise = Promise<Value>()
        let immediate = try locked.withLock { (state: inout EngineState<Journal>) throws(PresenceError) -> Value? in
            try journal.checkServing(state)
            if !state.committing && !state.stale { return body(state.presence) }
            state.waitingReads.append { presence in promise.fulfil(body(presence)) }
            return nil
        }
        if let immediate { return immediate }
        return await promise.value
    }

    /// `body` over the state now, or nil when `read` would wait or fail.
    private func readAtOnce<Value>(_ body: (PresenceState) -> Value) -> Value? {
        locked.withLock { state in
            guard (try? journal.checkServing(state)) != nil, !state.committing, !state.stale else { return nil }
            return body(state.presence)
        }
    }

    /// A read of something another process may have made a moment ago: looks again after catching up.
    private func readMaybeMadeElsewhere<Value: Sendable>(_ body: @escaping @Sendable (PresenceState) -> Value?) async throws -> Value? {
        if let value = try await read(body) { return value }
        guard Journal.isShared else { return nil }
        try await synchronize()
        return try await read(body)
    }

    // MARK: - PresenceCalls

    public func heartbeat(_ request: HeartbeatRequest) async throws -> SessionTokens {
        if let tokens = extendInMemory(request) { return tokens }
        // An inline journal applies it here at once and throws its error, if any.
        let outcome = try await perform(Self.storingHeartbeat(request))
        locked.withLock { $0.counters.heartbeatsStored += 1 }
        return answer(outcome)
    }

    public func heartbeatAtOnce(_ request: HeartbeatRequest) -> SessionTokens? {
        if let tokens = extendInMemory(request) { return tokens }
        // Nothing makes an inline journal wait: any heartbeat is answered here but a failing one.
        guard Journal.appliesInline else { return nil }
        let operation = Self.storingHeartbeat(request)
        return (try? performInline { state, now throws(PresenceError) in try operation(&state, now, nil) }).map(answer)
    }

    /// The heartbeat of a live, stored session whose deadline the journal lets move in memory only.
    private func extendInMemory(_ request: HeartbeatRequest) -> SessionTokens? {
        let now = clock.nowMillis()
        let extended = locked.withLock { state -> PresenceState.HeartbeatOutcome? in
            guard (try? journal.checkServing(state)) != nil, !state.unstoredSessions.contains(request.sessionKey),
                journal.mayExtendInMemory(sessionKey: request.sessionKey, now: now, state),
                let outcome = state.presence.extendLiveSession(request, now: now)
            else { return nil }
            journal.extendedInMemory(
                sessionKey: request.sessionKey, deadline: ProtocolLimits.deadline(now: now, interval: request.interval), &state)
            state.counters.heartbeatsInMemory += 1
            return outcome
        }
        return extended.map(answer)
    }

    /// A heartbeat applied as a mutation, whose batch stores what it changed.
    private static func storingHeartbeat(
        _ request: HeartbeatRequest
    ) -> @Sendable (inout PresenceState, Int64, [String]?) throws(PresenceError) -> (PresenceState.HeartbeatOutcome, [RoomChange]) {
        { state, now, _ throws(PresenceError) in
            let outcome = try state.heartbeat(request, now: now)
            if Journal.storesDeadlines { state.markSessionUnstored(request.sessionKey) }
            return (outcome, outcome.changes)
        }
    }

    /// The tokens of a heartbeat, once the expiry loop knows of any earlier deadline it queued.
    private func answer(_ outcome: PresenceState.HeartbeatOutcome) -> SessionTokens {
        if let deadline = outcome.queuedDeadline { deadlineAlarm.note(deadline: deadline) }
        return outcome.tokens
    }

    public func disconnect(sessionToken: String) async throws {
        try await perform { state, now, _ in ((), state.disconnect(sessionToken: sessionToken, now: now).changes) }
    }

    public func disconnectAtOnce(sessionToken: String) -> Bool {
        guard Journal.appliesInline else { return false }
        return (try? performInline { state, now in ((), state.disconnect(sessionToken: sessionToken, now: now).changes) }) != nil
    }

    public func update(sessionToken: String, data: JSONValue?) async throws {
        try await perform { state, now, _ throws(PresenceError) in
            ((), try state.update(sessionToken: sessionToken, data: data, now: now).changes)
        }
    }

    public func updateRoomUser(roomId: String, userId: String, data: JSONValue?) async throws {
        try await perform { state, now, _ throws(PresenceError) in
            ((), try state.updateRoomUser(roomId: roomId, userId: userId, data: data, now: now).changes)
        }
    }

    public func snapshot(roomToken: String, limit: Int) async throws -> RoomSnapshot {
        try await read { $0.snapshot(roomToken: roomToken, limit: limit) }
    }

    public func snapshotAtOnce(roomToken: String, limit: Int) -> RoomSnapshot? {
        readAtOnce { $0.snapshot(roomToken: roomToken, limit: limit) }
    }

    public func roomUsers(roomId: String, onlineOnly: Bool, limit: Int) async throws -> RoomSnapshot {
        try await read { $0.roomUsers(roomId: roomId, onlineOnly: onlineOnly, limit: limit) }
    }

    public func userRooms(userId: String, onlineOnly: Bool, limit: Int) async throws -> [UserRoomStatus] {
        try await read { $0.userRooms(userId: userId, onlineOnly: onlineOnly, limit: limit) }
    }

    public func userStatuses(userIds: [String]) async throws -> [UserStatus] {
        try await read { state in userIds.map { state.userStatus(userId: $0) } }
    }

    public func removeRoomUser(roomId: String, userId: String) async throws {
        try await perform { state, now, _ in ((), state.removeRoomUser(roomId: roomId, userId: userId, now: now).changes) }
    }

    public func removeRoom(roomId: String) async throws {
        try await perform { state, now, _ in ((), state.removeRoom(roomId: roomId, now: now).changes) }
    }

    public func rotateRoomToken(roomId: String) async throws -> String? {
        try await perform { state, _, _ in
            guard let (token, outcome) = state.rotateRoomToken(roomId: roomId) else { return (nil, []) }
            return (token, outcome.changes)
        }
    }

    public func forgetOfflineUsers(before cutoff: Int64, limit: Int) async throws -> Int {
        guard locked.withLock({ journal.leads($0) }) else { return 0 }
        return try await perform { state, now, _ in
            let (forgotten, outcome) = state.forgetOfflineUsers(before: cutoff, limit: limit, now: now)
            return (forgotten, outcome.changes)
        }
    }

    public func roomId(forToken roomToken: String) async throws -> String? {
        try await readMaybeMadeElsewhere { $0.roomId(forToken: roomToken) }
    }

    public func sessionOwner(sessionToken: String) async throws -> SessionOwner? {
        try await readMaybeMadeElsewhere { $0.sessionOwner(sessionToken: sessionToken) }
    }

    public func statistics() async throws -> PresenceStatistics {
        try await read { $0.statistics }
    }

    public func expireDueSessions(limit: Int) async throws -> Int {
        let now = clock.nowMillis()
        let due = locked.withLock { state -> Bool in
            guard journal.leads(state), state.presence.hasDue(now: now) else { return false }
            journal.expiring(now: now, &state)
            return true
        }
        guard due else { return 0 }
        return try await perform(expiryLimit: limit) { state, now, stillDue in
            // A journal with stored deadlines read them and passes the sessions still due.
            let (expired, outcome) = if let stillDue {
                state.expire(sessionIds: stillDue, now: now)
            } else {
                state.expireDue(now: now, limit: limit)
            }
            return (expired, outcome.changes)
        }
    }

    public func nextDeadline() async throws -> Int64? {
        locked.withLock { state in
            guard journal.leads(state) else { return nil }
            return journal.nextExpiryCheck(earliest: state.presence.nextDeadline, state)
        }
    }

    public func commits() -> AsyncStream<CommittedBatch> {
        feed.stream()
    }

    public func listenToCommits(_ body: @escaping @Sendable (CommittedBatch) -> Void) -> FeedListening {
        feed.listen(body)
    }

    public func checkCanCommit() throws(PresenceError) {
        try locked.withLock { (state: inout EngineState<Journal>) throws(PresenceError) in try journal.checkCanCommit(state) }
    }

    public var gauges: [StoreGauge] {
        locked.withLock { journal.gauges($0) }
    }

    /// Runs the journal's work (and with it the writer) until cancelled; then commits what was
    /// accepted and lets the journal finish.
    public func run() async throws {
        let starts = locked.withLock { state -> Bool in
            guard state.writer == .notStarted else { return false }
            state.writer = .running
            return true
        }
        guard starts else { throw PresenceError.unavailable("the store's writer runs once") }
        await withTaskCancellationHandler {
            await journal.run(engine: self)
        } onCancel: {
            writerWake.finish()
        }
        feed.finish()
    }

    // MARK: - PresenceCluster

    public func synchronize() async throws {
        try await journal.synchronize(engine: self)
    }

    public func outages() -> AsyncStream<Void> {
        journal.outages()
    }

    public var deliversWebhooks: Bool {
        locked.withLock { journal.leads($0) }
    }

    // MARK: - PresenceEventLog

    public func events(after: UInt64?, roomId: String?, limit: Int) async throws -> EventPage {
        try await journal.events(after: after, roomId: roomId, limit: limit, engine: self)
    }

    public func forgetEvents(before cutoff: Int64) async throws -> Int {
        guard locked.withLock({ journal.leads($0) }) else { return 0 }
        return try await journal.forgetEvents(before: cutoff, engine: self)
    }

    public func webhookCursor(endpoint: String) async throws -> WebhookCursor {
        try await journal.webhookCursor(endpoint: endpoint, engine: self)
    }

    public func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String) async throws {
        try await journal.saveWebhookCursor(cursor, endpoint: endpoint, engine: self)
    }
}
