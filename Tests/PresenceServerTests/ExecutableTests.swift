import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import PresenceServer

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
        for arguments in [["--store", "nope"], ["--port", "70000"], ["--log-level", "loud"], ["--data-dir", "/proc/nope"]] {
            let server = try ServerProcess(arguments: arguments)
            let status = try await server.waitForExit()
            #expect(status != 0, "\(arguments)")
            #expect(!server.errorOutput.isEmpty, "\(arguments)")
        }
    }
}
