import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import PresenceClient
import PresenceCore
import PresenceTestSupport

/// Polls (bounded in real time) until the room's current list satisfies `condition`.
@discardableResult
func waitUntil(
    _ room: RoomPresence, timeout: Duration = .seconds(10), _ what: String = "",
    _ condition: @escaping ([UserRecord]) -> Bool
) async throws -> [UserRecord] {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        let list = await room.current
        if condition(list) { return list }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TestFailure("timed out waiting for \(what): \(await room.current.map { "\($0.userId):\($0.online)" })")
}

/// The Swift client against a real `presence-server` process over real sockets.
@Suite struct ClientTests {
    struct Status: Codable, Sendable, Equatable {
        var typing: Bool
    }

    func withServer(port: Int? = nil, _ body: (Int, ServerProcess) async throws -> Void) async throws {
        let server = try ServerProcess(arguments: ["--port", "\(port ?? 0)", "--store", "memory"])
        try await server.waitUntilListening()
        try await body(server.port, server)
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
    }

    @Test func twoClientsSeeEachOtherAndTheirData() async throws {
        try await withServer { port, _ in
            let url = "ws://127.0.0.1:\(port)/api/ws"
            let first = PresenceClient(url: url)
            let second = PresenceClient(url: url)
            let alice = try await first.join(room: "doc", user: "alice", name: "Alice")
            let bob = try await second.join(room: "doc", user: "bob")
            try await waitUntil(alice, "bob in alice's list") { $0.map(\.userId) == ["alice", "bob"] }
            // Each sees themselves first.
            try await waitUntil(bob, "alice in bob's list") { $0.map(\.userId) == ["bob", "alice"] }
            #expect(await bob.current.last?.name == "Alice")

            try await alice.update(data: Status(typing: true))
            try await waitUntil(bob, "alice typing") { $0.last?.data == .object(["typing": .bool(true)]) }
            try await alice.update(data: nil as Status?)
            try await waitUntil(bob, "alice's data cleared") { $0.last?.userId == "alice" && $0.last?.data == nil }

            let started = ContinuousClock.now
            await alice.leave()
            try await waitUntil(bob, "alice offline") { $0.last?.userId == "alice" && $0.last?.online == false }
            #expect(ContinuousClock.now - started < .seconds(2), "leave is immediate, not a timeout")
            await expectThrows(code: "left") { try await alice.update(data: Status(typing: false)) }
            await bob.leave()
        }
    }

    @Test func awayIsSeenByOthersAndBackAtOnce() async throws {
        try await withServer { port, _ in
            let url = "ws://127.0.0.1:\(port)/api/ws"
            // Heartbeats every 30 s: anything seen within the bounds below came from setAway's own heartbeat.
            let alice = try await PresenceClient(url: url).join(room: "doc", user: "alice", interval: .seconds(30))
            let bob = try await PresenceClient(url: url).join(room: "doc", user: "bob", interval: .seconds(30))
            try await waitUntil(bob, "alice in bob's list") { $0.map(\.userId) == ["bob", "alice"] }

            try await alice.setAway(true)
            let seen = try await waitUntil(bob, timeout: .seconds(5), "alice away") { $0.last?.away == true }
            #expect(seen.last?.online == true, "away is not offline")
            #expect((seen.last?.awaySince ?? 0) > 0)
            try await alice.setAway(true)  // no change: nothing to send

            try await alice.setAway(false)
            try await waitUntil(bob, timeout: .seconds(5), "alice back") { $0.last?.away == false && $0.last?.awaySince == 0 }
            await alice.leave()
            await expectThrows(code: "left") { try await alice.setAway(true) }
            await bob.leave()
        }
    }

    @Test func severalRoomsShareOneClient() async throws {
        try await withServer { port, _ in
            let client = PresenceClient(url: "ws://127.0.0.1:\(port)/api/ws")
            let red = try await client.join(room: "red", user: "alice")
            let blue = try await client.join(room: "blue", user: "alice")
            let other = try await PresenceClient(url: "ws://127.0.0.1:\(port)/api/ws").join(room: "blue", user: "bob")
            try await waitUntil(blue, "bob in blue") { $0.map(\.userId) == ["alice", "bob"] }
            try await waitUntil(red, "red alone") { $0.map(\.userId) == ["alice"] }
            await red.leave()
            await blue.leave()
            await other.leave()
        }
    }

    @Test func aClientWhoseServerRestartsReconnectsAndConverges() async throws {
        let port = try freePort()
        var server = try ServerProcess(arguments: ["--port", "\(port)", "--store", "memory"])
        try await server.waitUntilListening()
        let url = "ws://127.0.0.1:\(port)/api/ws"
        let alice = try await PresenceClient(url: url).join(room: "doc", user: "alice", interval: .seconds(1))
        let bob = try await PresenceClient(url: url).join(room: "doc", user: "bob", interval: .seconds(1))
        try await waitUntil(alice, "both online") { $0.count == 2 && $0.allSatisfy(\.online) }

        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
        // A memory store forgets everything: the clients must heartbeat and subscribe again on their own.
        server = try ServerProcess(arguments: ["--port", "\(port)", "--store", "memory"])
        try await server.waitUntilListening()
        try await waitUntil(alice, timeout: .seconds(20), "alice's list after the restart") {
            $0.map(\.userId) == ["alice", "bob"] && $0.allSatisfy(\.online)
        }
        try await waitUntil(bob, timeout: .seconds(20), "bob's list after the restart") {
            $0.map(\.userId) == ["bob", "alice"] && $0.allSatisfy(\.online)
        }
        await alice.leave()
        await bob.leave()
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
    }

    @Test func aClientThatStopsHeartbeatingIsShownOfflineAfterItsTimeout() async throws {
        try await withServer { port, _ in
            let url = "ws://127.0.0.1:\(port)/api/ws"
            let crashing = PresenceClient(url: url)
            let alice = try await crashing.join(room: "doc", user: "alice", interval: .seconds(1))
            let bob = try await PresenceClient(url: url).join(room: "doc", user: "bob")
            try await waitUntil(bob, "alice online") { $0.last?.userId == "alice" && $0.last?.online == true }
            let started = ContinuousClock.now
            await crashing.abandon()
            _ = alice  // held until here: dropping a handle leaves the room
            try await waitUntil(bob, timeout: .seconds(15), "alice timed out") { $0.last?.online == false }
            let elapsed = ContinuousClock.now - started
            #expect(elapsed > .milliseconds(1_400), "offline only after the timeout (2.5 × 1 s after the last heartbeat)")
            #expect(elapsed < .seconds(10))
            await bob.leave()
        }
    }

    @Test func cancellingTheOwningTaskLeavesTheRoom() async throws {
        try await withServer { port, _ in
            let url = "ws://127.0.0.1:\(port)/api/ws"
            let bob = try await PresenceClient(url: url).join(room: "doc", user: "bob")
            let owner = Task {
                let alice = try await PresenceClient(url: url).join(room: "doc", user: "alice", interval: .seconds(60))
                for await _ in alice.users {}
            }
            try await waitUntil(bob, "alice online") { $0.last?.userId == "alice" && $0.last?.online == true }
            owner.cancel()
            // With a 60 s interval only a real leave (not a timeout) can show her offline this soon.
            try await waitUntil(bob, timeout: .seconds(5), "alice left") { $0.last?.online == false }
            await bob.leave()
        }
    }

    @Test func badInputIsATypedError() async throws {
        try await withServer { port, _ in
            let client = PresenceClient(url: "ws://127.0.0.1:\(port)/api/ws")
            await expectThrows(code: "invalid_argument") { _ = try await client.join(room: "", user: "alice") }
            await expectThrows(code: "invalid_argument") { _ = try await client.join(room: "r", user: "a", interval: .milliseconds(10)) }
            let room = try await client.join(room: "r", user: "alice", session: "shared")
            await expectThrows(code: "session_conflict") {
                _ = try await PresenceClient(url: "ws://127.0.0.1:\(port)/api/ws").join(room: "elsewhere", user: "alice", session: "shared")
            }
            await expectThrows(code: "data_too_large") { try await room.update(data: String(repeating: "x", count: 5_000)) }
            await room.leave()
        }
    }

    func expectThrows(code: String, _ body: () async throws -> Void) async {
        do {
            try await body()
            Issue.record("expected \(code)")
        } catch let error as PresenceClientError {
            #expect(error.code == code, "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}

import JWTKit

/// The client against a server that requires user tokens.
@Suite struct ClientAuthenticationTests {
    static let secret = "client-test-secret-that-is-long-enough"

    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var name: String?
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    static func token(_ subject: String, name: String? = nil, lifetime: TimeInterval = 3_600) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return try await keys.sign(Claims(sub: .init(value: subject), exp: .init(value: Date().addingTimeInterval(lifetime)), name: name))
    }

    /// A watcher whose token expires: the server ends its watches (`unwatched`, `token_expired`)
    /// at the next change, and the client fetches a fresh token and watches again, so its stream
    /// goes on. The server allows 30 s of leeway: a token "expired" 28.5 s ago lives 1.5 s more.
    @Test func aWatcherWhoseTokenExpiresWatchesAgainWithAFreshOne() async throws {
        let server = try ServerProcess(arguments: ["--port", "0", "--store", "memory", "--auth", "jwt", "--jwt-secret", Self.secret])
        try await server.waitUntilListening()
        let url = "ws://127.0.0.1:\(server.port)/api/ws"
        var watcher = PresenceClient.Configuration()
        watcher.token = { try await Self.token("carol", lifetime: -28.5) }
        let statuses = LatestElement(of: try await PresenceClient(url: url, configuration: watcher).watch(userIds: ["carol"]))
        try await statuses.wait("carol offline") { $0.first?.online == false }
        // The watcher's token is past its leeway now.
        try await Task.sleep(for: .seconds(2))
        var joiner = PresenceClient.Configuration()
        joiner.token = { try await Self.token("carol") }
        let carol = try await PresenceClient(url: url, configuration: joiner).join(room: "doc", user: "carol")
        try await statuses.wait("carol online, seen with a fresh token") { $0.first?.online == true }
        statuses.stop()
        await carol.leave()
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
    }

    @Test func joinsWithATokenAndIsRefusedWithoutOne() async throws {
        let server = try ServerProcess(arguments: ["--port", "0", "--store", "memory", "--auth", "jwt", "--jwt-secret", Self.secret])
        try await server.waitUntilListening()
        let url = "ws://127.0.0.1:\(server.port)/api/ws"

        var configuration = PresenceClient.Configuration()
        configuration.token = { try await Self.token("alice", name: "Alice from the IdP") }
        let alice = try await PresenceClient(url: url, configuration: configuration).join(room: "secure", user: "alice", name: "ignored")
        let deadline = ContinuousClock.now + .seconds(10)
        while await alice.current.first?.name != "Alice from the IdP", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(await alice.current.first?.name == "Alice from the IdP")

        // A token for someone else: refused.
        var impostor = PresenceClient.Configuration()
        impostor.token = { try await Self.token("alice") }
        do {
            _ = try await PresenceClient(url: url, configuration: impostor).join(room: "secure", user: "mallory")
            Issue.record("expected permission_denied")
        } catch let error as PresenceClientError {
            #expect(error.code == "permission_denied")
        }
        // No token at all: refused.
        do {
            _ = try await PresenceClient(url: url).join(room: "secure", user: "bob")
            Issue.record("expected unauthenticated")
        } catch let error as PresenceClientError {
            #expect(error.code == "unauthenticated")
        }
        // A garbage token is refused at the upgrade: the join fails instead of waiting.
        var garbage = PresenceClient.Configuration()
        garbage.token = { "not-a-token" }
        await #expect(throws: PresenceClientError.self) {
            _ = try await PresenceClient(url: url, configuration: garbage).join(room: "secure", user: "carol")
        }
        await alice.leave()
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
    }
}

@Suite struct ClientTokenRotationTests {
    @Test func theClientFollowsARotatedRoomTokenWithoutLosingItsList() async throws {
        let server = try ServerProcess(arguments: ["--port", "0", "--store", "memory", "--admin-key", "rotation-key"])
        try await server.waitUntilListening()
        let url = "ws://127.0.0.1:\(server.port)/api/ws"
        let alice = try await PresenceClient(url: url).join(room: "doc", user: "alice")
        let bob = try await PresenceClient(url: url).join(room: "doc", user: "bob", interval: .seconds(1))
        try await waitUntil(alice, "bob") { $0.map(\.userId) == ["alice", "bob"] }
        // Every list alice's app is shown from here on: the rotation must never blank it.
        let shown = Task {
            var lists: [[String]] = []
            for await list in alice.users {
                lists.append(list.map(\.userId))
                if list.last?.userId == "bob", list.last?.online == false { break }
            }
            return lists
        }

        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(server.port)/api/rooms/doc/rotate-token")!)
        request.httpMethod = "POST"
        request.setValue("Bearer rotation-key", forHTTPHeaderField: "Authorization")
        let (_, response) = try await URLSession.shared.data(for: request)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        // A change made after the rotation is published under the new token only: alice sees bob
        // leave only if her client followed the rotation.
        await bob.leave()
        try await waitUntil(alice, "bob offline after the rotation") { $0.last?.userId == "bob" && $0.last?.online == false }
        // The list stayed on screen throughout.
        let lists = await shown.value
        #expect(lists.allSatisfy { $0 == ["alice", "bob"] }, "\(lists)")
        await alice.leave()
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
    }
}
