import Testing
import PresenceTestSupport
import PresenceStore

/// The expiry loop against a store with a manual clock: time moves only when the test says so.
@Suite struct ExpiryLoopTests {
    let start: Int64 = 1_764_393_600_000

    /// Waits (in real time, bounded) until the loop has gone to sleep on the clock.
    func waitUntilSleeping(_ clock: ManualWallClock, sleepers: Int = 1) async throws {
        for _ in 0..<10_000 {
            if clock.sleeperCount >= sleepers { return }
            try await Task.sleep(for: .milliseconds(1))
        }
        throw TestFailure("the expiry loop never went to sleep")
    }

    func withLoop(_ store: any PresenceStore, _ body: () async throws -> Void) async throws {
        let loop = Task { try await ExpiryLoop(store: store, batchSize: 1_000).run() }
        defer { loop.cancel() }
        try await body()
    }

    @Test(arguments: StoreKind.all)
    func expiresASessionAtItsDeadline(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let recorder = ChangeRecorder(store)
            let tokens = try await store.heartbeat(request(user: "alice", session: "a1", interval: 1_000))
            _ = try await recorder.next()
            try await withLoop(store) {
                try await waitUntilSleeping(clock)
                clock.advance(by: 2_500)
                let offline = try await recorder.next()
                #expect(offline.first?.roomToken == tokens.roomToken)
                let user = try await store.snapshot(roomToken: tokens.roomToken, limit: 10).users.first
                #expect(user?.online == false)
                #expect(user?.lastDisconnected == start + 2_500)
            }
        }
    }

    @Test(arguments: StoreKind.all)
    func heartbeatsThatMoveDeadlinesLaterDoNotWakeTheLoop(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            _ = try await store.heartbeat(request(user: "alice", session: "a1", interval: 10_000))
            try await withLoop(store) {
                try await waitUntilSleeping(clock)
                let rings = store.deadlineAlarm.ringCount
                for _ in 0..<50 {
                    clock.advance(by: 100)
                    _ = try await store.heartbeat(request(user: "alice", session: "a1", interval: 10_000))
                }
                #expect(store.deadlineAlarm.ringCount == rings)
                // A new session whose deadline is later than the one the loop waits for does not wake it either.
                _ = try await store.heartbeat(request(user: "bob", session: "b1", interval: 60_000))
                #expect(store.deadlineAlarm.ringCount == rings)
            }
        }
    }

    @Test(arguments: StoreKind.all)
    func aShortSessionCreatedWhileWaitingForALongDeadlineExpiresOnTime(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            let recorder = ChangeRecorder(store)
            _ = try await store.heartbeat(request(user: "slow", session: "long", interval: 300_000))
            _ = try await recorder.next()
            try await withLoop(store) {
                try await waitUntilSleeping(clock)
                let short = try await store.heartbeat(request(user: "fast", session: "short", interval: 1_000))
                _ = try await recorder.next()
                #expect(store.deadlineAlarm.ringCount == 1)
                // The loop re-reads the earliest deadline and sleeps until it: 2.5 s, not 750 s.
                for _ in 0..<10_000 {
                    if try await store.nextDeadline() == start + 2_500, clock.sleeperCount == 1 { break }
                    try await Task.sleep(for: .milliseconds(1))
                }
                clock.advance(by: 2_500)
                let offline = try await recorder.next()
                #expect(offline.first?.roomToken == short.roomToken)
                let users = try await store.snapshot(roomToken: short.roomToken, limit: 10).users
                #expect(users.first { $0.userId == "fast" }?.online == false)
                #expect(users.first { $0.userId == "slow" }?.online == true)
            }
        }
    }

    @Test(arguments: StoreKind.all)
    func oneHundredThousandSessionsExpiringTogether(kind: StoreKind) async throws {
        let clock = ManualWallClock(nowMillis: start)
        try await kind.withStore(clock) { store in
            // Joins run 500 at a time, as a burst of clients would: a durable store commits them in groups.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<500 {
                    group.addTask {
                        for index in stride(from: worker, to: 100_000, by: 500) {
                            _ = try await store.heartbeat(request(room: "room\(index % 100)", user: "u\(index)", session: "s\(index)"))
                        }
                    }
                }
                try await group.waitForAll()
            }
            let recorder = ChangeRecorder(store)
            try await withLoop(store) {
                try await waitUntilSleeping(clock)
                clock.advance(by: 25_000)
                // 100 rooms, 1,000 sessions a batch: every room changes in every batch it has users in.
                var offlineRooms = Set<String>()
                while offlineRooms.count < 100 {
                    for change in try await recorder.next() { offlineRooms.insert(change.roomId) }
                }
                for _ in 0..<10_000 {
                    if try await store.statistics().sessions == 0 { break }
                    try await Task.sleep(for: .milliseconds(1))
                }
                let statistics = try await store.statistics()
                #expect(statistics.sessions == 0)
                #expect(statistics.onlineUsers == 0)
                #expect(statistics.userRecords == 100_000)
            }
        }
    }
}
