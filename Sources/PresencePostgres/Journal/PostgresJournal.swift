import Foundation
import Logging
import PostgresNIO
import PresenceStore
import Synchronization

/// The store for several `presence-server` processes sharing one PostgreSQL database.
///
/// Every process holds the whole presence state in memory (the engine's) and keeps it equal to
/// the database's:
/// - A change (join, leave, data, removal) is one transaction: it locks `presence.head`, applies
///   what other processes committed since (`presence.log`), applies the queued operations, writes
///   their rows and one log entry, and NOTIFYs. Room versions therefore follow commit order, across
///   processes. Operations queued while a transaction runs go into the next one (group commit).
/// - The other processes read the new entries on the notification (and once per tick in case
///   one was lost) and publish the same batches to their subscribers (`PostgresReplication.swift`).
/// - A heartbeat of a live session writes nothing at once: the deadlines heartbeats moved are
///   stored together once per tick, in the statement that renews the process's lease. A
///   heartbeat whose stored deadline is near is stored before it is answered, so no process can
///   expire a session another process has just heard from.
/// - One process at a time, the expiry leader (a lease in `presence.leader`), expires sessions:
///   in its transaction it reads the stored deadlines of the sessions it believes due, so a
///   heartbeat taken anywhere counts (`PostgresLeases.swift`).
/// - A process that has not reached the database for `fenceAfter` answers 503 until it has again.
///
/// ```swift
/// let store = try await PostgresStore.open(settings: PostgresSettings(url: "postgres://presence@127.0.0.1/presence"))
/// try await store.whileRunning {
///     _ = try await store.heartbeat(HeartbeatRequest(roomId: "doc", userId: "alice", sessionId: "tab-1"))
/// }
/// ```
public typealias PostgresStore = StoreEngine<PostgresJournal>

public final class PostgresJournal: StoreJournal {
    public static var storesDeadlines: Bool { true }
    public static var isShared: Bool { true }
    public static var maximumBatch: Int { 1_000 }

    /// This process's name in `presence.nodes` and `presence.leader`.
    public let nodeId: String
    public let settings: PostgresSettings
    let client: PostgresClient
    let listenClient: PostgresClient
    let logger: Logger
    let clock: any WallClock
    let quotas: PresenceState.UserQuotas
    /// The next tick stores a deadline a heartbeat moves now; a heartbeat whose stored deadline
    /// is nearer than that (and a margin) is stored before it is answered.
    let syncHorizon: Int64
    let outageListeners = Mutex<[AsyncStream<Void>.Continuation]>([])

    /// The journal's figures, under the engine's lock.
    public struct Memo: Sendable {
        /// The last log entry this copy has applied.
        var seq: Int64
        /// What this process knows the database holds as each session's deadline (a lower bound).
        var storedDeadlines: IDDictionary<Int64>
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
        var lastExpiryCheck: Int64 = 0
        var lastTrim: ContinuousClock.Instant?
        /// Bumped when a statement is given up on: work of an earlier epoch, still running on a
        /// connection that hung, may no longer touch memory.
        var epoch = 0
        var deadlineFlushes = 0
        var catchUps = 0
        var reloads = 0
    }

    /// For the benchmark and the operator: what this process asked of PostgreSQL.
    public struct Counters: Sendable {
        public var transactions = 0
        public var deadlineFlushes = 0
        public var fastHeartbeats = 0
        public var storedHeartbeats = 0
        public var catchUps = 0
        public var reloads = 0
    }

    struct Superseded: Error {}

    private init(settings: PostgresSettings, clock: any WallClock, quotas: PresenceState.UserQuotas, logger: Logger) {
        self.settings = settings
        self.clock = clock
        self.quotas = quotas
        self.logger = logger
        syncHorizon = settings.syncMargin.milliseconds + settings.tick.milliseconds
        nodeId = Tokens.make(prefix: "n_")
        client = PostgresClient(configuration: settings.client, backgroundLogger: logger)
        listenClient = PostgresClient(configuration: settings.listenClient, backgroundLogger: logger)
    }

    /// Connects, creates or migrates the schema, and loads the state; throws a clear error for an
    /// unreachable server, a refused login, or a database that holds another application's schema.
    static func open(
        settings: PostgresSettings, clock: any WallClock, quotas: PresenceState.UserQuotas, logger: Logger
    ) async throws -> (PostgresJournal, Loaded) {
        let loaded: Loaded
        do {
            loaded = try await settings.withClient(logger: logger) { setupClient in
                try await withTimeout(.seconds(15), "connecting to \(settings.displayName)") {
                    try await setupClient.withConnection { connection in
                        try await PostgresSchema.migrate(connection, logger: logger)
                        return try await Loaded.read(connection, now: clock.nowMillis(), quotas: quotas, logger: logger)
                    }
                }
            }
        } catch let error as PSQLError {
            throw PostgresStoreError("cannot use PostgreSQL at \(settings.displayName): \(describe(error))")
        }
        logger.info(
            "opened \(settings.displayName)",
            metadata: ["sessions": "\(loaded.state.statistics.sessions)", "rooms": "\(loaded.state.statistics.rooms)"])
        return (PostgresJournal(settings: settings, clock: clock, quotas: quotas, logger: logger), loaded)
    }

    /// Changes the engine's state on behalf of work started in `epoch`, unless that work was given up on.
    func mutate<Value>(
        _ engine: PostgresStore, ifStill epoch: Int, _ body: (inout EngineState<PostgresJournal>) throws -> Value
    ) throws -> Value {
        try engine.withLock { state in
            guard state.memo.epoch == epoch else { throw Superseded() }
            return try body(&state)
        }
    }

    func currentEpoch(_ engine: PostgresStore) -> Int { engine.withLock { $0.memo.epoch } }

    func abandonEpoch(_ engine: PostgresStore) { engine.withLock { $0.memo.epoch += 1 } }

    // MARK: - Serving or not

    /// Throws 503 while this process is cut off from the database or its memory awaits a reload.
    public func checkServing(_ state: EngineState<PostgresJournal>) throws(PresenceError) {
        if state.writer == .stopped { throw .unavailable("the store has stopped") }
        if state.stale { throw .unavailable("the store is reloading after a failed commit") }
        if state.memo.contactSince == nil || ContinuousClock.now - state.memo.lastContact > settings.fenceAfter {
            throw .unavailable("the database is unreachable")
        }
    }

    func noteContact(since sent: ContinuousClock.Instant, _ engine: PostgresStore) {
        engine.withLock { state in
            if sent > state.memo.lastContact { state.memo.lastContact = sent }
            if state.memo.contactSince == nil {
                state.memo.contactSince = sent
                state.memo.recoveredAt = sent
            }
        }
    }

    /// A live session whose stored deadline is still far off only moves its deadline in memory;
    /// the next tick stores it (`pendingDeadlines`).
    public func mayExtendInMemory(sessionKey: String, now: Int64, _ state: EngineState<PostgresJournal>) -> Bool {
        guard let stored = state.memo.storedDeadlines[sessionKey] else { return false }
        return stored - now > syncHorizon
    }

    public func extendedInMemory(sessionKey: String, deadline: Int64, _ state: inout EngineState<PostgresJournal>) {
        state.memo.pendingDeadlines[sessionKey] = deadline
    }

    public func outages() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        outageListeners.withLock { $0.append(continuation) }
        return stream
    }

    public func gauges(_ state: EngineState<PostgresJournal>) -> [StoreGauge] {
        let counts = Self.counters(state)
        return [
            StoreGauge("presence_postgres_serving", (try? checkServing(state)) != nil ? 1 : 0, help: "1 while this process reaches PostgreSQL and serves; 0 while fenced"),
            StoreGauge("presence_postgres_expiry_leader", leads(state) ? 1 : 0, help: "1 while this process expires sessions for all"),
            StoreGauge("presence_postgres_reloading", state.stale ? 1 : 0, help: "1 while memory waits for a reload after a failed commit"),
            StoreGauge("presence_postgres_transactions_total", Double(counts.transactions), help: "change transactions committed by this process"),
            StoreGauge("presence_postgres_catch_ups_total", Double(counts.catchUps), help: "reads of other processes' log entries"),
            StoreGauge("presence_postgres_reloads_total", Double(counts.reloads), help: "full reloads from the tables"),
            StoreGauge("presence_postgres_deadline_flushes_total", Double(counts.deadlineFlushes), help: "ticks that stored heartbeat deadlines"),
            StoreGauge("presence_postgres_heartbeats_unwritten_total", Double(counts.fastHeartbeats), help: "heartbeats answered without a write"),
            StoreGauge("presence_postgres_heartbeats_stored_total", Double(counts.storedHeartbeats), help: "heartbeats stored before they were answered"),
            StoreGauge("presence_postgres_pending_deadlines", Double(state.memo.pendingDeadlines.count), help: "sessions whose moved deadline the next tick stores"),
        ]
    }

    static func counters(_ state: EngineState<PostgresJournal>) -> Counters {
        Counters(
            transactions: state.counters.commits, deadlineFlushes: state.memo.deadlineFlushes,
            fastHeartbeats: state.counters.heartbeatsInMemory, storedHeartbeats: state.counters.heartbeatsStored,
            catchUps: state.memo.catchUps, reloads: state.memo.reloads)
    }

    // MARK: - Group commit

    public func commit(_ operations: [QueuedOperation], engine: PostgresStore) async throws -> CommittedBatch {
        let sent = ContinuousClock.now
        let epoch = currentEpoch(engine)
        do {
            let committed = try await withTimeout(settings.statementTimeout, "a commit") { [self] in
                try await client.withTransaction(logger: logger) { connection in
                    try await self.commitBatch(operations, on: connection, epoch: epoch, engine: engine)
                }
            }
            noteContact(since: sent, engine)
            return committed
        } catch {
            abandonEpoch(engine)
            throw PostgresStoreError(Self.describe(error))
        }
    }

    /// Inside the transaction: lock the head, catch up, apply, write. Returns what to publish
    /// (what other processes committed, caught up first, then the batch's own).
    private func commitBatch(
        _ operations: [QueuedOperation], on connection: PostgresConnection, epoch: Int, engine: PostgresStore
    ) async throws -> CommittedBatch {
        var headSeq: Int64 = 0
        for try await seq in try await connection.query(
            "SELECT seq FROM presence.head WHERE id = 1 FOR UPDATE", logger: logger
        ).decode(Int64.self) {
            headSeq = seq
        }
        var published = try await applyLog(upTo: headSeq, on: connection, epoch: epoch, engine: engine)

        // Expiry: sessions this process believes due may have been heard of elsewhere.
        let now = clock.nowMillis()
        var due: [String]?
        if let limit = operations.compactMap(\.expiryLimit).max() {
            let believedDue = try mutate(engine, ifStill: epoch) { $0.takeDueSessionIds(now: now, limit: limit) }
            due = believedDue
            if !believedDue.isEmpty {
                var stored: [(String, Int64, Bool)] = []
                // A session whose process's lease ran out (a process that died, not one that
                // stopped and took its node row along) leaves because its server was lost.
                for try await row in try await connection.query(
                    """
                    SELECT s.session_id, s.deadline, EXISTS (
                        SELECT 1 FROM presence.nodes n WHERE n.node_id = s.node_id AND n.lease_until < now())
                    FROM presence.sessions s WHERE s.session_id = ANY(\(believedDue)) FOR UPDATE OF s
                    """,
                    logger: logger
                ).decode((String, Int64, Bool).self) {
                    stored.append(row)
                }
                try mutate(engine, ifStill: epoch) { state in
                    for (sessionId, deadline, lost) in stored {
                        state.raiseDeadline(sessionId: sessionId, to: deadline, serverLost: lost)
                        state.memo.storedDeadlines[sessionId] = max(state.memo.storedDeadlines[sessionId] ?? 0, deadline)
                    }
                }
            }
        }

        let (changes, rows) = try mutate(engine, ifStill: epoch) { $0.apply(operations, now: now, due: due) }
        guard !rows.isEmpty || !changes.isEmpty else { return published }
        let entry = try LogEntry(rows, changes: changes, nodeId: nodeId).encoded()
        let nextSeq = headSeq + 1
        try await connection.query(
            Self.writeEntry(entry, seq: nextSeq, lastVersion: Int64(rows.lastVersion), lastEvent: Int64(rows.lastEventSequence)),
            logger: logger)
        try mutate(engine, ifStill: epoch) { state in
            state.memo.seq = nextSeq
            for session in rows.sessions {
                state.memo.storedDeadlines[session.sessionId] = session.deadline
                if let pending = state.memo.pendingDeadlines[session.sessionId], pending <= session.deadline {
                    state.memo.pendingDeadlines.removeValue(forKey: session.sessionId)
                }
            }
            for sessionId in rows.deletedSessions {
                state.memo.storedDeadlines.removeValue(forKey: sessionId)
                state.memo.pendingDeadlines.removeValue(forKey: sessionId)
            }
        }
        published.append(CommittedBatch(changes: changes, events: rows.events))
        return published
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
}

extension StoreEngine where Journal == PostgresJournal {
    /// See `PostgresJournal.open`.
    public static func open(
        settings: PostgresSettings, clock: any WallClock = SystemWallClock(), quotas: PresenceState.UserQuotas = .init(),
        logger: Logger = Logger(label: "presence.postgres")
    ) async throws -> PostgresStore {
        let (journal, loaded) = try await PostgresJournal.open(settings: settings, clock: clock, quotas: quotas, logger: logger)
        let now = ContinuousClock.now
        let memo = PostgresJournal.Memo(seq: loaded.seq, storedDeadlines: loaded.storedDeadlines, lastContact: now, contactSince: now)
        return PostgresStore(journal: journal, presence: loaded.state, memo: memo, clock: clock, logger: logger)
    }

    /// This process's name in `presence.nodes` and `presence.leader`.
    public var nodeId: String { journal.nodeId }
    public var settings: PostgresSettings { journal.settings }
    public var counterValues: PostgresJournal.Counters { withLock { PostgresJournal.counters($0) } }
    /// Whether this process serves: false while fenced (the server closes sockets with 1013).
    public var isServing: Bool { withLock { (try? journal.checkServing($0)) != nil } }
    /// See `PostgresJournal.leads`.
    public var isLeading: Bool { withLock { journal.leads($0) } }
}
