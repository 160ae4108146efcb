import Foundation
import GRDB
import Testing
import PresenceSQLite
import PresenceStore
import PresenceTestSupport

/// What only a durable store must do: keep presence across restarts, write nothing for
/// heartbeats, upgrade old files, and refuse what it cannot safely open.
@Suite struct SQLiteStoreTests {
    let start: Int64 = 1_764_393_600_000

    @Test func everythingDurableSurvivesAReopen() async throws {
        let directory = temporaryDirectory()
        let clock = ManualWallClock(nowMillis: start)
        var store = try SQLiteStore(directory: directory, clock: clock)
        let (alice, carol, before, userRooms, statistics) = try await store.whileRunning {
            let alice = try await store.heartbeat(request(user: "alice", session: "a1", interval: 4_000, name: "Alice"))
            _ = try await store.heartbeat(request(user: "alice", session: "a2"))
            let bob = try await store.heartbeat(request(user: "bob", session: "b1"))
            let carol = try await store.heartbeat(request(room: "other", user: "carol", session: "c1"))
            try await store.update(sessionToken: alice.sessionToken, data: .object(["typing": .bool(true), "n": .integer(1 << 60)]))
            clock.advance(by: 1_000)
            try await store.disconnect(sessionToken: bob.sessionToken)
            try await store.removeRoom(roomId: "other")
            return (
                alice, carol, try await store.snapshot(roomToken: alice.roomToken, limit: 100),
                try await store.userRooms(userId: "alice", onlineOnly: false, limit: 10), try await store.statistics()
            )
        }
        try store.close()

        clock.advance(by: 2_000)
        store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning {
            #expect(try await store.snapshot(roomToken: alice.roomToken, limit: 100) == before)
            #expect(try await store.userRooms(userId: "alice", onlineOnly: false, limit: 10) == userRooms)
            #expect(try await store.snapshot(roomToken: carol.roomToken, limit: 10) == .empty)
            #expect(try await store.statistics() == statistics)
            #expect(statistics.sessions == 2 && statistics.userRecords == 2)
            // The same session tokens still work; the room token is stable.
            try await store.update(sessionToken: alice.sessionToken, data: nil)
            #expect(try await store.heartbeat(request(user: "alice", session: "a1", interval: 4_000)).roomToken == alice.roomToken)
            // Versions go on from where they were.
            #expect(try await store.snapshot(roomToken: alice.roomToken, limit: 100).roomVersion > before.roomVersion)
        }
        try store.close()
    }

    @Test func sessionsGetAGraceDeadlineFromTheRestart() async throws {
        let directory = temporaryDirectory()
        let clock = ManualWallClock(nowMillis: start)
        var store = try SQLiteStore(directory: directory, clock: clock)
        let tokens = try await store.whileRunning { try await store.heartbeat(request(user: "alice", session: "a1", interval: 2_000)) }
        try store.close()
        // Down for 4 s: the old deadline (5 s) is nearly due, but the grace runs from the restart.
        clock.advance(by: 4_000)
        store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning {
            #expect(try await store.nextDeadline() == start + 4_000 + 5_000)
            clock.advance(by: 4_999)
            #expect(try await store.expireDueSessions(limit: 10) == 0)
            clock.advance(by: 1)
            #expect(try await store.expireDueSessions(limit: 10) == 1)
            let user = try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first
            #expect(user?.online == false)
            #expect(user?.lastDisconnected == start + 9_000)
        }
        try store.close()
    }

    @Test func afterALongOutageSessionsExpireAtOnceInsteadOfShowingOnline() async throws {
        let directory = temporaryDirectory()
        let clock = ManualWallClock(nowMillis: start)
        var store = try SQLiteStore(directory: directory, clock: clock)
        let tokens = try await store.whileRunning {
            let tokens = try await store.heartbeat(request(user: "alice", session: "a1", interval: 10_000))
            _ = try await store.heartbeat(request(user: "bob", session: "b1", interval: 300_000))
            return tokens
        }  // alive mark: start
        try store.close()
        clock.advance(by: 3_600_000)
        store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning {
            #expect(try await store.expireDueSessions(limit: 10) == 2)
            let users = try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users
            #expect(users.allSatisfy { !$0.online })
            // Last seen when their sessions would have expired had the server kept running, not "just now".
            #expect(users.first { $0.userId == "alice" }?.lastDisconnected == start + 25_000)
            #expect(users.first { $0.userId == "bob" }?.lastDisconnected == start + 750_000)
        }
        try store.close()
    }

    /// Two users' sessions of the same id are two sessions, in the file too; and a file written
    /// before session ids belonged to their user opens with its sessions intact.
    @Test func sessionsOfTheSameIdAreEachUsersOwnAcrossARestartAndAnUpgrade() async throws {
        let directory = temporaryDirectory()
        let clock = ManualWallClock(nowMillis: start)
        var store = try SQLiteStore(directory: directory, clock: clock)
        let (alice, bob) = try await store.whileRunning {
            (try await store.heartbeat(request(user: "alice", session: "phone")), try await store.heartbeat(request(user: "bob", session: "phone")))
        }
        try store.close()
        // The file as the last schema wrote it: the session id alone as the key.
        let queue = try DatabaseQueue(path: directory + "/presence.sqlite")
        try await queue.write { db in
            try db.execute(sql: "UPDATE sessions SET session_id = 'phone' WHERE user_id = 'alice'")
            try db.execute(sql: "DELETE FROM sessions WHERE user_id = 'bob'")
            try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v4-session-keys'")
        }
        try queue.close()
        store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning { () async throws in
            // Alice's session was kept and goes on with the same token; Bob's "phone" is his own again.
            #expect(try await store.heartbeat(request(user: "alice", session: "phone")).sessionToken == alice.sessionToken)
            let bobAgain = try await store.heartbeat(request(user: "bob", session: "phone"))
            #expect(bobAgain.sessionToken != bob.sessionToken)
            #expect(try await store.roomUsers(roomId: "room", onlineOnly: true, limit: 10).users.map(\.userId) == ["alice", "bob"])
        }
        try store.close()
        store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning { () async throws in
            #expect(try await store.heartbeat(request(user: "bob", session: "phone")).sessionToken != alice.sessionToken)
            #expect(try await store.statistics().sessions == 2)
        }
        try store.close()
    }

    /// NFC and NFD forms of one name stay two ids in the file and after a restart.
    @Test func canonicallyEquivalentIdsStayApartAcrossARestart() async throws {
        let directory = temporaryDirectory()
        let clock = ManualWallClock(nowMillis: start)
        var store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning { try await NormalizationPair.exercise(store) }
        try store.close()
        store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning { try await NormalizationPair.check(store) }
        try store.close()
    }

    /// The last "alive at" mark is written when `run()` stops, not only every few seconds: a
    /// heartbeat just before a graceful stop (which writes nothing itself) still counts after a
    /// long outage. Without the final mark the user would be last seen at the join's deadline.
    @Test func aGracefulStopWritesTheLastAliveMark() async throws {
        let directory = temporaryDirectory()
        let clock = ManualWallClock(nowMillis: start)
        var store = try SQLiteStore(directory: directory, clock: clock, aliveMarkInterval: .seconds(3_600))
        let tokens = try await store.whileRunning {
            let tokens = try await store.heartbeat(request(user: "alice", session: "a1", interval: 10_000))
            clock.advance(by: 20_000)
            _ = try await store.heartbeat(request(user: "alice", session: "a1", interval: 10_000))
            return tokens
        }
        try store.close()
        clock.advance(by: 3_600_000)
        store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning {
            #expect(try await store.expireDueSessions(limit: 10) == 1)
            let alice = try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first
            #expect(alice?.online == false)
            let realDeadline = start + 20_000 + 25_000
            #expect(abs((alice?.lastDisconnected ?? 0) - realDeadline) <= 1_000)
        }
        try store.close()
    }

    /// Callers that give up (a client hanging up mid-request cancels its handler's task) must not
    /// fail anybody else's change: each accepted change is stored, and every other caller gets its answer.
    @Test func aCancelledCallerFailsNoOtherChange() async throws {
        let directory = temporaryDirectory()
        let store = try SQLiteStore(directory: directory, clock: ManualWallClock(nowMillis: start))
        try await store.whileRunning { () async throws in
            for round in 0..<20 {
                let outcomes = await withTaskGroup(of: (Int, Bool).self) { group in
                    for index in 0..<16 {
                        let task = Task {
                            try await store.heartbeat(request(user: "u\(round)-\(index)", session: "s\(round)-\(index)"))
                        }
                        // Every other caller gives up at once, possibly while its change is being written.
                        if index.isMultiple(of: 2) { task.cancel() }
                        group.addTask { (index, (try? await task.value) != nil) }
                    }
                    return await group.reduce(into: [Int: Bool]()) { $0[$1.0] = $1.1 }
                }
                let failedOthers = outcomes.filter { !$0.key.isMultiple(of: 2) && !$0.value }.map(\.key)
                #expect(failedOthers.isEmpty, "round \(round): callers that did not give up failed: \(failedOthers)")
            }
            // Every change was stored, cancelled callers' included: nothing was rolled back.
            #expect(try await store.statistics().sessions == 20 * 16)
        }
        try store.close()
    }

    @Test func awaySurvivesAReopenAndItsRepeatsWriteNothing() async throws {
        let directory = temporaryDirectory()
        let clock = ManualWallClock(nowMillis: start)
        var store = try SQLiteStore(directory: directory, clock: clock)
        let away = try HeartbeatRequest(roomId: "room", userId: "alice", sessionId: "a1", interval: 10_000, away: true)
        let tokens = try await store.whileRunning { () async throws in
            let tokens = try await store.heartbeat(away)
            let wal = URL(fileURLWithPath: directory).appendingPathComponent("presence.sqlite-wal").path
            let before = try FileManager.default.attributesOfItem(atPath: wal)[.size] as? Int
            for _ in 0..<50 {
                clock.advance(by: 1_000)
                _ = try await store.heartbeat(away)
            }
            #expect(try FileManager.default.attributesOfItem(atPath: wal)[.size] as? Int == before)
            return tokens
        }
        try store.close()
        store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning {
            let alice = try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first
            #expect(alice?.away == true && alice?.awaySince == start)
            // The session's own state came back too: a heartbeat without `away` keeps the user away.
            _ = try await store.heartbeat(request(user: "alice", session: "a1"))
            #expect(try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first?.away == true)
        }
        try store.close()
    }

    @Test func heartbeatsOfLiveSessionsWriteNothing() async throws {
        let directory = temporaryDirectory()
        let clock = ManualWallClock(nowMillis: start)
        let store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning {
            _ = try await store.heartbeat(request(user: "alice", session: "a1"))
            let wal = URL(fileURLWithPath: directory).appendingPathComponent("presence.sqlite-wal").path
            func walState() throws -> [FileAttributeKey: Any] { try FileManager.default.attributesOfItem(atPath: wal) }
            let before = try walState()
            for _ in 0..<200 {
                clock.advance(by: 1_000)
                _ = try await store.heartbeat(request(user: "alice", session: "a1"))
            }
            let after = try walState()
            #expect(after[.size] as? Int == before[.size] as? Int)
            #expect(after[.modificationDate] as? Date == before[.modificationDate] as? Date)
            #expect(try await store.statistics().sessions == 1)
        }
        try store.close()
    }

    /// A file written by the first schema, exactly as version 1 laid it out, opens and keeps its data.
    @Test func opensAFileWrittenByTheFirstSchema() async throws {
        let directory = temporaryDirectory()
        let path = URL(fileURLWithPath: directory).appendingPathComponent("presence.sqlite").path
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in
            try db.execute(sql: """
                CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
                CREATE TABLE rooms (room_id TEXT PRIMARY KEY NOT NULL, token TEXT NOT NULL UNIQUE, version INTEGER NOT NULL);
                CREATE TABLE users (room_id TEXT NOT NULL, user_id TEXT NOT NULL, online INTEGER NOT NULL,
                    online_since INTEGER NOT NULL, last_disconnected INTEGER NOT NULL, data TEXT, name TEXT, image TEXT,
                    PRIMARY KEY (room_id, user_id)) WITHOUT ROWID;
                CREATE TABLE sessions (session_id TEXT PRIMARY KEY NOT NULL, room_id TEXT NOT NULL, user_id TEXT NOT NULL,
                    token TEXT NOT NULL UNIQUE, interval INTEGER NOT NULL);
                PRAGMA application_id = 1347568979;
                CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
                INSERT INTO grdb_migrations VALUES ('v1');
                INSERT INTO meta VALUES ('last_version', 7), ('alive_at', 1764393600000);
                INSERT INTO rooms VALUES ('doc', 'r_legacy', 7);
                INSERT INTO users VALUES ('doc', 'ann', 0, 0, 1764393500000, '{"role":"editor"}', 'Ann', NULL);
                """)
        }
        try queue.close()
        let store = try SQLiteStore(directory: directory, clock: ManualWallClock(nowMillis: start + 10))
        try await store.whileRunning {
            let snapshot = try await store.snapshot(roomToken: "r_legacy", limit: 10)
            #expect(snapshot.roomVersion == 7)
            #expect(snapshot.users == [
                UserRecord(userId: "ann", online: false, lastDisconnected: 1_764_393_500_000, onlineSince: 0,
                           data: .object(["role": .string("editor")]), name: "Ann")
            ])
            let tokens = try await store.heartbeat(request(room: "doc", user: "ann", session: "s"))
            #expect(tokens.roomToken == "r_legacy")
            #expect(try await store.snapshot(roomToken: "r_legacy", limit: 10).roomVersion == 8)
        }
        try store.close()
    }

    @Test func refusesADirectoryAnotherServerHolds() throws {
        let directory = temporaryDirectory()
        let first = try SQLiteStore(directory: directory)
        #expect {
            _ = try SQLiteStore(directory: directory)
        } throws: { error in
            "\(error)".contains("in use by another running presence-server")
        }
        try first.close()
        try SQLiteStore(directory: directory).close()
    }

    @Test func refusesFilesThatAreNotPresenceDatabases() async throws {
        let garbage = temporaryDirectory()
        try Data("this is not a database, just text that is long enough to look like a header".utf8)
            .write(to: URL(fileURLWithPath: garbage).appendingPathComponent("presence.sqlite"))
        #expect { _ = try SQLiteStore(directory: garbage) } throws: { "\($0)".contains("not a presence database") }

        let foreign = temporaryDirectory()
        let queue = try DatabaseQueue(path: URL(fileURLWithPath: foreign).appendingPathComponent("presence.sqlite").path)
        try await queue.write { try $0.execute(sql: "CREATE TABLE invoices (id INTEGER PRIMARY KEY); INSERT INTO invoices VALUES (1)") }
        try queue.close()
        #expect { _ = try SQLiteStore(directory: foreign) } throws: { "\($0)".contains("not a presence database") }
        // And it was left alone.
        let check = try DatabaseQueue(path: URL(fileURLWithPath: foreign).appendingPathComponent("presence.sqlite").path)
        #expect(try await check.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM invoices") } == 1)
    }

    @Test func refusesAnUnwritablePlace() throws {
        let file = URL(fileURLWithPath: temporaryDirectory()).appendingPathComponent("plain-file")
        try Data("x".utf8).write(to: file)
        #expect { _ = try SQLiteStore(directory: file.appendingPathComponent("data").path) } throws: {
            "\($0)".contains("cannot create the data directory")
        }
    }
}
