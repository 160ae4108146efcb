/// Everything a `StoreEngine` guards with its one lock: the presence state, the queue of
/// operations for the writer, what the batch being stored touches, the reads waiting for it, and
/// the journal's own figures.
public struct EngineState<Journal: StoreJournal>: Sendable {
    public enum WriterStatus: Sendable { case notStarted, running, stopped }

    public internal(set) var presence: PresenceState
    public var memo: Journal.Memo
    public internal(set) var writer = WriterStatus.notStarted
    /// True while a batch applied to `presence` is being stored: reads wait for it.
    public internal(set) var committing = false
    /// Memory may hold changes the journal does not (a commit failed): nothing is served from it
    /// until a reload replaced it.
    public internal(set) var stale = false
    var queue: [QueuedOperation] = []
    var waitingReads: [@Sendable (PresenceState) -> Void] = []
    /// Sessions the batch being stored creates, changes or ends: their heartbeats wait for it.
    var unstoredSessions = IDSet()
    public internal(set) var counters = EngineCounters()

    init(presence: PresenceState, memo: Journal.Memo) {
        self.presence = presence
        self.memo = memo
    }

    /// Applies a batch's operations and takes the rows they changed, to be stored; reads wait
    /// until `StoreEngine` learns how the store went.
    public mutating func apply(_ operations: [QueuedOperation], now: Int64, due: [String]?) -> (changes: [RoomChange], rows: DurableChanges) {
        var changes: [RoomChange] = []
        for operation in operations { changes.append(contentsOf: operation.apply(&presence, now: now, due: due)) }
        committing = true
        let rows = presence.takeDurableChanges()
        unstoredSessions = IDSet(rows.sessions.map(\.sessionId)).union(rows.deletedSessions)
        return (changes, rows)
    }

    /// Applies what another process committed (its rows, as stored).
    public mutating func applyReplicated(_ rows: DurableChanges) {
        presence.applyReplicated(rows)
    }

    /// Replaces memory with the stored state and returns a change for every room that differs, so
    /// subscribers catch up; reads that waited are answered from it.
    public mutating func replacePresence(with loaded: PresenceState) -> [RoomChange] {
        let before = presence.roomHeads
        let after = loaded.roomHeads
        var changes: [RoomChange] = []
        for (roomId, head) in before {
            if let now = after[roomId] {
                if now.token != head.token {
                    changes.append(RoomChange(roomId: roomId, roomToken: head.token, roomVersion: head.version, kind: .tokenRotated))
                } else if now.version != head.version {
                    changes.append(RoomChange(roomId: roomId, roomToken: now.token, roomVersion: now.version, kind: .updated))
                }
            } else {
                changes.append(RoomChange(roomId: roomId, roomToken: head.token, roomVersion: loaded.lastVersion, kind: .removed))
            }
        }
        for (roomId, head) in after where before[roomId] == nil {
            changes.append(RoomChange(roomId: roomId, roomToken: head.token, roomVersion: head.version, kind: .updated))
        }
        presence = loaded
        stale = false
        answerWaitingReads()
        return changes
    }

    /// A shared journal's session deadline read from the medium: the session is not due before it.
    public mutating func raiseDeadline(sessionId: String, to deadline: Int64, serverLost: Bool) {
        presence.raiseDeadline(sessionId: sessionId, to: deadline)
        if serverLost { presence.noteServerLost(sessionId: sessionId) }
    }

    /// Takes up to `limit` sessions memory believes due, for a journal that checks their stored deadlines.
    public mutating func takeDueSessionIds(now: Int64, limit: Int) -> [String] {
        presence.takeDueSessionIds(now: now, limit: limit)
    }

    mutating func answerWaitingReads() {
        let reads = waitingReads
        waitingReads.removeAll()
        for read in reads { read(presence) }
    }
}

/// What the engine counts for every journal (reported in `/metrics`).
public struct EngineCounters: Sendable {
    /// Batches the journal stored.
    public internal(set) var commits = 0
    /// Heartbeats that only moved a deadline in memory.
    public internal(set) var heartbeatsInMemory = 0
    /// Heartbeats that went through the writer.
    public internal(set) var heartbeatsStored = 0
}
