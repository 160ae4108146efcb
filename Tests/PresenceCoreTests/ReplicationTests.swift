import Testing
import PresenceTestSupport
@testable import PresenceCore

/// A process of a shared store applies the rows another process stored; after every batch
/// its copy must answer every read exactly as the writer's state does.
@Suite struct ReplicationTests {
    /// Everything a read can observe, in one comparable value.
    struct Observable: Equatable {
        var rooms: IDDictionary<[UserRecord]>
        var versions: IDDictionary<UInt64>
        var roomIdByToken: [String: String]
        var sessions: IDDictionary<String>
        var sessionOwners: [String: [String]]
        var statistics: PresenceStatistics
        var lastVersion: UInt64
        var userRooms: [String: [UserRoomStatus]]
        var sessionCounts: IDDictionary<Int>

        init(_ state: PresenceState) {
            rooms = state.rooms.mapValues { room in room.users.values.map(\.record).sorted(by: UserRecord.precedes) }
            versions = state.rooms.mapValues(\.version)
            roomIdByToken = state.roomIdByToken
            sessions = state.sessions.mapValues { "\($0.roomId)/\($0.userId)/\($0.token)/\($0.interval)/\($0.away)" }
            sessionOwners = Dictionary(uniqueKeysWithValues: state.rooms.flatMap { roomId, room in
                room.users.map { ("\(roomId)/\($0.key)", $0.value.sessionIds.sorted()) }
            })
            statistics = state.statistics
            lastVersion = state.lastVersion
            userRooms = Dictionary(uniqueKeysWithValues: state.roomIdsByUser.keys.map {
                ($0, state.userRooms(userId: $0, onlineOnly: false, limit: 1_000))
            })
            sessionCounts = state.sessionCountByUser
        }
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func aReplicaThatAppliesEveryBatchAnswersLikeTheWriter(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        var writer = PresenceState(tracksDurableChanges: true, quotas: .init(sessionsPerUser: 4, roomsPerUser: 3))
        var replica = PresenceState(quotas: writer.quotas)
        let rooms = ["a", "b", "c"]
        let users = ["u1", "u2", "u3", "u4"]
        var now: Int64 = 1_000
        for _ in 0..<300 {
            // A batch of one to five operations, as a group commit would take them.
            for _ in 0..<Int.random(in: 1...5, using: &random) {
                now += Int64.random(in: 0...4_000, using: &random)
                let room = rooms.randomElement(using: &random)!
                let user = users.randomElement(using: &random)!
                let sessionId = "s\(Int.random(in: 0..<10, using: &random))"
                switch Int.random(in: 0..<10, using: &random) {
                case 0..<4:
                    _ = try? beat(
                        &writer, room: room, user: user, session: sessionId,
                        interval: [2_000, 5_000].randomElement(using: &random)!, at: now,
                        name: Bool.random(using: &random) ? "N\(user)" : nil, away: [nil, true, false].randomElement(using: &random)!)
                case 4:
                    if let token = writer.sessions[sessionId]?.token { _ = writer.disconnect(sessionToken: token, now: now) }
                case 5:
                    _ = try? writer.updateRoomUser(roomId: room, userId: user, data: JSONValue.integer(now % 7), now: now)
                case 6:
                    _ = writer.expireDue(now: now, limit: 3)
                case 7:
                    _ = Int.random(in: 0..<4, using: &random) == 0
                        ? writer.removeRoom(roomId: room, now: now) : writer.removeRoomUser(roomId: room, userId: user, now: now)
                case 8:
                    _ = writer.rotateRoomToken(roomId: room)
                default:
                    _ = writer.forgetOfflineUsers(before: now - 3_000, limit: 2, now: now)
                }
            }
            replica.applyReplicated(writer.takeDurableChanges())
            #expect(Observable(replica) == Observable(writer))
            // A heartbeat that only extends a session writes no row (the store flushes deadlines on
            // its own), so the copy knows a deadline no later than the writer's, never a later one.
            for (sessionId, session) in writer.sessions {
                #expect(replica.sessions[sessionId]!.deadline <= session.deadline)
            }
        }
    }

    @Test func aReplicaExpiresAReplicatedSessionAtItsStoredDeadline() throws {
        var writer = PresenceState(tracksDurableChanges: true)
        var replica = PresenceState()
        _ = try beat(&writer, session: "s1", interval: 2_000, at: 0)
        replica.applyReplicated(writer.takeDurableChanges())
        #expect(replica.nextDeadline == 5_000)
        #expect(replica.takeDueSessionIds(now: 4_999, limit: 10).isEmpty)
        let due = replica.takeDueSessionIds(now: 5_000, limit: 10)
        let key = PresenceState.sessionKey(userId: "alice", sessionId: "s1")
        #expect(due == [key])
        // Another process heard from the session since: it is queued again, not expired.
        replica.raiseDeadline(sessionId: key, to: 9_000)
        let (expired, _) = replica.expire(sessionIds: due, now: 5_000)
        #expect(expired == 0)
        #expect(replica.nextDeadline == 9_000)
        let (later, outcome) = replica.expireDue(now: 9_000, limit: 10)
        #expect(later == 1)
        #expect(users(replica).map(\.lastDisconnected) == [9_000])
        #expect(outcome.changes.count == 1)
    }
}
