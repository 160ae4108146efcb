import Logging
import PostgresNIO
import PresenceStore

/// How a process follows what the others commit: the log entries after its position, read on a
/// notification, on a tick that finds the head ahead, inside its own commits, or when asked to
/// synchronize; the whole tables when the entries it needs are gone or a commit failed.
extension PostgresJournal {
    /// Applies the log entries after this copy's position up to `headSeq`; reloads everything when
    /// the entries it needs were trimmed. Returns what to publish.
    func applyLog(upTo headSeq: Int64, on connection: PostgresConnection, epoch: Int, engine: PostgresStore) async throws -> CommittedBatch {
        var published = CommittedBatch()
        while true {
            let from = engine.withLock { $0.memo.seq }
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
                published.append(try await reloadState(on: connection, epoch: epoch, engine: engine))
                continue
            }
            let decoded = try entries.map { ($0.0, try LogEntry.decode($0.1)) }
            // Other processes' events are committed already: their watchers here may look now.
            published.events.append(contentsOf: decoded.flatMap { $0.1.events.compactMap { try? $0.event } })
            let unreadable = try mutate(engine, ifStill: epoch) { state -> Bool in
                state.memo.catchUps += 1
                for (seq, entry) in decoded {
                    guard let rows = try? entry.durableChanges else {
                        logger.error("unreadable log entry; reloading", metadata: ["seq": "\(seq)"])
                        return true
                    }
                    state.applyReplicated(rows)
                    for session in rows.sessions {
                        state.memo.storedDeadlines[session.sessionId] = max(state.memo.storedDeadlines[session.sessionId] ?? 0, session.deadline)
                    }
                    for sessionId in rows.deletedSessions {
                        state.memo.storedDeadlines.removeValue(forKey: sessionId)
                        state.memo.pendingDeadlines.removeValue(forKey: sessionId)
                    }
                    state.memo.seq = seq
                    published.changes.append(contentsOf: entry.roomChanges)
                }
                return false
            }
            // Sessions other processes started or changed may be due before the expiry loop wakes.
            if let earliest = decoded.flatMap({ $0.1.sessions.map(\.deadline) }).min() {
                engine.deadlineAlarm.note(deadline: earliest)
            }
            if unreadable {
                published.append(try await reloadState(on: connection, epoch: epoch, engine: engine))
            }
        }
    }

    /// Replaces memory with the tables (after a failed commit, or when the log was trimmed past
    /// this copy); the batch says which rooms differ, so subscribers catch up.
    func reloadState(on connection: PostgresConnection, epoch: Int, engine: PostgresStore) async throws -> CommittedBatch {
        let loaded = try await Loaded.read(connection, now: clock.nowMillis(), quotas: quotas, logger: logger)
        defer { if let next = loaded.state.nextDeadline { engine.deadlineAlarm.note(deadline: next) } }
        return try mutate(engine, ifStill: epoch) { state in
            var presence = loaded.state
            for (sessionId, deadline) in state.memo.pendingDeadlines {
                presence.raiseDeadline(sessionId: sessionId, to: deadline)
            }
            state.memo.seq = loaded.seq
            state.memo.storedDeadlines = loaded.storedDeadlines
            state.memo.reloads += 1
            return CommittedBatch(changes: state.replacePresence(with: presence), reloaded: true)
        }
    }

    /// After a failed commit: the engine calls this at every wake until the database answers;
    /// meanwhile the store refuses to serve.
    public func reload(engine: PostgresStore) async throws -> CommittedBatch {
        let epoch = currentEpoch(engine)
        do {
            return try await withTimeout(settings.statementTimeout, "a reload") { [self] in
                try await client.withConnection { connection in try await self.reloadState(on: connection, epoch: epoch, engine: engine) }
            }
        } catch {
            abandonEpoch(engine)
            throw PostgresStoreError(Self.describe(error))
        }
    }

    /// Reads what other processes committed since this copy's position.
    func catchUp(engine: PostgresStore) async {
        let waiters = engine.withLock { state in
            state.memo.catchUpWanted = false
            defer { state.memo.catchUpWaiters.removeAll() }
            return state.memo.catchUpWaiters
        }
        let sent = ContinuousClock.now
        let epoch = currentEpoch(engine)
        do {
            let batch = try await withTimeout(settings.statementTimeout, "catching up") { [self] in
                try await client.withConnection { connection in
                    if engine.withLock({ $0.stale }) { return try await self.reloadState(on: connection, epoch: epoch, engine: engine) }
                    var headSeq: Int64 = 0
                    for try await seq in try await connection.query("SELECT seq FROM presence.head", logger: logger)
                        .decode(Int64.self)
                    {
                        headSeq = seq
                    }
                    return try await self.applyLog(upTo: headSeq, on: connection, epoch: epoch, engine: engine)
                }
            }
            noteContact(since: sent, engine)
            engine.publish(batch)
            for waiter in waiters { waiter.fulfil(.success(())) }
        } catch {
            abandonEpoch(engine)
            logger.warning("catching up failed", metadata: ["error": "\(Self.describe(error))"])
            for waiter in waiters { waiter.fulfil(.failure(PresenceError.unavailable("the database is unreachable"))) }
        }
    }

    func requestCatchUp(_ engine: PostgresStore) {
        engine.withLock { $0.memo.catchUpWanted = true }
        engine.wakeWriter()
    }

    public func synchronize(engine: PostgresStore) async throws {
        let promise = Promise<Result<Void, any Error>>()
        try engine.withLock { state in
            try checkServing(state)
            state.memo.catchUpWaiters.append(promise)
            state.memo.catchUpWanted = true
        }
        engine.wakeWriter()
        try await promise.value.get()
    }

    /// LISTENs on its own connection; after every reconnect it catches up, since notifications
    /// sent meanwhile are lost.
    func listen(engine: PostgresStore) async {
        while !Task.isCancelled {
            do {
                try await listenClient.withConnection { connection in
                    try await connection.listen(on: "presence") { notifications in
                        requestCatchUp(engine)
                        for try await _ in notifications { requestCatchUp(engine) }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("the listening connection failed; reconnecting", metadata: ["error": "\(Self.describe(error))"])
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }
}
