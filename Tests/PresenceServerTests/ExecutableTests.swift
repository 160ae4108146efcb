import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import PresenceServer

/// The real `presence-server` process: options, environment, and graceful shutdown.
@Suite struct ExecutableTests {
    static var executable: URL {
        // Tests run from the build folder that also holds the executable.
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("presence-server")
    }

    final class ServerProcess: @unchecked Sendable {
        let process = Process()
        let output = Pipe()
        let errors = Pipe()
        var port = 0
        var banner = ""

        init(arguments: [String], environment: [String: String] = [:]) throws {
            process.executableURL = ExecutableTests.executable
            process.arguments = arguments
            var merged = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PRESENCE_") }
            merged["PRESENCE_LOG_LEVEL"] = "warning"
            merged.merge(environment) { $1 }
            process.environment = merged
            process.standardOutput = output
            process.standardError = errors
            try process.run()
        }

        /// Reads the start-up banner and the port it names.
        func waitUntilListening() async throws {
            let handle = output.fileHandleForReading
            banner = try await offThePool {
                var text = ""
                while !text.contains("listening on") || !text.hasSuffix("\n") {
                    let data = handle.availableData
                    if data.isEmpty { break }
                    text += String(decoding: data, as: UTF8.self)
                }
                return text
            }
            guard let range = banner.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression) else {
                throw TestFailure("no listening line in: \(banner)")
            }
            port = Int(banner[range].split(separator: ":")[1])!
        }

        func waitForExit(timeout: Duration = .seconds(15)) async throws -> Int32 {
            let process = self.process
            return try await offThePool {
                let deadline = Date().addingTimeInterval(Double(timeout.components.seconds))
                while process.isRunning {
                    guard Date() < deadline else {
                        process.terminate()
                        throw TestFailure("the server did not exit in time")
                    }
                    usleep(20_000)
                }
                return process.terminationStatus
            }
        }

        var errorOutput: String {
            String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self)
        }
    }

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
