import HeapModule

/// Data changes and removals: the admin's and a session's changes besides heartbeats.
extension PresenceState {
    // MARK: - Data

    /// Sets `data` of the user whose live session holds this token. `nil` clears it.
    public mutating func update(sessionToken: String, data: JSONValue?, now: Int64) throws(PresenceError) -> Outcome {
        guard let sessionId = sessionIdByToken[sessionToken], let session = sessions[sessionId] else {
            throw .notFound("no live session has this session token")
        }
        return setData(roomId: session.roomId, userId: session.userId, data: data, now: now)
    }

    /// Sets `data` of a user who has been in the room. `nil` clears it.
    public mutating func updateRoomUser(roomId: String, userId: String, data: JSONValue?, now: Int64) throws(PresenceError) -> Outcome {
        guard rooms[roomId]?.users[userId] != nil else {
            throw .notFound("user \(userId) has never been in room \(roomId)")
        }
        return setData(roomId: roomId, userId: userId, data: data, now: now)
    }

    private mutating func setData(roomId: String, userId: String, data: JSONValue?, now: Int64) -> Outcome {
        var outcome = Outcome()
        let recordBefore = rooms[roomId]!.users[userId]!.record
        guard recordBefore.data != data else { return outcome }
        rooms[roomId]!.users[userId]!.record.data = data
        touchUser(roomId, userId)
        noteEvents(roomId: roomId, userId: userId, before: recordBefore, at: now)
        outcome.changes.append(bumpVersion(roomId: roomId))
        return outcome
    }

    // MARK: - Removal

    public mutating func removeRoomUser(roomId: String, userId: String, now: Int64) -> Outcome {
        var outcome = Outcome()
        guard let user = rooms[roomId]?.users.removeValue(forKey: userId) else { return outcome }
        forgetRemovedUser(user, roomId: roomId, userId: userId, reason: .removed, at: now)
        outcome.changes.append(bumpVersion(roomId: roomId))
        return outcome
    }

    public mutating func removeRoom(roomId: String, now: Int64) -> Outcome {
        var outcome = Outcome()
        guard let room = rooms.removeValue(forKey: roomId) else { return outcome }
        roomIdByToken.removeValue(forKey: room.token)
        touchRoom(roomId)
        let userIds = recordsEvents ? room.users.keys.sorted() : Array(room.users.keys)
        for userId in userIds {
            forgetRemovedUser(room.users[userId]!, roomId: roomId, userId: userId, reason: .roomRemoved, at: now)
        }
        lastVersion += 1
        numberEvents(roomId: roomId, version: lastVersion)
        outcome.changes.append(RoomChange(roomId: roomId, roomToken: room.token, roomVersion: lastVersion, kind: .removed))
        return outcome
    }

    /// Forgets up to `limit` offline users who went offline before `cutoff` (retention), and rooms
    /// left with nobody in them. Returns how many records it forgot.
    public mutating func forgetOfflineUsers(before cutoff: Int64, limit: Int, now: Int64) -> (forgotten: Int, outcome: Outcome) {
        var outcome = Outcome()
        var forgotten = 0
        for roomId in Array(rooms.keys) where forgotten < limit {
            // From the room's order: O(users forgotten), not a look at every user.
            let stale = rooms[roomId]!.users.offline(leftBefore: cutoff, limit: limit - forgotten)
                .filter { rooms[roomId]!.users[$0]?.sessionIds.isEmpty == true }
            guard !stale.isEmpty else { continue }
            for userId in stale {
                let removed = rooms[roomId]!.users.removeValue(forKey: userId)
                touchUser(roomId, userId)
                noteEvents(roomId: roomId, userId: userId, before: removed?.record, reason: .removed, at: now)
                forgetRoom(roomId, ofUser: userId)
                forgotten += 1
            }
            if rooms[roomId]!.users.isEmpty {
                outcome.changes.append(contentsOf: removeRoom(roomId: roomId, now: now).changes)
            } else {
                outcome.changes.append(bumpVersion(roomId: roomId))
            }
        }
        return (forgotten, outcome)
    }

    /// Gives the room a new token: the old one stops working for reads and subscriptions at
    /// once; live members get the new one with their next heartbeat. Nil for an unknown room.
    public mutating func rotateRoomToken(roomId: String) -> (token: String, outcome: Outcome)? {
        guard let room = rooms[roomId] else { return nil }
        let token = makeToken("r_")
        roomIdByToken.removeValue(forKey: room.token)
        roomIdByToken[token] = roomId
        rooms[roomId]!.token = token
        touchRoom(roomId)
        var outcome = Outcome()
        outcome.changes.append(RoomChange(roomId: roomId, roomToken: room.token, roomVersion: room.version, kind: .tokenRotated))
        return (token, outcome)
    }

    /// Forgets a user already taken out of `roomId` (or with the room): the leave events, the
    /// user's sessions, the online count and the user's index of rooms.
    private mutating func forgetRemovedUser(
        _ user: RoomUser, roomId: String, userId: String, reason: PresenceEvent.LeaveReason, at now: Int64
    ) {
        touchUser(roomId, userId)
        noteEvents(roomId: roomId, userId: userId, before: user.record, reason: reason, at: now)
        for sessionId in user.sessionIds {
            if let session = sessions.removeValue(forKey: sessionId) { forgetSession(session) }
        }
        if user.record.online { onlineUserCount -= 1 }
        forgetRoom(roomId, ofUser: userId)
    }

    mutating func forgetRoom(_ roomId: String, ofUser userId: String) {
        if roomIdsByUser[userId]?.remove(roomId) != nil { userRecordCount -= 1 }
        if roomIdsByUser[userId]?.isEmpty == true { roomIdsByUser.removeValue(forKey: userId) }
    }
}
