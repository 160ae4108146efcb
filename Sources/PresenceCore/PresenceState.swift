import HeapModule

/// The whole presence state machine as a value: rooms, their user records,
/// sessions, tokens and deadlines. Every operation takes the time as an argument,
/// so it is deterministic and tested without clocks; stores wrap it with locking
/// and (for durable stores) persistence.
///
/// Heartbeats are the hot path: a heartbeat of a live session only moves the
/// session's deadline. The deadline queue is lazy: a deadline that moves later
/// leaves its queue entry in place, and the entry is re-queued when it comes due.
///
/// ```swift
/// var state = PresenceState()
/// let outcome = try state.heartbeat(request, now: 1_000)
/// state.expireDue(now: 30_000, limit: 1_000)
/// ```
public struct PresenceState: Sendable {
    public struct Session: Sendable, Hashable {
        /// The session's key (`PresenceState.sessionKey`): its user's id and its own. Sessions,
        /// their rows and the replication log are keyed by it.
        public let sessionId: String
        public let roomId: String
        public let userId: String
        public let token: String
        public var interval: Int64
        public var deadline: Int64
        /// The deadline of this session's live entry in the queue; entries with another value are stale.
        var queuedDeadline: Int64
        /// What the session's last heartbeat with `away` said.
        public var away = false
        /// Restored by an embedded store on start and not heard from since: if it expires, the
        /// leave's reason is `expired_after_restart`.
        var restored = false
        /// The process that last heard from it is gone (a store shared by several processes says
        /// so): if it expires, the leave's reason is `server_lost`.
        var serverLost = false
    }

    struct RoomUser: Sendable {
        var record: UserRecord
        var sessionIds: [String] = []
    }

    struct Room: Sendable {
        let roomId: String
        var token: String
        var version: UInt64
        var users = RoomUsers()
    }

    struct DeadlineEntry: Comparable, Sendable {
        let deadline: Int64
        let sessionId: String
        static func < (a: DeadlineEntry, b: DeadlineEntry) -> Bool { a.deadline < b.deadline }
    }

    /// What a mutation did: the rooms whose records changed, for subscribers.
    public struct Outcome: Sendable {
        public var changes: [RoomChange] = []
        public init() {}
    }

    public struct HeartbeatOutcome: Sendable {
        public var tokens: SessionTokens
        /// Set when the heartbeat queued a deadline (a new session, or one that moved earlier):
        /// the expiry loop must wake if it sleeps past it.
        public var queuedDeadline: Int64?
        public var changes: [RoomChange]
    }

    // Keyed by ids as bytes (IDKey): Swift's String keys would make canonically equivalent ids one.
    var rooms: IDDictionary<Room> = [:]
    var roomIdByToken: [String: String] = [:]
    var sessions: IDDictionary<Session> = [:]
    var sessionIdByToken: [String: String] = [:]
    var roomIdsByUser: IDDictionary<IDSet> = [:]
    var deadlines = Heap<DeadlineEntry>()
    /// One counter for all rooms: a room's version is the counter value of its last change,
    /// so versions never go backwards, even for a room that is removed and created again.
    public internal(set) var lastVersion: UInt64 = 0
    var onlineUserCount = 0
    /// Kept as it changes, so `statistics` (read by every `/health` and `/metrics`) is O(1).
    var userRecordCount = 0
    let makeToken: @Sendable (String) -> String
    /// Keys whose durable state changed since the last `takeDurableChanges()`; nil when not tracked.
    var touched: TouchedKeys?
    public var quotas: UserQuotas
    var sessionCountByUser: IDDictionary<Int> = [:]
    /// Whether transitions are recorded as `PresenceEvent`s (stores turn it on; tests of the
    /// state machine alone need not pay for it).
    let recordsEvents: Bool
    /// Events of changes whose room version is not yet known, by room: `bumpVersion` numbers them.
    var unversionedEvents: IDDictionary<[PresenceEvent]> = [:]
    var recordedEvents: [PresenceEvent] = []
    /// The counter behind event ids; stored by durable stores like `lastVersion`.
    public internal(set) var lastEventSequence: UInt64 = 0

    /// Per-user caps that keep one user (or a leaked token) from filling the server.
    public struct UserQuotas: Sendable, Hashable {
        /// Live sessions one user may hold across all rooms.
        public var sessionsPerUser: Int
        /// Rooms one user may be online in at once.
        public var roomsPerUser: Int
        public init(sessionsPerUser: Int = 100, roomsPerUser: Int = 100) {
            self.sessionsPerUser = sessionsPerUser
            self.roomsPerUser = roomsPerUser
        }
    }

    /// - Parameter tracksDurableChanges: durable stores set this and drain `takeDurableChanges()` after each batch.
    public init(
        tracksDurableChanges: Bool = false, recordsEvents: Bool = false, quotas: UserQuotas = UserQuotas(),
        makeToken: @escaping @Sendable (String) -> String = Tokens.make(prefix:)
    ) {
        self.makeToken = makeToken
        self.quotas = quotas
        self.touched = tracksDurableChanges ? TouchedKeys() : nil
        self.recordsEvents = recordsEvents
    }

    struct UserKey: Hashable, Sendable {
        let roomId: String
        let userId: String

        static func == (a: UserKey, b: UserKey) -> Bool { a.roomId.isSameID(as: b.roomId) && a.userId.isSameID(as: b.userId) }

        func hash(into hasher: inout Hasher) {
            hasher.combine(IDKey(roomId))
            hasher.combine(IDKey(userId))
        }
    }

    struct TouchedKeys: Sendable {
        var rooms = IDSet()
        var users = Set<UserKey>()
        var sessions = IDSet()
    }

    mutating func touchRoom(_ roomId: String) { touched?.rooms.insert(roomId) }
    mutating func touchUser(_ roomId: String, _ userId: String) { touched?.users.insert(UserKey(roomId: roomId, userId: userId)) }
    mutating func touchSession(_ sessionId: String) { touched?.sessions.insert(sessionId) }

    // MARK: - Heartbeat, disconnect, expiry

    /// The key of a user's session: a session id belongs to its user, so no user can take (or
    /// block) another's by naming it. Ids hold no control characters, so U+001F between them
    /// keeps every pair apart.
    public static func sessionKey(userId: String, sessionId: String) -> String {
        userId + "\u{1F}" + sessionId
    }

    public mutating func heartbeat(_ request: HeartbeatRequest, now: Int64) throws(PresenceError) -> HeartbeatOutcome {
        let deadline = ProtocolLimits.deadline(now: now, interval: request.interval)
        if let index = sessions.index(forKey: request.sessionKey) {
            let session = sessions.values[index]
            guard session.roomId.isSameID(as: request.roomId) else {
                throw .sessionConflict("sessionId \(request.sessionId) is alive in another room of this user's")
            }
            if session.interval != request.interval { touchSession(session.sessionId) }
            sessions.values[index].interval = request.interval
            var sessionAwayChanged = false
            if let away = request.away, away != session.away {
                sessions.values[index].away = away
                sessionAwayChanged = true
                touchSession(session.sessionId)
            }
            let queued = hear(sessionAt: index, deadline: deadline)
            var changes: [RoomChange] = []
            // Copying the record costs the hot path; only a heartbeat that may change it needs it.
            let recordBefore = recordsEvents && (request.name != nil || request.image != nil || sessionAwayChanged)
                ? rooms[request.roomId]!.users[request.userId]!.record : nil
            let profileChanged = applyProfile(request, roomId: request.roomId)
            // The user's away state can only follow a change of this session's: the hot path skips it.
            let awayChanged = sessionAwayChanged && refreshAway(roomId: request.roomId, userId: request.userId, at: now)
            if profileChanged || awayChanged {
                touchUser(request.roomId, request.userId)
                noteEvents(roomId: request.roomId, userId: request.userId, before: recordBefore, at: now)
                changes.append(bumpVersion(roomId: request.roomId))
            }
            return HeartbeatOutcome(
                tokens: SessionTokens(roomToken: rooms[request.roomId]!.token, sessionToken: session.token),
                queuedDeadline: queued, changes: changes)
        }

        try checkLimits(for: request)
        if rooms[request.roomId] == nil {
            let token = makeToken("r_")
            rooms[request.roomId] = Room(roomId: request.roomId, token: token, version: 0)
            touchRoom(request.roomId)
            roomIdByToken[token] = request.roomId
        }
        let session = Session(
            sessionId: request.sessionKey, roomId: request.roomId, userId: request.userId,
            token: makeToken("s_"), interval: request.interval, deadline: deadline, queuedDeadline: deadline,
            away: request.away ?? false)
        sessions[session.sessionId] = session
        sessionIdByToken[session.token] = session.sessionId
        sessionCountByUser[session.userId, default: 0] += 1
        touchSession(session.sessionId)
        deadlines.insert(DeadlineEntry(deadline: deadline, sessionId: session.sessionId))

        let recordBefore = rooms[request.roomId]!.users[request.userId]?.record
        var changed = false
        if var user = rooms[request.roomId]!.users[request.userId] {
            if !user.record.online {
                user.record.online = true
                user.record.onlineSince = now
                user.record.lastDisconnected = 0
                onlineUserCount += 1
                changed = true
            }
            user.sessionIds.append(session.sessionId)
            rooms[request.roomId]!.users[request.userId] = user
        } else {
            let record = UserRecord(userId: request.userId, online: true, lastDisconnected: 0, onlineSince: now)
            rooms[request.roomId]!.users[request.userId] = RoomUser(record: record, sessionIds: [session.sessionId])
            if roomIdsByUser[request.userId, default: []].insert(request.roomId).inserted { userRecordCount += 1 }
            onlineUserCount += 1
            changed = true
        }
        if applyProfile(request, roomId: request.roomId) { changed = true }
        if refreshAway(roomId: request.roomId, userId: request.userId, at: now) { changed = true }
        if changed {
            touchUser(request.roomId, request.userId)
            noteEvents(roomId: request.roomId, userId: request.userId, before: recordBefore, at: now)
        }
        let changes = changed ? [bumpVersion(roomId: request.roomId)] : []
        return HeartbeatOutcome(
            tokens: SessionTokens(roomToken: rooms[request.roomId]!.token, sessionToken: session.token),
            queuedDeadline: deadline, changes: changes)
    }

    /// A new session must fit the user's caps; refusing it changes nothing.
    private func checkLimits(for request: HeartbeatRequest) throws(PresenceError) {
        if sessionCountByUser[request.userId, default: 0] >= quotas.sessionsPerUser {
            throw .rateLimited("user \(request.userId) already has \(quotas.sessionsPerUser) live sessions")
        }
        let alreadyOnlineHere = rooms[request.roomId]?.users[request.userId]?.sessionIds.isEmpty == false
        if !alreadyOnlineHere {
            let onlineRooms = roomIdsByUser[request.userId, default: []].count { roomId in
                rooms[roomId]?.users[request.userId]?.sessionIds.isEmpty == false
            }
            if onlineRooms >= quotas.roomsPerUser {
                throw .rateLimited("user \(request.userId) is already online in \(quotas.roomsPerUser) rooms")
            }
        }
    }

    /// Drops the indexes of a session already removed from `sessions`.
    mutating func forgetSession(_ session: Session, touching: Bool = true) {
        sessionIdByToken.removeValue(forKey: session.token)
        if touching { touchSession(session.sessionId) }
        let remaining = sessionCountByUser[session.userId, default: 1] - 1
        sessionCountByUser[session.userId] = remaining > 0 ? remaining : nil
    }

    /// A live session was heard from: its deadline moves, and is queued when it moved earlier (the
    /// deadline returned; nil when the queue's entry still covers it). Changed in place: this is
    /// every live session's heartbeat.
    mutating func hear(sessionAt index: IDDictionary<Session>.Storage.Index, deadline: Int64) -> Int64? {
        sessions.values[index].deadline = deadline
        sessions.values[index].restored = false
        sessions.values[index].serverLost = false
        guard deadline < sessions.values[index].queuedDeadline else { return nil }
        sessions.values[index].queuedDeadline = deadline
        deadlines.insert(DeadlineEntry(deadline: deadline, sessionId: sessions.values[index].sessionId))
        return deadline
    }

    /// Applies a heartbeat's `name` and `image` when they differ from what is stored.
    private mutating func applyProfile(_ request: HeartbeatRequest, roomId: String) -> Bool {
        guard request.name != nil || request.image != nil else { return false }
        var changed = false
        let userId = request.userId
        if let name = request.name, rooms[roomId]!.users[userId]!.record.name != name {
            rooms[roomId]!.users[userId]!.record.name = name
            changed = true
        }
        if let image = request.image, rooms[roomId]!.users[userId]!.record.image != image {
            rooms[roomId]!.users[userId]!.record.image = image
            changed = true
        }
        return changed
    }

    mutating func bumpVersion(roomId: String) -> RoomChange {
        lastVersion += 1
        rooms[roomId]!.version = lastVersion
        touchRoom(roomId)
        numberEvents(roomId: roomId, version: lastVersion)
        let room = rooms[roomId]!
        return RoomChange(roomId: roomId, roomToken: room.token, roomVersion: lastVersion, kind: .updated)
    }

    /// Ends the session with this token at `now`. An unknown token changes nothing.
    public mutating func disconnect(sessionToken: String, now: Int64) -> Outcome {
        var outcome = Outcome()
        guard let sessionId = sessionIdByToken[sessionToken] else { return outcome }
        if let roomId = endSession(sessionId, at: now, reason: .disconnect) {
            outcome.changes.append(bumpVersion(roomId: roomId))
        }
        return outcome
    }

    /// Removes a session; returns the room id when that changed its user's record: offline, or
    /// away because the sessions left are all away.
    private mutating func endSession(_ sessionId: String, at time: Int64, reason: PresenceEvent.LeaveReason) -> String? {
        guard let session = sessions.removeValue(forKey: sessionId) else { return nil }
        forgetSession(session)
        guard var user = rooms[session.roomId]?.users[session.userId] else { return nil }
        let recordBefore = user.record
        user.sessionIds.removeAll { $0.isSameID(as: sessionId) }
        var changed = false
        if user.sessionIds.isEmpty, user.record.online {
            user.record.online = false
            user.record.onlineSince = 0
            user.record.lastDisconnected = time
            onlineUserCount -= 1
            changed = true
        }
        rooms[session.roomId]!.users[session.userId] = user
        if refreshAway(roomId: session.roomId, userId: session.userId, at: time) { changed = true }
        if changed {
            touchUser(session.roomId, session.userId)
            noteEvents(roomId: session.roomId, userId: session.userId, before: recordBefore, reason: reason, at: time)
        }
        return changed ? session.roomId : nil
    }

    /// Whether the user should show as away: online, and every live session in the room away.
    private func isAway(_ user: RoomUser) -> Bool {
        user.record.online && !user.sessionIds.isEmpty && user.sessionIds.allSatisfy { sessions[$0]?.away == true }
    }

    /// Brings the record's `away` and `awaySince` in line with its sessions; true when they changed.
    mutating func refreshAway(roomId: String, userId: String, at time: Int64) -> Bool {
        guard let user = rooms[roomId]?.users[userId] else { return false }
        let away = isAway(user)
        guard away != user.record.away else { return false }
        rooms[roomId]!.users[userId]!.record.away = away
        rooms[roomId]!.users[userId]!.record.awaySince = away ? time : 0
        return true
    }

    /// The earliest queued deadline (possibly of a session whose deadline has since moved later).
    public var nextDeadline: Int64? { deadlines.min?.deadline }

    /// Expires up to `limit` sessions whose deadline is at or before `now`; a user whose last
    /// session expires goes offline with `lastDisconnected` = that session's deadline.
    /// Each affected room changes once per call, however many of its users went offline.
    public mutating func expireDue(now: Int64, limit: Int) -> (expired: Int, outcome: Outcome) {
        expire(sessionIds: takeDueSessionIds(now: now, limit: limit), now: now)
    }

    /// Takes up to `limit` sessions due at `now` off the deadline queue, for a store that must
    /// check them elsewhere first (another process may have heard from them); `expire(sessionIds:now:)`
    /// ends them or puts them back.
    public mutating func takeDueSessionIds(now: Int64, limit: Int) -> [String] {
        var due: [String] = []
        var examined = 0
        // Stale entries are examined too; bound them so one call stays short.
        while due.count < limit, examined < limit * 4, let top = deadlines.min, top.deadline <= now {
            examined += 1
            let entry = deadlines.removeMin()
            guard var session = sessions[entry.sessionId], session.queuedDeadline == entry.deadline else { continue }
            if session.deadline > now {
                requeue(&session)
                continue
            }
            due.append(session.sessionId)
        }
        if due.count < limit { requeueMovedDeadlines(through: now + Self.requeueAhead) }
        return due
    }

    /// How far past `now` an expiry step puts moved deadlines back in the queue.
    static let requeueAhead: Int64 = 1_000

    /// Puts the queue's entries up to `horizon` whose session has heard a heartbeat since (or has
    /// ended) back at the deadline they have now, stopping at the first that is still its session's
    /// deadline. A session is queued at its deadline of the moment and heartbeats do not touch the
    /// queue, so every live session's entry comes due once per timeout; taken one by one, 15,000
    /// sessions heartbeating every 10 s woke the expiry loop about 600 times a second. Real
    /// deadlines stay exact: only entries that would be put back anyway are taken early.
    private mutating func requeueMovedDeadlines(through horizon: Int64) {
        while let top = deadlines.min, top.deadline <= horizon {
            guard var session = sessions[top.sessionId], session.queuedDeadline == top.deadline else {
                deadlines.removeMin()
                continue
            }
            guard session.deadline > top.deadline else { return }
            deadlines.removeMin()
            requeue(&session)
        }
    }

    private mutating func requeue(_ session: inout Session) {
        session.queuedDeadline = session.deadline
        sessions[session.sessionId] = session
        deadlines.insert(DeadlineEntry(deadline: session.deadline, sessionId: session.sessionId))
    }

    /// Marks a session whose process was lost: an expiry that follows is reported as `server_lost`.
    public mutating func noteServerLost(sessionId: String) {
        sessions[sessionId]?.serverLost = true
    }

    /// Moves a session's deadline later (never earlier): what another process heard from it.
    public mutating func raiseDeadline(sessionId: String, to deadline: Int64) {
        guard let session = sessions[sessionId], deadline > session.deadline else { return }
        sessions[sessionId]!.deadline = deadline
    }

    /// Ends those of `sessionIds` (taken by `takeDueSessionIds`) whose deadline is still at or
    /// before `now`, and queues the others again.
    public mutating func expire(sessionIds: [String], now: Int64) -> (expired: Int, outcome: Outcome) {
        var expired = 0
        var roomsWentOffline: [String] = []
        var seenRooms = IDSet()
        for sessionId in sessionIds {
            guard var session = sessions[sessionId] else { continue }
            if session.deadline > now {
                requeue(&session)
                continue
            }
            expired += 1
            let reason: PresenceEvent.LeaveReason =
                session.restored ? .expiredAfterRestart : session.serverLost ? .serverLost : .timeout
            if let roomId = endSession(session.sessionId, at: session.deadline, reason: reason), seenRooms.insert(roomId).inserted {
                roomsWentOffline.append(roomId)
            }
        }
        var outcome = Outcome()
        for roomId in roomsWentOffline {
            outcome.changes.append(bumpVersion(roomId: roomId))
        }
        return (expired, outcome)
    }

    /// True when sessions are due at `now` (the next `expireDue` has work).
    public func hasDue(now: Int64) -> Bool {
        guard let next = nextDeadline else { return false }
        return next <= now
    }
}
