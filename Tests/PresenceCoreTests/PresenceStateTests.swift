import Testing
import PresenceTestSupport
@testable import PresenceCore

/// The state machine with time passed in: every behaviour of the presence engine, no clock.
@Suite struct PresenceStateTests {
    let t0: Int64 = 1_000_000

    @Test func heartbeatCreatesAnOnlineRecordAndStableRoomToken() throws {
        var state = PresenceState()
        let first = try beat(&state, user: "alice", session: "a1", at: t0)
        let second = try beat(&state, user: "bob", session: "b1", at: t0 + 5)
        #expect(first.tokens.roomToken == second.tokens.roomToken)
        #expect(first.tokens.sessionToken != second.tokens.sessionToken)
        #expect(users(state) == [
            UserRecord(userId: "alice", online: true, lastDisconnected: 0, onlineSince: t0),
            UserRecord(userId: "bob", online: true, lastDisconnected: 0, onlineSince: t0 + 5),
        ])
        #expect(state.session(userId: "alice", sessionId: "a1")?.deadline == t0 + 25_000)
    }

    @Test func sessionTimesOutWithoutHeartbeats() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "a1", at: t0)
        #expect(state.expireDue(now: t0 + 24_999, limit: 100).expired == 0)
        #expect(users(state).first?.online == true)
        let (expired, outcome) = state.expireDue(now: t0 + 25_000, limit: 100)
        #expect(expired == 1)
        #expect(outcome.changes.count == 1)
        #expect(users(state) == [UserRecord(userId: "alice", online: false, lastDisconnected: t0 + 25_000, onlineSince: 0)])
    }

    @Test func heartbeatsKeepASessionAlivePastItsFirstDeadline() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "a1", at: t0)
        var now = t0
        for _ in 0..<10 {
            now += 10_000
            let outcome = try beat(&state, user: "alice", session: "a1", at: now)
            #expect(outcome.changes.isEmpty)
            #expect(outcome.queuedDeadline == nil, "a deadline that moves later queues nothing")
            #expect(state.expireDue(now: now, limit: 100).expired == 0)
        }
        #expect(users(state).first?.online == true)
        #expect(state.expireDue(now: now + 25_000, limit: 100).expired == 1)
        #expect(users(state).first?.lastDisconnected == now + 25_000)
    }

    @Test func heartbeatOfAnOnlineUserNeverChangesTheRoomVersion() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "a1", at: t0, name: "Alice")
        let before = version(state)
        _ = try beat(&state, user: "alice", session: "a1", at: t0 + 1_000)
        _ = try beat(&state, user: "alice", session: "a1", at: t0 + 2_000, name: "Alice")
        _ = try beat(&state, user: "alice", session: "a1", interval: 20_000, at: t0 + 3_000)
        #expect(version(state) == before)
        let renamed = try beat(&state, user: "alice", session: "a1", at: t0 + 4_000, name: "Alicia")
        #expect(renamed.changes.count == 1)
        #expect(version(state) > before)
        #expect(users(state).first?.name == "Alicia")
        _ = try beat(&state, user: "alice", session: "a1", at: t0 + 5_000, image: "https://example.com/a.png")
        #expect(users(state).first?.name == "Alicia", "a heartbeat without a name keeps the stored one")
        #expect(users(state).first?.image == "https://example.com/a.png")
    }

    @Test func gracefulDisconnectTakesEffectAtOnce() throws {
        var state = PresenceState()
        let outcome = try beat(&state, user: "alice", session: "a1", at: t0)
        let changes = state.disconnect(sessionToken: outcome.tokens.sessionToken, now: t0 + 1_234).changes
        #expect(changes.count == 1)
        #expect(users(state) == [UserRecord(userId: "alice", online: false, lastDisconnected: t0 + 1_234, onlineSince: 0)])
        #expect(state.session(userId: "alice", sessionId: "a1") == nil)
        #expect(state.expireDue(now: t0 + 100_000, limit: 100).expired == 0, "its stale deadline does nothing")
    }

    @Test func twoTabsKeepTheUserOnlineUntilTheLastEnds() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "tab1", interval: 2_000, at: t0)
        let tab2 = try beat(&state, user: "alice", session: "tab2", interval: 10_000, at: t0)
        let before = version(state)
        #expect(state.expireDue(now: t0 + 5_000, limit: 100).expired == 1)
        #expect(users(state).first?.online == true)
        #expect(version(state) == before, "losing one of two tabs changes nothing visible")
        #expect(state.disconnect(sessionToken: tab2.tokens.sessionToken, now: t0 + 6_000).changes.count == 1)
        #expect(users(state).first?.online == false)
        #expect(users(state).first?.lastDisconnected == t0 + 6_000)
    }

    @Test func timedOutUserComesBackWithSameRoomTokenAndNewSessionToken() throws {
        var state = PresenceState()
        let first = try beat(&state, user: "alice", session: "a1", at: t0)
        _ = state.expireDue(now: t0 + 25_000, limit: 100)
        let again = try beat(&state, user: "alice", session: "a1", at: t0 + 30_000)
        #expect(again.tokens.roomToken == first.tokens.roomToken)
        #expect(again.tokens.sessionToken != first.tokens.sessionToken)
        #expect(users(state) == [UserRecord(userId: "alice", online: true, lastDisconnected: 0, onlineSince: t0 + 30_000)])
        // The old session token no longer updates anything.
        #expect(throws: PresenceError.self) { try state.update(sessionToken: first.tokens.sessionToken, data: .bool(true), now: 0) }
    }

    @Test func seventySessionsExpiringTogetherChangeTheRoomOnce() throws {
        var state = PresenceState()
        for index in 0..<70 {
            _ = try beat(&state, user: "u\(index)", session: "s\(index)", at: t0)
        }
        let (expired, outcome) = state.expireDue(now: t0 + 25_000, limit: 1_000)
        #expect(expired == 70)
        #expect(outcome.changes.count == 1)
        #expect(users(state).allSatisfy { !$0.online && $0.lastDisconnected == t0 + 25_000 })
        #expect(state.statistics.sessions == 0)
        #expect(state.statistics.onlineUsers == 0)
    }

    @Test func expiryWorksInBatches() throws {
        var state = PresenceState()
        for index in 0..<250 {
            _ = try beat(&state, room: "r\(index % 3)", user: "u\(index)", session: "s\(index)", at: t0)
        }
        var total = 0
        var batches = 0
        while true {
            let (expired, _) = state.expireDue(now: t0 + 25_000, limit: 100)
            total += expired
            batches += 1
            if expired < 100 { break }
        }
        #expect(total == 250)
        #expect(batches == 3)
    }

    /// An expiry step also puts back the next second's entries of sessions that have heartbeated
    /// since they were queued, so the next wake-up is a real deadline, not each stale one in turn;
    /// a session that went quiet keeps its place and expires on time.
    @Test func anExpiryStepRequeuesTheNextSecondsMovedDeadlines() throws {
        var state = PresenceState()
        for index in 0..<10 {
            _ = try beat(&state, user: "u\(index)", session: "s\(index)", interval: 1_000, at: t0 + Int64(index) * 100)
        }
        // All but s5 heartbeat again: their deadlines move to t0 + 3,500; s5's stays at t0 + 3,000.
        for index in 0..<10 where index != 5 {
            _ = try beat(&state, user: "u\(index)", session: "s\(index)", interval: 1_000, at: t0 + 1_000)
        }
        #expect(state.expireDue(now: t0 + 2_500, limit: 100).expired == 0)
        // s1…s4 (queued at t0 + 2,600…2,900) were put back; s5 is next, at its real deadline.
        #expect(state.nextDeadline == t0 + 3_000)
        #expect(state.expireDue(now: t0 + 3_000, limit: 100).expired == 1)
        #expect(state.session(userId: "u5", sessionId: "s5") == nil)
        // s6…s9 were within the second after t0 + 3,000 and went back too: next is everyone's real deadline.
        #expect(state.nextDeadline == t0 + 3_500)
        #expect(state.expireDue(now: t0 + 3_499, limit: 100).expired == 0)
        #expect(state.expireDue(now: t0 + 3_500, limit: 100).expired == 9)
    }

    @Test func shorterIntervalQueuesAnEarlierDeadline() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "a1", interval: 60_000, at: t0)
        #expect(state.nextDeadline == t0 + 150_000)
        let shorter = try beat(&state, user: "alice", session: "a1", interval: 1_000, at: t0 + 1_000)
        #expect(shorter.queuedDeadline == t0 + 3_500)
        #expect(state.nextDeadline == t0 + 3_500)
        #expect(state.expireDue(now: t0 + 3_500, limit: 10).expired == 1)
    }

    @Test func aDeadlineMovedLaterIsRequeuedNotExpired() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "a1", at: t0)
        _ = try beat(&state, user: "alice", session: "a1", at: t0 + 20_000)
        // The queue still holds the first deadline: reaching it re-queues instead of expiring.
        #expect(state.nextDeadline == t0 + 25_000)
        #expect(state.expireDue(now: t0 + 25_000, limit: 10).expired == 0)
        #expect(state.nextDeadline == t0 + 45_000)
        #expect(state.expireDue(now: t0 + 45_000, limit: 10).expired == 1)
    }

    @Test func bogusRoomTokenListsNothing() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "a1", at: t0)
        #expect(state.snapshot(roomToken: "r_bogus", limit: 10) == .empty)
    }

    @Test func listHonoursLimitAndOrder() throws {
        var state = PresenceState()
        for index in 0..<5 {
            _ = try beat(&state, user: "u\(index)", session: "s\(index)", at: t0 + Int64(index))
        }
        let token = try beat(&state, user: "u0", session: "s0", at: t0 + 10).tokens.roomToken
        #expect(state.snapshot(roomToken: token, limit: 3).users.map(\.userId) == ["u0", "u1", "u2"])
    }

    @Test func dataShowsInTheListAndBumpsTheVersion() throws {
        var state = PresenceState()
        let alice = try beat(&state, user: "alice", session: "a1", at: t0)
        let before = version(state)
        let changes = try state.update(sessionToken: alice.tokens.sessionToken, data: .object(["typing": .bool(true)]), now: 0).changes
        #expect(changes.count == 1)
        #expect(users(state).first?.data == .object(["typing": .bool(true)]))
        #expect(version(state) > before)
        let same = try state.update(sessionToken: alice.tokens.sessionToken, data: .object(["typing": .bool(true)]), now: 0)
        #expect(same.changes.isEmpty, "setting the same value changes nothing")
        _ = try state.updateRoomUser(roomId: "room", userId: "alice", data: nil, now: 0)
        #expect(users(state).first?.data == nil)
    }

    @Test func updateRoomUserForAUserNeverInTheRoomIsNotFound() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "a1", at: t0)
        do {
            _ = try state.updateRoomUser(roomId: "room", userId: "mallory", data: .bool(true), now: 0)
            Issue.record("expected not_found")
        } catch {
            #expect(error.code == "not_found")
        }
        #expect(throws: PresenceError.self) { try state.updateRoomUser(roomId: "nowhere", userId: "alice", data: .bool(true), now: 0) }
        #expect(throws: PresenceError.self) { try state.update(sessionToken: "s_unknown", data: .bool(true), now: 0) }
    }

    @Test func dataOfAnOfflineUserCanStillBeSetByTheAdmin() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "a1", at: t0)
        _ = state.expireDue(now: t0 + 25_000, limit: 10)
        _ = try state.updateRoomUser(roomId: "room", userId: "alice", data: .string("away"), now: 0)
        #expect(users(state).first?.data == .string("away"))
        #expect(users(state).first?.online == false)
    }

    @Test func removeRoomUserRemovesRecordSessionsAndTokens() throws {
        var state = PresenceState()
        let alice = try beat(&state, user: "alice", session: "a1", at: t0)
        _ = try beat(&state, user: "alice", session: "a2", at: t0)
        _ = try beat(&state, user: "bob", session: "b1", at: t0)
        let before = version(state)
        #expect(state.removeRoomUser(roomId: "room", userId: "alice", now: 0).changes.count == 1)
        #expect(version(state) > before)
        #expect(users(state).map(\.userId) == ["bob"])
        #expect(state.session(userId: "alice", sessionId: "a1") == nil)
        #expect(throws: PresenceError.self) { try state.update(sessionToken: alice.tokens.sessionToken, data: .null, now: 0) }
        #expect(state.userRooms(userId: "alice", onlineOnly: false, limit: 10).isEmpty)
        // The stale deadline later does nothing.
        let (expired, outcome) = state.expireDue(now: t0 + 25_000, limit: 10)
        #expect(expired == 1)  // bob
        #expect(users(state).map(\.userId) == ["bob"])
        #expect(outcome.changes.count == 1)
        #expect(state.removeRoomUser(roomId: "room", userId: "nobody", now: 0).changes.isEmpty)
        // The freed sessionId may start a new session, even for another user.
        _ = try beat(&state, user: "carol", session: "a1", at: t0 + 30_000)
    }

    @Test func removeRoomRemovesEverythingOfALargeRoom() throws {
        var state = PresenceState()
        var token = ""
        for index in 0..<10_000 {
            token = try beat(&state, room: "big", user: "u\(index)", session: "s\(index)", at: t0).tokens.roomToken
        }
        _ = try beat(&state, room: "other", user: "u0", session: "x0", at: t0)
        let changes = state.removeRoom(roomId: "big", now: 0).changes
        #expect(changes.count == 1)
        #expect(changes.first?.kind == .removed)
        #expect(state.snapshot(roomToken: token, limit: 10) == .empty)
        #expect(state.statistics.sessions == 1)
        #expect(state.statistics.onlineUsers == 1)
        #expect(state.userRooms(userId: "u0", onlineOnly: false, limit: 10).map(\.roomId) == ["other"])
        #expect(state.expireDue(now: t0 + 25_000, limit: 100_000).expired == 1)
        // A new room of the same id gets a new token and a version above every earlier one.
        let reborn = try beat(&state, room: "big", user: "u1", session: "s1", at: t0 + 30_000)
        #expect(reborn.tokens.roomToken != token)
        #expect(reborn.changes.first!.roomVersion > changes.first!.roomVersion)
    }

    @Test func listUserOrdersRoomsAndFiltersOnline() throws {
        var state = PresenceState()
        _ = try beat(&state, room: "b-online", user: "alice", session: "1", at: t0)
        _ = try beat(&state, room: "a-online", user: "alice", session: "2", at: t0)
        let early = try beat(&state, room: "left-early", user: "alice", session: "3", at: t0)
        let late = try beat(&state, room: "left-late", user: "alice", session: "4", at: t0)
        _ = state.disconnect(sessionToken: early.tokens.sessionToken, now: t0 + 100)
        _ = state.disconnect(sessionToken: late.tokens.sessionToken, now: t0 + 200)
        #expect(state.userRooms(userId: "alice", onlineOnly: false, limit: 10) == [
            UserRoomStatus(roomId: "a-online", online: true, lastDisconnected: 0),
            UserRoomStatus(roomId: "b-online", online: true, lastDisconnected: 0),
            UserRoomStatus(roomId: "left-late", online: false, lastDisconnected: t0 + 200),
            UserRoomStatus(roomId: "left-early", online: false, lastDisconnected: t0 + 100),
        ])
        #expect(state.userRooms(userId: "alice", onlineOnly: true, limit: 10).map(\.roomId) == ["a-online", "b-online"])
        #expect(state.userRooms(userId: "alice", onlineOnly: false, limit: 3).count == 3)
        #expect(state.userRooms(userId: "nobody", onlineOnly: false, limit: 10).isEmpty)
    }

    @Test func listRoomOnlineOnly() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "a1", at: t0)
        let bob = try beat(&state, user: "bob", session: "b1", at: t0)
        _ = state.disconnect(sessionToken: bob.tokens.sessionToken, now: t0 + 1)
        #expect(state.roomUsers(roomId: "room", onlineOnly: true, limit: 10).users.map(\.userId) == ["alice"])
        #expect(state.roomUsers(roomId: "room", onlineOnly: false, limit: 10).users.map(\.userId) == ["alice", "bob"])
    }

    /// A session id belongs to its user: the same user reusing it in another room conflicts and
    /// changes nothing; another user's "shared" is a session of their own.
    @Test func sessionIdReuseInAnotherRoomConflictsAndAnotherUsersIsTheirOwn() throws {
        var state = PresenceState()
        let alice = try beat(&state, user: "alice", session: "shared", at: t0)
        let before = version(state)
        do {
            _ = try beat(&state, room: "elsewhere", user: "alice", session: "shared", at: t0 + 1)
            Issue.record("expected session_conflict")
        } catch {
            #expect(error.code == "session_conflict")
            #expect(error.status == 409)
        }
        #expect(version(state) == before)
        #expect(state.roomUsers(roomId: "elsewhere", onlineOnly: false, limit: 10) == .empty)

        let mallory = try beat(&state, user: "mallory", session: "shared", at: t0 + 2)
        #expect(mallory.tokens.sessionToken != alice.tokens.sessionToken)
        #expect(users(state).map(\.userId) == ["alice", "mallory"])
        #expect(state.session(userId: "alice", sessionId: "shared")?.token == alice.tokens.sessionToken)
        #expect(state.session(userId: "mallory", sessionId: "shared")?.token == mallory.tokens.sessionToken)
        // Mallory's leaving ends Mallory's session only.
        _ = state.disconnect(sessionToken: mallory.tokens.sessionToken, now: t0 + 3)
        #expect(users(state).map { "\($0.userId):\($0.online)" } == ["alice:true", "mallory:false"])
    }

    @Test func disconnectWithAnUnknownTokenChangesNothing() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "alice", session: "a1", at: t0)
        let before = users(state)
        let beforeVersion = version(state)
        #expect(state.disconnect(sessionToken: "s_nope", now: t0 + 1).changes.isEmpty)
        #expect(users(state) == before)
        #expect(version(state) == beforeVersion)
    }

    @Test func versionsOnlyGrow() throws {
        var state = PresenceState()
        var last: UInt64 = 0
        var generator = SeededGenerator(seed: 3)
        var now = t0
        for _ in 0..<500 {
            now += Int64(generator.next() % 5_000)
            let user = "u\(generator.next() % 6)"
            switch generator.next() % 4 {
            case 0, 1:
                _ = try beat(&state, user: user, session: user + "-s", interval: 1_000, at: now)
            case 2:
                _ = try? state.updateRoomUser(roomId: "room", userId: user, data: .integer(Int64(generator.next() % 3)), now: now)
            default:
                _ = state.expireDue(now: now, limit: 100)
            }
            let current = version(state)
            #expect(current >= last)
            last = current
        }
    }

    /// The counts behind `/health` and `/metrics` are kept as the state changes rather than
    /// recounted; after every step of a random mix of operations they must equal a recount.
    @Test func statisticsStayEqualToARecountThroughRandomOperations() throws {
        var state = PresenceState()
        var generator = SeededGenerator(seed: 7)
        var now = t0
        var sessionTokens: [String] = []
        for step in 0..<3_000 {
            now += Int64.random(in: 0...400, using: &generator)
            let room = "r\(Int.random(in: 0..<4, using: &generator))"
            let user = "u\(Int.random(in: 0..<8, using: &generator))"
            switch Int.random(in: 0..<10, using: &generator) {
            case 0..<4:
                if let outcome = try? beat(&state, room: room, user: user, session: "\(user)-\(room)-\(step % 3)", interval: 1_000, at: now) {
                    sessionTokens.append(outcome.tokens.sessionToken)
                }
            case 4, 5:
                if let token = sessionTokens.randomElement(using: &generator) { _ = state.disconnect(sessionToken: token, now: now) }
            case 6:
                _ = state.expireDue(now: now, limit: 1_000)
            case 7:
                _ = state.removeRoomUser(roomId: room, userId: user, now: now)
            case 8:
                let cutoff = now - 1_000
                let staleByRoom = { (state: PresenceState) in
                    state.rooms.mapValues { $0.users.values.map(\.record).filter { !$0.online && $0.lastDisconnected < cutoff } }
                }
                let before = staleByRoom(state)
                let userCount = state.statistics.userRecords
                _ = state.forgetOfflineUsers(before: cutoff, limit: 3, now: now)
                let after = staleByRoom(state)
                let staleBefore = before.values.reduce(0) { $0 + $1.count }
                // Only the long gone go, as many as allowed, and in each room those gone longest first.
                #expect(state.statistics.userRecords == userCount - min(3, staleBefore), "step \(step)")
                #expect(after.values.reduce(0) { $0 + $1.count } == max(0, staleBefore - 3), "step \(step)")
                for (roomId, stale) in before {
                    let left = after[roomId] ?? []
                    let forgotten = stale.filter { record in !left.contains { $0.userId == record.userId } }
                    if let latestForgotten = forgotten.map(\.lastDisconnected).max(), let earliestLeft = left.map(\.lastDisconnected).min() {
                        #expect(latestForgotten <= earliestLeft, "step \(step): room \(roomId)")
                    }
                }
            default:
                if Int.random(in: 0..<5, using: &generator) == 0 { _ = state.removeRoom(roomId: room, now: now) }
            }
            let records = state.rooms.values.flatMap { $0.users.values }
            let statistics = state.statistics
            #expect(statistics.userRecords == records.count, "step \(step)")
            #expect(statistics.userRecords == state.roomIdsByUser.values.reduce(0) { $0 + $1.count }, "step \(step)")
            #expect(statistics.onlineUsers == records.filter { $0.record.online }.count, "step \(step)")
            #expect(statistics.sessions == records.reduce(0) { $0 + $1.sessionIds.count }, "step \(step)")
            #expect(statistics.rooms == state.rooms.count, "step \(step)")
        }
    }
}
