import Foundation
import NIOCore
import PresenceCore

/// Scenario 1: what a heartbeat of an online user costs. HTTP heartbeats on
/// keep-alive connections against `GET /health` on the same server, and against the
/// same route on a bare Hummingbird server (`presence-bench floor-server`: no
/// middleware, same build), in alternating phases so drift on a shared machine hits
/// all alike; WebSocket heartbeats per second; and the messages a subscriber of every
/// room receives meanwhile, which must be none.
public struct HeartbeatCost: Sendable {
    public var connections: Int
    public var sessionsPerConnection: Int
    public var rooms: Int
    public var phaseSeconds: Double
    public var rounds: Int

    public init(connections: Int = 32, sessionsPerConnection: Int = 50, rooms: Int = 8, phaseSeconds: Double = 5, rounds: Int = 2) {
        self.connections = connections
        self.sessionsPerConnection = sessionsPerConnection
        self.rooms = rooms
        self.phaseSeconds = phaseSeconds
        self.rounds = rounds
    }

    public static let smoke = HeartbeatCost(connections: 4, sessionsPerConnection: 5, rooms: 2, phaseSeconds: 0.4, rounds: 1)

    static let name = "heartbeat cost"
    static let interval = 300_000

    public func run(_ context: BenchmarkContext) async throws -> [Figure] {
        let server = try await context.startServer()
        let address = server.address
        let http = try await context.connectHTTP(connections, to: address)

        context.progress("heartbeat cost: joining \(connections * sessionsPerConnection * 2) sessions")
        var roomTokens = [String: String]()
        let rooms = self.rooms
        for (index, connection) in http.enumerated() {
            for session in 0..<sessionsPerConnection {
                let (room, user) = Self.member("h", connection: index, session: session, rooms: rooms)
                roomTokens[room] = try await connection.heartbeat(room: room, user: user, session: user, interval: Self.interval).roomToken
            }
        }
        let subscriberMessages = Counter()
        let watcher = try await WebSocketLoadConnection.connect(to: address, group: context.group) { _, _ in subscriberMessages.add() }
        for (index, token) in roomTokens.values.enumerated() {
            _ = try await watcher.request(Wire.subscribe(roomToken: token, limit: 1000, id: index))
        }
        let sessionsPerConnection = self.sessionsPerConnection
        let sockets = try await context.openSockets(connections, to: address) { index, socket in
            for session in 0..<sessionsPerConnection {
                _ = try await socket.request(Self.webSocketHeartbeat(socket: index, session: session, rooms: rooms, id: session))
            }
        }
        try await settle(subscriberMessages)
        let joinDiffs = subscriberMessages.reset()

        var health = RequestTally()
        var heartbeats = RequestTally()
        var healthSeconds = 0.0
        var heartbeatSeconds = 0.0
        var healthCPU = 0.0
        var heartbeatCPU = 0.0
        var floor = RequestTally()
        var floorCPU = 0.0
        var floorSeconds = 0.0
        var floorPosts = RequestTally()
        var floorPostCPU = 0.0
        var floorPostSeconds = 0.0
        let floorServer = try await context.startFloorServer()
        let floorHTTP = try await context.connectHTTP(connections, to: ServerAddress(port: floorServer.port))
        let healthRequest = HTTPLoadRequest.get("/health")
        let heartbeatRequests = (0..<connections).map { index in
            (0..<sessionsPerConnection).map { session in
                let (room, user) = Self.member("h", connection: index, session: session, rooms: rooms)
                return HTTPLoadRequest.post(
                    "/api/heartbeat", json: Wire.heartbeat(room: room, user: user, session: user, interval: Self.interval))
            }
        }
        for round in 1...rounds {
            context.progress("heartbeat cost: round \(round) of \(rounds), GET /health")
            var cpuBefore = try server.process.cpuSeconds()
            let (healthTally, healthElapsed) = try await phase(http) { _, _, _ in healthRequest }
            healthCPU += try server.process.cpuSeconds() - cpuBefore
            health.add(healthTally)
            healthSeconds += healthElapsed
            context.progress("heartbeat cost: round \(round) of \(rounds), POST /api/heartbeat")
            cpuBefore = try server.process.cpuSeconds()
            let (heartbeatTally, heartbeatElapsed) = try await phase(http) { connection, _, index in
                let requests = heartbeatRequests[connection]
                return requests[index % requests.count]
            }
            heartbeatCPU += try server.process.cpuSeconds() - cpuBefore
            heartbeats.add(heartbeatTally)
            heartbeatSeconds += heartbeatElapsed
            context.progress("heartbeat cost: round \(round) of \(rounds), GET /health of a bare Hummingbird server")
            cpuBefore = try floorServer.cpuSeconds()
            let (floorTally, floorElapsed) = try await phase(floorHTTP) { _, _, _ in healthRequest }
            floorCPU += try floorServer.cpuSeconds() - cpuBefore
            floor.add(floorTally)
            floorSeconds += floorElapsed
            // The same bodies to a bare route that only reads them: what a POST with a body costs
            // Hummingbird itself, next to its GET.
            context.progress("heartbeat cost: round \(round) of \(rounds), POST /api/heartbeat of a bare Hummingbird server")
            cpuBefore = try floorServer.cpuSeconds()
            let (floorPostTally, floorPostElapsed) = try await phase(floorHTTP) { connection, _, index in
                let requests = heartbeatRequests[connection]
                return requests[index % requests.count]
            }
            floorPostCPU += try floorServer.cpuSeconds() - cpuBefore
            floorPosts.add(floorPostTally)
            floorPostSeconds += floorPostElapsed
        }
        for connection in floorHTTP { await connection.close() }
        floorServer.process.terminate()
        _ = try await floorServer.waitForExit()

        context.progress("heartbeat cost: WebSocket heartbeats")
        let deadline = NIODeadline.after(seconds: phaseSeconds)
        let started = ContinuousClock.now
        let webSocketTally = try await RequestTally.concurrently(sockets) { index, socket in
            let messages = (0..<sessionsPerConnection).map {
                ByteBuffer(string: Self.webSocketHeartbeat(socket: index, session: $0, rooms: rooms, id: $0))
            }
            return try await socket.loop(until: deadline) { messages[$0 % messages.count] }
        }
        let webSocketSeconds = (ContinuousClock.now - started).inSeconds
        try await settle(subscriberMessages)
        let messagesDuringHeartbeats = subscriberMessages.current

        await context.closeAll(sockets + [watcher])
        for connection in http { await connection.close() }
        try await server.stop()

        for (what, tally) in [
            ("HTTP heartbeats", heartbeats), ("GET /health", health), ("WebSocket heartbeats", webSocketTally), ("the bare route", floor),
            ("the bare POST route", floorPosts),
        ]
        where tally.failures > 0 || tally.responses == 0 {
            throw BenchmarkError("\(what): \(tally.failures) of \(tally.responses) failed, first: \(tally.firstFailure ?? "none")")
        }
        guard joinDiffs > 0 else { throw BenchmarkError("the subscriber saw no joins: it cannot have seen heartbeats either") }

        let healthRate = Double(health.responses) / healthSeconds
        let heartbeatRate = Double(heartbeats.responses) / heartbeatSeconds
        let heartbeatCount = heartbeats.responses + webSocketTally.responses
        let floorCPUPerRequest = floorCPU / Double(floor.responses)
        return [
            Figure(scenario: Self.name, name: "`GET /health`, \(connections) keep-alive connections", value: healthRate, unit: "req/s"),
            Figure(scenario: Self.name, name: "`POST /api/heartbeat` of online users", value: heartbeatRate, unit: "req/s"),
            .atLeast(0.8, scenario: Self.name, name: "heartbeat ÷ `/health` throughput", value: heartbeatRate / healthRate, unit: "×"),
            Figure(scenario: Self.name, name: "server CPU per `GET /health`", value: healthCPU / Double(health.responses) * 1e6, unit: "µs"),
            Figure(scenario: Self.name, name: "server CPU per heartbeat", value: heartbeatCPU / Double(heartbeats.responses) * 1e6, unit: "µs"),
            Figure(scenario: Self.name, name: "bare Hummingbird route, server CPU per request", value: floorCPUPerRequest * 1e6, unit: "µs"),
            .atMost(
                2, scenario: Self.name, name: "server CPU per heartbeat ÷ bare route",
                value: heartbeatCPU / Double(heartbeats.responses) / floorCPUPerRequest, unit: "×"),
            Figure(
                scenario: Self.name, name: "bare Hummingbird POST route reading the same bodies, server CPU per request",
                value: floorPostCPU / Double(floorPosts.responses) * 1e6, unit: "µs"),
            Figure(
                scenario: Self.name, name: "bare Hummingbird: POST ÷ GET throughput",
                value: (Double(floorPosts.responses) / floorPostSeconds) / (Double(floor.responses) / floorSeconds), unit: "×"),
            Figure(
                scenario: Self.name, name: "server CPU per heartbeat ÷ bare POST route",
                value: heartbeatCPU / Double(heartbeats.responses) / (floorPostCPU / Double(floorPosts.responses)), unit: "×"),
            Figure(
                scenario: Self.name, name: "WebSocket heartbeats, \(connections) sockets",
                value: Double(webSocketTally.responses) / webSocketSeconds, unit: "msg/s"),
            .atMost(
                0, scenario: Self.name, name: "messages to subscribers during \(Figure.format(Double(heartbeatCount))) heartbeats",
                value: Double(messagesDuringHeartbeats), unit: "msg"),
        ]
    }

    /// The room and user (also the session id) of a connection's session: HTTP sessions are
    /// `h…`, WebSocket ones `w…`, spread over the rooms the subscriber follows.
    static func member(_ kind: String, connection: Int, session: Int, rooms: Int) -> (room: String, user: String) {
        ("hb-\((connection + session) % rooms)", "\(kind)\(connection)-\(session)")
    }

    static func webSocketHeartbeat(socket: Int, session: Int, rooms: Int, id: Int) -> String {
        let (room, user) = member("w", connection: socket, session: session, rooms: rooms)
        return Wire.heartbeat(room: room, user: user, session: user, interval: interval, id: id)
    }

    /// Every connection sends back to back for one phase.
    private func phase(
        _ connections: [HTTPLoadConnection], request: @escaping @Sendable (_ connection: Int, HTTPResponse?, _ index: Int) -> HTTPLoadRequest
    ) async throws -> (RequestTally, Double) {
        let deadline = NIODeadline.after(seconds: phaseSeconds)
        let started = ContinuousClock.now
        let tally = try await RequestTally.concurrently(connections) { index, connection in
            try await connection.loop(until: deadline) { request(index, $0, $1) }
        }
        return (tally, (ContinuousClock.now - started).inSeconds)
    }
}

/// Waits until a count has stopped moving (diffs of earlier changes still on their way).
func settle(_ counter: Counter, quiet: Duration = .milliseconds(300), timeout: Duration = .seconds(30)) async throws {
    let deadline = ContinuousClock.now + timeout
    var last = counter.current
    while ContinuousClock.now < deadline {
        try await Task.sleep(for: quiet)
        let now = counter.current
        if now == last { return }
        last = now
    }
    throw BenchmarkError("messages kept arriving for \(timeout)")
}
