import Foundation
import Testing
import PresenceClient
import PresenceCore
import PresenceTestSupport
import Synchronization

/// The newest element a stream has yielded, read by polling (bounded in real time).
final class LatestElement<Element: Sendable>: Sendable {
    private final class Box: Sendable {
        let latest = Mutex<Element?>(nil)
    }
    private let box = Box()
    private let reader: Task<Void, Never>

    init(of stream: AsyncStream<Element>) {
        let box = self.box
        reader = Task {
            for await element in stream { box.latest.withLock { $0 = element } }
        }
    }

    var value: Element? { box.latest.withLock { $0 } }

    /// Stops reading: the stream's producer sees it cancelled.
    func stop() { reader.cancel() }

    @discardableResult
    func wait(timeout: Duration = .seconds(10), _ what: String, until condition: (Element) -> Bool) async throws -> Element {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let value, condition(value) { return value }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("timed out waiting for \(what); latest: \(String(describing: value))")
    }
}

/// `watch(userIds:)` and the counts, against a real `presence-server` process.
@Suite struct WatchAndCountsTests {
    @Test func aWatcherFollowsUsersAcrossRoomsAndThroughARestart() async throws {
        let port = try freePort()
        var server = try ServerProcess(arguments: ["--port", "\(port)", "--store", "memory"])
        try await server.waitUntilListening()
        let url = "ws://127.0.0.1:\(port)/api/ws"
        let watcher = PresenceClient(url: url)
        let statuses = LatestElement(of: try await watcher.watch(userIds: ["alice", "bob", "alice", "nobody"]))
        let first = try await statuses.wait("the first statuses") { _ in true }
        #expect(first.map(\.userId) == ["alice", "bob", "nobody"], "in the order asked, once each")
        #expect(first.allSatisfy { !$0.online && $0.lastDisconnected == 0 })

        let alice = PresenceClient(url: url)
        let inA = try await alice.join(room: "a", user: "alice", interval: .seconds(1))
        try await statuses.wait("alice online in one room") { $0[0].online && $0[0].rooms == 1 }
        let inB = try await alice.join(room: "b", user: "alice", interval: .seconds(1))
        try await statuses.wait("alice online in two rooms") { $0[0].rooms == 2 }
        try await inA.setAway(true)
        try await inB.setAway(true)
        try await statuses.wait("alice away everywhere") { $0[0].away }
        await inA.leave()
        await inB.leave()
        let gone = try await statuses.wait("alice offline") { !$0[0].online }
        #expect(gone[0].lastDisconnected > 0 && !gone[1].online)

        // A restart forgets the memory store's state; the watcher reconnects and watches again on its own.
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
        server = try ServerProcess(arguments: ["--port", "\(port)", "--store", "memory"])
        try await server.waitUntilListening()
        let bob = try await PresenceClient(url: url).join(room: "c", user: "bob", interval: .seconds(1))
        try await statuses.wait(timeout: .seconds(20), "bob online after the restart") { $0[1].online }
        await bob.leave()
        try await statuses.wait("bob offline") { !$0[1].online }
        statuses.stop()
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
    }

    @Test func watchingIsAuthorizedByTheToken() async throws {
        let secret = ClientAuthenticationTests.secret
        let server = try ServerProcess(arguments: ["--port", "0", "--store", "memory", "--auth", "jwt", "--jwt-secret", secret])
        try await server.waitUntilListening()
        let url = "ws://127.0.0.1:\(server.port)/api/ws"
        var carol = PresenceClient.Configuration()
        carol.token = { try await ClientAuthenticationTests.token("carol") }
        // A token without a presence_watch claim may watch its own user only.
        let own = try await PresenceClient(url: url, configuration: carol).watch(userIds: ["carol"])
        var iterator = own.makeAsyncIterator()
        #expect(await iterator.next()?.map(\.userId) == ["carol"])
        do {
            _ = try await PresenceClient(url: url, configuration: carol).watch(userIds: ["carol", "alice"])
            Issue.record("expected permission_denied")
        } catch let error as PresenceClientError {
            #expect(error.code == "permission_denied")
        }
        await #expect(throws: PresenceClientError.self) {
            _ = try await PresenceClient(url: url).watch(userIds: (0...1_000).map { "u\($0)" })
        }
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
    }

    @Test func aShortListCarriesTheWholeRoomsCounts() async throws {
        let server = try ServerProcess(arguments: ["--port", "0", "--store", "memory"])
        try await server.waitUntilListening()
        let url = "ws://127.0.0.1:\(server.port)/api/ws"
        var configuration = PresenceClient.Configuration()
        configuration.limit = 2
        let viewer = try await PresenceClient(url: url, configuration: configuration).join(room: "webinar", user: "viewer")
        let counts = LatestElement(of: viewer.counts)
        var others: [RoomPresence] = []
        let client = PresenceClient(url: url)
        for index in 0..<7 {
            others.append(try await client.join(room: "webinar", user: "guest\(index)"))
        }
        try await counts.wait("eight online") { $0 == RoomCounts(online: 8, users: 8) }
        #expect(await viewer.current.count == 2, "the list keeps its limit")
        await others[3].leave()
        await others[5].leave()
        try await counts.wait("six online of eight") { $0 == RoomCounts(online: 6, users: 8) }
        #expect(await viewer.currentCounts == RoomCounts(online: 6, users: 8))
        let pile = FacePileModel(users: await viewer.current, nowMillis: 0, userCount: 8)
        // Two faces shown of eight users: +6.
        #expect(pile.overflowCount == 6 && pile.overflowLabel == "+6")
        counts.stop()
        await viewer.leave()
        for other in others { await other.leave() }
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
    }
}
