import Foundation
import PresenceCore
#if canImport(Glibc)
import Glibc
#endif

/// Blocking calls (sockets, processes) must not run on the cooperative thread pool, where servers' own tasks run.
public func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try work() })
        }
    }
}

/// What a child process has written to `pipe` once `complete` holds (or it closed the pipe).
public func readOutput(of pipe: Pipe, until complete: @escaping @Sendable (String) -> Bool) async throws -> String {
    let handle = pipe.fileHandleForReading
    return try await offThePool {
        var text = ""
        while !complete(text) {
            let data = handle.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
        }
        return text
    }
}

/// A fresh folder under the system's temporary directory, named `prefix-<UUID>`.
public func temporaryDirectory(named prefix: String = "presence-test") -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url.path
}

/// A real `presence-server` process, its output and its port. The process is killed when
/// this object goes away, so a test that fails half-way leaves no server behind.
public final class ServerProcess: @unchecked Sendable {
    public let process = Process()
    public let output = Pipe()
    public let errors = Pipe()
    public var port = 0
    public var banner = ""

    /// - Parameter showErrors: pass the server's standard error through to ours
    ///   (for long runs, where an unread pipe would fill and stall the server).
    public init(executable: URL, arguments: [String], environment: [String: String] = [:], showErrors: Bool = false) throws {
        process.executableURL = executable
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PRESENCE_") }
        merged["PRESENCE_LOG_LEVEL"] = "warning"
        merged.merge(environment) { $1 }
        process.environment = merged
        process.standardOutput = output
        process.standardError = showErrors ? FileHandle.standardError : errors
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// CPU time the server has used so far (user + system), in seconds, at the kernel's tick resolution.
    public func cpuSeconds() throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8)
        // Fields after the parenthesised command name, which may itself contain spaces.
        guard let end = stat.lastIndex(of: ")") else { throw ServerProcessError("unreadable /proc stat") }
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        // utime and stime are fields 14 and 15 of the whole line, so 12 and 13 after the name.
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else {
            throw ServerProcessError("unreadable /proc stat")
        }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The server's resident memory (`VmRSS`), in bytes.
    public func residentBytes() throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "")
        else { throw ServerProcessError("no VmRSS for process \(process.processIdentifier)") }
        return kib * 1024
    }

    /// Reads the start-up banner and the port it names.
    public func waitUntilListening() async throws {
        banner = try await readOutput(of: output) { $0.contains("listening on") && $0.hasSuffix("\n") }
        guard let range = banner.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression) else {
            throw ServerProcessError("no listening line in: \(banner)")
        }
        port = Int(banner[range].split(separator: ":")[1])!
    }

    public func waitForExit(timeout: Duration = .seconds(15)) async throws -> Int32 {
        let process = self.process
        return try await offThePool {
            let deadline = Date().addingTimeInterval(timeout.inSeconds)
            while process.isRunning {
                guard Date() < deadline else {
                    process.terminate()
                    throw ServerProcessError("the server did not exit in time")
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



/// Why a server process could not be started or watched; the message says what it printed.
public struct ServerProcessError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
