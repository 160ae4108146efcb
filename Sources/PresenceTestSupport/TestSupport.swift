import Foundation
@_exported import PresenceProcess
@_exported import PresenceStore
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

/// The built `presence-server` beside the test bundle.
public var presenceServerExecutable: URL {
    // Tests run from the build folder that also holds the executable.
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("presence-server")
}

extension ServerProcess {
    /// The `presence-server` of this build, as the tests start it.
    public convenience init(arguments: [String], environment: [String: String] = [:]) throws {
        try self.init(executable: presenceServerExecutable, arguments: arguments, environment: environment)
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
