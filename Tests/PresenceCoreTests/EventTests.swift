import PresenceTestSupport
import Testing
@testable import PresenceCore

@Suite struct EventTests {
    let t0: Int64 = 1_764_000_000_000

    private func kinds(_ events: [PresenceEvent]) -> [String] {
        events.map { event in event.kind.rawValue + (event.reason.map { "(\($0.rawValue))" } ?? "") }
    }

    @Test func eachTransitionIsOneEventInProtocolOrder() throws {
        var state = PresenceState(recordsEvents: true)
        _ = try beat(&state, user: "alice", session: "a1", at: t0, name: "Alice", away: true)
        let joined = state.takeEvents()
        #expect(kinds(joined) == ["join", "away"])
        #expect(joined.allSatisfy { $0.roomVersion == version(state) })
        #expect(joined[0].name == "Alice" && joined[0].at == t0)

        _ = try beat(&state, user: "alice", session: "a1", at: t0 + 1)
        #expect(state.takeEvents().isEmpty, "a heartbeat that changes nothing records nothing")
        _ = try beat(&state, user: "alice", session: "a1", at: t0 + 2, name: "Alice B", away: false)
        #expect(kinds(state.takeEvents()) == ["profile", "back"])
        _ = try state.updateRoomUser(roomId: "room", userId: "alice", data: .string("typing"), now: t0 + 3)
        let data = state.takeEvents()
        #expect(kinds(data) == ["data"] && data[0].data == .string("typing"))

        let bob = try beat(&state, user: "bob", session: "b1", at: t0 + 4)
        _ = state.takeEvents()
        _ = state.disconnect(sessionToken: bob.tokens.sessionToken, now: t0 + 5)
        let left = state.takeEvents()
        #expect(kinds(left) == ["leave(disconnect)"] && left[0].at == t0 + 5)

        _ = try beat(&state, user: "carol", session: "c1", interval: 1_000, at: t0 + 6, away: true)
        _ = state.takeEvents()
        _ = state.expireDue(now: t0 + 10_000, limit: 10)
        let expired = state.takeEvents()
        #expect(kinds(expired) == ["leave(timeout)"], "a leave while away is only a leave")
        #expect(expired[0].at == t0 + 6 + 2_500, "dated by the deadline")

        _ = state.removeRoomUser(roomId: "room", userId: "alice", now: t0 + 20)
        #expect(kinds(state.takeEvents()) == ["leave(removed)", "removed"])
        _ = state.removeRoom(roomId: "room", now: t0 + 21)
        let removed = state.takeEvents()
        #expect(kinds(removed) == ["removed", "removed"], "bob and carol were offline")
        #expect(removed.map(\.userId) == ["bob", "carol"])
    }

    @Test func removingARoomLeavesItsOnlineUsersFirst() throws {
        var state = PresenceState(recordsEvents: true)
        _ = try beat(&state, user: "alice", session: "a1", at: t0)
        _ = try beat(&state, user: "bob", session: "b1", at: t0)
        _ = state.takeEvents()
        _ = state.removeRoom(roomId: "room", now: t0 + 1)
        let events = state.takeEvents()
        #expect(kinds(events) == ["leave(room_removed)", "removed", "leave(room_removed)", "removed"])
        #expect(Set(events.map(\.roomVersion)).count == 1)
        #expect(events.map(\.sequence) == events.map(\.sequence).sorted())
    }

    @Test func idsAreFixedWidthAndOrdered() {
        #expect(PresenceEvent.id(forSequence: 12_345) == "e_0000000000012345")
        #expect(PresenceEvent.sequence(fromId: "e_0000000000012345") == 12_345)
        #expect(PresenceEvent.id(forSequence: 9) < PresenceEvent.id(forSequence: 10))
        for bad in ["", "e_", "e_12", "x_0000000000012345", "e_00000000000123a5", "e_+000000000012345"] {
            #expect(PresenceEvent.sequence(fromId: bad) == nil, "\(bad)")
        }
    }

    @Test func anExpiryAfterARestartSaysSo() throws {
        var writer = PresenceState(tracksDurableChanges: true, recordsEvents: true)
        _ = try beat(&writer, user: "alice", session: "a1", interval: 1_000, at: t0)
        _ = try beat(&writer, user: "bob", session: "b1", interval: 1_000, at: t0)
        let rows = writer.takeDurableChanges()
        var restored = PresenceState.restoring(
            rooms: rows.rooms, users: rows.users, sessions: rows.sessions, lastVersion: rows.lastVersion,
            lastEventSequence: rows.lastEventSequence, aliveAt: t0, now: t0 + 1_000)
        // Bob comes back in time; Alice does not.
        _ = try beat(&restored, user: "bob", session: "b1", interval: 1_000, at: t0 + 1_100)
        _ = restored.expireDue(now: t0 + 10_000, limit: 10)
        let events = restored.takeEvents()
        let reasons = Dictionary(uniqueKeysWithValues: events.map { ($0.userId, $0.reason) })
        #expect(reasons == ["alice": .expiredAfterRestart, "bob": .timeout])
        #expect(events.map(\.sequence).min() == rows.lastEventSequence + 1, "numbering continues after the stored counter")
    }

    /// The property that makes the log trustworthy: replaying the events of any run gives every
    /// room's records exactly, and each room's events carry its version.
    @Test(arguments: [1, 2, 3, 4, 5, 6] as [UInt64])
    func replayingTheEventsGivesEveryRoomExactly(seed: UInt64) throws {
        var state = PresenceState(recordsEvents: true)
        var replay = EventReplay()
        var run = RandomStateRun(seed: seed, rooms: 3, users: 6)
        for step in 0..<2_000 {
            run.step(&state)
            try replay.apply(state.takeEvents())
            for roomId in run.rooms {
                let snapshot = state.roomUsers(roomId: roomId, onlineOnly: false, limit: 1_000)
                #expect(replay.users(of: roomId) == snapshot.users, "seed \(seed) step \(step) room \(roomId)")
                if let version = replay.versions[roomId], !snapshot.users.isEmpty {
                    #expect(version == snapshot.roomVersion, "seed \(seed) step \(step) room \(roomId)")
                }
            }
        }
        #expect(replay.lastSequence == state.lastEventSequence)
        #expect(replay.lastSequence > 500, "the run made many events")
    }
}

@Suite struct UserStatusStateTests {
    /// The global status read from the per-user index equals a recomputation over every room,
    /// after every step of a random run.
    @Test(arguments: [21, 22, 23] as [UInt64])
    func globalStatusesEqualARecomputationFromAllRooms(seed: UInt64) throws {
        var state = PresenceState()
        var run = RandomStateRun(seed: seed, rooms: 4, users: 6)
        let users = run.users
        for step in 0..<1_500 {
            run.step(&state)
            for userId in users {
                let records = state.rooms.values.compactMap { $0.users[userId]?.record }
                #expect(state.userStatus(userId: userId) == UserStatus(userId: userId, records: records), "seed \(seed) step \(step)")
                let online = records.filter(\.online)
                let expected = UserStatus(
                    userId: userId, online: !online.isEmpty, away: !online.isEmpty && online.allSatisfy(\.away),
                    lastDisconnected: online.isEmpty ? records.map(\.lastDisconnected).max() ?? 0 : 0, rooms: online.count)
                #expect(state.userStatus(userId: userId) == expected, "seed \(seed) step \(step) \(userId)")
            }
        }
    }
}

/// A random run of every state operation (heartbeats with name and away, disconnects, expiry,
/// data, removals, retention) over a few rooms and users, one operation a step: the driver of
/// the state's property tests.
struct RandomStateRun {
    var generator: SeededGenerator
    var now: Int64 = 1_764_000_000_000
    let rooms: [String]
    let users: [String]
    private var sessionTokens: [String] = []
    private var steps = 0

    init(seed: UInt64, rooms: Int, users: Int) {
        generator = SeededGenerator(seed: seed)
        self.rooms = (0..<rooms).map { "r\($0)" }
        self.users = (0..<users).map { "u\($0)" }
    }

    mutating func step(_ state: inout PresenceState) {
        steps += 1
        now += Int64.random(in: 0...700, using: &generator)
        let room = rooms.randomElement(using: &generator)!
        let user = users.randomElement(using: &generator)!
        switch Int.random(in: 0..<12, using: &generator) {
        case 0..<4:
            let session = "\(user)-\(room)-\(Int.random(in: 0..<2, using: &generator))"
            let name = Bool.random(using: &generator) ? "N\(Int.random(in: 0..<3, using: &generator))" : nil
            let away: Bool? = [true, false, nil].randomElement(using: &generator)!
            if let outcome = try? beat(&state, room: room, user: user, session: session, interval: 1_000, at: now, name: name, away: away) {
                sessionTokens.append(outcome.tokens.sessionToken)
            }
        case 4, 5:
            if let token = sessionTokens.randomElement(using: &generator) { _ = state.disconnect(sessionToken: token, now: now) }
        case 6, 7:
            _ = state.expireDue(now: now, limit: 1_000)
        case 8:
            let data: JSONValue? = Bool.random(using: &generator) ? .integer(Int64(steps % 4)) : nil
            _ = try? state.updateRoomUser(roomId: room, userId: user, data: data, now: now)
        case 9:
            _ = state.removeRoomUser(roomId: room, userId: user, now: now)
        case 10:
            _ = state.forgetOfflineUsers(before: now - 2_000, limit: 2, now: now)
        default:
            if Int.random(in: 0..<4, using: &generator) == 0 { _ = state.removeRoom(roomId: room, now: now) }
        }
    }
}
