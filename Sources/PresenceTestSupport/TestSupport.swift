import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Helpers shared by the test targets; not part of the product.

/// A failure a test throws with a message for a person.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A small deterministic generator (SplitMix64), so randomized tests repeat exactly.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A fresh folder under the system's temporary directory.
public func temporaryDirectory() -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("presence-test-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url.path
}

/// Blocking calls (sockets, processes) must not run on the cooperative thread pool, where servers' own tasks run.
public func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try work() })
        }
    }
}

/// The built `presence-server` beside the test bundle.
public var presenceServerExecutable: URL {
    // Tests run from the build folder that also holds the executable.
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("presence-server")
}

/// A real `presence-server` process, its output and its port.
public final class ServerProcess: @unchecked Sendable {
    public let process = Process()
    public let output = Pipe()
    public let errors = Pipe()
    public var port = 0
    public var banner = ""

    public init(arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = presenceServerExecutable
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
    public func waitUntilListening() async throws {
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

    public func waitForExit(timeout: Duration = .seconds(15)) async throws -> Int32 {
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

    public var errorOutput: String {
        String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self)
    }
}


/// A port on 127.0.0.1 that is free right now (for a server that must come back on the same port).
public func freePort() throws -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            guard bind(descriptor, pointer, length) == 0 else { return -1 }
            return getsockname(descriptor, pointer, &length)
        }
    }
    guard bound == 0 else { throw TestFailure("no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}
