import Foundation
import Logging
import PostgresNIO
import PresenceStore
import Synchronization

/// The store for several `presence-server` processes sharing one PostgreSQL database.
///
/// Every process holds the whole presence state in memory, the same state machine as the other
/// stores, and keeps it equal to the database's:
/// - A change (join, leave, data, removal) is one transaction: it locks `presence.head`, applies
///   what other processes committed since (`presence.log`), applies the queued operations, writes
///   their rows and one log entry, and NOTIFYs. Room versions therefore follow commit order, across
///   processes. Operations queued while a transaction runs go into the next one (group commit).
/// - The other processes read the new entries on the notification (and once per tick in case
///   one was lost) and publish the same room changes to their subscribers.
/// - A heartbeat of a live session writes nothing at once: the deadlines heartbeats moved are
///   stored together once per tick, in the statement that renews the process's lease. A
///   heartbeat whose stored deadline is near is stored before it is answered, so no process can
///   expire a session another process has just heard from.
/// - One process at a time, the expiry leader (a lease in `presence.leader`), expires sessions:
///   in its transaction it reads the stored deadlines of the sessions it believes due, so a
///   heartbeat taken anywhere counts.
/// - A process that has not reached the database for `fenceAfter` answers 503 until it has again.
///
/// ```swift
/// let store = try await PostgresStore.open(settings: PostgresSettings(url: "postgres://presence@127.0.0.1/presence"))
/// try await store.whileRunning {
///     _ = try await store.heartbeat(HeartbeatRequest(roomId: "doc", userId: "alice", sessionId: "tab-1"))
/// }
/// ```
public final class PostgresStore: PresenceStore {
    public let clock: any WallClock
    public let deadlineAlarm = DeadlineAlarm()
    /// This process's name in `presence.nodes` and `presence.leader`.
    public let nodeId: String
    public let settings: PostgresSettings
    private let client: PostgresClient
    private let listenClient: PostgresClient
    private let logger: Logger
    private let quotas: PresenceState.UserQuotas
    private let feed = ChangeFeed()
    private let eventFeed = Feed<PresenceEvent>()
    private let reloadFeed = Feed<Void>()
    private let inner: Mutex<Inner>
    private let writerWake: AsyncStream<Void>.Continuation
    private let writerWakes: AsyncStream<Void>
    private let counters = Mutex(Counters())
    /// The next tick stores a deadline a heartbeat moves now; a heartbeat whose stored deadline
    /// is nearer than that (and a margin) is stored before it is answered.
    private let syncHorizon: Int64
    private let outageListeners = Mutex<[AsyncStream<Void>.Continuation]>([])

    private enum WriterStatus { case notStarted, running, stopped }

    private struct Inner {
        var state: PresenceState
        /// The last log entry this copy has applied.
        var seq: Int64
        var queue: [QueuedOperation] = []
        var writer = WriterStatus.notStarted
        /// True while a batch applied to `state` is being written: reads wait for it.
        var committing = false
        var waitingReads: [@Sendable (PresenceState) -> Void] = []
        var unstoredSessions = IDSet()
        /// What this process knows the database holds as each session's deadline (a lower bound).
        var storedDeadlines: IDDictionary<Int64> = [:]
        /// Deadlines heartbeats here moved that are not stored yet.
        var pendingDeadlines: IDDictionary<Int64> = [:]
        var catchUpWanted = false
        var catchUpWaiters: [Promise<Result<Void, any Error>>] = []
        /// When the last statement that succeeded was sent.
        var lastContact: ContinuousClock.Instant
        /// Since when contact has been unbroken (nil while fenced).
        var contactSince: ContinuousClock.Instant?
        /// When contact came back after this process was fenced; nil if it never was.
        var recoveredAt: ContinuousClock.Instant?
        /// Until when this process may act as the expiry leader.
        var leaderUntil: ContinuousClock.Instant?
        /// Memory may hold changes the database does not (a commit failed): reload before serving.
        var stale = false
        var lastExpiryCheck: Int64 = 0
        var lastTrim: ContinuousClock.Instant?
        /// Bumped when a statement is given up on: work of an earlier epoch, still running on a
        /// connection that hung, may no longer touch memory.
        var epoch = 0
    }

    private struct Superseded: Error {}

    /// Changes memory on behalf of work started in `epoch`, unless that work was given up on.
    private func mutate<Value>(ifStill epoch: Int, _ body: (inout Inner) throws -> Value) throws -> Value {
        try inner.withLock { inner in
            guard inner.epoch == epoch else { throw Superseded() }
            return try body(&inner)
        }
    }

    private func currentEpoch() -> Int { inner.withLock { $0.epoch } }

    private func abandonEpoch() { inner.withLock { $0.epoch += 1 } }

    /// For the benchmark and the operator: what this process asked of PostgreSQL.
    public struct Counters: Sendable {
        public var transactions = 0
        public var deadlineFlushes = 0
        public var fastHeartbeats = 0
        public var storedHeartbeats = 0
        public var catchUps = 0
        public var reloads = 0
    }

    public var counterValues: Counters { counters.withLock { $0 } }

    public var gauges: [StoreGauge] {
        let counts = counterValues
        let (pending, behind) = inner.withLock { ($0.pendingDeadlines.count, $0.stale) }
        return [
            StoreGauge("presence_postgres_serving", isServing ? 1 : 0, help: "1 while this process reaches PostgreSQL and serves; 0 while fenced"),
            StoreGauge("presence_postgres_expiry_leader", isLeading ? 1 : 0, help: "1 while this process expires sessions for all"),
            StoreGauge("presence_postgres_reloading", behind ? 1 : 0, help: "1 while memory waits for a reload after a failed commit"),
            StoreGauge("presence_postgres_transactions_total", Double(counts.transactions), help: "change transactions committed by this process"),
            StoreGauge("presence_postgres_catch_ups_total", Double(counts.catchUps), help: "reads of other processes' log entries"),
            StoreGauge("presence_postgres_reloads_total", Double(counts.reloads), help: "full reloads from the tables"),
            StoreGauge("presence_postgres_deadline_flushes_total", Double(counts.deadlineFlushes), help: "ticks that stored heartbeat deadlines"),
            StoreGauge("presence_postgres_heartbeats_unwritten_total", Double(counts.fastHeartbeats), help: "heartbeats answered without a write"),
            StoreGauge("presence_postgres_heartbeats_stored_total", Double(counts.storedHeartbeats), help: "heartbeats stored before they were answered"),
            StoreGauge("presence_postgres_pending_deadlines", Double(pending), help: "sessions whose moved deadline the next tick stores"),
        ]
    }

    private init(
        settings: PostgresSettings, state: PresenceState, seq: Int64, storedDeadlines: IDDictionary<Int64>, clock: any WallClock,
        quotas: PresenceState.UserQuotas, logger: Logger
    ) {
        self.settings = settings
        self.clock = clock
        self.quotas = quotas
        self.logger = logger
        syncHorizon = settings.syncMargin.milliseconds + settings.tick.milliseconds
        nodeId = Tokens.make(prefix: "n_")
        client = PostgresClient(configuration: settings.client, backgroundLogger: logger)
        listenClient = PostgresClient(configuration: settings.listenClient, backgroundLogger: logger)
        let now = ContinuousClock.now
        inner = Mutex(Inner(state: state, seq: seq, storedDeadlines: storedDeadlines, lastContact: now, contactSince: now))
        (writerWakes, writerWake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Connects, creates or migrates the schema, and loads the state; throws a clear error for an
    /// unreachable server, a refused login, or a database that holds another application's schema.
    public static func open(
        settings: PostgresSettings, clock: any WallClock = SystemWallClock(), quotas: PresenceState.UserQuotas = .init(),
        logger: Logger = Logger(label: "presence.postgres")
    ) async throws -> PostgresStore {
        let loaded: Loaded
        do {
            loaded = try await settings.withClient(logger: logger) { setupClient in
                try await Self.withTimeout(.seconds(15), "connecting to \(settings.displayName)") {
                    try await setupClient.withConnection { connection in
                        try await PostgresSchema.migrate(connection, logger: logger)
                        return try await Self.load(connection, now: clock.nowMillis(), quotas: quotas, logger: logger)
                    }
                }
            }
        } catch let error as PSQLError {
            throw PostgresStoreError("cannot use PostgreSQL at \(settings.displayName): \(Self.describe(error))")
        }
        logger.info(
            "opened \(settings.displayName)",
            metadata: ["sessions": "\(loaded.state.statistics.sessions)", "rooms": "\(loaded.state.statistics.rooms)"])
        return PostgresStore(
            settings: settings, state: loaded.state, seq: loaded.seq, storedDeadlines: loaded.storedDeadlines, clock: clock,
            quotas: quotas, logger: logger)
    }

    static func describe(_ error: PSQLError) -> String {
        if let message = error.serverInfo?[.message] { return message }
        return "\(error.code)"
    }

    /// For logs: PostgresNIO hides a server's message unless asked for it.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError { return describe(error) }
        return "\(error)"
    }

    // MARK: - Loading

    struct Loaded: Sendable {
        var state: PresenceState
        var seq: Int64
        var storedDeadlines: IDDictionary<Int64>
    }

    /// The whole stored state, read in one snapshot of the database.
    private static func load(
        _ connection: PostgresConnection, now: Int64, quotas: PresenceState.UserQuotas, logger: Logger
    ) async throws -> Loaded {
        try await connection.withTransaction(logger: logger) { connection in
            try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
            var seq: Int64 = 0
            var lastVersion: Int64 = 0
            var lastEvent: Int64 = 0
            for try await (headSeq, version, event) in try await connection.query(
                "SELECT seq, last_version, last_event FROM presence.head", logger: logger
            ).decode((Int64, Int64, Int64).self) {
                seq = headSeq
                lastVersion = version
                lastEvent = event
            }
            var rooms: [DurableChanges.RoomRow] = []
            for try await (roomId, token, version) in try await connection.query(
                "SELECT room_id, token, version FROM presence.rooms", logger: logger
            ).decode((String, String, Int64).self) {
                rooms.append(.init(roomId: roomId, token: token, version: UInt64(version)))
            }
            var users: [DurableChanges.UserRow] = []
            for try await row in try await connection.query(
                """
                SELECT room_id, user_id, online, online_since, last_disconnected, data, name, image, away, away_since
                FROM presence.users
                """, logger: logger
            ).decode((String, String, Bool, Int64, Int64, String?, String?, String?, Bool, Int64).self) {
                let user = LogEntry.User(
                    roomId: row.0, userId: row.1, online: row.2, onlineSince: row.3, lastDisconnected: row.4, data: row.5,
                    name: row.6, image: row.7, away: row.8, awaySince: row.9)
                users.append(try user.row)
            }
            var sessions: [DurableChanges.SessionRow] = []
            var storedDeadlines: IDDictionary<Int64> = [:]
            for try await row in try await connection.query(
                #"SELECT session_id, room_id, user_id, token, "interval", away, deadline FROM presence.sessions"#, logger: logger
            ).decode((String, String, String, String, Int64, Bool, Int64).self) {
                sessions.append(.init(
                    sessionId: row.0, roomId: row.1, userId: row.2, token: row.3, interval: row.4, away: row.5, deadline: row.6))
                storedDeadlines[row.0] = row.6
            }
            let state = PresenceState.restoring(
                rooms: rooms, users: users, sessions: sessions, lastVersion: UInt64(lastVersion),
                lastEventSequence: UInt64(lastEvent), aliveAt: nil, now: now, storedDeadlines: true, quotas: quotas)
            return Loaded(state: state, seq: seq, storedDeadlines: storedDeadlines)
        }
    }

    // MARK: - Serving or not

    /// Throws 503 while this process is cut off from the database or its memory awaits a reload.
    private func ensureServing() throws(PresenceError) {
        let problem = inner.withLock { inner -> String? in
            if inner.writer == .stopped { return "the store has stopped" }
            if inner.stale { return "the store is reloading after a failed commit" }
            if inner.contactSince == nil || ContinuousClock.now - inner.lastContact > settings.fenceAfter {
                return "the database is unreachable"
            }
            return nil
        }
        if let problem { throw .unavailable(problem) }
    }

    /// Whether this process serves: false while fenced (the server closes sockets with 1013).
    public var isServing: Bool { (try? ensureServing()) != nil }

    public func checkCanCommit() throws(PresenceError) {
        try ensureServing()
    }

    private func noteContact(since sent: ContinuousClock.Instant) {
        inner.withLock { inner in
            if sent > inner.lastContact { inner.lastContact = sent }
            if inner.contactSince == nil {
                inner.contactSince = sent
                inner.recoveredAt = sent
            }
        }
    }

    // MARK: - Group commit

    /// Queues a mutation for the writer that `run()` owns and returns once it is committed.
    private func perform<Value: Sendable>(
        expiryLimit: Int? = nil,
        _ body: @escaping @Sendable (inout PresenceState, Int64, [String]) throws(PresenceError) -> (Value, [RoomChange])
    ) async throws -> Value {
        try ensureServing()
        let (operation, result) = QueuedOperation.make(expiryLimit: expiryLimit, body)
        let accepted = inner.withLock { inner -> Bool in
            guard inner.writer != .stopped else { return false }
            inner.queue.append(operation)
            return true
        }
        guard accepted else { throw PresenceError.unavailable("the store has stopped") }
        writerWake.yield()
        return try await result.value.get()
    }

    /// Commits everything queued, batch after batch. Only the writer in `run()` calls this.
    private func commitQueuedBatches() async {
        while true {
            // Bounded, so one commit stays well inside the statement timeout however large the burst.
            let operations = inner.withLock { inner -> [QueuedOperation] in
                let taken = Array(inner.queue.prefix(Self.maximumBatch))
                inner.queue.removeFirst(taken.count)
                return taken
            }
            guard !operations.isEmpty else { return }
            await commit(operations)
        }
    }

    static let maximumBatch = 1_000

    private func commit(_ operations: [QueuedOperation]) async {
        var published: [RoomChange] = []
        var ownEvents: [PresenceEvent] = []
        var failure: (any Error)?
        let sent = ContinuousClock.now
        let epoch = currentEpoch()
        do {
            (published, ownEvents) = try await Self.withTimeout(settings.statementTimeout, "a commit") { [self] in
                try await client.withTransaction(logger: logger) { connection in
                    try await self.commitBatch(operations, on: connection, epoch: epoch)
                }
            }
            noteContact(since: sent)
            counters.withLock { $0.transactions += 1 }
        } catch {
            failure = error
            abandonEpoch()
            logger.error("commit failed; reloading the stored state", metadata: ["error": "\(Self.describe(error))"])
        }
        inner.withLock { inner in
            inner.committing = false
            inner.unstoredSessions.removeAll()
            if failure != nil { inner.stale = true }
            let reads = inner.waitingReads
            inner.waitingReads.removeAll()
            // Reads that waited see exactly the state just stored (or, after a failure, are told so below).
            if failure == nil { for read in reads { read(inner.state) } } else { inner.waitingReads = reads }
        }
        if failure == nil {
            feed.publish(published)
            eventFeed.publish(ownEvents)
        } else {
            await reload()
        }
        let storeError = failure.map { _ in PresenceError.unavailable("the change could not be stored") }
        for operation in operations { operation.finish(storeError) }
    }

    /// Inside the transaction: lock the head, catch up, apply, write. Returns the changes to publish
    /// (those of other processes caught up first, then the batch's own).
    private func commitBatch(
        _ operations: [QueuedOperation], on connection: PostgresConnection, epoch: Int
    ) async throws -> (changes: [RoomChange], events: [PresenceEvent]) {
        var headSeq: Int64 = 0
        for try await seq in try await connection.query(
            "SELECT seq FROM presence.head WHERE id = 1 FOR UPDATE", logger: logger
        ).decode(Int64.self) {
            headSeq = seq
        }
        var published = try await applyLog(upTo: headSeq, on: connection, epoch: epoch)

        // Expiry: sessions this process believes due may have been heard of elsewhere.
        let now = clock.nowMillis()
        var due: [String] = []
        if let limit = operations.compactMap(\.expiryLimit).max() {
            due = try mutate(ifStill: epoch) { $0.state.takeDueSessionIds(now: now, limit: limit) }
            if !due.isEmpty {
                var stored: [(String, Int64, Bool)] = []
                // A session whose process's lease ran out (a process that died, not one that
                // stopped and took its node row along) leaves because its server was lost.
                for try await row in try await connection.query(
                    """
                    SELECT s.session_id, s.deadline, EXISTS (
                        SELECT 1 FROM presence.nodes n WHERE n.node_id = s.node_id AND n.lease_until < now())
                    FROM presence.sessions s WHERE s.session_id = ANY(\(due)) FOR UPDATE OF s
                    """,
                    logger: logger
                ).decode((String, Int64, Bool).self) {
                    stored.append(row)
                }
                try mutate(ifStill: epoch) { inner in
                    for (sessionId, deadline, lost) in stored {
                        inner.state.raiseDeadline(sessionId: sessionId, to: deadline)
                        if lost { inner.state.noteServerLost(sessionId: sessionId) }
                        inner.storedDeadlines[sessionId] = max(inner.storedDeadlines[sessionId] ?? 0, deadline)
                    }
                }
            }
        }

        let batch = try mutate(ifStill: epoch) { inner -> (changes: [RoomChange], rows: DurableChanges) in
            var changes: [RoomChange] = []
            for operation in operations { changes.append(contentsOf: operation.apply(&inner.state, now: now, due: due)) }
            inner.committing = true
            let rows = inner.state.takeDurableChanges()
            inner.unstoredSessions = IDSet(rows.sessions.map(\.sessionId)).union(rows.deletedSessions)
            return (changes, rows)
        }
        guard !batch.rows.isEmpty || !batch.changes.isEmpty else { return (published, []) }
        let entry = try LogEntry(batch.rows, changes: batch.changes, nodeId: nodeId).encoded()
        let nextSeq = headSeq + 1
        try await connection.query(
            Self.writeEntry(
                entry, seq: nextSeq, lastVersion: Int64(batch.rows.lastVersion),
                lastEvent: Int64(batch.rows.lastEventSequence)),
            logger: logger)
        try mutate(ifStill: epoch) { inner in
            inner.seq = nextSeq
            for session in batch.rows.sessions {
                inner.storedDeadlines[session.sessionId] = session.deadline
                if let pending = inner.pendingDeadlines[session.sessionId], pending <= session.deadline {
                    inner.pendingDeadlines.removeValue(forKey: session.sessionId)
                }
            }
            for sessionId in batch.rows.deletedSessions {
                inner.storedDeadlines.removeValue(forKey: sessionId)
                inner.pendingDeadlines.removeValue(forKey: sessionId)
            }
        }
        published.append(contentsOf: batch.changes)
        return (published, batch.rows.events)
    }

    /// One statement writes a batch: its rows, its log entry, the head, and the notification.
    private static func writeEntry(_ entry: String, seq: Int64, lastVersion: Int64, lastEvent: Int64) -> PostgresQuery {
        """
        WITH entry AS (SELECT \(entry)::jsonb AS e),
        deleted_sessions AS (
            DELETE FROM presence.sessions
            WHERE session_id IN (SELECT jsonb_array_elements_text(e->'deleted_sessions') FROM entry)),
        deleted_users AS (
            DELETE FROM presence.users u
            USING jsonb_to_recordset((SELECT e->'deleted_users' FROM entry)) AS d(room_id text, user_id text)
            WHERE u.room_id = d.room_id AND u.user_id = d.user_id),
        deleted_rooms AS (
            DELETE FROM presence.rooms
            WHERE room_id IN (SELECT jsonb_array_elements_text(e->'deleted_rooms') FROM entry)),
        rooms AS (
            INSERT INTO presence.rooms
            SELECT * FROM jsonb_populate_recordset(NULL::presence.rooms, (SELECT e->'rooms' FROM entry))
            ON CONFLICT (room_id) DO UPDATE SET token = EXCLUDED.token, version = EXCLUDED.version),
        users AS (
            INSERT INTO presence.users
            SELECT * FROM jsonb_populate_recordset(NULL::presence.users, (SELECT e->'users' FROM entry))
            ON CONFLICT (room_id, user_id) DO UPDATE SET
                online = EXCLUDED.online, online_since = EXCLUDED.online_since,
                last_disconnected = EXCLUDED.last_disconnected, data = EXCLUDED.data, name = EXCLUDED.name,
                image = EXCLUDED.image, away = EXCLUDED.away, away_since = EXCLUDED.away_since),
        sessions AS (
            INSERT INTO presence.sessions
            SELECT * FROM jsonb_populate_recordset(NULL::presence.sessions, (SELECT e->'sessions' FROM entry))
            ON CONFLICT (session_id) DO UPDATE SET
                room_id = EXCLUDED.room_id, user_id = EXCLUDED.user_id, token = EXCLUDED.token,
                "interval" = EXCLUDED."interval", away = EXCLUDED.away, node_id = EXCLUDED.node_id,
                deadline = CASE WHEN presence.sessions."interval" <> EXCLUDED."interval" THEN EXCLUDED.deadline
                    ELSE GREATEST(presence.sessions.deadline, EXCLUDED.deadline) END),
        events AS (
            INSERT INTO presence.events
            SELECT * FROM jsonb_populate_recordset(NULL::presence.events, (SELECT e->'events' FROM entry))),
        logged AS (INSERT INTO presence.log (seq, entry) VALUES (\(seq), \(entry))),
        head AS (
            UPDATE presence.head SET seq = \(seq), last_version = \(lastVersion), last_event = \(lastEvent) WHERE id = 1)
        SELECT pg_notify('presence', \(String(seq)))
        """
    }

    /// Applies the log entries after this copy's position up to `headSeq`; reloads everything when
    /// the entries it needs were trimmed. Returns the room changes to publish.
    private func applyLog(upTo headSeq: Int64, on connection: PostgresConnection, epoch: Int) async throws -> [RoomChange] {
        var published: [RoomChange] = []
        while true {
            let from = inner.withLock { $0.seq }
            guard from < headSeq else { return published }
            var entries: [(Int64, String)] = []
            for try await row in try await connection.query(
                "SELECT seq, entry FROM presence.log WHERE seq > \(from) AND seq <= \(headSeq) ORDER BY seq LIMIT 1000",
                logger: logger
            ).decode((Int64, String).self) {
                entries.append(row)
            }
            guard let first = entries.first, first.0 == from + 1 else {
                // Trimmed past us (a long partition): the tables themselves are the truth.
                published.append(contentsOf: try await reloadState(on: connection, epoch: epoch))
                continue
            }
            let decoded = try entries.map { ($0.0, try LogEntry.decode($0.1)) }
            counters.withLock { $0.catchUps += 1 }
            // Other processes' events are committed already: their watchers here may look now.
            defer { eventFeed.publish(decoded.flatMap { $0.1.events.compactMap { try? $0.event } }) }
            // Sessions other processes started or changed may be due before the expiry loop wakes.
            let earliest = decoded.flatMap { $0.1.sessions.map(\.deadline) }.min()
            defer { if let earliest { deadlineAlarm.note(deadline: earliest) } }
            try mutate(ifStill: epoch) { inner in
                for (seq, entry) in decoded {
                    guard let rows = try? entry.durableChanges else {
                        logger.error("unreadable log entry; reloading", metadata: ["seq": "\(seq)"])
                        inner.stale = true
                        break
                    }
                    inner.state.applyReplicated(rows)
                    for session in rows.sessions {
                        inner.storedDeadlines[session.sessionId] = max(inner.storedDeadlines[session.sessionId] ?? 0, session.deadline)
                    }
                    for sessionId in rows.deletedSessions {
                        inner.storedDeadlines.removeValue(forKey: sessionId)
                        inner.pendingDeadlines.removeValue(forKey: sessionId)
                    }
                    inner.seq = seq
                    published.append(contentsOf: entry.roomChanges)
                }
            }
            if inner.withLock({ $0.stale }) {
                published.append(contentsOf: try await reloadState(on: connection, epoch: epoch))
            }
        }
    }

    /// Replaces memory with the tables (after a failed commit, or when the log was trimmed past
    /// this copy) and returns a change for every room that differs, so subscribers catch up.
    private func reloadState(on connection: PostgresConnection, epoch: Int) async throws -> [RoomChange] {
        let loaded = try await Self.load(connection, now: clock.nowMillis(), quotas: quotas, logger: logger)
        counters.withLock { $0.reloads += 1 }
        defer { if let next = loaded.state.nextDeadline { deadlineAlarm.note(deadline: next) } }
        return try mutate(ifStill: epoch) { inner in
            let before = inner.state.roomHeads
            inner.state = loaded.state
            inner.seq = loaded.seq
            inner.storedDeadlines = loaded.storedDeadlines
            inner.stale = false
            for (sessionId, deadline) in inner.pendingDeadlines {
                inner.state.raiseDeadline(sessionId: sessionId, to: deadline)
            }
            let after = inner.state.roomHeads
            var changes: [RoomChange] = []
            for (roomId, head) in before {
                if let now = after[roomId] {
                    if now.token != head.token {
                        changes.append(RoomChange(roomId: roomId, roomToken: head.token, roomVersion: head.version, kind: .tokenRotated))
                    } else if now.version != head.version {
                        changes.append(RoomChange(roomId: roomId, roomToken: now.token, roomVersion: now.version, kind: .updated))
                    }
                } else {
                    changes.append(RoomChange(roomId: roomId, roomToken: head.token, roomVersion: loaded.state.lastVersion, kind: .removed))
                }
            }
            for (roomId, head) in after where before[roomId] == nil {
                changes.append(RoomChange(roomId: roomId, roomToken: head.token, roomVersion: head.version, kind: .updated))
            }
            let reads = inner.waitingReads
            inner.waitingReads.removeAll()
            for read in reads { read(inner.state) }
            reloadFeed.publish([()])
            return changes
        }
    }

    /// After a failed commit: reload as soon as the database answers; until then the store refuses to serve.
    private func reload() async {
        let epoch = currentEpoch()
        do {
            let changes = try await Self.withTimeout(settings.statementTimeout, "a reload") { [self] in
                try await client.withConnection { connection in try await self.reloadState(on: connection, epoch: epoch) }
            }
            feed.publish(changes)
        } catch {
            abandonEpoch()
            logger.error("could not reload the stored state; retrying", metadata: ["error": "\(Self.describe(error))"])
        }
    }

    /// Reads what other processes committed since this copy's position.
    private func catchUp() async {
        let waiters = inner.withLock { inner in
            inner.catchUpWanted = false
            defer { inner.catchUpWaiters.removeAll() }
            return inner.catchUpWaiters
        }
        let sent = ContinuousClock.now
        let epoch = currentEpoch()
        do {
            let changes = try await Self.withTimeout(settings.statementTimeout, "catching up") { [self] in
                try await client.withConnection { connection in
                    if inner.withLock({ $0.stale }) { return try await self.reloadState(on: connection, epoch: epoch) }
                    var headSeq: Int64 = 0
                    for try await seq in try await connection.query("SELECT seq FROM presence.head", logger: logger)
                        .decode(Int64.self)
                    {
                        headSeq = seq
                    }
                    return try await self.applyLog(upTo: headSeq, on: connection, epoch: epoch)
                }
            }
            noteContact(since: sent)
            feed.publish(changes)
            for waiter in waiters { waiter.fulfil(.success(())) }
        } catch {
            abandonEpoch()
            logger.warning("catching up failed", metadata: ["error": "\(Self.describe(error))"])
            for waiter in waiters { waiter.fulfil(.failure(PresenceError.unavailable("the database is unreachable"))) }
        }
    }

    /// Reads wait while a batch is being written, so they never show an unstored change.
    private func read<Value: Sendable>(_ body: @escaping @Sendable (PresenceState) -> Value) async throws -> Value {
        try ensureServing()
        let promise = Promise<Value>()
        let immediate = inner.withLock { inner -> Value? in
            if !inner.committing && !inner.stale { return body(inner.state) }
            inner.waitingReads.append { state in promise.fulfil(body(state)) }
            return nil
        }
        if let immediate { return immediate }
        return await promise.value
    }

    /// `body` over the state now, or nil when `read` would wait or fail: not serving, a commit in
    /// progress, or behind the database.
    private func readAtOnce<Value>(_ body: (PresenceState) -> Value) -> Value? {
        guard (try? ensureServing()) != nil else { return nil }
        return inner.withLock { inner in inner.committing || inner.stale ? nil : body(inner.state) }
    }

    private func requestCatchUp() {
        inner.withLock { $0.catchUpWanted = true }
        writerWake.yield()
    }

    // MARK: - PresenceStore

    public func synchronize() async throws {
        try ensureServing()
        let promise = Promise<Result<Void, any Error>>()
        inner.withLock { inner in
            inner.catchUpWaiters.append(promise)
            inner.catchUpWanted = true
        }
        writerWake.yield()
        try await promise.value.get()
    }

    public func heartbeat(_ request: HeartbeatRequest) async throws -> SessionTokens {
        try ensureServing()
        if let tokens = heartbeatAtOnce(request) { return tokens }
        counters.withLock { $0.storedHeartbeats += 1 }
        let outcome = try await perform { state, now, _ throws(PresenceError) in
            let outcome = try state.heartbeat(request, now: now)
            // Its deadline is stored with the batch, however little else changed.
            state.markSessionUnstored(request.sessionKey)
            return (outcome, outcome.changes)
        }
        if let queued = outcome.queuedDeadline { deadlineAlarm.note(deadline: queued) }
        return outcome.tokens
    }

    /// A live session whose stored deadline is still far off only moves its deadline in memory;
    /// the writer stores it with a later batch (`pendingDeadlines`). Not while the store is not
    /// serving: `heartbeat(_:)` reports why.
    public func heartbeatAtOnce(_ request: HeartbeatRequest) -> SessionTokens? {
        guard (try? ensureServing()) != nil else { return nil }
        let now = clock.nowMillis()
        let deadline = ProtocolLimits.deadline(now: now, interval: request.interval)
        let fastPath = inner.withLock { inner -> PresenceState.HeartbeatOutcome? in
            guard !inner.unstoredSessions.contains(request.sessionKey),
                let stored = inner.storedDeadlines[request.sessionKey], stored - now > syncHorizon
            else { return nil }
            guard let outcome = inner.state.extendLiveSession(request, now: now) else { return nil }
            inner.pendingDeadlines[request.sessionKey] = deadline
            return outcome
        }
        guard let fast = fastPath else { return nil }
        counters.withLock { $0.fastHeartbeats += 1 }
        if let queued = fast.queuedDeadline { deadlineAlarm.note(deadline: queued) }
        return fast.tokens
    }

    public func disconnect(sessionToken: String) async throws {
        try await perform { state, now, _ in ((), state.disconnect(sessionToken: sessionToken, now: now).changes) }
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
        // One process sweeps for all of them: the expiry leader.
        guard isLeading else { return 0 }
        return try await perform { state, now, _ in
            let (forgotten, outcome) = state.forgetOfflineUsers(before: cutoff, limit: limit, now: now)
            return (forgotten, outcome.changes)
        }
    }

    /// Reads committed events straight from the table: they are there once their change is acknowledged.
    public func events(after: UInt64?, roomId: String?, limit: Int) async throws -> EventPage {
        try ensureServing()
        let afterSequence = after
        let after = Int64(after ?? 0)
        let (forgottenThrough, events) = try await client.withConnection { [logger] connection in
            try await connection.withTransaction(logger: logger) { connection in
                try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
                var forgottenThrough: Int64 = 0
                for try await value in try await connection.query(
                    "SELECT events_forgotten_through FROM presence.head", logger: logger
                ).decode(Int64.self) {
                    forgottenThrough = value
                }
                let query: PostgresQuery = if let roomId {
                    """
                    SELECT seq, room_id, user_id, type, reason, at, room_version, name, image, data FROM presence.events
                    WHERE room_id = \(roomId) AND seq > \(after) ORDER BY seq LIMIT \(limit)
                    """
                } else {
                    """
                    SELECT seq, room_id, user_id, type, reason, at, room_version, name, image, data FROM presence.events
                    WHERE seq > \(after) ORDER BY seq LIMIT \(limit)
                    """
                }
                var events: [PresenceEvent] = []
                for try await row in try await connection.query(query, logger: logger).decode(
                    (Int64, String, String, String, String?, Int64, Int64, String?, String?, String?).self)
                {
                    let stored = LogEntry.Event(
                        seq: row.0, roomId: row.1, userId: row.2, type: row.3, reason: row.4, at: row.5, roomVersion: row.6,
                        name: row.7, image: row.8, data: row.9)
                    events.append(try stored.event)
                }
                return (forgottenThrough, events)
            }
        }
        // Checked after the read, in the same snapshot: an error thrown inside would come out wrapped.
        try EventPaging.checkNotExpired(after: afterSequence, forgottenThrough: UInt64(forgottenThrough))
        return EventPage(events: events, after: afterSequence, forgottenThrough: UInt64(forgottenThrough))
    }

    public func forgetEvents(before cutoff: Int64) async throws -> Int {
        // One process sweeps for all of them: the expiry leader.
        guard isLeading else { return 0 }
        let rows = try await client.query(
            """
            WITH last AS (SELECT max(seq) AS seq FROM presence.events WHERE at < \(cutoff)),
            forgotten AS (DELETE FROM presence.events WHERE seq <= (SELECT seq FROM last) RETURNING 1),
            head AS (
                UPDATE presence.head
                SET events_forgotten_through = GREATEST(events_forgotten_through, COALESCE((SELECT seq FROM last), 0))
                WHERE id = 1)
            SELECT count(*) FROM forgotten
            """, logger: logger)
        var count: Int64 = 0
        for try await value in rows.decode(Int64.self) { count = value }
        return Int(count)
    }

    public func webhookCursor(endpoint: String) async throws -> WebhookCursor {
        _ = try await client.query(
            """
            INSERT INTO presence.webhook_cursors (endpoint, delivered_through)
            SELECT \(endpoint), last_event FROM presence.head ON CONFLICT (endpoint) DO NOTHING
            """, logger: logger)
        var cursor = WebhookCursor(deliveredThrough: 0)
        for try await (through, failedAt) in try await client.query(
            "SELECT delivered_through, failed_at FROM presence.webhook_cursors WHERE endpoint = \(endpoint)", logger: logger
        ).decode((Int64, Int64?).self) {
            cursor = WebhookCursor(deliveredThrough: UInt64(through), failedAt: failedAt)
        }
        return cursor
    }

    public func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String) async throws {
        let through = Int64(cursor.deliveredThrough)
        _ = try await client.query(
            """
            INSERT INTO presence.webhook_cursors (endpoint, delivered_through, failed_at)
            VALUES (\(endpoint), \(through), \(cursor.failedAt))
            ON CONFLICT (endpoint) DO UPDATE SET
                -- A process that lost the lease mid-delivery must not move the cursor back.
                delivered_through = GREATEST(presence.webhook_cursors.delivered_through, EXCLUDED.delivered_through),
                failed_at = EXCLUDED.failed_at
            """, logger: logger)
    }

    public var deliversWebhooks: Bool { isLeading }

    /// A token another process made a moment ago may not have reached this copy: look again after catching up.
    public func roomId(forToken roomToken: String) async throws -> String? {
        if let roomId = try await read({ $0.roomId(forToken: roomToken) }) { return roomId }
        try await synchronize()
        return try await read { $0.roomId(forToken: roomToken) }
    }

    public func sessionOwner(sessionToken: String) async throws -> SessionOwner? {
        if let owner = try await read({ $0.sessionOwner(sessionToken: sessionToken) }) { return owner }
        try await synchronize()
        return try await read { $0.sessionOwner(sessionToken: sessionToken) }
    }

    /// True while this process holds the expiry lease, is not fenced, and (if it was ever cut
    /// off) has been back for a whole lease: after a database restart the others have stored
    /// their heartbeats' deadlines by then, so nobody is expired for the outage.
    public var isLeading: Bool {
        inner.withLock { inner in
            let now = ContinuousClock.now
            guard let until = inner.leaderUntil, now < until, inner.contactSince != nil,
                now - inner.lastContact <= settings.fenceAfter
            else { return false }
            return inner.recoveredAt.map { now - $0 >= settings.lease } ?? true
        }
    }

    public func expireDueSessions(limit: Int) async throws -> Int {
        guard isLeading else { return 0 }
        let now = clock.nowMillis()
        let due = inner.withLock { inner -> Bool in
            guard inner.state.hasDue(now: now) else { return false }
            inner.lastExpiryCheck = now
            return true
        }
        guard due else { return 0 }
        return try await perform(expiryLimit: limit) { state, now, due in
            let (expired, outcome) = state.expire(sessionIds: due, now: now)
            return (expired, outcome.changes)
        }
    }

    public func nextDeadline() async throws -> Int64? {
        guard isLeading else { return nil }
        let granularity = settings.expiryGranularity.milliseconds
        return inner.withLock { inner in
            inner.state.nextDeadline.map { max($0, inner.lastExpiryCheck + granularity) }
        }
    }

    public func committedEvents() -> AsyncStream<PresenceEvent> {
        eventFeed.stream()
    }

    public func listenToCommittedEvents(_ body: @escaping @Sendable (PresenceEvent) -> Void) -> FeedListening {
        eventFeed.listen(body)
    }

    public func roomChanges() -> AsyncStream<RoomChange> {
        feed.stream()
    }

    public func listenToRoomChanges(_ body: @escaping @Sendable (RoomChange) -> Void) -> FeedListening {
        feed.listen(body)
    }

    public func reloads() -> AsyncStream<Void> {
        reloadFeed.stream()
    }

    public func outages() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        outageListeners.withLock { $0.append(continuation) }
        return stream
    }

    public func statistics() async throws -> PresenceStatistics {
        try await read { $0.statistics }
    }

    // MARK: - Running

    /// The store's work: the connection pools, the writer (group commit and catching up), the
    /// LISTENing connection, and the tick (lease, leader lease, deadlines, polling). When
    /// cancelled it commits what it accepted, stores every pending deadline and gives up its leases,
    /// so another process takes over expiry at once and no client appears offline.
    public func run() async throws {
        let starts = inner.withLock { inner -> Bool in
            guard inner.writer == .notStarted else { return false }
            inner.writer = .running
            return true
        }
        guard starts else { throw PostgresStoreError("the store's writer runs once") }
        // Cancellation asks the work to stop; it must not cancel the statements that finish it
        // (the last commits, the last deadlines, giving up the leases), so the work runs in a task
        // of its own that this one awaits to the end.
        // Detached: PostgresClient's run() ends at a graceful shutdown it learns of through a task
        // local, which an inheriting task would pass on, and the pools must outlive the last statements.
        let work = Task.detached { await self.serve() }
        await withTaskCancellationHandler {
            await work.value
        } onCancel: {
            writerWake.finish()
        }
    }

    private func serve() async {
        await withTaskGroup(of: Void.self) { pools in
            pools.addTask { await self.client.run() }
            pools.addTask { await self.listenClient.run() }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.listen() }
                group.addTask { await self.tickLoop() }
                // Ends when `run()` is cancelled.
                for await _ in writerWakes {
                    await commitQueuedBatches()
                    if inner.withLock({ $0.catchUpWanted || $0.stale }) { await catchUp() }
                }
                group.cancelAll()
            }
            inner.withLock { $0.writer = .stopped }
            await commitQueuedBatches()
            await tick(final: true)
            pools.cancelAll()
        }
        feed.finish()
        for listener in outageListeners.withLock({ $0 }) { listener.finish() }
    }

    /// LISTENs on its own connection; after every reconnect it catches up, since notifications
    /// sent meanwhile are lost.
    private func listen() async {
        while !Task.isCancelled {
            do {
                try await listenClient.withConnection { connection in
                    try await connection.listen(on: "presence") { notifications in
                        requestCatchUp()
                        for try await _ in notifications { requestCatchUp() }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("the listening connection failed; reconnecting", metadata: ["error": "\(Self.describe(error))"])
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }

    private func tickLoop() async {
        while !Task.isCancelled {
            await tick(final: false)
            try? await Task.sleep(for: settings.tick)
        }
    }

    /// One statement per tick: renew this process's lease, renew or claim the expiry lease, store
    /// the deadlines heartbeats moved, and read the head to notice a lost notification.
    /// The final tick stores the deadlines and gives both leases up.
    private func tick(final: Bool) async {
        let pending = inner.withLock { $0.pendingDeadlines }
        // Sorted: every process then locks the rows it updates in the same order, so two ticks
        // flushing the same sessions wait for each other instead of deadlocking.
        let sessionIds = pending.keys.sorted()
        let deadlines = sessionIds.map { pending[$0]! }
        let leaseMillis = settings.lease.milliseconds
        let sent = ContinuousClock.now
        // A lease that ran out (rather than one given up) may mean the database was away for
        // everyone: claim it only after a whole lease of contact, when the others have stored their deadlines.
        let mayClaim = inner.withLock { inner in inner.contactSince.map { sent - $0 >= settings.lease } ?? false }
        do {
            let (headSeq, leading) = try await Self.withTimeout(settings.fenceAfter, "the tick") { [self] in
                let query: PostgresQuery = final
                    ? """
                    WITH flushed AS (
                        UPDATE presence.sessions s SET deadline = f.deadline, node_id = \(nodeId)
                        FROM unnest(\(sessionIds)::text[], \(deadlines)::bigint[]) AS f(session_id, deadline)
                        WHERE s.session_id = f.session_id AND s.deadline < f.deadline),
                    resigned AS (
                        UPDATE presence.leader SET lease_until = '-infinity' WHERE id = 1 AND node_id = \(nodeId)),
                    gone AS (DELETE FROM presence.nodes WHERE node_id = \(nodeId))
                    SELECT (SELECT seq FROM presence.head), false
                    """
                    : """
                    WITH node AS (
                        INSERT INTO presence.nodes (node_id, lease_until)
                        VALUES (\(nodeId), now() + \(leaseMillis) * interval '1 millisecond')
                        ON CONFLICT (node_id) DO UPDATE SET lease_until = EXCLUDED.lease_until),
                    leader AS (
                        UPDATE presence.leader
                        SET node_id = \(nodeId), lease_until = now() + \(leaseMillis) * interval '1 millisecond'
                        WHERE id = 1 AND (node_id = \(nodeId) OR lease_until = '-infinity'
                            OR (lease_until < now() AND \(mayClaim)))
                        RETURNING 1),
                    flushed AS (
                        UPDATE presence.sessions s SET deadline = f.deadline, node_id = \(nodeId)
                        FROM unnest(\(sessionIds)::text[], \(deadlines)::bigint[]) AS f(session_id, deadline)
                        WHERE s.session_id = f.session_id AND s.deadline < f.deadline)
                    SELECT (SELECT seq FROM presence.head), EXISTS (SELECT 1 FROM leader)
                    """
                var result: (Int64, Bool) = (0, false)
                for try await row in try await client.query(query, logger: logger).decode((Int64, Bool).self) {
                    result = row
                }
                return result
            }
            noteContact(since: sent)
            if final {
                logger.info("stored the last deadlines and gave up the leases", metadata: ["sessions": "\(pending.count)"])
                return
            }
            if !pending.isEmpty { counters.withLock { $0.deadlineFlushes += 1 } }
            let (wasLeading, behind) = inner.withLock { inner -> (Bool, Bool) in
                for (sessionId, deadline) in pending {
                    if inner.pendingDeadlines[sessionId] == deadline { inner.pendingDeadlines.removeValue(forKey: sessionId) }
                    if inner.state.session(key: sessionId) != nil {
                        inner.storedDeadlines[sessionId] = max(inner.storedDeadlines[sessionId] ?? 0, deadline)
                    }
                }
                let wasLeading = inner.leaderUntil.map { sent < $0 } ?? false
                // The lease counts from when the statement was sent, the earliest it can have started.
                inner.leaderUntil = leading ? sent + settings.lease - settings.tick : nil
                return (wasLeading, inner.seq < headSeq || inner.stale)
            }
            if behind { requestCatchUp() }
            if leading, !wasLeading, let next = inner.withLock({ $0.state.nextDeadline }) {
                logger.info("this process now expires sessions for all", metadata: ["node": "\(nodeId)"])
                deadlineAlarm.note(deadline: next)
            }
            if leading, isLeading, trimDue() { await trimLog() }
        } catch {
            if final {
                logger.error("could not store the last deadlines", metadata: ["error": "\(Self.describe(error))"])
                return
            }
            let fenced = inner.withLock { inner -> Bool in
                inner.leaderUntil = nil
                guard ContinuousClock.now - inner.lastContact > settings.fenceAfter, inner.contactSince != nil else {
                    return false
                }
                inner.contactSince = nil
                return true
            }
            if fenced {
                logger.error("cut off from PostgreSQL: not serving until it answers", metadata: ["error": "\(Self.describe(error))"])
                for listener in outageListeners.withLock({ $0 }) { listener.yield() }
            } else {
                logger.warning("the tick failed", metadata: ["error": "\(Self.describe(error))"])
            }
        }
    }

    /// Trimming now and then is plenty for a retention of minutes, and keeps most ticks one statement.
    private func trimDue() -> Bool {
        inner.withLock { inner in
            let now = ContinuousClock.now
            guard inner.lastTrim.map({ now - $0 >= settings.trimInterval }) ?? true else { return false }
            inner.lastTrim = now
            return true
        }
    }

    private func trimLog() async {
        let retentionMillis = settings.logRetention.milliseconds
        do {
            try await client.query(
                """
                DELETE FROM presence.log
                WHERE written_at < now() - \(retentionMillis) * interval '1 millisecond'
                AND seq < (SELECT seq FROM presence.head)
                """, logger: logger)
        } catch {
            logger.warning("could not trim the log", metadata: ["error": "\(Self.describe(error))"])
        }
    }

    /// Runs `body`, or throws once `limit` has passed, without waiting for `body` to notice: a
    /// statement on a connection that hangs (a cut network, a pool waiting for a server that is
    /// down) must not hold the writer, and every caller with it. `body` is cancelled and left to
    /// end on its own; the epoch keeps it from touching memory afterwards.
    static func withTimeout<Value: Sendable>(
        _ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        let outcome = Promise<Result<Value, any Error>>()
        let work = Task {
            do { outcome.fulfil(.success(try await body())) } catch { outcome.fulfil(.failure(error)) }
        }
        let timer = Task {
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            outcome.fulfil(.failure(PostgresStoreError("\(what) took longer than \(limit)")))
            work.cancel()
        }
        let result = await outcome.value
        timer.cancel()
        return try result.get()
    }
}
