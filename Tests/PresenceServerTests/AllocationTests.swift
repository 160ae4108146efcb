import Foundation
import PresenceTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Heap allocations per request of a real server, counted by `libPresenceAllocationCounter.so`
/// preloaded into it and held to the pins of `Tests/allocation-thresholds.json`: counts are
/// exact where times are noise, so a change that adds work to a hot path shows here. A count
/// well below its pin fails too, so the pins follow improvements (swift-nio's allocation tests
/// work the same way). The tests run the debug build; the pins are its counts.
@Suite struct AllocationTests {
    struct Thresholds: Decodable {
        let httpHeartbeat: Double
        let webSocketHeartbeat: Double
        let deliveredDiff: Double
        /// How far below a pin a count may fall, as a fraction of the pin, before the pin must be lowered.
        let slack: Double
    }

    static let thresholdsFile = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("allocation-thresholds.json")

    /// A server whose allocations are counted into a file the test reads.
    final class CountedServer: Sendable {
        let server: ServerProcess
        let counterFile: String

        init() async throws {
            let library = presenceServerExecutable.deletingLastPathComponent().appendingPathComponent("libPresenceAllocationCounter.so")
            guard FileManager.default.fileExists(atPath: library.path) else {
                throw TestFailure("\(library.path) is missing: swift build --build-tests builds it")
            }
            counterFile = temporaryDirectory() + "/allocations"
            server = try ServerProcess(
                arguments: [
                    "--port", "0", "--admin-key", "k", "--rate-limit", "1000000000", "--socket-rate-limit", "1000000000",
                    "--diff-merge-ms", "0",
                ],
                environment: ["LD_PRELOAD": library.path, "PRESENCE_ALLOCATION_COUNTER": counterFile])
            try await server.waitUntilListening()
        }

        var allocations: Int64 {
            get throws {
                let data = try Data(contentsOf: URL(fileURLWithPath: counterFile))
                guard data.count >= 8 else { throw TestFailure("the counter file is empty: the library was not loaded") }
                return data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: Int64.self) }
            }
        }

        /// Allocations per call of `body`, over `count` calls after `warmUp` calls.
        func perCall(_ count: Int, warmUp: Int = 50, _ body: () throws -> Void) throws -> Double {
            for _ in 0..<warmUp { try body() }
            let before = try allocations
            for _ in 0..<count { try body() }
            return Double(try allocations - before) / Double(count)
        }
    }

    /// HTTP/1.1 by hand on a blocking socket: keep-alive, one request at a time.
    final class KeepAliveConnection {
        let socket: RawWebSocket
        private var unread: [UInt8] = []

        init(port: Int) throws {
            socket = try RawWebSocket(port: port, handshake: false)
        }

        func post(_ path: String, _ body: String) throws -> String {
            let request = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            try socket.write(Array(request.utf8))
            return try readResponse()
        }

        private func readResponse() throws -> String {
            var buffer = [UInt8](repeating: 0, count: 16_384)
            while true {
                if let end = unread.firstRange(of: [13, 10, 13, 10]) {
                    let head = String(decoding: unread[..<end.lowerBound], as: UTF8.self)
                    let length = head.split(separator: "\r\n")
                        .first { $0.lowercased().hasPrefix("content-length:") }
                        .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                    if unread.count >= end.upperBound + length {
                        let body = String(decoding: unread[end.upperBound..<(end.upperBound + length)], as: UTF8.self)
                        unread.removeFirst(end.upperBound + length)
                        guard head.hasPrefix("HTTP/1.1 2") else { throw TestFailure("\(head)\n\(body)") }
                        return body
                    }
                }
                let count = recv(socket.fd, &buffer, buffer.count, 0)
                guard count > 0 else { throw TestFailure("the connection ended") }
                unread.append(contentsOf: buffer[0..<count])
            }
        }
    }

    static func field(_ name: String, in json: String) throws -> String {
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        guard let value = object?[name] as? String else { throw TestFailure("no \(name) in \(json)") }
        return value
    }

    @Test func allocationsPerRequestStayAtTheirPins() async throws {
        let pins = try JSONDecoder().decode(Thresholds.self, from: Data(contentsOf: Self.thresholdsFile))
        let counted = try await CountedServer()
        let port = counted.server.port
        let measured = try await offThePool { () throws -> (http: Double, webSocket: Double, diff: Double) in
            // An online user's HTTP heartbeat, on a kept-alive connection.
            let http = try KeepAliveConnection(port: port)
            let heartbeat = #"{"roomId":"doc","userId":"ann","sessionId":"ann-1","interval":60000}"#
            let roomToken = try Self.field("roomToken", in: try http.post("/api/heartbeat", heartbeat))
            let perHTTPHeartbeat = try counted.perCall(500) { _ = try http.post("/api/heartbeat", heartbeat) }

            // An online user's heartbeat on a WebSocket.
            let socket = try RawWebSocket(port: port)
            let message = #"{"type":"heartbeat","roomId":"doc","userId":"bea","sessionId":"bea-1","interval":60000}"#
            func socketHeartbeat() throws {
                try socket.sendText(message)
                guard socket.readFrame() != nil else { throw TestFailure("no heartbeat answer") }
            }
            let perWebSocketHeartbeat = try counted.perCall(500, socketHeartbeat)

            // A join and a leave with one subscriber, then with 21: the difference is 20 subscribers' diffs.
            var subscribers: [RawWebSocket] = []
            func subscribe() throws {
                let subscriber = try RawWebSocket(port: port)
                try subscriber.sendText(#"{"type":"subscribe","roomToken":"\#(roomToken)","limit":10}"#)
                guard subscriber.readFrame() != nil else { throw TestFailure("no snapshot") }
                subscribers.append(subscriber)
            }
            var serial = 0
            func change() throws {
                serial += 1
                // Each diff reaches every subscriber before the next change, so none are merged.
                func delivered() throws {
                    for subscriber in subscribers where subscriber.readFrame() == nil { throw TestFailure("a diff did not arrive") }
                }
                let joined = try http.post(
                    "/api/heartbeat", #"{"roomId":"doc","userId":"cal","sessionId":"cal-\#(serial)","interval":60000}"#)
                try delivered()
                _ = try http.post("/api/disconnect", #"{"sessionToken":"\#(try Self.field("sessionToken", in: joined))"}"#)
                try delivered()
            }
            try subscribe()
            let withOne = try counted.perCall(100, warmUp: 20, change)
            for _ in 0..<20 { try subscribe() }
            let withMany = try counted.perCall(100, warmUp: 20, change)
            // Two diffs per change (a join and a leave), each to 20 more subscribers.
            return (perHTTPHeartbeat, perWebSocketHeartbeat, (withMany - withOne) / 40)
        }
        print("allocations: HTTP heartbeat \(measured.http), WebSocket heartbeat \(measured.webSocket), delivered diff \(measured.diff)")
        for (what, count, pin) in [
            ("an HTTP heartbeat", measured.http, pins.httpHeartbeat),
            ("a WebSocket heartbeat", measured.webSocket, pins.webSocketHeartbeat),
            ("a delivered diff", measured.diff, pins.deliveredDiff),
        ] {
            #expect(count <= pin, "\(what) allocates \(count) times, more than its pin \(pin)")
            #expect(count >= pin * (1 - pins.slack), "\(what) allocates \(count) times, well below its pin \(pin): lower the pin")
        }
        kill(counted.server.process.processIdentifier, SIGTERM)
        _ = try await counted.server.waitForExit()
    }
}
