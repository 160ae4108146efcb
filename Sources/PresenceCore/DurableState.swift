/// The durable part of presence, as rows: what a durable store writes after a
/// batch of operations and reads back on start. Deadlines are not durable.
public struct DurableChanges: Sendable, Equatable {
    public struct RoomRow: Sendable, Equatable {
        public var roomId: String
        public var token: String
        public var version: UInt64
        public init(roomId: String, token: String, version: UInt64) {
            self.roomId = roomId
            self.token = token
            self.version = version
        }
    }

    public struct UserRow: Sendable, Equatable {
        public var roomId: String
        public var record: UserRecord
        public init(roomId: String, record: UserRecord) {
            self.roomId = roomId
            self.record = record
        }
    }

    public struct SessionRow: Sendable, Equatable {
        public var sessionId: String
        public var roomId: String
        public var userId: String
        public var token: String
        public var interval: Int64
        public var away: Bool
        /// The session's deadline when the row was taken; a store shared by several processes keeps
        /// it, the embedded one does not (it grants a grace period on start instead).
        public var deadline: Int64
        public init(
            sessionId: String, roomId: String, userId: String, token: String, interval: Int64, away: Bool = false,
            deadline: Int64 = 0
        ) {
            self.sessionId = sessionId
            self.roomId = roomId
            self.userId = userId
            self.token = token
            self.interval = interval
            self.away = away
            self.deadline = deadline
        }
    }

    public var deletedRooms: [String] = []
    public var rooms: [RoomRow] = []
    public var deletedUsers: [(roomId: String, userId: String)] = []
    public var users: [UserRow] = []
    public var deletedSessions: [String] = []
    public var sessions: [SessionRow] = []
    public var lastVersion: UInt64 = 0
    /// The events of the batch, written in the same commit as its rows.
    public var events: [PresenceEvent] = []
    public var lastEventSequence: UInt64 = 0

    public init() {}

    public var isEmpty: Bool {
        deletedRooms.isEmpty && rooms.isEmpty && deletedUsers.isEmpty && users.isEmpty && deletedSessions.isEmpty
            && sessions.isEmpty && events.isEmpty
    }

    public static func == (a: DurableChanges, b: DurableChanges) -> Bool {
        a.deletedRooms == b.deletedRooms && a.rooms == b.rooms && a.users == b.users
            && a.deletedUsers.map { [$0.roomId, $0.userId] } == b.deletedUsers.map { [$0.roomId, $0.userId] }
            && a.deletedSessions == b.deletedSessions && a.sessions == b.sessions && a.lastVersion == b.lastVersion
            && a.events == b.events && a.lastEventSequence == b.lastEventSequence
    }
}

extension PresenceState {
    /// The rows to write for everything touched since the last call: the current value of
    /// each touched key, or its deletion when it no longer exists.
    public mutating func takeDurableChanges() -> DurableChanges {
        guard let keys = touched else { return DurableChanges() }
        touched = TouchedKeys()
        var changes = DurableChanges()
        changes.lastVersion = lastVersion
        changes.events = takeEvents()
        changes.lastEventSequence = lastEventSequence
        for roomId in keys.rooms.sorted() {
            if let room = rooms[roomId] {
                changes.rooms.append(.init(roomId: roomId, token: room.token, version: room.version))
            } else {
                changes.deletedRooms.append(roomId)
            }
        }
        for key in keys.users {
            if let user = rooms[key.roomId]?.users[key.userId] {
                changes.users.append(.init(roomId: key.roomId, record: user.record))
            } else {
                changes.deletedUsers.append((key.roomId, key.userId))
            }
        }
        for sessionId in keys.sessions {
            if let session = sessions[sessionId] {
                changes.sessions.append(
                    .init(sessionId: sessionId, roomId: session.roomId, userId: session.userId, token: session.token,
                          interval: session.interval, away: session.away, deadline: session.deadline))
            } else {
                changes.deletedSessions.append(sessionId)
            }
        }
        return changes
    }

    /// The session ids touched since the last `takeDurableChanges()`, i.e. not yet stored.
    public var unstoredSessionIds: IDSet { touched?.sessions ?? [] }

    /// Puts a live session's row into the next `takeDurableChanges()` although nothing in it
    /// changed but its deadline, which a store shared by several processes must then store.
    public mutating func markSessionUnstored(_ sessionId: String) {
        guard sessions[sessionId] != nil else { return }
        touchSession(sessionId)
    }

    /// Rebuilds the state a durable store saved.
    ///
    /// Deadlines were not saved. A session gets a grace deadline of 2.5 × its interval from
    /// `now`, so clients that come back in time never flicker offline, unless the store was
    /// last known alive (`aliveAt`) so long ago that the session would have expired anyway:
    /// then its deadline is the latest it could have had, and the expiry loop ends it at once.
    /// With `storedDeadlines` (a store that other processes kept serving) each session keeps
    /// the deadline of its row instead.
    public static func restoring(
        rooms roomRows: [DurableChanges.RoomRow], users userRows: [DurableChanges.UserRow],
        sessions sessionRows: [DurableChanges.SessionRow], lastVersion: UInt64, lastEventSequence: UInt64 = 0,
        aliveAt: Int64?, now: Int64, storedDeadlines: Bool = false,
        quotas: UserQuotas = UserQuotas(), makeToken: @escaping @Sendable (String) -> String = Tokens.make(prefix:)
    ) -> PresenceState {
        var state = PresenceState(tracksDurableChanges: true, recordsEvents: true, quotas: quotas, makeToken: makeToken)
        state.lastVersion = lastVersion
        state.lastEventSequence = lastEventSequence
        for row in roomRows {
            state.rooms[row.roomId] = Room(roomId: row.roomId, token: row.token, version: row.version)
            state.roomIdByToken[row.token] = row.roomId
            state.lastVersion = max(state.lastVersion, row.version)
        }
        for row in userRows {
            guard state.rooms[row.roomId] != nil else { continue }
            state.rooms[row.roomId]!.users[row.record.userId] = RoomUser(record: row.record)
            if state.roomIdsByUser[row.record.userId, default: []].insert(row.roomId).inserted { state.userRecordCount += 1 }
        }
        for row in sessionRows {
            guard state.rooms[row.roomId]?.users[row.userId] != nil else { continue }
            var deadline = storedDeadlines ? row.deadline : ProtocolLimits.deadline(now: now, interval: row.interval)
            if !storedDeadlines, let aliveAt, ProtocolLimits.deadline(now: aliveAt, interval: row.interval) < now {
                deadline = ProtocolLimits.deadline(now: aliveAt, interval: row.interval)
            }
            let session = Session(
                sessionId: row.sessionId, roomId: row.roomId, userId: row.userId, token: row.token,
                interval: row.interval, deadline: deadline, queuedDeadline: deadline, away: row.away,
                restored: !storedDeadlines)
            state.sessions[row.sessionId] = session
            state.sessionIdByToken[row.token] = row.sessionId
            state.sessionCountByUser[row.userId, default: 0] += 1
            state.rooms[row.roomId]!.users[row.userId]!.sessionIds.append(row.sessionId)
            state.deadlines.insert(DeadlineEntry(deadline: deadline, sessionId: row.sessionId))
        }
        // A record that says online must have a session, and one with a session must say online.
        for roomId in Array(state.rooms.keys) {
            var roomChanged = false
            for (userId, user) in state.rooms[roomId]!.users {
                var record = user.record
                if record.online, user.sessionIds.isEmpty {
                    record.online = false
                    record.onlineSince = 0
                    record.lastDisconnected = aliveAt ?? now
                } else if !record.online, !user.sessionIds.isEmpty {
                    record.online = true
                    record.onlineSince = now
                    record.lastDisconnected = 0
                }
                state.rooms[roomId]!.users[userId]!.record = record
                _ = state.refreshAway(roomId: roomId, userId: userId, at: now)
                if state.rooms[roomId]!.users[userId]!.record != user.record {
                    state.touchUser(roomId, userId)
                    state.touchRoom(roomId)
                    state.noteEvents(
                        roomId: roomId, userId: userId, before: user.record, reason: .expiredAfterRestart, at: now)
                    roomChanged = true
                }
                if record.online { state.onlineUserCount += 1 }
            }
            // A store shared by several processes never stores such a record: only the embedded one
            // can find one, and it alone owns the version counter it moves here.
            if roomChanged, !storedDeadlines { _ = state.bumpVersion(roomId: roomId) }
        }
        state.unversionedEvents.removeAll()
        return state
    }

    /// Applies the rows of a batch that another process stored (its `takeDurableChanges()`), so
    /// this copy becomes what that process held after the batch. Replicated rows are not tracked
    /// as touched: they are stored already.
    public mutating func applyReplicated(_ changes: DurableChanges) {
        for sessionId in changes.deletedSessions { removeReplicatedSession(sessionId) }
        for user in changes.deletedUsers { removeReplicatedUser(roomId: user.roomId, userId: user.userId) }
        for roomId in changes.deletedRooms {
            guard let room = rooms[roomId] else { continue }
            for userId in room.users.keys { removeReplicatedUser(roomId: roomId, userId: userId) }
            rooms.removeValue(forKey: roomId)
            roomIdByToken.removeValue(forKey: room.token)
        }
        for row in changes.rooms {
            if let room = rooms[row.roomId] {
                if room.token != row.token {
                    roomIdByToken.removeValue(forKey: room.token)
                    roomIdByToken[row.token] = row.roomId
                    rooms[row.roomId]!.token = row.token
                }
                rooms[row.roomId]!.version = row.version
            } else {
                rooms[row.roomId] = Room(roomId: row.roomId, token: row.token, version: row.version)
                roomIdByToken[row.token] = row.roomId
            }
        }
        for row in changes.users {
            let userId = row.record.userId
            guard rooms[row.roomId] != nil else { continue }
            if let existing = rooms[row.roomId]!.users[userId] {
                if existing.record.online != row.record.online { onlineUserCount += row.record.online ? 1 : -1 }
                rooms[row.roomId]!.users[userId]!.record = row.record
            } else {
                rooms[row.roomId]!.users[userId] = RoomUser(record: row.record)
                if roomIdsByUser[userId, default: []].insert(row.roomId).inserted { userRecordCount += 1 }
                if row.record.online { onlineUserCount += 1 }
            }
        }
        for row in changes.sessions {
            guard rooms[row.roomId]?.users[row.userId] != nil else { continue }
            if let existing = sessions[row.sessionId] {
                if existing.token == row.token, existing.roomId.isSameID(as: row.roomId), existing.userId.isSameID(as: row.userId) {
                    if existing.interval != row.interval {
                        // The heartbeat that changed the interval is the latest: its deadline stands, even if earlier.
                        sessions[row.sessionId]!.deadline = row.deadline
                        if row.deadline < existing.queuedDeadline {
                            sessions[row.sessionId]!.queuedDeadline = row.deadline
                            deadlines.insert(DeadlineEntry(deadline: row.deadline, sessionId: row.sessionId))
                        }
                    } else {
                        raiseDeadline(sessionId: row.sessionId, to: row.deadline)
                    }
                    sessions[row.sessionId]!.interval = row.interval
                    sessions[row.sessionId]!.away = row.away
                    continue
                }
                // Ended and started again within the batch: a new session under the same id.
                removeReplicatedSession(row.sessionId)
            }
            let session = Session(
                sessionId: row.sessionId, roomId: row.roomId, userId: row.userId, token: row.token,
                interval: row.interval, deadline: row.deadline, queuedDeadline: row.deadline, away: row.away)
            sessions[row.sessionId] = session
            sessionIdByToken[row.token] = row.sessionId
            sessionCountByUser[row.userId, default: 0] += 1
            rooms[row.roomId]!.users[row.userId]!.sessionIds.append(row.sessionId)
            deadlines.insert(DeadlineEntry(deadline: row.deadline, sessionId: row.sessionId))
        }
        lastVersion = max(lastVersion, changes.lastVersion)
        lastEventSequence = max(lastEventSequence, changes.lastEventSequence)
    }

    private mutating func removeReplicatedSession(_ sessionId: String) {
        guard let session = sessions.removeValue(forKey: sessionId) else { return }
        forgetSession(session, touching: false)
        rooms[session.roomId]?.users[session.userId]?.sessionIds.removeAll { $0.isSameID(as: sessionId) }
    }

    private mutating func removeReplicatedUser(roomId: String, userId: String) {
        guard let user = rooms[roomId]?.users.removeValue(forKey: userId) else { return }
        for sessionId in user.sessionIds {
            if let session = sessions.removeValue(forKey: sessionId) { forgetSession(session, touching: false) }
        }
        if user.record.online { onlineUserCount -= 1 }
        forgetRoom(roomId, ofUser: userId)
    }

    /// A heartbeat that only moves the deadline of a live, stored session: nil when the
    /// heartbeat would change anything durable (new session, interval, profile) and must
    /// go through the store's write path instead.
    ///
    /// One look-up of the session, its room and its user each: what `heartbeat` does for such a
    /// session, without the checks and copies a heartbeat that changes something needs.
    public mutating func extendLiveSession(_ request: HeartbeatRequest, now: Int64) -> HeartbeatOutcome? {
        guard let index = sessions.index(forKey: request.sessionKey) else { return nil }
        let session = sessions.values[index]
        guard session.roomId.isSameID(as: request.roomId), session.interval == request.interval,
            request.away == nil || request.away == session.away,
            touched?.sessions.contains(request.sessionKey) != true,
            let room = rooms[request.roomId], let record = room.users[request.userId]?.record,
            request.name == nil || request.name == record.name,
            request.image == nil || request.image == record.image
        else { return nil }
        let queued = hear(sessionAt: index, deadline: ProtocolLimits.deadline(now: now, interval: request.interval))
        return HeartbeatOutcome(tokens: SessionTokens(roomToken: room.token, sessionToken: session.token), queuedDeadline: queued, changes: [])
    }
}
