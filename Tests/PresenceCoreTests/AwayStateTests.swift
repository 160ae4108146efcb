import Testing
import PresenceTestSupport
@testable import PresenceCore

/// Away (PROTOCOL.md 1.1): a user is away in a room when online there and every live session of
/// theirs in the room says it is away. Every transition, with time passed in.
@Suite struct AwayStateTests {
    let t0: Int64 = 1_000_000

    func record(_ state: PresenceState, _ user: String = "alice") -> UserRecord? {
        users(state).first { $0.userId == user }
    }

    @Test func theOnlySessionGoingAwayMakesTheUserAwayAndBack() throws {
        var state = PresenceState()
        _ = try beat(&state, session: "a1", at: t0)
        #expect(record(state)?.away == false && record(state)?.awaySince == 0)
        let before = version(state)
        let away = try beat(&state, session: "a1", at: t0 + 1_000, away: true)
        #expect(away.changes.count == 1, "a change of away reaches subscribers")
        #expect(version(state) > before)
        #expect(record(state)?.away == true)
        #expect(record(state)?.awaySince == t0 + 1_000)
        #expect(record(state)?.online == true && record(state)?.onlineSince == t0, "away is still online")

        let back = try beat(&state, session: "a1", at: t0 + 5_000, away: false)
        #expect(back.changes.count == 1)
        #expect(record(state)?.away == false && record(state)?.awaySince == 0)
    }

    @Test func heartbeatsThatChangeNothingReachNobody() throws {
        var state = PresenceState()
        _ = try beat(&state, session: "a1", at: t0, away: true)
        let settled = version(state)
        // The same state again, or no `away` at all: the session keeps what it said.
        #expect(try beat(&state, session: "a1", at: t0 + 1_000, away: true).changes.isEmpty)
        #expect(try beat(&state, session: "a1", at: t0 + 2_000).changes.isEmpty)
        #expect(record(state)?.away == true && record(state)?.awaySince == t0)
        #expect(version(state) == settled)
    }

    @Test func aFirstHeartbeatThatIsAwayJoinsAway() throws {
        var state = PresenceState()
        let joined = try beat(&state, session: "a1", at: t0, away: true)
        #expect(joined.changes.count == 1, "join and away are one change")
        #expect(record(state)?.online == true && record(state)?.away == true && record(state)?.awaySince == t0)
    }

    @Test func twoSessionsOneAwayIsNotAwayUntilBothAre() throws {
        var state = PresenceState()
        _ = try beat(&state, session: "tab", at: t0)
        _ = try beat(&state, session: "phone", at: t0)
        let hidden = try beat(&state, session: "tab", at: t0 + 1_000, away: true)
        #expect(hidden.changes.isEmpty, "another session is active: the record does not change")
        #expect(record(state)?.away == false)
        let both = try beat(&state, session: "phone", at: t0 + 2_000, away: true)
        #expect(both.changes.count == 1)
        #expect(record(state)?.away == true && record(state)?.awaySince == t0 + 2_000)
        // A new tab opens: a new session starts not away, so the user is back.
        let opened = try beat(&state, session: "new-tab", at: t0 + 3_000)
        #expect(opened.changes.count == 1)
        #expect(record(state)?.away == false && record(state)?.awaySince == 0)
    }

    @Test func theLastActiveSessionEndingLeavesTheUserAway() throws {
        var state = PresenceState()
        let active = try beat(&state, session: "active", at: t0)
        _ = try beat(&state, session: "idle", at: t0, away: true)
        #expect(record(state)?.away == false)
        let ended = state.disconnect(sessionToken: active.tokens.sessionToken, now: t0 + 4_000)
        #expect(ended.changes.count == 1)
        #expect(record(state)?.online == true && record(state)?.away == true && record(state)?.awaySince == t0 + 4_000)
    }

    @Test func anActiveSessionExpiringLeavesTheUserAwayFromItsDeadline() throws {
        var state = PresenceState()
        _ = try beat(&state, session: "active", interval: 2_000, at: t0)   // deadline t0 + 5,000
        _ = try beat(&state, session: "idle", interval: 60_000, at: t0, away: true)
        let (expired, outcome) = state.expireDue(now: t0 + 6_000, limit: 10)
        #expect(expired == 1 && outcome.changes.count == 1)
        #expect(record(state)?.away == true && record(state)?.awaySince == t0 + 5_000)
    }

    @Test func anAwaySessionExpiringChangesNothingWhileAnActiveOneLives() throws {
        var state = PresenceState()
        _ = try beat(&state, session: "active", interval: 60_000, at: t0)
        _ = try beat(&state, session: "idle", interval: 2_000, at: t0, away: true)
        let settled = version(state)
        let (expired, outcome) = state.expireDue(now: t0 + 6_000, limit: 10)
        #expect(expired == 1 && outcome.changes.isEmpty)
        #expect(record(state)?.away == false && version(state) == settled)
    }

    @Test func goingOfflineClearsAway() throws {
        var state = PresenceState()
        let session = try beat(&state, session: "a1", at: t0, away: true)
        _ = state.disconnect(sessionToken: session.tokens.sessionToken, now: t0 + 1_000)
        #expect(record(state) == UserRecord(userId: "alice", online: false, lastDisconnected: t0 + 1_000, onlineSince: 0))
        // Coming back starts active.
        _ = try beat(&state, session: "a2", at: t0 + 2_000)
        #expect(record(state)?.away == false)
    }

    @Test func anAwayUsersDataChangeKeepsThemAway() throws {
        var state = PresenceState()
        let session = try beat(&state, session: "a1", at: t0, away: true)
        let outcome = try state.update(sessionToken: session.tokens.sessionToken, data: .object(["typing": .bool(false)]), now: 0)
        #expect(outcome.changes.count == 1)
        #expect(record(state)?.away == true && record(state)?.awaySince == t0)
        #expect(record(state)?.data == .object(["typing": .bool(false)]))
    }

    @Test func awayIsDurableAndSurvivesARestore() throws {
        var state = PresenceState(tracksDurableChanges: true)
        _ = try beat(&state, session: "idle", at: t0, away: true)
        _ = try beat(&state, user: "bob", session: "b1", at: t0)
        let rows = state.takeDurableChanges()
        #expect(rows.sessions.first { $0.sessionId == PresenceState.sessionKey(userId: "alice", sessionId: "idle") }?.away == true)
        let restored = PresenceState.restoring(
            rooms: rows.rooms, users: rows.users, sessions: rows.sessions, lastVersion: rows.lastVersion, aliveAt: t0, now: t0 + 100)
        #expect(record(restored) == record(state))
        #expect(restored.session(userId: "alice", sessionId: "idle")?.away == true)
        // A stored record that disagrees with its sessions is put right on restore.
        var users = rows.users
        users = users.map { row in
            var row = row
            if row.record.userId == "bob" { row.record.away = true; row.record.awaySince = t0 }
            return row
        }
        let repaired = PresenceState.restoring(
            rooms: rows.rooms, users: users, sessions: rows.sessions, lastVersion: rows.lastVersion, aliveAt: t0, now: t0 + 100)
        #expect(record(repaired, "bob")?.away == false && record(repaired, "bob")?.awaySince == 0)
    }

    @Test func orderIgnoresAway() throws {
        var state = PresenceState()
        _ = try beat(&state, user: "first", session: "f", at: t0, away: true)
        _ = try beat(&state, user: "second", session: "s", at: t0 + 1)
        #expect(state.roomUsers(roomId: "room", onlineOnly: false, limit: 10).users.map(\.userId) == ["first", "second"])
    }

    @Test func aLiveSessionsHeartbeatTakesTheFastPathOnlyWhenAwayIsUnchanged() throws {
        var state = PresenceState(tracksDurableChanges: true)
        _ = try beat(&state, session: "a1", at: t0, away: true)
        _ = state.takeDurableChanges()
        let same = try HeartbeatRequest(roomId: "room", userId: "alice", sessionId: "a1", interval: 10_000, away: true)
        #expect(state.extendLiveSession(same, now: t0 + 1_000) != nil)
        let unsaid = try HeartbeatRequest(roomId: "room", userId: "alice", sessionId: "a1", interval: 10_000)
        #expect(state.extendLiveSession(unsaid, now: t0 + 1_000) != nil)
        let back = try HeartbeatRequest(roomId: "room", userId: "alice", sessionId: "a1", interval: 10_000, away: false)
        #expect(state.extendLiveSession(back, now: t0 + 1_000) == nil, "a change of away must be stored")
    }
}
