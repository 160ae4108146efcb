import Foundation
import GRDB
import Logging
import PresenceStore

/// The durable embedded store: presence lives in memory and every durable change is written to
/// SQLite (WAL, `synchronous = FULL`) before it is acknowledged or published. Deadlines are not
/// stored (a restart grants a grace period instead), so a heartbeat that only moves a live
/// session's deadline writes nothing.
///
/// ```swift
/// let store = try SQLiteStore(directory: "./presence-data")
/// try await store.whileRunning {
///     _ = try await store.heartbeat(HeartbeatRequest(roomId: "doc", userId: "alice", sessionId: "tab-1"))
/// }
/// ```
public typealias SQLiteStore = StoreEngine<SQLiteJournal>

/// Why a data directory could not be opened; the message says what to do.
public struct SQLiteStoreError: Error, CustomStringConvertible {
    public let description: String
}

/// The SQLite file of one data directory, held by this process alone (`DataDirectoryLock`).
public final class SQLiteJournal: StoreJournal {
    public static let fileName = "presence.sqlite"
    public static let lockFileName = "presence.lock"

    public struct Memo: Sendable {
        var aliveMarkDue = false
        /// Why the last write failed (a full disk, an I/O error), until a write succeeds: a batch,
        /// or the "alive at" mark, which is tried every few seconds even without traffic.
        var writeFailure: String?
    }

    public let path: String
    let database: DatabaseQueue
    let directoryLock: DataDirectoryLock
    let clock: any WallClock
    let quotas: PresenceState.UserQuotas
    let logger: Logger
    let aliveMarkInterval: Duration

    init(
        path: String, database: DatabaseQueue, directoryLock: DataDirectoryLock, clock: any WallClock,
        quotas: PresenceState.UserQuotas, logger: Logger, aliveMarkInterval: Duration
    ) {
        self.path = path
        self.database = database
        self.directoryLock = directoryLock
        self.clock = clock
        self.quotas = quotas
        self.logger = logger
        self.aliveMarkInterval = aliveMarkInterval
    }

    /// Opens (creating if needed) `directory/presence.sqlite`, refusing a directory that another
    /// running server holds, a file that is not a presence database, and an unwritable place.
    static func open(
        directory: String, clock: any WallClock, quotas: PresenceState.UserQuotas, logger: Logger, aliveMarkInterval: Duration
    ) throws -> (SQLiteJournal, PresenceState) {
        let directoryURL = URL(fileURLWithPath: directory, isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: directoryURL, withIntermediateDirectories: true)
        } catch {
            throw SQLiteStoreError(description: "cannot create the data directory \(directory): \(error.localizedDescription)")
        }
        let path = directoryURL.appendingPathComponent(fileName).path
        let directoryLock = try DataDirectoryLock(path: directoryURL.appendingPathComponent(lockFileName).path, directory: directory)

        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(5)
        configuration.label = "presence"
        configuration.prepareDatabase { db in
            // FULL: a commit is on disk before it is acknowledged, even if the machine loses power.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        let database: DatabaseQueue
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
            try checkIsPresenceDatabase(database, path: path)
            try SQLiteSchema.migrator.migrate(database)
        } catch let error as SQLiteStoreError {
            throw error
        } catch let error as DatabaseError where error.resultCode == .SQLITE_NOTADB {
            throw SQLiteStoreError(description: "\(path) is not a presence database (not an SQLite file)")
        } catch let error as DatabaseError where error.resultCode == .SQLITE_READONLY || error.resultCode == .SQLITE_CANTOPEN || error.resultCode == .SQLITE_PERM {
            throw SQLiteStoreError(description: "cannot write \(path): \(error.message ?? "\(error.resultCode)")")
        } catch {
            throw SQLiteStoreError(description: "cannot open \(path): \(error)")
        }
        let state = try SQLiteRows.load(database, now: clock.nowMillis(), quotas: quotas)
        logger.info("opened \(path)", metadata: ["sessions": "\(state.statistics.sessions)", "rooms": "\(state.statistics.rooms)"])
        let journal = SQLiteJournal(
            path: path, database: database, directoryLock: directoryLock, clock: clock, quotas: quotas, logger: logger,
            aliveMarkInterval: aliveMarkInterval)
        return (journal, state)
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

    // MARK: - Storing

    public func commit(_ operations: [QueuedOperation], engine: StoreEngine<SQLiteJournal>) async throws -> CommittedBatch {
        let now = clock.nowMillis()
        let (changes, rows) = engine.withLock { $0.apply(operations, now: now, due: nil) }
        if !rows.isEmpty {
            do {
                try await write { db in try SQLiteRows.write(rows, aliveAt: now, to: db) }
                noteWrite(nil, engine: engine)
            } catch {
                noteWrite(error, engine: engine)
                throw error
            }
        }
        return CommittedBatch(changes: changes, events: rows.events)
    }

    public func reload(engine: StoreEngine<SQLiteJournal>) async throws -> CommittedBatch {
        let loaded = try SQLiteRows.load(database, now: clock.nowMillis(), quotas: quotas)
        let changes = engine.withLock { $0.replacePresence(with: loaded) }
        return CommittedBatch(changes: changes, reloaded: true)
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

    private func noteWrite(_ failure: (any Error)?, engine: StoreEngine<SQLiteJournal>) {
        engine.withLock { $0.memo.writeFailure = failure.map { "\($0)" } }
    }

    public func checkCanCommit(_ state: EngineState<SQLiteJournal>) throws(PresenceError) {
        // Not the failure itself: /health answers anyone, and the log has it.
        if state.memo.writeFailure != nil {
            throw .unavailable("the store cannot write to its file (a full disk?); the server's log says why")
        }
    }

    // MARK: - Running

    /// The writer, and the "alive at" mark kept fresh every few seconds (not per heartbeat), so
    /// that after a long outage sessions that would have expired meanwhile are expired at start
    /// instead of all showing online. When stopped: a last mark.
    public func run(engine: StoreEngine<SQLiteJournal>) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [aliveMarkInterval] in
                while (try? await Task.sleep(for: aliveMarkInterval)) != nil {
                    engine.withLock { $0.memo.aliveMarkDue = true }
                    engine.wakeWriter()
                }
            }
            await engine.runWriter {
                let markDue = engine.withLock { state in
                    defer { state.memo.aliveMarkDue = false }
                    return state.memo.aliveMarkDue
                }
                if markDue { await writeAliveMark(engine: engine) }
            }
            group.cancelAll()
        }
        await writeAliveMark(engine: engine)
    }

    private func writeAliveMark(engine: StoreEngine<SQLiteJournal>) async {
        let now = clock.nowMillis()
        do {
            try await write { db in try SQLiteRows.writeAliveMark(now, to: db) }
            noteWrite(nil, engine: engine)
        } catch {
            noteWrite(error, engine: engine)
            logger.error("could not write the alive mark", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Event log

    public func events(after: UInt64?, roomId: String?, limit: Int, engine: StoreEngine<SQLiteJournal>) async throws -> EventPage {
        try await database.read { db in
            let forgottenThrough = UInt64(try SQLiteRows.metaValue("events_forgotten_through", in: db))
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
            return EventPage(events: try rows.map(SQLiteRows.event(from:)), after: afterSequence, forgottenThrough: forgottenThrough)
        }
    }

    public func forgetEvents(before cutoff: Int64, engine: StoreEngine<SQLiteJournal>) async throws -> Int {
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

    public func webhookCursor(endpoint: String, engine: StoreEngine<SQLiteJournal>) async throws -> WebhookCursor {
        try await write { db in
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM webhook_cursors WHERE endpoint = ?", arguments: [endpoint]) {
                return WebhookCursor(deliveredThrough: UInt64(row["delivered_through"] as Int64), failedAt: row["failed_at"])
            }
            let newest = try SQLiteRows.metaValue("last_event", in: db)
            try db.execute(
                sql: "INSERT INTO webhook_cursors (endpoint, delivered_through) VALUES (?, ?)", arguments: [endpoint, newest])
            return WebhookCursor(deliveredThrough: UInt64(newest))
        }
    }

    public func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String, engine: StoreEngine<SQLiteJournal>) async throws {
        try await write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO webhook_cursors (endpoint, delivered_through, failed_at) VALUES (?, ?, ?)",
                arguments: [endpoint, Int64(cursor.deliveredThrough), cursor.failedAt])
        }
    }
}

extension StoreEngine where Journal == SQLiteJournal {
    /// See `SQLiteJournal.open`; `aliveMarkInterval` is how often the "alive at" mark is written.
    public convenience init(
        directory: String, clock: any WallClock = SystemWallClock(), quotas: PresenceState.UserQuotas = .init(),
        logger: Logger = Logger(label: "presence.sqlite"), aliveMarkInterval: Duration = .seconds(5)
    ) throws {
        let (journal, state) = try SQLiteJournal.open(
            directory: directory, clock: clock, quotas: quotas, logger: logger, aliveMarkInterval: aliveMarkInterval)
        self.init(journal: journal, presence: state, memo: SQLiteJournal.Memo(), clock: clock, logger: logger)
    }

    public static var fileName: String { SQLiteJournal.fileName }

    public var path: String { journal.path }

    /// Closes the file once `run()` has returned (its last act is the final "alive at" mark); the
    /// data directory is free for another process afterwards. The store must not be used after this.
    public func close() throws {
        try journal.database.close()
        journal.directoryLock.release()
    }
}
