import Logging
import PostgresNIO
import PresenceStore

/// The process's lease, the expiry lease (one leader at a time expires sessions, forgets old
/// users and events, trims the log and delivers webhooks), the deadlines heartbeats moved, and
/// the process's work while it serves.
extension PostgresJournal {
    /// True while this process holds the expiry lease, is not fenced, and (if it was ever cut
    /// off) has been back for a whole lease: after a database restart the others have stored
    /// their heartbeats' deadlines by then, so nobody is expired for the outage.
    public func leads(_ state: EngineState<PostgresJournal>) -> Bool {
        let now = ContinuousClock.now
        guard let until = state.memo.leaderUntil, now < until, state.memo.contactSince != nil,
            now - state.memo.lastContact <= settings.fenceAfter
        else { return false }
        return state.memo.recoveredAt.map { now - $0 >= settings.lease } ?? true
    }

    public func nextExpiryCheck(earliest: Int64?, _ state: EngineState<PostgresJournal>) -> Int64? {
        let granularity = settings.expiryGranularity.milliseconds
        return earliest.map { max($0, state.memo.lastExpiryCheck + granularity) }
    }

    public func expiring(now: Int64, _ state: inout EngineState<PostgresJournal>) {
        state.memo.lastExpiryCheck = now
    }

    /// The connection pools, the writer (group commit and catching up), the LISTENing connection,
    /// and the tick (lease, leader lease, deadlines, polling). When stopped it commits what it
    /// accepted, stores every pending deadline and gives up its leases, so another process takes
    /// over expiry at once and no client appears offline.
    public func run(engine: PostgresStore) async {
        // Stopping asks the work to end; it must not cancel the statements that finish it (the
        // last commits, the last deadlines, giving up the leases), so the work runs in a task of
        // its own. Detached: PostgresClient's run() ends at a graceful shutdown it learns of
        // through a task local, which an inheriting task would pass on, and the pools must outlive
        // the last statements. The engine ends the writer's wakes when `run()` is cancelled.
        let work = Task.detached { await self.serve(engine: engine) }
        await work.value
    }

    private func serve(engine: PostgresStore) async {
        await withTaskGroup(of: Void.self) { pools in
            pools.addTask { await self.client.run() }
            pools.addTask { await self.listenClient.run() }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.listen(engine: engine) }
                group.addTask { await self.tickLoop(engine: engine) }
                await engine.runWriter {
                    if engine.withLock({ $0.memo.catchUpWanted }) { await catchUp(engine: engine) }
                }
                group.cancelAll()
            }
            await tick(final: true, engine: engine)
            pools.cancelAll()
        }
        for listener in outageListeners.withLock({ $0 }) { listener.finish() }
    }

    func tickLoop(engine: PostgresStore) async {
        while !Task.isCancelled {
            await tick(final: false, engine: engine)
            try? await Task.sleep(for: settings.tick)
        }
    }

    /// One statement per tick: renew this process's lease, renew or claim the expiry lease, store
    /// the deadlines heartbeats moved, and read the head to notice a lost notification.
    /// The final tick stores the deadlines and gives both leases up.
    func tick(final: Bool, engine: PostgresStore) async {
        let pending = engine.withLock { $0.memo.pendingDeadlines }
        // Sorted: every process then locks the rows it updates in the same order, so two ticks
        // flushing the same sessions wait for each other instead of deadlocking.
        let sessionIds = pending.keys.sorted()
        let deadlines = sessionIds.map { pending[$0]! }
        let leaseMillis = settings.lease.milliseconds
        let sent = ContinuousClock.now
        // A lease that ran out (rather than one given up) may mean the database was away for
        // everyone: claim it only after a whole lease of contact, when the others have stored their deadlines.
        let mayClaim = engine.withLock { state in state.memo.contactSince.map { sent - $0 >= settings.lease } ?? false }
        do {
            let (headSeq, leading) = try await withTimeout(settings.fenceAfter, "the tick") { [self] in
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
            noteContact(since: sent, engine)
            if final {
                logger.info("stored the last deadlines and gave up the leases", metadata: ["sessions": "\(pending.count)"])
                return
            }
                        let (wasLeading, behind) = engine.withLock { state -> (Bool, Bool) in
                if !pending.isEmpty { state.memo.deadlineFlushes += 1 }
                for (sessionId, deadline) in pending {
                    if state.memo.pendingDeadlines[sessionId] == deadline { state.memo.pendingDeadlines.removeValue(forKey: sessionId) }
                    if state.presence.session(key: sessionId) != nil {
                        state.memo.storedDeadlines[sessionId] = max(state.memo.storedDeadlines[sessionId] ?? 0, deadline)
                    }
                }
                let wasLeading = state.memo.leaderUntil.map { sent < $0 } ?? false
                // The lease counts from when the statement was sent, the earliest it can have started.
                state.memo.leaderUntil = leading ? sent + settings.lease - settings.tick : nil
                return (wasLeading, state.memo.seq < headSeq || state.stale)
            }
            if behind { requestCatchUp(engine) }
            if leading, !wasLeading, let next = engine.withLock({ $0.presence.nextDeadline }) {
                logger.info("this process now expires sessions for all", metadata: ["node": "\(nodeId)"])
                engine.deadlineAlarm.note(deadline: next)
            }
            if leading, engine.withLock({ leads($0) }), trimDue(engine: engine) { await trimLog() }
        } catch {
            if final {
                logger.error("could not store the last deadlines", metadata: ["error": "\(Self.describe(error))"])
                return
            }
            let fenced = engine.withLock { state -> Bool in
                state.memo.leaderUntil = nil
                guard ContinuousClock.now - state.memo.lastContact > settings.fenceAfter, state.memo.contactSince != nil else {
                    return false
                }
                state.memo.contactSince = nil
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
    private func trimDue(engine: PostgresStore) -> Bool {
        engine.withLock { state in
            let now = ContinuousClock.now
            guard state.memo.lastTrim.map({ now - $0 >= settings.trimInterval }) ?? true else { return false }
            state.memo.lastTrim = now
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
}
