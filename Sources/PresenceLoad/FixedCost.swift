import Foundation
import NIOCore
import PresenceCore
import PresenceProcess

/// What one change costs the server when nothing batches: HTTP joins and leaves at a steady,
/// modest rate spread over many rooms, each room followed by one subscriber, so every change is
/// its own commit, its own read and its own diff. The server's CPU per change, next to its CPU per
/// `GET /health` at the same pace, on the memory store and on SQLite.
public struct FixedCost: Sendable {
    public var rooms: Int
    public var changesPerSecond: Int
    public var connections: Int
    public var phaseSeconds: Double

    public init(rooms: Int = 300, changesPerSecond: Int = 400, connections: Int = 8, phaseSeconds: Double = 10) {
        self.rooms = rooms
        self.changesPerSecond = changesPerSecond
        self.connections = connections
        self.phaseSeconds = phaseSeconds
    }

    public static let smoke = FixedCost(rooms: 10, changesPerSecond: 100, connections: 2, phaseSeconds: 0.5)

    static let name = "fixed cost"

    public func run(_ context: BenchmarkContext) async throws -> [Figure] {
        var figures: [Figure] = []
        for store in ["memory", "sqlite"] {
            figures += try await run(context, store: store)
        }
        return figures
    }

    private func run(_ context: BenchmarkContext, store: String) async throws -> [Figure] {
        let server = try await context.startServer(store: store)
        let address = server.address
        let http = try await context.connectHTTP(connections, to: address)
        context.progress("fixed cost (\(store)): \(rooms) rooms, one subscriber each")
        let diffs = Counter()
        // A socket follows at most 100 rooms by default: one subscriber socket per 50 rooms.
        let subscribers = try await context.openSockets((rooms + 49) / 50, to: address, onPush: { _ in
            { message, _ in if Wire.isDiff(message) { diffs.add() } }
        })
        // A member that stays keeps each room alive between a join and its leave.
        for room in 0..<rooms {
            let tokens = try await http[room % connections].heartbeat(
                room: "fc-\(room)", user: "resident-\(room)", session: "resident-\(room)", interval: 300_000)
            _ = try await subscribers[room / 50].request(Wire.subscribe(roomToken: tokens.roomToken, limit: 100, id: room))
        }
        try await settle(diffs)
        _ = diffs.reset()

        context.progress("fixed cost (\(store)): \(changesPerSecond) joins and leaves a second, then GET /health at the same pace")
        let changes = try await pacedPhase(http, of: server.process) { connection, step in
            // Odd steps leave what the step before joined: every request is one change.
            let user = "u\(connection)-\(step / 2)"
            let room = "fc-\((connection * 7919 + step / 2) % rooms)"
            if step % 2 == 0 {
                return .post("/api/heartbeat", json: Wire.heartbeat(room: room, user: user, session: user, interval: 300_000))
            }
            return nil
        }
        try await settle(diffs)
        let delivered = diffs.reset()
        let health = try await pacedPhase(http, of: server.process) { _, _ in .get("/health") }

        await context.closeAll(subscribers)
        for connection in http { await connection.close() }
        try await server.stop()
        guard changes.requests > 0, health.requests > 0 else { throw BenchmarkError("fixed cost: no requests were answered") }
        let perChange = changes.cpu / Double(changes.requests)
        let perHealth = health.cpu / Double(health.requests)
        let target = store == "memory" ? 0.15 : 0.25
        return [
            Figure(scenario: Self.name, name: "\(store): joins and leaves answered", value: Double(changes.requests) / changes.seconds, unit: "/s"),
            Figure(scenario: Self.name, name: "\(store): diffs delivered per change", value: Double(delivered) / Double(changes.requests), unit: "×"),
            .atMost(target, scenario: Self.name, name: "\(store): server CPU per change", value: perChange * 1e3, unit: "ms"),
            Figure(scenario: Self.name, name: "\(store): server CPU per `GET /health` at the same pace", value: perHealth * 1e3, unit: "ms"),
            Figure(scenario: Self.name, name: "\(store): a change ÷ a `GET /health`", value: perChange / perHealth, unit: "×"),
        ]
    }

    struct PhaseResult {
        var requests = 0
        var seconds = 0.0
        var cpu = 0.0
    }

    /// Every connection sends at a fixed pace (the total `changesPerSecond`) for one phase. A
    /// join's answer makes the next step's request: the leave of the session it started
    /// (`request` returns nil for a leave).
    private func pacedPhase(
        _ http: [HTTPLoadConnection], of server: ServerProcess,
        request: @escaping @Sendable (_ connection: Int, _ step: Int) -> HTTPLoadRequest?
    ) async throws -> PhaseResult {
        let interval = Duration.seconds(Double(connections) / Double(changesPerSecond))
        let steps = Int(phaseSeconds * Double(changesPerSecond)) / connections
        let cpuBefore = try server.cpuSeconds()
        let started = ContinuousClock.now
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, connection) in http.enumerated() {
                group.addTask {
                    var answered = 0
                    var sessionToken: String?
                    // Staggered, so the connections' requests spread over each interval.
                    let offset = interval * (Double(index) / Double(http.count))
                    for step in 0..<steps {
                        try await Task.sleep(until: started + offset + interval * step, clock: .continuous)
                        let next = request(index, step)
                            ?? HTTPLoadRequest.post("/api/disconnect", json: #"{"sessionToken":"\#(sessionToken ?? "")"}"#)
                        let response = try await connection.send(next)
                        guard (200..<300).contains(response.status) else {
                            throw BenchmarkError("fixed cost: \(response.status) \(response.text)")
                        }
                        if step % 2 == 0, let token = try? Wire.field("sessionToken", of: response.body) { sessionToken = token }
                        answered += 1
                    }
                    return answered
                }
            }
            return try await group.reduce(0, +)
        }
        let seconds = (ContinuousClock.now - started).inSeconds
        return PhaseResult(requests: counts, seconds: seconds, cpu: try server.cpuSeconds() - cpuBefore)
    }
}
