import Foundation
import NIOCore
import PresenceCore

/// Scenario 3: sessions heartbeat once and stop; a subscriber of every room
/// reads the offline diffs. Each offline record carries `lastDisconnected`, the
/// session's deadline in the server's wall clock, which is this machine's clock,
/// so lateness is measured on one clock without guessing when the server
/// stamped the heartbeat. As a check that does not take the server's word for
/// its deadlines, lateness is also measured from the moment each heartbeat was
/// sent plus 2.5 × the interval. The two agree to within the protocol's
/// millisecond resolution: the server stamps a heartbeat after it was sent (so
/// the second is later by the request's trip) but in whole milliseconds,
/// rounded down (so the first is later by up to 1 ms).
public struct ExpiryPrecision: Sendable {
    public var sessions: Int
    public var rooms: Int
    /// Heartbeats are spread over this long, so deadlines are too.
    public var spreadSeconds: Double

    public init(sessions: Int = 2_000, rooms: Int = 20, spreadSeconds: Double = 1) {
        self.sessions = sessions
        self.rooms = rooms
        self.spreadSeconds = spreadSeconds
    }

    public static let smoke = ExpiryPrecision(sessions: 40, rooms: 4, spreadSeconds: 0.2)

    static let name = "expiry"
    /// The protocol's shortest interval: sessions end 2.5 s after their heartbeat.
    static let interval = 1_000

    public func run(_ context: BenchmarkContext) async throws -> [Figure] {
        let server = try await context.startServer()
        let address = server.address
        /// Per user: when the offline diff was read, and its `lastDisconnected`, in wall-clock milliseconds.
        let offline = Locked([String: OfflineTimes]())
        let sent = Locked([String: Double]())
        let watcher = try await WebSocketLoadConnection.connect(to: address, group: context.group) { message, _ in
            let now = Self.wallClockMilliseconds()
            guard Wire.isDiff(message), let users = try? Self.offlineUsers(in: message) else { return }
            offline.withLock { seen in
                for (user, lastDisconnected) in users where seen[user] == nil {
                    seen[user] = OfflineTimes(received: now, lastDisconnected: Double(lastDisconnected))
                }
            }
        }
        @Sendable func join(_ connection: HTTPLoadConnection, index: Int) async throws -> String {
            sent.withLock { $0["x\(index)"] = Self.wallClockMilliseconds() }
            return try await connection.heartbeat(
                room: "ex-\(index % rooms)", user: "x\(index)", session: "x\(index)", interval: Self.interval
            ).roomToken
        }
        let http = try await context.connectHTTP(4, to: address)

        context.progress("expiry: \(sessions) sessions heartbeat once over \(spreadSeconds) s, then stop")
        for room in 0..<rooms {
            let token = try await join(http[0], index: room)
            _ = try await watcher.request(Wire.subscribe(roomToken: token, limit: 1000, id: room))
        }
        let started = ContinuousClock.now
        let (sessions, spread) = (self.sessions, spreadSeconds)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for (lane, connection) in http.enumerated() {
                tasks.addTask {
                    for index in stride(from: rooms + lane, to: sessions, by: http.count) {
                        let due = started + .seconds(spread * Double(index) / Double(sessions))
                        if due > .now { try await Task.sleep(until: due) }
                        _ = try await join(connection, index: index)
                    }
                }
            }
            try await tasks.waitForAll()
        }

        let deadline = ContinuousClock.now + .seconds(2.5 * Double(Self.interval) / 1000 + 10)
        while offline.withLock({ $0.count }) < sessions, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        let timeout = 2.5 * Double(Self.interval)
        let (samples, upperBounds) = offline.withLock { offline in
            sent.withLock { sent in
                (
                    offline.values.map { $0.received - $0.lastDisconnected },
                    offline.compactMap { user, times in sent[user].map { times.received - ($0 + timeout) } }
                )
            }
        }
        await context.closeAll([watcher])
        for connection in http { await connection.close() }
        try await server.stop()
        guard samples.count == sessions else {
            throw BenchmarkError("expiry: \(samples.count) of \(sessions) sessions were reported offline")
        }
        let percentiles = Percentiles(samples)
        let bounds = Percentiles(upperBounds)
        let label = "\(Figure.format(Double(sessions))) sessions, offline diff after the deadline"
        let boundLabel = "same, timed from each heartbeat's send time + 2.5 × interval"
        return [
            Figure(scenario: Self.name, name: "\(label), p50", value: percentiles.p50, unit: "ms"),
            .below(250, scenario: Self.name, name: "\(label), p99", value: percentiles.p99, unit: "ms"),
            Figure(scenario: Self.name, name: "\(label), max", value: percentiles.max, unit: "ms"),
            Figure(scenario: Self.name, name: "\(boundLabel), p99", value: bounds.p99, unit: "ms"),
            Figure(scenario: Self.name, name: "\(boundLabel), max", value: bounds.max, unit: "ms"),
        ]
    }

    struct OfflineTimes: Sendable {
        let received: Double
        let lastDisconnected: Double
    }

    static func wallClockMilliseconds() -> Double {
        Date().timeIntervalSince1970 * 1000
    }

    /// The users a diff shows going offline, with their `lastDisconnected`.
    static func offlineUsers(in message: ByteBuffer) throws -> [(String, Int64)] {
        guard case .object(let diff) = try JSONParser.parse(message.readableBytesView), case .array(let upserts)? = diff["upsert"]
        else { return [] }
        return upserts.compactMap { record in
            guard case .object(let fields) = record, case .bool(false)? = fields["online"],
                case .string(let user)? = fields["userId"], case .integer(let lastDisconnected)? = fields["lastDisconnected"]
            else { return nil }
            return (user, lastDisconnected)
        }
    }
}
