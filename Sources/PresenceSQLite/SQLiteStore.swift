import Foundation
import GRDB
import Logging
import PresenceStore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private func closeDescriptor(_ descriptor: Int32) {
    #if canImport(Glibc)
    _ = Glibc.close(descriptor)
    #elseif canImport(Darwin)
    _ = Darwin.close(descriptor)
    #endif
}

/// Why a data directory could not be opened; the message says what to do.
public struct SQLiteStoreError: Error, CustomStringConvertible {
    public let description: String
}

/// The durable embedded store: presence lives in memory (the same state machine as
/// `MemoryStore`) and every durable change is written to SQLite (WAL) before it is
/// acknowledged or published.
///
/// Writes are group-committed by one writer that `run()` owns: operations queue up while
/// a transaction is being written, and the next transaction takes all of them, so a burst
/// of thousands of joins costs a handful of fsyncs. Operations wait for `run()`. Reads never see a change that is not yet stored.
/// A heartbeat of a live session only moves its deadline in memory and writes nothing.
///
/// ```swift
/// let store = try SQLiteStore(directory: "./presence-data")
/// try await store.whileRunning {
///     _ = try await store.heartbeat(HeartbeatRequest(roomId: "doc", userId: "alice", sessionId: "tab-1"))
/// }
/// ```
public final class SQLiteStore: PresenceStore {
    public static let fileName = "presence.sqlite"
    public static let lockFileName = "presence.lock"

    public let clock: any WallClock
    public let deadlineAlarm = DeadlineAlarm()
    public let path: String
    private let database: DatabaseQueue
    private let lockDescriptor: Int32
    private let feed = ChangeFeed()
    private let eventFeed = Feed<PresenceEvent>()
    private let inner: Mutex<Inner>
    /// Wakes the writer in `run()`; one pending wake stands for any number of queued operations.
    private let writerWake: AsyncStream<Void>.Continuation
    private let writerWakes: AsyncStream<Void>
    private let logger: Logger
    private let aliveMarkInterval: Duration
    private let quotas: PresenceState.UserQuotas

    private enum WriterStatus { case notStarted, running, stopped }

    private struct Inner {
        var state: PresenceState
        var queue: [QueuedOperation] = []
        var writer = WriterStatus.notStarted
        var aliveMarkDue = false
        /// True while a batch applied to `state` is being written: reads wait for it.
        var committing = false
        var waitingReads: [@Sendable (PresenceState) -> Void] = []
        /// Sessions the batch being written creates, changes or ends: their heartbeats wait for it.
        var unstoredSessions = IDSet()
        /// Why the last write failed (a full disk, an I/O error), until a write succeeds: a batch,
        /// or the "alive at" mark, which is tried every few seconds even without traffic.
        var writeFailure: String?
    }

    /// Opens (creating if needed) `directory/presence.sqlite`, refusing a directory that another
    /// running server holds, a file that is not a presence database, and an unwritable place.
    public init(
        directory: String, clock: any WallClock = SystemWallClock(), quotas: PresenceState.UserQuotas = .init(),
        logger: Logger = Logger(label: "presence.sqlite"), aliveMarkInterval: Duration = .seconds(5)
    ) throws {
        self.clock = clock
        self.logger = logger
        self.aliveMarkInterval = aliveMarkInterval
        self.quotas = quotas
        let directoryURL = URL(fileURLWithPath: directory, isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: directoryURL, withIntermediateDirectories: true)
        } catch {
            throw SQLiteStoreError(description: "cannot create the data directory \(directory): \(error.localizedDescription)")
        }
        path = directoryURL.appendingPathComponent(Self.fileName).path
        lockDescriptor = try Self.lockDirectory(directoryURL.appendingPathComponent(Self.lockFileName).path, directory: directory)

        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(5)
        configuration.label = "presence"
        configuration.prepareDatabase { db in
            // FULL: a commit is on disk before it is acknowledged, even if the machine loses power.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
            try Self.checkIsPresenceDatabase(database, path: path)
            try SQLiteSchema.migrator.migrate(database)
        } catch let error as SQLiteStoreError {
            closeDescriptor(lockDescriptor)
            throw error
        } catch let error as DatabaseError where error.resultCode == .SQLITE_NOTADB {
            closeDescriptor(lockDescriptor)
            throw SQLiteStoreError(description: "\(path) is not a presence database (not an SQLite file)")
        } catch let error as DatabaseError where error.resultCode == .SQLITE_READONLY || error.resultCode == .SQLITE_CANTOPEN || error.resultCode == .SQLITE_PERM {
            closeDescriptor(lockDescriptor)
            throw SQLiteStoreError(description: "cannot write \(path): \(error.message ?? "\(error.resultCode)")")
        } catch {
            closeDescriptor(lockDescriptor)
            throw SQLiteStoreError(description: "cannot open \(path): \(error)")
        }
        let state = try Self.load(database, now: clock.nowMillis(), quotas: quotas)
        inner = Mutex(Inner(state: state))
        (writerWakes, writerWake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        logger.info("opened \(path)", metadata: ["sessions": "\(state.statistics.sessions)", "rooms": "\(state.statistics.rooms)"])
    }

    deinit {
        closeDescriptor(lockDescriptor)
    }

    /// Closes the file once `run()` has returned (its last act is the final "alive at" mark); the
    /// data directory is free for another process afterwards. The store must not be used after this.
    public func close() throws {
        try database.close()
        flock(lockDescriptor, LOCK_UN)
    }

    private static func lockDirectory(_ lockPath: String, directory: String) throws -> Int32 {
        let descriptor = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw SQLiteStoreError(description: "cannot write in the data directory \(directory): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            closeDescriptor(descriptor)
            throw SQLiteStoreError(description: "the data directory \(directory) is in use by another running presence-server")
        }
        return descriptor
    }

    private static func checkIsPresenceDatabase(_ database: DatabaseQueue, path: String) throws {
        try database.read { db in
            let applicationId = try Int32.fetchOne(db, sql: "PRAGMA application_id") ?? 0
            let tableCount = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master") ?? 0
            if tableCount > 0, applicationId != SQLiteSchema.applicationId {
                throw SQLiteStoreError(description: "\(path) is not a presence database (it holds other data)")
            }
        }
    }

    /// Reads the saved state; sessions get their grace deadlines (see `PresenceState.restoring`).
    private static func load(_ database: DatabaseQueue, now: Int64, quotas: PresenceState.UserQuotas) throws -> PresenceState {
        try database.read { db in
            let rooms = try Row.fetchAll(db, sql: "SELECT room_id, token, version FROM rooms").map {
                DurableChanges.RoomRow(roomId: $0["room_id"], token: $0["token"], version: UInt64($0["version"] as Int64))
            }
            let decoder = JSONDecoder()
            let users = try Row.fetchAll(db, sql: "SELECT * FROM users").map { row -> DurableChanges.UserRow in
                let dataText: String? = row["data"]
                let data = try dataText.map { try decoder.decode(JSONValue.self, from: Data($0.utf8)) }
                return DurableChanges.UserRow(
                    roomId: row["room_id"],
                    record: UserRecord(
                        userId: row["user_id"], online: row["online"], lastDisconnected: row["last_disconnected"],
                        onlineSince: row["online_since"], data: data, name: row["name"], image: row["image"],
                        away: row["away"], awaySince: row["away_since"]))
            }
            let sessions = try Row.fetchAll(db, sql: "SELECT * FROM sessions").map {
                DurableChanges.SessionRow(
                    sessionId: $0["session_id"], roomId: $0["room_id"], userId: $0["user_id"], token: $0["token"],
                    interval: $0["interval"], away: $0["away"])
            }
            let lastVersion = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'last_version'") ?? 0
            let lastEvent = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'last_event'") ?? 0
            let aliveAt = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'alive_at'")
            return PresenceState.restoring(
                rooms: rooms, users: users, sessions: sessions, lastVersion: UInt64(lastVersion),
                lastEventSequence: UInt64(lastEvent), aliveAt: aliveAt, now: now, quotas: quotas)
        }
    }

    private static func write(_ changes: DurableChanges, aliveAt: Int64, to db: Database) throws {
        for roomId in changes.deletedRooms {
            try db.cachedStatement(sql: "DELETE FROM rooms WHERE room_id = ?").execute(arguments: [roomId])
        }
        for room in changes.rooms {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO rooms (room_id, token, version) VALUES (?, ?, ?)").execute(arguments: [room.roomId, room.token, Int64(room.version)])
        }
        for user in changes.deletedUsers {
            try db.cachedStatement(sql: "DELETE FROM users WHERE room_id = ? AND user_id = ?").execute(arguments: [user.roomId, user.userId])
        }
        for row in changes.users {
            let record = row.record
            try db.cachedStatement(sql: """
                    INSERT OR REPLACE INTO users (room_id, user_id, online, online_since, last_disconnected, data, name, image, away, away_since)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """).execute(arguments: [
                    row.roomId, record.userId, record.online, record.onlineSince, record.lastDisconnected,
                    record.data?.compactJSON, record.name, record.image, record.away, record.awaySince,
                ])
        }
        for sessionId in changes.deletedSessions {
            try db.cachedStatement(sql: "DELETE FROM sessions WHERE session_id = ?").execute(arguments: [sessionId])
        }
        for session in changes.sessions {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO sessions (session_id, room_id, user_id, token, interval, away) VALUES (?, ?, ?, ?, ?, ?)").execute(arguments: [session.sessionId, session.roomId, session.userId, session.token, session.interval, session.away])
        }
        for event in changes.events {
            try db.cachedStatement(sql: """
                    INSERT INTO events (seq, room_id, user_id, type, reason, at, room_version, name, image, data)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """).execute(arguments: [
                    Int64(event.sequence), event.roomId, event.userId, event.kind.rawValue, event.reason?.rawValue,
                    event.at, Int64(event.roomVersion), event.name, event.image, event.data?.compactJSON,
                ])
        }
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_version', ?), ('alive_at', ?), ('last_event', ?)").execute(arguments: [Int64(changes.lastVersion), aliveAt, Int64(changes.lastEventSequence)])
    }

    private static func event(from row: Row) throws -> PresenceEvent {
        let dataText: String? = row["data"]
        let typeName: String = row["type"]
        let reasonName: String? = row["reason"]
        guard let kind = PresenceEvent.Kind(rawValue: typeName) else {
            throw SQLiteStoreError(description: "unknown event type \(typeName) in the events table")
        }
        return PresenceEvent(
            sequence: UInt64(row["seq"] as Int64), roomId: row["room_id"], userId: row["user_id"], kind: kind,
            reason: reasonName.flatMap(PresenceEvent.LeaveReason.init(rawValue:)), at: row["at"],
            roomVersion: UInt64(row["room_version"] as Int64), name: row["name"], image: row["image"],
            data: try dataText.map { try JSONParser.parse($0.utf8) })
    }

    private static func metaValue(_ key: String, in db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [key]) ?? 0
    }

    // MARK: - Group commit

    /// Queues a mutation for the writer that `run()` owns and returns once its effects are stored.
    private func perform<Value: Sendable>(
        _ body: @escaping @Sendable (inout PresenceState, Int64) throws(PresenceError) -> (Value, [RoomChange])
    ) async throws -> Value {
        let (operation, result) = QueuedOperation.make { state, now, _ throws(PresenceError) in try body(&state, now) }
        let accepted = inner.withLock { inner -> Bool in
            guard inner.writer != .stopped else { return false }
            inner.queue.append(operation)
            return true
        }
        guard accepted else { throw PresenceError.unavailable("the store has stopped") }
        writerWake.yield()
        return try await result.value.get()
    }

    /// Commits everything queued, batch after batch, until the queue is empty. Only the writer
    /// in `run()` calls this, so commits never overlap and no caller's task does the writing.
    private func commitQueuedBatches() async {
        while true {
            let now = clock.nowMillis()
            let batch = inner.withLock { inner -> (operations: [QueuedOperation], changes: [RoomChange], rows: DurableChanges)? in
                guard !inner.queue.isEmpty else { return nil }
                let operations = inner.queue
                inner.queue.removeAll(keepingCapacity: true)
                var changes: [RoomChange] = []
                for operation in operations { changes.append(contentsOf: operation.apply(&inner.state, now: now)) }
                inner.committing = true
                let rows = inner.state.takeDurableChanges()
                inner.unstoredSessions = IDSet(rows.sessions.map(\.sessionId)).union(rows.deletedSessions)
                return (operations, changes, rows)
            }
            guard let batch else { return }
            await commit(batch.operations, changes: batch.changes, rows: batch.rows, now: now)
        }
    }

    private func commit(_ operations: [QueuedOperation], changes: [RoomChange], rows: DurableChanges, now: Int64) async {
        var failure: (any Error)?
        if !rows.isEmpty {
            do {
                try await write { db in try Self.write(rows, aliveAt: now, to: db) }
            } catch {
                failure = error
            }
            noteWrite(failure)
        }
        if let failure {
            logger.error("commit failed; reloading the stored state", metadata: ["error": "\(failure)"])
            // Memory ran ahead of the file: go back to what is stored.
            do {
                let reloaded = try Self.load(database, now: clock.nowMillis(), quotas: quotas)
                inner.withLock { $0.state = reloaded }
            } catch {
                logger.error("could not reload the stored state", metadata: ["error": "\(error)"])
            }
        }
        inner.withLock { inner in
            inner.committing = false
            inner.unstoredSessions.removeAll()
            let reads = inner.waitingReads
            inner.waitingReads.removeAll()
            // Reads that waited see exactly the state just stored, before the next batch applies.
            for read in reads { read(inner.state) }
        }
        if failure == nil {
            feed.publish(changes)
            eventFeed.publish(rows.events)
        }
        let storeError = failure.map { _ in PresenceError.unavailable("the change could not be stored") }
        for operation in operations { operation.finish(storeError) }
    }

    /// A write transaction that no task cancellation can interrupt: once the writer has taken a
    /// batch, it is stored or fails for a reason of the disk's, never because somebody gave up.
    @discardableResult
    private func write<Value: Sendable>(_ updates: @escaping @Sendable (Database) throws -> Value) async throws -> Value {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<Value, any Error>, Never>) in
            database.asyncWrite(updates) { _, result in continuation.resume(returning: result) }
        }
        return try result.get()
    }

    /// Reads stored state: waits while a batch is being written, so it never shows an unstored change.
    private func read<Value: Sendable>(_ body: @escaping @Sendable (PresenceState) -> Value) async -> Value {
        let promise = Promise<Value>()
        let immediate = inner.withLock { inner -> Value? in
            if !inner.committing { return body(inner.state) }
            inner.waitingReads.append { state in promise.fulfil(body(state)) }
            return nil
        }
        if let immediate { return immediate }
        return await promise.value
    }

    /// `body` over the state now, or nil while a commit is in progress.
    private func readAtOnce<Value>(_ body: (PresenceState) -> Value) -> Value? {
        inner.withLock { inner in inner.committing ? nil : body(inner.state) }
    }

    // MARK: - PresenceStore

    public func heartbeat(_ request: HeartbeatRequest) async throws -> SessionTokens {
        if let tokens = heartbeatAtOnce(request) { return tokens }
        let outcome = try await perform { state, now throws(PresenceError) in
            let outcome = try state.heartbeat(request, now: now)
            return (outcome, outcome.changes)
        }
        if let deadline = outcome.queuedDeadline { deadlineAlarm.note(deadline: deadline) }
        return outcome.tokens
    }

    /// Deadlines are not stored here (a restart grants a grace period instead), so a heartbeat that
    /// only moves a stored, live session's deadline has nothing to write.
    public func heartbeatAtOnce(_ request: HeartbeatRequest) -> SessionTokens? {
        let now = clock.nowMillis()
        let fastPath = inner.withLock { inner -> PresenceState.HeartbeatOutcome? in
            guard !inner.unstoredSessions.contains(request.sessionKey) else { return nil }
            return inner.state.extendLiveSession(request, now: now)
        }
        guard let fast = fastPath else { return nil }
        if let deadline = fast.queuedDeadline { deadlineAlarm.note(deadline: deadline) }
        return fast.tokens
    }

    public func disconnect(sessionToken: String) async throws {
        try await perform { state, now in ((), state.disconnect(sessionToken: sessionToken, now: now).changes) }
    }

    public func update(sessionToken: String, data: JSONValue?) async throws {
        try await perform { state, now throws(PresenceError) in ((), try state.update(sessionToken: sessionToken, data: data, now: now).changes) }
    }

    public func updateRoomUser(roomId: String, userId: String, data: JSONValue?) async throws {
        try await perform { state, now throws(PresenceError) in
            ((), try state.updateRoomUser(roomId: roomId, userId: userId, data: data, now: now).changes)
        }
    }

    public func snapshot(roomToken: String, limit: Int) async throws -> RoomSnapshot {
        await read { $0.snapshot(roomToken: roomToken, limit: limit) }
    }

    public func snapshotAtOnce(roomToken: String, limit: Int) -> RoomSnapshot? {
        readAtOnce { $0.snapshot(roomToken: roomToken, limit: limit) }
    }

    public func roomUsers(roomId: String, onlineOnly: Bool, limit: Int) async throws -> RoomSnapshot {
        await read { $0.roomUsers(roomId: roomId, onlineOnly: onlineOnly, limit: limit) }
    }

    public func userRooms(userId: String, onlineOnly: Bool, limit: Int) async throws -> [UserRoomStatus] {
        await read { $0.userRooms(userId: userId, onlineOnly: onlineOnly, limit: limit) }
    }

    public func userStatuses(userIds: [String]) async throws -> [UserStatus] {
        await read { state in userIds.map { state.userStatus(userId: $0) } }
    }

    public func removeRoomUser(roomId: String, userId: String) async throws {
        try await perform { state, now in ((), state.removeRoomUser(roomId: roomId, userId: userId, now: now).changes) }
    }

    public func removeRoom(roomId: String) async throws {
        try await perform { state, now in ((), state.removeRoom(roomId: roomId, now: now).changes) }
    }

    public func rotateRoomToken(roomId: String) async throws -> String? {
        try await perform { state, _ in
            guard let (token, outcome) = state.rotateRoomToken(roomId: roomId) else { return (nil, []) }
            return (token, outcome.changes)
        }
    }

    public func forgetOfflineUsers(before cutoff: Int64, limit: Int) async throws -> Int {
        try await perform { state, now in
            let (forgotten, outcome) = state.forgetOfflineUsers(before: cutoff, limit: limit, now: now)
            return (forgotten, outcome.changes)
        }
    }

    public func events(after: UInt64?, roomId: String?, limit: Int) async throws -> EventPage {
        try await database.read { db in
            let forgottenThrough = UInt64(try Self.metaValue("events_forgotten_through", in: db))
            try EventPaging.checkNotExpired(after: after, forgottenThrough: forgottenThrough)
            let afterSequence = after
            let after = Int64(after ?? 0)
            let rows = if let roomId {
                try Row.fetchAll(
                    db, sql: "SELECT * FROM events WHERE room_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    arguments: [roomId, after, limit])
            } else {
                try Row.fetchAll(db, sql: "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", arguments: [after, limit])
            }
            return EventPage(events: try rows.map(Self.event(from:)), after: afterSequence, forgottenThrough: forgottenThrough)
        }
    }

    public func forgetEvents(before cutoff: Int64) async throws -> Int {
        try await write { db in
            // An expiry's events are dated by the deadline, so `at` is not sorted: forget up to the last old one.
            guard let last = try Int64.fetchOne(db, sql: "SELECT max(seq) FROM events WHERE at < ?", arguments: [cutoff])
            else { return 0 }
            try db.execute(sql: "DELETE FROM events WHERE seq <= ?", arguments: [last])
            let count = db.changesCount
            try db.execute(
                sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('events_forgotten_through', ?)", arguments: [last])
            return count
        }
    }

    public func webhookCursor(endpoint: String) async throws -> WebhookCursor {
        try await write { db in
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM webhook_cursors WHERE endpoint = ?", arguments: [endpoint]) {
                return WebhookCursor(deliveredThrough: UInt64(row["delivered_through"] as Int64), failedAt: row["failed_at"])
            }
            let newest = try Self.metaValue("last_event", in: db)
            try db.execute(
                sql: "INSERT INTO webhook_cursors (endpoint, delivered_through) VALUES (?, ?)", arguments: [endpoint, newest])
            return WebhookCursor(deliveredThrough: UInt64(newest))
        }
    }

    public func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String) async throws {
        try await write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO webhook_cursors (endpoint, delivered_through, failed_at) VALUES (?, ?, ?)",
                arguments: [endpoint, Int64(cursor.deliveredThrough), cursor.failedAt])
        }
    }

    public func roomId(forToken roomToken: String) async throws -> String? {
        await read { $0.roomId(forToken: roomToken) }
    }

    public func sessionOwner(sessionToken: String) async throws -> SessionOwner? {
        await read { $0.sessionOwner(sessionToken: sessionToken) }
    }

    public func expireDueSessions(limit: Int) async throws -> Int {
        let now = clock.nowMillis()
        guard inner.withLock({ $0.state.hasDue(now: now) }) else { return 0 }
        return try await perform { state, now in
            let (expired, outcome) = state.expireDue(now: now, limit: limit)
            return (expired, outcome.changes)
        }
    }

    public func nextDeadline() async throws -> Int64? {
        inner.withLock { $0.state.nextDeadline }
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
        await read { $0.statistics }
    }

    /// The store's writer: commits queued operations as they come (group commit: whatever queued
    /// up while a transaction was written goes into the next one) and keeps the "alive at" mark
    /// fresh (every few seconds, not per heartbeat), so that after a long outage sessions that
    /// would have expired meanwhile are expired at start instead of all showing online.
    ///
    /// Operations wait until this runs. When it is cancelled it stops taking operations, commits
    /// those already queued, writes a last mark and returns.
    public func run() async throws {
        let starts = inner.withLock { inner -> Bool in
            guard inner.writer == .notStarted else { return false }
            inner.writer = .running
            return true
        }
        guard starts else { throw SQLiteStoreError(description: "the store's writer runs once") }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                while (try? await Task.sleep(for: aliveMarkInterval)) != nil {
                    inner.withLock { $0.aliveMarkDue = true }
                    writerWake.yield()
                }
            }
            // Ends when this task is cancelled.
            for await _ in writerWakes {
                await commitQueuedBatches()
                let markDue = inner.withLock { inner in
                    defer { inner.aliveMarkDue = false }
                    return inner.aliveMarkDue
                }
                if markDue { await writeAliveMark() }
            }
            group.cancelAll()
        }
        inner.withLock { $0.writer = .stopped }
        await commitQueuedBatches()
        await writeAliveMark()
    }

    private func writeAliveMark() async {
        let now = clock.nowMillis()
        do {
            try await write { db in try Self.writeAliveMark(now, to: db) }
            noteWrite(nil)
        } catch {
            noteWrite(error)
            logger.error("could not write the alive mark", metadata: ["error": "\(error)"])
        }
    }

    private func noteWrite(_ failure: (any Error)?) {
        inner.withLock { $0.writeFailure = failure.map { "\($0)" } }
    }

    public func checkCanCommit() throws(PresenceError) {
        // Not the failure itself: /health answers anyone, and the log has it.
        if inner.withLock({ $0.writeFailure }) != nil {
            throw .unavailable("the store cannot write to its file (a full disk?); the server's log says why")
        }
    }

    private static func writeAliveMark(_ now: Int64, to db: Database) throws {
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('alive_at', ?)").execute(arguments: [now])
    }
}
