import Foundation
import PresenceServer
import PresenceStore
import Synchronization
import Testing

/// Something a test opens when it is ready; until then `wait()` suspends.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let open = state.withLock { state -> Bool in
                if !state.open { state.waiters.append(continuation) }
                return state.open
            }
            if open { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// A memory store whose list reads of one room token wait at a gate: a slow room, made on
/// purpose. Other rooms are read at once, as a memory store's are.
final class SlowRoomStore: PresenceStore {
    private let inner = MemoryStore()
    let gate = Gate()
    let slowToken = Mutex<String?>(nil)
    /// List reads of the slow token so far.
    let slowReads = Atomic<Int>(0)
    /// Reads of other tokens that waited instead of being answered at once.
    let otherReadsWaited = Atomic<Int>(0)

    var clock: any WallClock { inner.clock }
    var deadlineAlarm: DeadlineAlarm { inner.deadlineAlarm }

    func snapshot(roomToken: String, limit: Int) async throws -> RoomSnapshot {
        if slowToken.withLock({ $0 }) == roomToken {
            slowReads.add(1, ordering: .relaxed)
            await gate.wait()
            return try await inner.snapshot(roomToken: roomToken, limit: limit)
        }
        otherReadsWaited.add(1, ordering: .relaxed)
        return try await inner.snapshot(roomToken: roomToken, limit: limit)
    }

    func snapshotAtOnce(roomToken: String, limit: Int) -> RoomSnapshot? {
        slowToken.withLock({ $0 }) == roomToken ? nil : inner.snapshotAtOnce(roomToken: roomToken, limit: limit)
    }

    func heartbeat(_ request: HeartbeatRequest) async throws -> SessionTokens { try await inner.heartbeat(request) }
    func disconnect(sessionToken: String) async throws { try await inner.disconnect(sessionToken: sessionToken) }
    func disconnectAtOnce(sessionToken: String) -> Bool { inner.disconnectAtOnce(sessionToken: sessionToken) }
    func update(sessionToken: String, data: JSONValue?) async throws { try await inner.update(sessionToken: sessionToken, data: data) }
    func updateRoomUser(roomId: String, userId: String, data: JSONValue?) async throws {
        try await inner.updateRoomUser(roomId: roomId, userId: userId, data: data)
    }
    func roomUsers(roomId: String, onlineOnly: Bool, limit: Int) async throws -> RoomSnapshot {
        try await inner.roomUsers(roomId: roomId, onlineOnly: onlineOnly, limit: limit)
    }
    func userRooms(userId: String, onlineOnly: Bool, limit: Int) async throws -> [UserRoomStatus] {
        try await inner.userRooms(userId: userId, onlineOnly: onlineOnly, limit: limit)
    }
    func removeRoomUser(roomId: String, userId: String) async throws { try await inner.removeRoomUser(roomId: roomId, userId: userId) }
    func userStatuses(userIds: [String]) async throws -> [UserStatus] { try await inner.userStatuses(userIds: userIds) }
    func removeRoom(roomId: String) async throws { try await inner.removeRoom(roomId: roomId) }
    func rotateRoomToken(roomId: String) async throws -> String? { try await inner.rotateRoomToken(roomId: roomId) }
    func forgetOfflineUsers(before cutoff: Int64, limit: Int) async throws -> Int {
        try await inner.forgetOfflineUsers(before: cutoff, limit: limit)
    }
    func roomId(forToken roomToken: String) async throws -> String? { try await inner.roomId(forToken: roomToken) }
    func sessionOwner(sessionToken: String) async throws -> SessionOwner? { try await inner.sessionOwner(sessionToken: sessionToken) }
    func expireDueSessions(limit: Int) async throws -> Int { try await inner.expireDueSessions(limit: limit) }
    func nextDeadline() async throws -> Int64? { try await inner.nextDeadline() }
    func commits() -> AsyncStream<CommittedBatch> { inner.commits() }
    func listenToCommits(_ body: @escaping @Sendable (CommittedBatch) -> Void) -> FeedListening { inner.listenToCommits(body) }
    func checkCanCommit() throws(PresenceError) { try inner.checkCanCommit() }
    var gauges: [StoreGauge] { inner.gauges }
    func run() async throws { try await inner.run() }
    func synchronize() async throws { try await inner.synchronize() }
    func outages() -> AsyncStream<Void> { inner.outages() }
    var deliversWebhooks: Bool { inner.deliversWebhooks }
    func heartbeatAtOnce(_ request: HeartbeatRequest) -> SessionTokens? { inner.heartbeatAtOnce(request) }
    func statistics() async throws -> PresenceStatistics { try await inner.statistics() }
    func events(after: UInt64?, roomId: String?, limit: Int) async throws -> EventPage {
        try await inner.events(after: after, roomId: roomId, limit: limit)
    }
    func forgetEvents(before cutoff: Int64) async throws -> Int { try await inner.forgetEvents(before: cutoff) }
    func webhookCursor(endpoint: String) async throws -> WebhookCursor { try await inner.webhookCursor(endpoint: endpoint) }
    func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String) async throws {
        try await inner.saveWebhookCursor(cursor, endpoint: endpoint)
    }
}

@Suite struct FanoutIsolationTests {
    /// One room whose read hangs must not hold back another room's diffs; the changes that pile
    /// up meanwhile cost one more read, not one each, and its subscriber ends with the true list.
    /// The other room's reads are answered at once, in the hub's own step, beside the hung one.
    @Test func aSlowRoomHoldsBackNoOtherRoom() async throws {
        let store = SlowRoomStore()
        try await withServer(store: store) { http in
            // Opened on every way out, so a failing check cannot leave the server stuck on the read.
            defer { store.gate.open() }
            let slowTokens = try await http.heartbeat(room: "slow", user: "first", session: "f1")
            let fastTokens = try await http.heartbeat(room: "fast", user: "first", session: "f2")
            let slowWatcher = TestSocket(port: http.port)
            let fastWatcher = TestSocket(port: http.port)
            let slowSnapshot = try await slowWatcher.subscribe(slowTokens.roomToken)
            _ = try await fastWatcher.subscribe(fastTokens.roomToken)
            store.slowToken.withLock { $0 = slowTokens.roomToken }

            _ = try await http.heartbeat(room: "slow", user: "u0", session: "s0")
            // The slow room's read has started and hangs before the fast room changes.
            let deadline = ContinuousClock.now + .seconds(10)
            while store.slowReads.load(ordering: .relaxed) == 0, ContinuousClock.now < deadline { await Task.yield() }
            #expect(store.slowReads.load(ordering: .relaxed) == 1)

            _ = try await http.heartbeat(room: "fast", user: "second", session: "x1")
            let fastDiff = try await fastWatcher.receive(type: "diff").decode(DiffMessage.self)
            #expect(fastDiff.upsert.map(\.userId) == ["second"])

            for index in 1...20 {
                _ = try await http.heartbeat(room: "slow", user: "u\(index)", session: "s\(index)")
            }
            // Still the one hanging read: twenty changes did not queue twenty reads.
            #expect(store.slowReads.load(ordering: .relaxed) == 1)
            #expect(try await http.metric("presence_fanout_rooms_waiting") >= 1)

            store.gate.open()
            var users = slowSnapshot.users
            var version = slowSnapshot.roomVersion
            let truth = try await http.listRoom("slow")
            while version < truth.roomVersion {
                let diff = try await slowWatcher.receive(type: "diff").decode(DiffMessage.self)
                #expect(diff.from == version, "the chain of versions is unbroken")
                users = diff.diff.applied(to: users)
                version = diff.roomVersion
            }
            #expect(users == truth.users)
            #expect(store.slowReads.load(ordering: .relaxed) <= 2, "the changes were folded into one more read")
            #expect(await slowWatcher.nextRaw(timeout: .milliseconds(200)) == nil)
            // The wait shows in the lag metric: every read delivered, and the hung one counted.
            try await http.waitForMetric("presence_fanout_rooms_waiting", toBe: 0)
            #expect(try await http.metric("presence_fanout_lag_seconds_count") >= 3)
            #expect(store.otherReadsWaited.load(ordering: .relaxed) == 0, "a read the store could answer at once waited")
        }
    }
}
