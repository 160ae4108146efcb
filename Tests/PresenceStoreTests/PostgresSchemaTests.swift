import Foundation
import PostgresNIO
import PresencePostgres
import PresenceStore
import Testing

/// The PostgreSQL store creates and migrates its own schema, and refuses a database that is
/// not its own with a message that says so.
@Suite(.enabled(if: PostgresForTests.url != nil, "needs the PostgreSQL server of scripts/test.sh"))
struct PostgresSchemaTests {
    func execute(_ sql: String, in settings: PostgresSettings) async throws {
        try await settings.withClient { client in
            _ = try await client.query(PostgresQuery(unsafeSQL: sql))
        }
    }

    func openingFails(_ settings: PostgresSettings) async -> String? {
        do {
            _ = try await PostgresStore.open(settings: settings)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func anotherApplicationsPresenceSchemaIsRefused() async throws {
        let settings = try await PostgresForTests.freshDatabase()
        try await execute("CREATE SCHEMA presence", in: settings)
        try await execute("CREATE TABLE presence.rooms (id int)", in: settings)
        let message = await openingFails(settings)
        #expect(message?.contains("did not create") == true, "\(message ?? "it opened")")
    }

    @Test func aSchemaFromANewerServerIsRefusedAndAnOlderOneMigrated() async throws {
        let settings = try await PostgresForTests.freshDatabase()
        // A first open creates the schema; a second finds it current and keeps the data.
        let first = try await PostgresStore.open(settings: settings)
        try await first.whileRunning {
            _ = try await first.heartbeat(HeartbeatRequest(roomId: "doc", userId: "alice", sessionId: "a1", interval: 60_000))
        }
        let second = try await PostgresStore.open(settings: settings)
        #expect(try await second.whileRunning { try await second.roomUsers(roomId: "doc", onlineOnly: false, limit: 10) }.users.map(\.userId) == ["alice"])

        try await execute("UPDATE presence.meta SET value = '99' WHERE key = 'schema_version'", in: settings)
        let message = await openingFails(settings)
        #expect(message?.contains("newer presence-server") == true, "\(message ?? "it opened")")
    }

    /// Sessions stored when a session id alone was their key come back keyed by their user and
    /// id: the session goes on with its token, and another user's session of that id is their own.
    @Test func sessionsStoredBeforeSessionIdsBelongedToTheirUserAreMigrated() async throws {
        let settings = try await PostgresForTests.freshDatabase()
        let first = try await PostgresStore.open(settings: settings)
        let alice = try await first.whileRunning {
            try await first.heartbeat(HeartbeatRequest(roomId: "doc", userId: "alice", sessionId: "phone", interval: 60_000))
        }
        try await execute("UPDATE presence.sessions SET session_id = 'phone'", in: settings)
        try await execute("UPDATE presence.meta SET value = '3' WHERE key = 'schema_version'", in: settings)
        let second = try await PostgresStore.open(settings: settings)
        try await second.whileRunning { () async throws in
            let again = try await second.heartbeat(HeartbeatRequest(roomId: "doc", userId: "alice", sessionId: "phone", interval: 60_000))
            #expect(again.sessionToken == alice.sessionToken)
            let bob = try await second.heartbeat(HeartbeatRequest(roomId: "doc", userId: "bob", sessionId: "phone", interval: 60_000))
            #expect(bob.sessionToken != alice.sessionToken)
            #expect(try await second.roomUsers(roomId: "doc", onlineOnly: true, limit: 10).users.map(\.userId) == ["alice", "bob"])
        }
    }

    /// NFC and NFD forms of one name stay two ids in the tables and for a process started later.
    @Test func canonicallyEquivalentIdsStayApartAcrossARestart() async throws {
        let settings = try await PostgresForTests.freshDatabase()
        let clock = ManualWallClock(nowMillis: 1_764_393_600_000)
        let first = try await PostgresStore.open(settings: settings, clock: clock)
        try await first.whileRunning { try await NormalizationPair.exercise(first) }
        let second = try await PostgresStore.open(settings: settings, clock: clock)
        try await second.whileRunning { try await NormalizationPair.check(second) }
    }

    @Test func anUnreachableServerIsNamedWithoutItsPassword() async throws {
        var settings = try PostgresSettings(url: "postgres://someone:hunter2@127.0.0.1:1/nowhere?sslmode=disable")
        settings.client.options.connectTimeout = .seconds(2)
        let message = await openingFails(settings)
        #expect(message?.contains("127.0.0.1:1") == true, "\(message ?? "it opened")")
        #expect(message?.contains("hunter2") == false)
    }

    @Test func badURLsAreExplained() {
        #expect(throws: PostgresStoreError.self) { try PostgresSettings(url: "mysql://x@y/z") }
        #expect(throws: PostgresStoreError.self) { try PostgresSettings(url: "postgres://x@/z") }
        #expect(throws: PostgresStoreError.self) { try PostgresSettings(url: "postgres://x@y/z?sslmode=sometimes") }
        #expect((try? PostgresSettings(url: "postgres://u:p%40ss@db.example:6432/presence?sslmode=require"))?.displayName
            == "postgres://u@db.example:6432/presence")
    }
}
