import HeapModule

/// The events a batch made, and the reads every store answers from the state.
extension PresenceState {
    // MARK: - Events

    /// Records the events between `before` and the user's record now, to be numbered when the
    /// room's version moves (`bumpVersion`, `removeRoom`).
    mutating func noteEvents(
        roomId: String, userId: String, before: UserRecord?, reason: PresenceEvent.LeaveReason = .disconnect, at: Int64
    ) {
        guard recordsEvents else { return }
        let after = rooms[roomId]?.users[userId]?.record
        let events = PresenceEvent.transitions(roomId: roomId, userId: userId, from: before, to: after, reason: reason, at: at)
        if !events.isEmpty { unversionedEvents[roomId, default: []].append(contentsOf: events) }
    }

    mutating func numberEvents(roomId: String, version: UInt64) {
        guard let events = unversionedEvents.removeValue(forKey: roomId) else { return }
        for var event in events {
            lastEventSequence += 1
            event.sequence = lastEventSequence
            event.roomVersion = version
            recordedEvents.append(event)
        }
    }

    /// The events recorded since the last call, in sequence order: a store writes them with the
    /// change that made them.
    public mutating func takeEvents() -> [PresenceEvent] {
        defer { recordedEvents.removeAll(keepingCapacity: true) }
        return recordedEvents
    }

    // MARK: - Reads

    public func roomId(forToken token: String) -> String? {
        roomIdByToken[token]
    }

    public func snapshot(roomToken: String, limit: Int) -> RoomSnapshot {
        guard let roomId = roomIdByToken[roomToken] else { return .empty }
        return roomUsers(roomId: roomId, onlineOnly: false, limit: limit)
    }

    public func roomUsers(roomId: String, onlineOnly: Bool, limit: Int) -> RoomSnapshot {
        guard let room = rooms[roomId] else { return .empty }
        return RoomSnapshot(
            roomVersion: room.version, users: room.users.first(limit, onlineOnly: onlineOnly), onlineCount: room.users.onlineCount,
            userCount: room.users.count)
    }

    public func userRooms(userId: String, onlineOnly: Bool, limit: Int) -> [UserRoomStatus] {
        guard let roomIds = roomIdsByUser[userId] else { return [] }
        var statuses: [UserRoomStatus] = []
        for roomId in roomIds {
            guard let record = rooms[roomId]?.users[userId]?.record else { continue }
            if onlineOnly, !record.online { continue }
            statuses.append(UserRoomStatus(roomId: roomId, online: record.online, lastDisconnected: record.lastDisconnected))
        }
        statuses.sort(by: UserRoomStatus.precedes)
        return Array(statuses.prefix(limit))
    }

    /// A user's presence across their rooms, from the per-user index: O(rooms of that user),
    /// never a scan of all rooms.
    public func userStatus(userId: String) -> UserStatus {
        let records = (roomIdsByUser[userId] ?? []).lazy.compactMap { self.rooms[$0]?.users[userId]?.record }
        return UserStatus(userId: userId, records: records)
    }

    public func session(userId: String, sessionId: String) -> Session? {
        sessions[Self.sessionKey(userId: userId, sessionId: sessionId)]
    }

    /// The session of a key (`sessionKey`).
    public func session(key: String) -> Session? {
        sessions[key]
    }

    /// The room and user of the live session with this token.
    public func sessionOwner(sessionToken: String) -> SessionOwner? {
        guard let sessionId = sessionIdByToken[sessionToken], let session = sessions[sessionId] else { return nil }
        return SessionOwner(roomId: session.roomId, userId: session.userId)
    }

    /// Each room's token and version: what a store compares to tell subscribers what a reload changed.
    public var roomHeads: IDDictionary<(token: String, version: UInt64)> {
        rooms.mapValues { ($0.token, $0.version) }
    }

    public var statistics: PresenceStatistics {
        PresenceStatistics(
            rooms: rooms.count, sessions: sessions.count, onlineUsers: onlineUserCount,
            userRecords: userRecordCount, lastEventSequence: lastEventSequence)
    }
}
