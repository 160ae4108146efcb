import Foundation
import Testing
import PresenceSQLite
import PresenceStore
import PresenceTestSupport

/// Reads every event after `after` a page at a time, as an app following the log would.
func allEvents(_ store: any PresenceStore, after: UInt64? = nil, roomId: String? = nil, pageSize: Int = 7) async throws -> [PresenceEvent] {
    var events: [PresenceEvent] = []
    var cursor = after
    while true {
        let page = try await store.events(after: cursor, roomId: roomId, limit: pageSize)
        events.append(contentsOf: page.events)
        #expect(page.next == page.events.last?.sequence ?? cursor ?? 0)
        guard page.events.count == pageSize else { return events }
        cursor = page.next
    }
}

/// The event log on every store: stored with its change, paged, forgotten after the retention.
@Suite struct EventStoreTests {
    let start: Int64 = 1_764_393_600_000

    /// Events read back from the store, replayed, give every room's list exactly: the log is
    /// complete and in order, whatever mix of operations made it.
    @Test(arguments: StoreKind.all)
    func theEventsOfARandomRunReplayToEveryRoom(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            var generator = SeededGenerator(seed: 11)
            var sessionTokens: [String] = []
            let rooms = ["r0", "r1", "r2"]
            for step in 0..<300 {
                clock.advance(by: Int64.random(in: 0...600, using: &generator))
                let room = rooms.randomElement(using: &generator)!
                let user = "u\(Int.random(in: 0..<5, using: &generator))"
                switch Int.random(in: 0..<10, using: &generator) {
                case 0..<4:
                    let session = "\(user)-\(room)-\(Int.random(in: 0..<2, using: &generator))"
                    let heartbeat = try HeartbeatRequest(
                        roomId: room, userId: user, sessionId: session, interval: 1_000,
                        name: Bool.random(using: &generator) ? "N\(step % 3)" : nil,
                        away: [true, false, nil].randomElement(using: &generator)!)
                    if let tokens = try? await store.heartbeat(heartbeat) { sessionTokens.append(tokens.sessionToken) }
                case 4:
                    if let token = sessionTokens.randomElement(using: &generator) { try await store.disconnect(sessionToken: token) }
                case 5, 6:
                    _ = try await store.expireDueSessions(limit: 1_000)
                case 7:
                    try? await store.updateRoomUser(roomId: room, userId: user, data: .integer(Int64(step % 4)))
                case 8:
                    try await store.removeRoomUser(roomId: room, userId: user)
                default:
                    if Int.random(in: 0..<3, using: &generator) == 0 { try await store.removeRoom(roomId: room) }
                }
            }
            let events = try await allEvents(store)
            var replay = EventReplay()
            try replay.apply(events)
            #expect(events.count > 100)
            for room in rooms {
                let snapshot = try await store.roomUsers(roomId: room, onlineOnly: false, limit: 1_000)
                #expect(replay.users(of: room) == snapshot.users, "\(kind.name) room \(room)")
                if !snapshot.users.isEmpty { #expect(replay.versions[room] == snapshot.roomVersion) }
                // One room's events are exactly that room's share of the log.
                let ofRoom = try await allEvents(store, roomId: room, pageSize: 5)
                #expect(ofRoom == events.filter { $0.roomId == room })
            }
        }
    }

    /// Watchers learn of events as they are committed, the same ones the log keeps, in order.
    @Test(arguments: StoreKind.all)
    func committedEventsAreFedInOrder(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let feed = store.committedEvents()
            let alice = try await store.heartbeat(request(user: "alice", session: "a1"))
            try await store.updateRoomUser(roomId: "room", userId: "alice", data: .bool(true))
            try await store.disconnect(sessionToken: alice.sessionToken)
            var fed: [PresenceEvent] = []
            for await event in feed {
                fed.append(event)
                if fed.count == 3 { break }
            }
            #expect(fed == (try await store.events(after: nil, roomId: nil, limit: 10)).events)
            #expect(fed.map(\.kind) == [.join, .data, .leave])
        }
    }

    @Test(arguments: StoreKind.all)
    func pagesEndWhereTheRetentionForgot(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let alice = try await store.heartbeat(request(user: "alice", session: "a1"))
            try await store.disconnect(sessionToken: alice.sessionToken)
            clock.advance(by: 60_000)
            _ = try await store.heartbeat(request(user: "bob", session: "b1"))
            let all = try await store.events(after: nil, roomId: nil, limit: 100).events
            #expect(all.map(\.kind) == [.join, .leave, .join])
            #expect(try await store.events(after: all[0].sequence, roomId: nil, limit: 1).events == [all[1]])
            #expect(try await store.events(after: all[2].sequence, roomId: nil, limit: 100).events.isEmpty)

            #expect(try await store.forgetEvents(before: start + 30_000) == 2)
            #expect(try await store.events(after: nil, roomId: nil, limit: 100).events == [all[2]], "from the oldest kept")
            #expect(try await store.events(after: nil, roomId: "elsewhere", limit: 100).next == all[1].sequence, "an empty page starts after the forgotten")
            #expect(try await store.events(after: all[1].sequence, roomId: nil, limit: 100).events == [all[2]])
            do {
                _ = try await store.events(after: all[0].sequence, roomId: nil, limit: 100)
                Issue.record("\(kind.name): reading past forgotten events must fail")
            } catch let error as PresenceError {
                #expect(error.status == 410 && error.code == "events_expired")
            }
            #expect(try await store.forgetEvents(before: start + 30_000) == 0)
        }
    }

    @Test(arguments: StoreKind.all)
    func aNewEndpointStartsAtTheNewestEventAndItsCursorIsKept(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            _ = try await store.heartbeat(request(user: "alice", session: "a1"))
            _ = try await store.heartbeat(request(user: "bob", session: "b1"))
            let newest = try await store.events(after: nil, roomId: nil, limit: 100).next
            #expect(try await store.webhookCursor(endpoint: "https://example.test/a") == WebhookCursor(deliveredThrough: newest))
            _ = try await store.heartbeat(request(user: "carol", session: "c1"))
            #expect(try await store.webhookCursor(endpoint: "https://example.test/a").deliveredThrough == newest, "not moved by new events")
            let failed = WebhookCursor(deliveredThrough: newest + 1, failedAt: start)
            try await store.saveWebhookCursor(failed, endpoint: "https://example.test/a")
            #expect(try await store.webhookCursor(endpoint: "https://example.test/a") == failed)
            #expect(try await store.webhookCursor(endpoint: "https://example.test/b").deliveredThrough == newest + 1)
        }
    }

    @Test func eventsAndCursorsSurviveAReopenAndNumberingGoesOn() async throws {
        let directory = temporaryDirectory()
        let clock = ManualWallClock(nowMillis: start)
        var store = try SQLiteStore(directory: directory, clock: clock)
        let before = try await store.whileRunning {
            _ = try await store.heartbeat(request(user: "alice", session: "a1", interval: 1_000))
            try await store.updateRoomUser(roomId: "room", userId: "alice", data: .string("hi"))
            try await store.saveWebhookCursor(WebhookCursor(deliveredThrough: 1), endpoint: "e")
            return try await store.events(after: nil, roomId: nil, limit: 100).events
        }
        try store.close()
        // Down long enough for the session to have expired: it leaves as expired after the restart.
        clock.advance(by: 60_000)
        store = try SQLiteStore(directory: directory, clock: clock)
        try await store.whileRunning {
            #expect(try await store.events(after: nil, roomId: nil, limit: 100).events == before)
            #expect(try await store.webhookCursor(endpoint: "e") == WebhookCursor(deliveredThrough: 1))
            #expect(try await store.expireDueSessions(limit: 10) == 1)
            let after = try await store.events(after: before.last!.sequence, roomId: nil, limit: 100).events
            #expect(after.map(\.kind) == [.leave])
            #expect(after.first?.reason == .expiredAfterRestart)
            #expect(after.first?.sequence == before.last!.sequence + 1)
        }
        try store.close()
    }
}
