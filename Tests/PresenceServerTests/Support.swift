import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import HummingbirdWSClient
import Logging
import NIOCore
import PresenceServer
import PresenceStore
@_exported import PresenceTestSupport
import Synchronization

let adminKey = "test-admin-key"

/// Runs a real server on a free port of 127.0.0.1 and hands the test an HTTP client and the port.
func withServer(
    store: any PresenceStore = MemoryStore(),
    configure: (inout PresenceServerConfiguration) -> Void = { _ in },
    _ test: @Sendable @escaping (HTTPClient) async throws -> Void
) async throws {
    var configuration = PresenceServerConfiguration()
    configuration.port = 0
    configuration.adminKey = adminKey
    // Tests send as fast as the machine lets them, from one address: the per-address limit would
    // make them pass or fail by speed. The tests of that limit set their own.
    configuration.addressRequestsPerSecond = 1_000_000
    configuration.addressRequestBurst = 1_000_000
    configure(&configuration)
    var logger = Logger(label: "presence-test")
    logger.logLevel = ProcessInfo.processInfo.environment["PRESENCE_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
    let metrics = PresenceMetrics()
    let app = PresenceApplication.make(configuration: configuration, store: store, metrics: metrics, logger: logger)
    try await app.test(.live) { client in
        try await test(HTTPClient(client: client, port: client.port!))
    }
}

/// A thin HTTP client over real sockets that speaks JSON.
struct HTTPClient: Sendable {
    let client: any TestClientProtocol
    let port: Int

    struct Reply: Sendable {
        let status: Int
        let body: String
        let headers: HTTPFields
        var json: JSONValue { (try? JSONDecoder().decode(JSONValue.self, from: Data(body.utf8))) ?? .null }
        var errorCode: String? { json["error"]?["code"]?.string }
    }

    func call(
        _ method: HTTPRequest.Method, _ path: String, body: String? = nil, admin: Bool = false,
        headers extra: HTTPFields = [:]
    ) async throws -> Reply {
        var headers = extra
        if admin { headers[.authorization] = "Bearer \(adminKey)" }
        if body != nil, headers[.contentType] == nil { headers[.contentType] = "application/json" }
        let response = try await client.execute(
            uri: path, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
        return Reply(status: Int(response.status.code), body: String(buffer: response.body), headers: response.headers)
    }

    func heartbeat(room: String = "room", user: String, session: String, interval: Int = 10_000, extra: String = "") async throws -> SessionTokens {
        let reply = try await call(
            .post, "/api/heartbeat",
            body: #"{"roomId":"\#(room)","userId":"\#(user)","sessionId":"\#(session)","interval":\#(interval)\#(extra)}"#)
        guard reply.status == 200 else { throw TestFailure("heartbeat failed: \(reply.status) \(reply.body)") }
        return try JSONDecoder().decode(SessionTokens.self, from: Data(reply.body.utf8))
    }

    func list(_ roomToken: String, limit: Int? = nil) async throws -> RoomListing {
        let query = limit.map { "&limit=\($0)" } ?? ""
        let reply = try await call(.get, "/api/list?roomToken=\(roomToken)\(query)")
        guard reply.status == 200 else { throw TestFailure("list failed: \(reply.status) \(reply.body)") }
        return try JSONDecoder().decode(RoomListing.self, from: Data(reply.body.utf8))
    }

    /// A counter or gauge from `/metrics`, or -1 when it is not there.
    func metric(_ name: String) async throws -> Int {
        metricValue(name, in: try await call(.get, "/metrics").body) ?? -1
    }

    /// Waits (bounded in real time) until a metric reads `value`: how a test knows the server has
    /// finished with something (a closed socket, say) instead of guessing with a sleep.
    func waitForMetric(_ name: String, toBe value: Int, timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while try await metric(name) != value {
            guard ContinuousClock.now < deadline else {
                throw TestFailure("\(name) is \(try await metric(name)), not \(value), after \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    func listRoom(_ roomId: String) async throws -> RoomListing {
        let reply = try await call(.get, "/api/rooms/\(roomId)/users?limit=1000", admin: true)
        guard reply.status == 200 else { throw TestFailure("listRoom failed: \(reply.status) \(reply.body)") }
        return try JSONDecoder().decode(RoomListing.self, from: Data(reply.body.utf8))
    }
}

/// The value of `name` in a Prometheus text exposition.
func metricValue(_ name: String, in text: String) -> Int? {
    metricDouble(name, in: text).map { Int($0) }
}

func metricDouble(_ name: String, in text: String) -> Double? {
    let line = text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
    return line.flatMap { Double($0.split(separator: " ")[1]) }
}

struct RoomListing: Decodable, Equatable {
    let roomVersion: UInt64
    let users: [UserRecord]
    let onlineCount: Int
    let userCount: Int
}

extension JSONValue {
    subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members[key]
    }
    var string: String? {
        guard case .string(let value) = self else { return nil }
        return value
    }
    var integer: Int64? {
        guard case .integer(let value) = self else { return nil }
        return value
    }
    var array: [JSONValue]? {
        guard case .array(let values) = self else { return nil }
        return values
    }
    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(compactJSON.utf8))
    }
}

/// Messages received on a socket, waited for with a real-time bound.
final class MessageQueue: Sendable {
    private struct State {
        var buffer: [String] = []
        var waiter: (generation: Int, continuation: CheckedContinuation<String?, Never>)?
        var generation = 0
        var finished = false
    }
    private let state = Mutex(State())

    func push(_ message: String) {
        let waiter = state.withLock { state -> CheckedContinuation<String?, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter.continuation
            }
            state.buffer.append(message)
            return nil
        }
        waiter?.resume(returning: message)
    }

    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<String?, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter?.continuation
        }
        waiter?.resume(returning: nil)
    }

    func next(timeout: Duration) async -> String? {
        await withCheckedContinuation { continuation in
            let (immediate, generation) = state.withLock { state -> (String??, Int) in
                if !state.buffer.isEmpty { return (.some(state.buffer.removeFirst()), 0) }
                if state.finished { return (.some(nil), 0) }
                state.generation += 1
                state.waiter = (state.generation, continuation)
                return (nil, state.generation)
            }
            if let immediate {
                continuation.resume(returning: immediate)
                return
            }
            Task {
                try? await Task.sleep(for: timeout)
                let expired = self.state.withLock { state -> CheckedContinuation<String?, Never>? in
                    guard let waiter = state.waiter, waiter.generation == generation else { return nil }
                    state.waiter = nil
                    return waiter.continuation
                }
                expired?.resume(returning: nil)
            }
        }
    }
}

/// A WebSocket client for tests: send JSON text, receive messages in order, see how it was closed.
final class TestSocket: Sendable {
    let received = MessageQueue()
    private let outgoing: AsyncStream<String>.Continuation
    let connection: Task<WebSocketCloseFrame?, any Error>

    init(port: Int, path: String = "/api/ws") {
        let (stream, outgoing) = AsyncStream<String>.makeStream()
        self.outgoing = outgoing
        let received = self.received
        var logger = Logger(label: "test-socket")
        logger.logLevel = .critical
        connection = Task {
            defer { received.finish() }
            return try await WebSocketClient.connect(
                url: "ws://127.0.0.1:\(port)\(path)",
                configuration: .init(maxFrameSize: 1 << 22),
                logger: logger
            ) { inbound, outbound, _ in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await message in inbound.messages(maxSize: 1 << 24) {
                            if case .text(let text) = message { received.push(text) }
                        }
                    }
                    group.addTask {
                        for await text in stream {
                            try await outbound.write(.text(text))
                        }
                    }
                    _ = try await group.next()
                    group.cancelAll()
                }
            }
        }
    }

    func send(_ text: String) {
        outgoing.yield(text)
    }

    /// The next message as JSON, or a failure when none comes within `timeout`.
    func receive(timeout: Duration = .seconds(10)) async throws -> JSONValue {
        guard let text = await received.next(timeout: timeout) else {
            throw TestFailure("no message within \(timeout)")
        }
        return try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    /// Receives until a message of `type` arrives; fails on anything else.
    func receive(type: String, timeout: Duration = .seconds(10)) async throws -> JSONValue {
        let message = try await receive(timeout: timeout)
        guard message["type"]?.string == type else {
            throw TestFailure("expected a \(type) message, got \(message.compactJSON)")
        }
        return message
    }

    /// The next two messages, of types `first` and `second` in either order: a request's reply and
    /// the diff it causes come from different places and neither waits for the other.
    func receiveInEitherOrder(_ first: String, _ second: String) async throws -> (JSONValue, JSONValue) {
        let pair = [try await receive(), try await receive()]
        guard let a = pair.first(where: { $0["type"]?.string == first }), let b = pair.first(where: { $0["type"]?.string == second }) else {
            throw TestFailure("expected a \(first) and a \(second) message, got \(pair.map(\.compactJSON))")
        }
        return (a, b)
    }

    /// The raw text of the next message within `timeout`, or nil: for asserting that nothing arrives.
    func nextRaw(timeout: Duration) async -> String? {
        await received.next(timeout: timeout)
    }

    func heartbeat(room: String = "room", user: String, session: String, interval: Int = 10_000) async throws -> SessionTokens {
        send(#"{"type":"heartbeat","roomId":"\#(room)","userId":"\#(user)","sessionId":"\#(session)","interval":\#(interval)}"#)
        return try await receive(type: "heartbeat").decode(SessionTokens.self)
    }

    func subscribe(_ roomToken: String, limit: Int? = nil) async throws -> Snapshot {
        let limitField = limit.map { #","limit":\#($0)"# } ?? ""
        send(#"{"type":"subscribe","roomToken":"\#(roomToken)"\#(limitField)}"#)
        return try await receive(type: "snapshot").decode(Snapshot.self)
    }

    func close() {
        outgoing.finish()
    }

    /// How the server closed the socket, waiting up to `timeout`.
    func closeFrame(timeout: Duration = .seconds(10), what: String = "socket") async throws -> WebSocketCloseFrame? {
        let connection = self.connection
        guard let outcome = await firstWithin(timeout, { await connection.result }) else {
            throw TestFailure("\(what) still open after \(timeout)")
        }
        return try outcome.get()
    }
}

/// A continuation resumed by whichever of several racers comes first.
private final class ResumeOnce<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T?, Never>?>
    init(_ continuation: CheckedContinuation<T?, Never>) { self.continuation = Mutex(continuation) }
    func resume(_ value: T?) { continuation.withLock { $0.take() }?.resume(returning: value) }
}

/// `operation`'s value, or nil when `timeout` passes first. Unlike a task group, it does not wait
/// for an operation that ignores cancellation (awaiting a task's value does): a timeout fails the
/// test instead of hanging it.
func firstWithin<T: Sendable>(_ timeout: Duration, _ operation: @escaping @Sendable () async -> T) async -> T? {
    await withCheckedContinuation { continuation in
        let once = ResumeOnce(continuation)
        Task { once.resume(await operation()) }
        Task {
            try? await Task.sleep(for: timeout)
            once.resume(nil)
        }
    }
}

struct Snapshot: Decodable {
    let roomToken: String
    let roomVersion: UInt64
    let users: [UserRecord]
    let onlineCount: Int
    let userCount: Int
}

struct DiffMessage: Decodable {
    let roomToken: String
    let from: UInt64
    let roomVersion: UInt64
    let upsert: [UserRecord]
    let remove: [String]
    /// Present when the counts changed.
    let onlineCount: Int?
    let userCount: Int?

    var diff: RoomDiff { RoomDiff(upsert: upsert, remove: remove) }
}
