import Testing
import PresenceTestSupport
import Foundation
import PresencePostgres
import PresenceSQLite
import PresenceStore

/// A store under test, made fresh per test around a manual clock.
struct StoreKind: Sendable, CustomTestStringConvertible {
    let name: String
    let make: @Sendable (ManualWallClock) async throws -> any PresenceStore
    /// Waits until a running store does all its work (the PostgreSQL store: until it leads expiry).
    var ready: @Sendable (any PresenceStore) async throws -> Void = { _ in }
    var testDescription: String { name }

    /// Every store implementation is listed here and must pass every conformance test. The
    /// PostgreSQL store joins when `scripts/test.sh` has started a server for the tests.
    static let all: [StoreKind] = {
        var kinds = [
            StoreKind(name: "memory") { clock in MemoryStore(clock: clock) },
            StoreKind(name: "sqlite") { clock in try SQLiteStore(directory: temporaryDirectory(), clock: clock) },
        ]
        if PostgresForTests.url != nil {
            kinds.append(StoreKind(name: "postgres", make: { clock in
                try await PostgresStore.open(settings: PostgresForTests.freshDatabase(), clock: clock)
            }, ready: { store in try await PostgresForTests.waitUntilLeading(store as! PostgresStore) }))
        }
        return kinds
    }()

    /// A fresh store, served by its `run()` while `body` uses it.
    func withStore(_ clock: ManualWallClock, _ body: (any PresenceStore) async throws -> Void) async throws {
        let store = try await make(clock)
        try await store.whileRunning {
            try await ready(store)
            try await body(store)
        }
    }
}

/// The PostgreSQL server `scripts/test.sh` starts (PRESENCE_TEST_POSTGRES_URL), with short
/// leases and ticks so tests take fractions of a second.
enum PostgresForTests {
    static let url = ProcessInfo.processInfo.environment["PRESENCE_TEST_POSTGRES_URL"]

    static func freshDatabase() async throws -> PostgresSettings {
        var settings = try PostgresSettings(url: url!)
        // Short enough for quick tests, long enough that a machine busy with the rest of the
        // suite does not fence the store by accident.
        settings.lease = .seconds(3)
        settings.tick = .milliseconds(100)
        settings.fenceAfter = .seconds(2)
        settings.syncMargin = .milliseconds(200)
        settings.expiryGranularity = .milliseconds(10)
        let name = "t_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        return try await settings.creatingDatabase(named: name)
    }

    /// Synchronizes once the store serves: one held still longer than its fence answers 503 until
    /// its running loop has reached the database again (a loaded machine makes that take a while).
    static func synchronizeOnceServing(_ store: PostgresStore) async throws {
        let start = ContinuousClock.now
        while true {
            do {
                return try await store.synchronize()
            } catch let error as PresenceError where error.code == "unavailable" && ContinuousClock.now - start < .seconds(20) {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    static func waitUntilLeading(_ store: PostgresStore) async throws {
        let start = ContinuousClock.now
        while !store.isLeading {
            guard ContinuousClock.now - start < .seconds(20) else { throw TestFailure("the store never took the expiry lease") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

@Suite struct PostgresAvailability {
    /// `scripts/test.sh` sets PRESENCE_REQUIRE_POSTGRES, so CI cannot pass by skipping PostgreSQL.
    @Test func postgresIsThereWhenRequired() {
        if ProcessInfo.processInfo.environment["PRESENCE_REQUIRE_POSTGRES"] == "1" {
            #expect(PostgresForTests.url != nil, "PRESENCE_TEST_POSTGRES_URL is not set")
        }
    }
}

/// Collects a store's change feed so tests can assert on exactly what was published.
final class ChangeRecorder: Sendable {
    let stream: AsyncStream<RoomChange>
    init(_ store: any PresenceStore) { stream = store.roomChanges() }

    /// The next `count` changes, or a failure after a generous real-time bound.
    func next(_ count: Int = 1, timeout: Duration = .seconds(10)) async throws -> [RoomChange] {
        try await withThrowingTaskGroup(of: [RoomChange]?.self) { group in
            group.addTask { [stream] in
                var changes: [RoomChange] = []
                for await change in stream {
                    changes.append(change)
                    if changes.count == count { break }
                }
                return changes
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            guard let changes = first else { throw TestFailure("no \(count) room change(s) within \(timeout)") }
            return changes
        }
    }
}

func request(room: String = "room", user: String, session: String, interval: Int64 = 10_000, name: String? = nil) throws -> HeartbeatRequest {
    try HeartbeatRequest(roomId: room, userId: user, sessionId: session, interval: interval, name: name)
}

@Suite struct StoreConformanceTests {
    let start: Int64 = 1_764_393_600_000

    @Test(arguments: StoreKind.all)
    func heartbeatJoinsAndListsInOrder(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let alice = try await store.heartbeat(request(user: "alice", session: "a1", name: "Alice"))
            clock.advance(by: 10)
            let bob = try await store.heartbeat(request(user: "bob", session: "b1"))
            #expect(alice.roomToken == bob.roomToken)
            #expect(alice.sessionToken != bob.sessionToken)
            let list = try await store.snapshot(roomToken: alice.roomToken, limit: 104)
            #expect(list.users == [
                UserRecord(userId: "alice", online: true, lastDisconnected: 0, onlineSince: start, name: "Alice"),
                UserRecord(userId: "bob", online: true, lastDisconnected: 0, onlineSince: start + 10),
            ])
            #expect(list.roomVersion > 0)
            #expect(try await store.snapshot(roomToken: alice.roomToken, limit: 1).users.map(\.userId) == ["alice"])
            #expect(try await store.snapshot(roomToken: "r_unknown", limit: 10) == .empty)
        }
    }

    /// Away through a store: each change of it is published once, its repeats never, and the
    /// last active session ending leaves the user away (not offline).
    @Test(arguments: StoreKind.all)
    func awayIsPublishedOncePerChange(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let recorder = ChangeRecorder(store)
            func beat(_ session: String, away: Bool?) throws -> HeartbeatRequest {
                try HeartbeatRequest(roomId: "room", userId: "alice", sessionId: session, interval: 10_000, away: away)
            }
            let active = try await store.heartbeat(beat("active", away: nil))
            _ = try await store.heartbeat(beat("idle", away: true))
            _ = try await recorder.next()  // the join; the away session alone changes nothing
            clock.advance(by: 1_000)
            for _ in 0..<5 { _ = try await store.heartbeat(beat("idle", away: true)) }
            try await store.disconnect(sessionToken: active.sessionToken)
            let wentAway = try await recorder.next()
            #expect(wentAway.count == 1)
            let alice = try await store.snapshot(roomToken: active.roomToken, limit: 10).users.first
            #expect(alice?.online == true && alice?.away == true && alice?.awaySince == start + 1_000)
            #expect(wentAway.first?.roomVersion == (try await store.snapshot(roomToken: active.roomToken, limit: 10).roomVersion))
            _ = try await store.heartbeat(beat("idle", away: false))
            _ = try await recorder.next()
            #expect(try await store.snapshot(roomToken: active.roomToken, limit: 10).users.first?.away == false)
        }
    }

    @Test(arguments: StoreKind.all)
    func heartbeatOfAnOnlineUserPublishesNothing(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let recorder = ChangeRecorder(store)
            let tokens = try await store.heartbeat(request(user: "alice", session: "a1"))
            let joined = try await recorder.next()
            #expect(joined.map(\.roomToken) == [tokens.roomToken])
            let version = try await store.snapshot(roomToken: tokens.roomToken, limit: 10).roomVersion
            #expect(joined.first?.roomVersion == version)
            for _ in 0..<20 {
                clock.advance(by: 5_000)
                _ = try await store.heartbeat(request(user: "alice", session: "a1"))
            }
            // The next published change must be the data change, not anything from the heartbeats.
            try await store.update(sessionToken: tokens.sessionToken, data: .bool(true))
            let next = try await recorder.next()
            #expect(next.first?.roomVersion == version + 1)
            #expect(try await store.snapshot(roomToken: tokens.roomToken, limit: 10).roomVersion == version + 1)
        }
    }

    /// A session id belongs to its user: reused by the same user in another room it conflicts
    /// and changes nothing; another user's "s" is a session of their own.
    @Test(arguments: StoreKind.all)
    func sessionConflictChangesNothing(kind: StoreKind) async throws {
        try await kind.withStore(ManualWallClock(nowMillis: start)) { store in
            let tokens = try await store.heartbeat(request(user: "alice", session: "s"))
            let before = try await store.roomUsers(roomId: "room", onlineOnly: false, limit: 10)
            await #expect(throws: PresenceError.sessionConflict("sessionId s is alive in another room of this user's")) {
                _ = try await store.heartbeat(request(room: "other", user: "alice", session: "s"))
            }
            #expect(try await store.roomUsers(roomId: "room", onlineOnly: false, limit: 10) == before)
            #expect(try await store.roomUsers(roomId: "other", onlineOnly: false, limit: 10) == .empty)
            #expect(try await store.snapshot(roomToken: tokens.roomToken, limit: 10) == before)

            let bob = try await store.heartbeat(request(user: "bob", session: "s"))
            #expect(bob.sessionToken != tokens.sessionToken)
            #expect(try await store.roomUsers(roomId: "room", onlineOnly: true, limit: 10).users.map(\.userId) == ["alice", "bob"])
            try await store.disconnect(sessionToken: bob.sessionToken)
            let after = try await store.roomUsers(roomId: "room", onlineOnly: false, limit: 10).users
            #expect(after.map { "\($0.userId):\($0.online)" } == ["alice:true", "bob:false"])
            // Alice's session is untouched: her heartbeat continues it.
            #expect(try await store.heartbeat(request(user: "alice", session: "s")).sessionToken == tokens.sessionToken)
        }
    }

    /// Ids are their bytes (PROTOCOL.md): "Zoé" in NFC and in NFD are two users, two rooms and
    /// two sessions, though Swift's `String` calls them equal.
    @Test(arguments: StoreKind.all)
    func canonicallyEquivalentIdsAreDifferentIds(kind: StoreKind) async throws {
        try await kind.withStore(ManualWallClock(nowMillis: start)) { store in
            try await NormalizationPair.exercise(store)
            try await NormalizationPair.check(store)
        }
    }

    @Test(arguments: StoreKind.all)
    func disconnectEndsTheSessionAtOnce(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let tokens = try await store.heartbeat(request(user: "alice", session: "a1"))
            clock.advance(by: 1_500)
            try await store.disconnect(sessionToken: "s_unknown")
            #expect(try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first?.online == true)
            try await store.disconnect(sessionToken: tokens.sessionToken)
            let user = try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first
            #expect(user == UserRecord(userId: "alice", online: false, lastDisconnected: start + 1_500, onlineSince: 0))
            #expect(try await store.statistics().sessions == 0)
            // Disconnecting again is a no-op.
            try await store.disconnect(sessionToken: tokens.sessionToken)
        }
    }

    @Test(arguments: StoreKind.all)
    func expiryUsesTheDeadlineAndTheNextDeadline(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            #expect(try await store.nextDeadline() == nil)
            let tokens = try await store.heartbeat(request(user: "alice", session: "a1", interval: 2_000))
            #expect(try await store.nextDeadline() == start + 5_000)
            clock.advance(by: 4_999)
            #expect(try await store.expireDueSessions(limit: 100) == 0)
            clock.advance(by: 500)
            #expect(try await store.expireDueSessions(limit: 100) == 1)
            let user = try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first
            #expect(user?.online == false)
            #expect(user?.lastDisconnected == start + 5_000)
            #expect(try await store.nextDeadline() == nil)
        }
    }

    /// `heartbeatAtOnce` is the same heartbeat, not a cheaper one: once the store has settled a
    /// live session, every store answers it at once, with the session's tokens, and it moves the
    /// deadline as `heartbeat` would. What the store cannot answer at once is left to `heartbeat`.
    @Test(arguments: StoreKind.all)
    func aHeartbeatAnsweredAtOnceIsAWholeHeartbeat(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let recorder = ChangeRecorder(store)
            let joined = try await store.heartbeat(request(user: "alice", session: "a1", interval: 2_000))
            _ = try await recorder.next()
            // A durable store answers at once only once the session is stored.
            let settling = ContinuousClock.now
            while store.heartbeatAtOnce(try request(user: "alice", session: "a1", interval: 2_000)) == nil {
                guard ContinuousClock.now - settling < .seconds(10) else { throw TestFailure("a live session's heartbeat was never answered at once") }
                try await Task.sleep(for: .milliseconds(10))
            }
            clock.advance(by: 4_000)
            #expect(store.heartbeatAtOnce(try request(user: "alice", session: "a1", interval: 2_000)) == joined)
            // Past the first deadline (start + 5 s), before the moved one (start + 9 s).
            clock.advance(by: 4_000)
            #expect(try await store.expireDueSessions(limit: 100) == 0)
            #expect(try await store.nextDeadline() == start + 9_000)
            // The session's id in another room of its user is refused by `heartbeat`, and changes nothing here either.
            #expect(store.heartbeatAtOnce(try request(room: "other", user: "alice", session: "a1", interval: 2_000)) == nil)
            let users = try await store.snapshot(roomToken: joined.roomToken, limit: 10).users
            #expect(users.map(\.userId) == ["alice"] && users.first?.online == true)
            clock.advance(by: 1_000)
            #expect(try await store.expireDueSessions(limit: 100) == 1)
        }
    }

    @Test(arguments: StoreKind.all)
    func dataUpdatesAndTheirErrors(kind: StoreKind) async throws {
        try await kind.withStore(ManualWallClock(nowMillis: start)) { store in
            let tokens = try await store.heartbeat(request(user: "alice", session: "a1"))
            try await store.update(sessionToken: tokens.sessionToken, data: .object(["typing": .bool(true)]))
            #expect(try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first?.data == .object(["typing": .bool(true)]))
            try await store.updateRoomUser(roomId: "room", userId: "alice", data: .string("admin"))
            #expect(try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first?.data == .string("admin"))
            try await store.update(sessionToken: tokens.sessionToken, data: nil)
            #expect(try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first?.data == nil)
            await #expect(throws: PresenceError.self) { try await store.update(sessionToken: "s_nope", data: .null) }
            await #expect(throws: PresenceError.self) { try await store.updateRoomUser(roomId: "room", userId: "ghost", data: .null) }
        }
    }

    @Test(arguments: StoreKind.all)
    func listRoomAndListUser(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            _ = try await store.heartbeat(request(room: "a", user: "alice", session: "1"))
            let left = try await store.heartbeat(request(room: "b", user: "alice", session: "2"))
            _ = try await store.heartbeat(request(room: "a", user: "bob", session: "3"))
            clock.advance(by: 100)
            try await store.disconnect(sessionToken: left.sessionToken)
            #expect(try await store.roomUsers(roomId: "a", onlineOnly: true, limit: 10).users.map(\.userId) == ["alice", "bob"])
            #expect(try await store.roomUsers(roomId: "b", onlineOnly: true, limit: 10).users.isEmpty)
            #expect(try await store.roomUsers(roomId: "b", onlineOnly: false, limit: 10).users.map(\.userId) == ["alice"])
            #expect(try await store.userRooms(userId: "alice", onlineOnly: false, limit: 10) == [
                UserRoomStatus(roomId: "a", online: true, lastDisconnected: 0),
                UserRoomStatus(roomId: "b", online: false, lastDisconnected: start + 100),
            ])
            #expect(try await store.userRooms(userId: "alice", onlineOnly: true, limit: 10).map(\.roomId) == ["a"])
        }
    }

    @Test(arguments: StoreKind.all)
    func removalsPublishAndForget(kind: StoreKind) async throws {
        try await kind.withStore(ManualWallClock(nowMillis: start)) { store in
            let recorder = ChangeRecorder(store)
            let alice = try await store.heartbeat(request(user: "alice", session: "a1"))
            _ = try await store.heartbeat(request(user: "bob", session: "b1"))
            _ = try await recorder.next(2)
            try await store.removeRoomUser(roomId: "room", userId: "alice")
            let removedUser = try await recorder.next()
            #expect(removedUser.first?.kind == .updated)
            #expect(try await store.snapshot(roomToken: alice.roomToken, limit: 10).users.map(\.userId) == ["bob"])
            await #expect(throws: PresenceError.self) { try await store.update(sessionToken: alice.sessionToken, data: .null) }
            try await store.removeRoom(roomId: "room")
            let removedRoom = try await recorder.next()
            #expect(removedRoom.first?.kind == .removed)
            #expect(removedRoom.first?.roomToken == alice.roomToken)
            #expect(try await store.snapshot(roomToken: alice.roomToken, limit: 10) == .empty)
            let statistics = try await store.statistics()
            #expect(statistics == PresenceStatistics(
                rooms: 0, sessions: 0, onlineUsers: 0, userRecords: 0, lastEventSequence: statistics.lastEventSequence))
            #expect(statistics.lastEventSequence > 0, "the removals were recorded as events")
            // Removing what is not there is fine.
            try await store.removeRoom(roomId: "room")
            try await store.removeRoomUser(roomId: "room", userId: "alice")
        }
    }

    @Test(arguments: StoreKind.all)
    func changesArePublishedInOrderAfterTheyAreReadable(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let recorder = ChangeRecorder(store)
            var tokens: [SessionTokens] = []
            for index in 0..<10 {
                tokens.append(try await store.heartbeat(request(user: "u\(index)", session: "s\(index)")))
                try await store.update(sessionToken: tokens[index].sessionToken, data: .integer(Int64(index)))
            }
            let changes = try await recorder.next(20)
            #expect(changes.map(\.roomVersion) == changes.map(\.roomVersion).sorted())
            #expect(Set(changes.map(\.roomVersion)).count == 20)
            let current = try await store.snapshot(roomToken: tokens[0].roomToken, limit: 100)
            #expect(current.roomVersion == changes.last?.roomVersion)
            #expect(current.users.count == 10)
        }
    }

    @Test(arguments: StoreKind.all)
    func retentionForgetsLongOfflineUsersAndEmptyRooms(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let old = try await store.heartbeat(request(user: "old", session: "o"))
            let keeps = try await store.heartbeat(request(room: "quiet", user: "gone", session: "g"))
            try await store.disconnect(sessionToken: old.sessionToken)
            try await store.disconnect(sessionToken: keeps.sessionToken)
            clock.advance(by: 10_000)
            _ = try await store.heartbeat(request(user: "online", session: "n"))
            clock.advance(by: 10_000)
            #expect(try await store.forgetOfflineUsers(before: start + 5_000, limit: 100) == 2)
            let room = try await store.roomUsers(roomId: "room", onlineOnly: false, limit: 10).users
            #expect(room.map(\.userId) == ["online"])
            #expect(try await store.snapshot(roomToken: keeps.roomToken, limit: 10) == .empty, "the emptied room is gone")
            #expect(try await store.userRooms(userId: "old", onlineOnly: false, limit: 10).isEmpty)
            #expect(try await store.forgetOfflineUsers(before: start + 5_000, limit: 100) == 0)
        }
    }
}

/// "Zoé" in NFC (4 bytes) and in NFD (5 bytes): one `String` to Swift, two ids to the protocol.
enum NormalizationPair {
    static let nfc = "Zo\u{E9}"
    static let nfd = "Zoe\u{301}"

    static func bytes(_ ids: [String]) -> [[UInt8]] { ids.map { Array($0.utf8) } }

    /// Two users in one room, two rooms, and two sessions of one user, each pair named by the two forms.
    static func exercise(_ store: any PresenceStore) async throws {
        #expect(nfc == nfd, "Swift's String equality is canonical equivalence; this test needs it to be")
        let a = try await store.heartbeat(request(user: nfc, session: "s"))
        let b = try await store.heartbeat(request(user: nfd, session: "s"))
        #expect(a.sessionToken != b.sessionToken)
        let c = try await store.heartbeat(request(room: nfc, user: "u", session: "s1"))
        let d = try await store.heartbeat(request(room: nfd, user: "u", session: "s2"))
        #expect(c.roomToken != d.roomToken)
        let e = try await store.heartbeat(request(room: "r2", user: "u2", session: nfc))
        let f = try await store.heartbeat(request(room: "r2", user: "u2", session: nfd))
        #expect(e.sessionToken != f.sessionToken)
        // One form leaving leaves the other.
        try await store.disconnect(sessionToken: b.sessionToken)
        try await store.disconnect(sessionToken: f.sessionToken)
    }

    /// What `exercise` left, as any store (and the same store after a restart) must tell it.
    static func check(_ store: any PresenceStore) async throws {
        let users = try await store.roomUsers(roomId: "room", onlineOnly: false, limit: 10).users
        #expect(bytes(users.map(\.userId)) == bytes([nfc, nfd]))
        #expect(users.map(\.online) == [true, false])
        #expect(try await store.roomUsers(roomId: nfc, onlineOnly: true, limit: 10).users.count == 1)
        #expect(try await store.roomUsers(roomId: nfd, onlineOnly: true, limit: 10).users.count == 1)
        let statuses = try await store.userStatuses(userIds: [nfc, nfd])
        #expect(bytes(statuses.map(\.userId)) == bytes([nfc, nfd]))
        #expect(statuses.map(\.online) == [true, false])
        // The session of each form goes on as itself: NFC's still live, NFD's ended.
        #expect(try await store.roomUsers(roomId: "r2", onlineOnly: true, limit: 10).users.map(\.userId) == ["u2"])
        let again = try await store.heartbeat(request(room: "r2", user: "u2", session: nfc))
        let other = try await store.heartbeat(request(room: "r2", user: "u2", session: nfd))
        #expect(again.sessionToken != other.sessionToken)
        #expect(try await store.statistics().sessions == 5)
    }
}
