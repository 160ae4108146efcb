import Foundation
import PresencePostgres
import PresenceStore
import Testing

/// Two PostgreSQL stores on one database, in one test process: what the multi-process tests do
/// with real servers, here where a store can be held still.
@Suite(.enabled(if: PostgresForTests.url != nil, "needs the PostgreSQL server of scripts/test.sh"))
struct PostgresReplicationTests {
    @Test func aProcessBehindATrimmedLogReloadsAndShowsEverything() async throws {
        var settings = try await PostgresForTests.freshDatabase()
        settings.logRetention = .zero
        settings.trimInterval = .milliseconds(50)
        let writer = try await PostgresStore.open(settings: settings)
        // Opened now, run only later: everything the writer does meanwhile passes it by.
        let late = try await PostgresStore.open(settings: settings)
        let batches = late.commits()
        try await writer.whileRunning {
            try await PostgresForTests.waitUntilLeading(writer)
            for index in 0..<5 {
                _ = try await writer.heartbeat(
                    HeartbeatRequest(roomId: "doc", userId: "u\(index)", sessionId: "s\(index)", interval: 60_000))
            }
            // The leader trims every entry (retention zero) on one of its next ticks.
            try await Task.sleep(for: .milliseconds(600))
        }
        try await late.whileRunning {
            try await PostgresForTests.synchronizeOnceServing(late)
            let shown = try await late.roomUsers(roomId: "doc", onlineOnly: false, limit: 10)
            #expect(shown.users.map(\.userId) == ["u0", "u1", "u2", "u3", "u4"])
            #expect(late.counterValues.reloads >= 1, "it caught up through the log instead: nothing was trimmed")
            // Its subscribers are told the room changed…
            var iterator = batches.makeAsyncIterator()
            let batch = await iterator.next()
            let change = batch?.changes.first
            #expect(change?.roomId == "doc" && change?.roomVersion == shown.roomVersion)
            // …and so are watchers of users, whose events the reload skipped.
            #expect(batch?.reloaded == true)
        }
    }
}
