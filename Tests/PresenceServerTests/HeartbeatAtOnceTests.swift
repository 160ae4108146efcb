import Foundation
@testable import PresenceServer
import PresenceSQLite
import PresenceStore
import Synchronization
import Testing

/// An open-mode authorizer that counts the decisions it is asked to wait for, and holds `update`
/// until the test lets it go: a message that takes time, for the order of the replies after it.
final class GatedAuthorizer: PresenceAuthorizer {
    private struct State {
        var joinsAuthorized = 0
        var authentications = 0
    }

    private let state = Mutex(State())
    private let gate = Gate()

    var joinsAuthorized: Int { state.withLock { $0.joinsAuthorized } }
    var authentications: Int { state.withLock { $0.authentications } }

    func authenticate(token: String?) async throws -> Identity? {
        state.withLock { $0.authentications += 1 }
        return nil
    }

    func authenticateAtOnce(token: String?) -> AuthenticationAtOnce { .identity(nil) }

    func authorize(_ identity: Identity?, _ action: PresenceAction) async throws {
        switch action {
        case .join: state.withLock { $0.joinsAuthorized += 1 }
        case .update:
            await gate.wait()
        case .read, .watch: break
        }
    }

    func allowsAtOnce(_ identity: Identity?, _ action: PresenceAction) -> Bool {
        if case .join = action { return true }
        return false
    }

    func openGate() {
        gate.open()
    }
}

@Suite struct HeartbeatAtOnceTests {
    /// A heartbeat the server can answer in the socket's read still waits its turn: its reply
    /// never overtakes the reply to a message sent before it.
    @Test func aHeartbeatAnsweredAtOnceKeepsItsPlaceBehindSlowerMessages() async throws {
        let authorizer = GatedAuthorizer()
        try await withServer(configure: { $0.authorizer = authorizer }) { http in
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            let tokens = try await socket.heartbeat(user: "alice", session: "a")
            socket.send(#"{"type":"update","id":"u","sessionToken":"\#(tokens.sessionToken)","data":{"typing":true}}"#)
            socket.send(#"{"type":"heartbeat","id":"h","roomId":"room","userId":"alice","sessionId":"a","interval":10000}"#)
            #expect(await socket.nextRaw(timeout: .milliseconds(300)) == nil, "a reply came while the update was held")
            authorizer.openGate()
            let first = try await socket.receive()
            let second = try await socket.receive()
            #expect(first["type"]?.string == "updated" && first["id"]?.string == "u", "\(first.compactJSON)")
            #expect(second["type"]?.string == "heartbeat" && second["id"]?.string == "h", "\(second.compactJSON)")
        }
    }

    /// The heartbeats of a live session are answered without asking the authorizer to wait
    /// (and without a task), when it can decide at once; with the same reply as the full path.
    @Test func heartbeatsOfALiveSessionAreAnsweredAtOnce() async throws {
        let authorizer = GatedAuthorizer()
        let store = try SQLiteStore(directory: temporaryDirectory())
        try await withServer(store: store, configure: { $0.authorizer = authorizer }) { http in
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            // A new session is stored first: the full path, which asks the authorizer.
            let joined = try await socket.heartbeat(user: "alice", session: "a")
            let afterJoin = authorizer.joinsAuthorized
            #expect(afterJoin >= 1)
            for _ in 0..<20 { #expect(try await socket.heartbeat(user: "alice", session: "a") == joined) }
            // Until the join is committed a heartbeat may still take the full path; after, none does.
            #expect(authorizer.joinsAuthorized - afterJoin < 20)
            try await Task.sleep(for: .milliseconds(200))
            let settled = authorizer.joinsAuthorized
            for _ in 0..<20 { #expect(try await socket.heartbeat(user: "alice", session: "a") == joined) }
            #expect(authorizer.joinsAuthorized == settled)
            #expect(try await http.metric("presence_heartbeats_total") == 41)
        }
    }
}

@Suite struct AllowsAtOnceTests {
    /// The JWT mode decides from the token alone, so it answers at once exactly what `authorize` would.
    @Test func theJWTModeDecidesAtOnceAsItDoesInFull() async throws {
        let jwt = try await AuthTests.jwtAuthorizer()
        let alice = Identity(userId: "alice", mayWatch: .users(["bob"]))
        let cases: [(Identity?, PresenceAction)] = [
            (alice, .join(roomId: "room", userId: "alice")),
            (alice, .join(roomId: "room", userId: "bob")),
            (alice, .update(roomId: "room", userId: "alice")),
            (alice, .read(roomId: "room")),
            (alice, .watch(userIds: ["alice", "bob"])),
            (alice, .watch(userIds: ["carol"])),
            (nil, .join(roomId: "room", userId: "alice")),
            (nil, .read(roomId: "room")),
        ]
        var allowed: [Bool] = []
        for (identity, action) in cases {
            let inFull = await (try? jwt.authorize(identity, action)) != nil
            #expect(jwt.allowsAtOnce(identity, action) == inFull, "\(action)")
            allowed.append(inFull)
        }
        #expect(allowed == [true, false, true, true, true, false, false, false])
        // An app's authorizer that does not say otherwise is always asked in full.
        #expect(!MembersOnly(jwt: jwt, members: ["room": ["alice"]]).allowsAtOnce(alice, .join(roomId: "room", userId: "alice")))
        #expect(OpenAuthorizer().allowsAtOnce(nil, .join(roomId: "room", userId: "alice")))
    }

    /// A JWT is known at once after it passed in full, until it expires; a bad one never is.
    @Test func theJWTModeKnowsAVerifiedTokenAtOnceUntilItExpires() async throws {
        let clock = ManualWallClock(nowMillis: Int64(Date().timeIntervalSince1970 * 1000))
        let jwt = try await AuthTests.jwtAuthorizer(clock: clock)
        let token = try await TestKeys.token("alice", lifetime: 60)
        #expect(jwt.authenticateAtOnce(token: token) == .mustWait)
        let identity = try await jwt.authenticate(token: token)
        #expect(identity?.userId == "alice")
        #expect(jwt.authenticateAtOnce(token: token) == .identity(identity))
        #expect(try await jwt.authenticate(token: token) == identity)
        #expect(await (try? jwt.authenticate(token: token + "x")) == nil)
        #expect(jwt.authenticateAtOnce(token: token + "x") == .mustWait)
        #expect(jwt.authenticateAtOnce(token: nil) == .mustWait)
        clock.advance(by: 61_000)
        #expect(jwt.authenticateAtOnce(token: token) == .mustWait)
        await #expect(throws: PresenceError.self) { try await jwt.authenticate(token: token) }
    }

    /// The verified tokens stay within their capacity, and expired ones go first.
    @Test func verifiedTokensStayWithinTheirCapacity() {
        let tokens = JWTAuthorizer.VerifiedTokens(capacity: 3)
        tokens.insert(Identity(userId: "old", expiresAt: 100), for: "old", now: 0)
        tokens.insert(Identity(userId: "a", expiresAt: 1_000), for: "a", now: 0)
        tokens.insert(Identity(userId: "b", expiresAt: 1_000), for: "b", now: 0)
        tokens.insert(Identity(userId: "c", expiresAt: 1_000), for: "c", now: 200)
        #expect(tokens.count == 3)
        #expect(tokens.identity(for: "old", now: 50) == nil)
        #expect(tokens.identity(for: "a", now: 200)?.userId == "a")
        #expect(tokens.identity(for: "c", now: 200)?.userId == "c")
        tokens.insert(Identity(userId: "d", expiresAt: 1_000), for: "d", now: 200)
        #expect(tokens.count <= 3)
        #expect(tokens.identity(for: "d", now: 200)?.userId == "d")
    }
}
