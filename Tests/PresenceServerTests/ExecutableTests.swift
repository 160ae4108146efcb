import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import PresenceServer
import PresenceStore

/// The real `presence-server` process: options, environment, and graceful shutdown.
@Suite struct ExecutableTests {
    @Test func startsOnTheGivenPortAndShutsDownGracefullyOnSIGTERM() async throws {
        let server = try ServerProcess(arguments: ["--port", "0", "--admin-key", "flag-key", "--data-dir", temporaryDirectory()])
        try await server.waitUntilListening()
        #expect(!server.banner.contains("admin key"), "a configured key is never printed")

        let socket = TestSocket(port: server.port)
        let tokens = try await socket.heartbeat(user: "alice", session: "a1")
        _ = try await socket.subscribe(tokens.roomToken)

        kill(server.process.processIdentifier, SIGTERM)
        let frame = try await socket.closeFrame()
        #expect(frame?.closeCode == .normalClosure)
        #expect(try await server.waitForExit() == 0)
    }

    /// A socket that takes the upgrade and then never reads or answers the close frame would
    /// otherwise keep the server from exiting; it is cut after the close grace (5 s by default).
    @Test func aClientThatNeverAnswersTheCloseDoesNotHoldUpShutdown() async throws {
        let server = try ServerProcess(arguments: ["--port", "0", "--store", "memory", "--admin-key", "k"])
        try await server.waitUntilListening()
        let silent = try await offThePool { try RawWebSocket(port: server.port) }

        kill(server.process.processIdentifier, SIGTERM)
        #expect(try await server.waitForExit(timeout: .seconds(30)) == 0)
        let frames = RawWebSocket.frames(in: try await offThePool { silent.readToEnd() })
        #expect(frames.last?.closeCode == 1000, "the server still says goodbye: \(frames.map(\.opcode))")
    }

    /// A graceful restart makes nobody flicker offline (issue 28's case): ten users heartbeating
    /// every second with a 5 s timeout, a subscriber that never answers the close (so the drain
    /// takes the whole 5 s close grace), no heartbeat from the SIGTERM to the new start. The old
    /// process used to expire them during its drain, at deadlines that fell in the time it refused
    /// their heartbeats itself; now its expiry stops first and the new start grants a grace period.
    @Test func aGracefulRestartExpiresNobodyForTheTimeItRefusedHeartbeats() async throws {
        let directory = temporaryDirectory()
        let port = try freePort()
        let arguments = ["--port", "\(port)", "--admin-key", adminKey, "--data-dir", directory]
        var server = try ServerProcess(arguments: arguments)
        try await server.waitUntilListening()
        let client = ProcessClient(port: port)
        func beat(_ index: Int) async throws {
            _ = try await client.heartbeat(user: "u\(index)", session: "s\(index)", interval: 2_000)
        }
        for index in 0..<10 { try await beat(index) }
        let roomToken = try await client.heartbeat(user: "u0", session: "s0", interval: 2_000).roomToken
        let watcher = try await offThePool { try RawWebSocket(port: port) }
        try watcher.sendText(#"{"type":"subscribe","roomToken":"\#(roomToken)"}"#)
        for _ in 0..<2 {
            try await Task.sleep(for: .seconds(1))
            for index in 0..<10 { try await beat(index) }
        }
        let stopped = SystemWallClock().nowMillis()
        kill(server.process.processIdentifier, SIGTERM)
        #expect(try await server.waitForExit(timeout: .seconds(30)) == 0)
        server = try ServerProcess(arguments: arguments)
        try await server.waitUntilListening()
        let restarted = SystemWallClock().nowMillis()
        for index in 0..<10 { try await beat(index) }
        // Only the time the server refused heartbeats itself counts: a test client slowed down by a
        // loaded machine may let a session lapse before or after it, which is a real timeout.
        let leaves = try await client.events().filter { event in
            guard event["type"]?.string == "leave", let at = event["at"]?.integer else { return false }
            return (stopped...restarted).contains(at)
        }
        #expect(leaves.isEmpty, "\(leaves.map(\.compactJSON))")
        _ = watcher
    }

    /// `--ws-ping-seconds` reaches the keep-alive: a silent peer is pinged after it, then cut.
    @Test func theWebSocketPingIntervalIsAFlag() async throws {
        let server = try ServerProcess(arguments: ["--port", "0", "--store", "memory", "--ws-ping-seconds", "1"])
        try await server.waitUntilListening()
        // Timed on the thread that connects and reads, from before connecting (the server's clock
        // for this socket starts later, so the lower bound holds): a test task waits for a turn
        // of the shared pool after that, which on a loaded machine took seconds.
        let port = server.port
        let (bytes, elapsed) = try await offThePool { () -> ([UInt8], Duration) in
            let started = ContinuousClock.now
            let silent = try RawWebSocket(port: port)
            let bytes = silent.readToEnd()
            return (bytes, ContinuousClock.now - started)
        }
        let frames = RawWebSocket.frames(in: bytes)
        #expect(frames.map(\.opcode) == [9])
        // With the default of 30 s, nothing would happen for a minute.
        #expect(elapsed >= .milliseconds(1_900) && elapsed < .seconds(9), "cut after \(elapsed)")
        server.process.terminate()
        _ = try await server.waitForExit()
    }

    @Test func readsItsSettingsFromTheEnvironmentAndPrintsAGeneratedKey() async throws {
        let server = try ServerProcess(arguments: [], environment: ["PRESENCE_PORT": "0", "PRESENCE_HOST": "127.0.0.1", "PRESENCE_STORE": "memory"])
        try await server.waitUntilListening()
        let keyLine = server.banner.split(separator: "\n").first { $0.hasPrefix("admin key") }
        let key = keyLine.map { String($0.split(separator: " ").last!) }
        #expect(key?.hasPrefix("admin_") == true)

        let url = URL(string: "http://127.0.0.1:\(server.port)/api/rooms/x/users")!
        var request = URLRequest(url: url)
        request.setValue("Bearer \(key ?? "")", forHTTPHeaderField: "Authorization")
        let (_, response) = try await URLSession.shared.data(for: request)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)

        kill(server.process.processIdentifier, SIGINT)
        #expect(try await server.waitForExit() == 0)
    }

    /// A graceful stop writes a last "alive at" mark (heartbeats of online users write nothing, and
    /// the periodic mark is seconds old). After an outage longer than the session's timeout, the
    /// user's `lastDisconnected` is within 1 s of the deadline their last heartbeat gave them.
    @Test func afterAGracefulStopAndALongOutageTheLastSeenTimeIsTheRealDeadline() async throws {
        let directory = temporaryDirectory()
        var server = try ServerProcess(arguments: ["--port", "0", "--data-dir", directory, "--admin-key", "k"])
        try await server.waitUntilListening()
        let body = #"{"roomId":"doc","userId":"alice","sessionId":"a1","interval":1000}"#
        _ = try await Self.call(port: server.port, "POST", "/api/heartbeat", body: body)
        // Long enough that a mark from the join (the last write) would be far off; shorter than the timeout.
        try await Task.sleep(for: .milliseconds(2_000))
        _ = try await Self.call(port: server.port, "POST", "/api/heartbeat", body: body)
        let realDeadline = Int64(Date().timeIntervalSince1970 * 1000) + 2_500
        kill(server.process.processIdentifier, SIGTERM)
        #expect(try await server.waitForExit() == 0)

        // The outage itself, longer than the session's 2.5 s timeout.
        try await Task.sleep(for: .milliseconds(3_500))
        server = try ServerProcess(arguments: ["--port", "0", "--data-dir", directory, "--admin-key", "k"])
        try await server.waitUntilListening()
        let listing = try await Self.call(port: server.port, "GET", "/api/rooms/doc/users", admin: "k")
        let alice = try JSONDecoder().decode(RoomListing.self, from: Data(listing.utf8)).users.first
        #expect(alice?.online == false)
        let lastSeen = alice?.lastDisconnected ?? 0
        #expect(abs(lastSeen - realDeadline) <= 1_000, "last seen \(lastSeen - realDeadline) ms from the real deadline")
        kill(server.process.processIdentifier, SIGTERM)
        #expect(try await server.waitForExit() == 0)
    }

    static func call(port: Int, _ method: String, _ path: String, body: String? = nil, admin: String? = nil) async throws -> String {
        let (status, text) = try await CommitFailureTests.send(port: port, method, path, body: body, admin: admin)
        guard status == 200 else { throw TestFailure("\(method) \(path): \(status) \(text)") }
        return text
    }

    @Test func aSecondServerOnTheSameDataDirectoryIsRefused() async throws {
        let directory = temporaryDirectory()
        let first = try ServerProcess(arguments: ["--port", "0", "--data-dir", directory])
        try await first.waitUntilListening()
        let second = try ServerProcess(arguments: ["--port", "0", "--data-dir", directory])
        #expect(try await second.waitForExit() != 0)
        #expect(second.errorOutput.contains("in use by another running presence-server"))
        kill(first.process.processIdentifier, SIGTERM)
        #expect(try await first.waitForExit() == 0)
    }

    @Test func rejectsBadOptionsWithAClearErrorAndNonZeroExit() async throws {
        for arguments in [["--store", "nope"], ["--port", "70000"], ["--log-level", "loud"], ["--data-dir", "/proc/nope"], ["--ws-ping-seconds", "0"]] {
            let server = try ServerProcess(arguments: arguments)
            let status = try await server.waitForExit()
            #expect(status != 0, "\(arguments)")
            #expect(!server.errorOutput.isEmpty, "\(arguments)")
        }
    }
}

/// What the server does when the disk refuses a commit: 503 for the change, nothing of it
/// visible or kept, and normal service once writes succeed again.
@Suite struct CommitFailureTests {
    /// Sets the running server's file-size limit (the soft one) as `ulimit -f` would: every write
    /// past `limit` bytes into any file then fails with EFBIG. util-linux's `prlimit`, since Glibc's
    /// call of that name is not visible to Swift.
    static func limitFileSize(of server: ServerProcess, to limit: String) throws {
        let tool = Process()
        tool.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        tool.arguments = ["--pid", "\(server.process.processIdentifier)", "--fsize=\(limit):unlimited"]
        try tool.run()
        tool.waitUntilExit()
        guard tool.terminationStatus == 0 else { throw TestFailure("prlimit failed with \(tool.terminationStatus)") }
    }

    @Test func aCommitThatFailsAnswers503ChangesNothingAndServiceResumes() async throws {
        let directory = temporaryDirectory()
        var server = try ServerProcess(arguments: ["--port", "0", "--data-dir", directory, "--admin-key", "k"])
        try await server.waitUntilListening()
        let port = server.port
        func heartbeat(_ user: String) async throws -> (Int, String) {
            // A long interval: a machine busy with the rest of the suite must not expire them meanwhile.
            try await Self.send(
                port: port, "POST", "/api/heartbeat",
                body: #"{"roomId":"doc","userId":"\#(user)","sessionId":"\#(user)-1","interval":60000}"#)
        }
        func listing() async throws -> RoomListing {
            let (status, text) = try await Self.send(port: port, "GET", "/api/rooms/doc/users", admin: "k")
            guard status == 200 else { throw TestFailure("list: \(status) \(text)") }
            return try JSONDecoder().decode(RoomListing.self, from: Data(text.utf8))
        }
        let (joined, tokensText) = try await heartbeat("alice")
        #expect(joined == 200)
        let aliceTokens = try JSONDecoder().decode(SessionTokens.self, from: Data(tokensText.utf8))
        let before = try await listing()

        try Self.limitFileSize(of: server, to: "1")
        let (refused, refusal) = try await heartbeat("bob")
        #expect(refused == 503)
        #expect(refusal.contains(#""code":"unavailable""#), "\(refusal)")
        let (updateStatus, _) = try await Self.send(
            port: port, "POST", "/api/update", body: #"{"sessionToken":"\#(aliceTokens.sessionToken)","data":{"typing":true}}"#)
        #expect(updateStatus == 503)
        #expect(try await listing() == before, "a change that was not stored must not show")

        try Self.limitFileSize(of: server, to: "unlimited")
        #expect(try await heartbeat("bob").0 == 200)
        let after = try await listing()
        #expect(after.users.map(\.userId) == ["alice", "bob"])
        #expect(after.users.allSatisfy { $0.data == nil })

        // And what was acknowledged is what the file holds.
        kill(server.process.processIdentifier, SIGTERM)
        #expect(try await server.waitForExit() == 0)
        server = try ServerProcess(arguments: ["--port", "0", "--data-dir", directory, "--admin-key", "k"])
        try await server.waitUntilListening()
        let (_, reopened) = try await Self.send(port: server.port, "GET", "/api/rooms/doc/users", admin: "k")
        #expect(try JSONDecoder().decode(RoomListing.self, from: Data(reopened.utf8)).users.map(\.userId) == ["alice", "bob"])
        kill(server.process.processIdentifier, SIGTERM)
        #expect(try await server.waitForExit() == 0)
    }

    static func send(port: Int, _ method: String, _ path: String, body: String? = nil, admin: String? = nil) async throws -> (Int, String) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.httpBody = body.map { Data($0.utf8) }
        if let admin { request.setValue("Bearer \(admin)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }
}
