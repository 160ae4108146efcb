import PresenceProcess
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

        var health = PhaseTotals()
        var heartbeats = PhaseTotals()
        var floor = PhaseTotals()
        var floorPosts = PhaseTotals()
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
        let heartbeatRequest: @Sendable (Int, HTTPResponse?, Int) -> HTTPLoadRequest = { connection, _, index in
            let requests = heartbeatRequests[connection]
            return requests[index % requests.count]
        }
        for round in 1...rounds {
            let progress = "heartbeat cost: round \(round) of \(rounds),"
            context.progress("\(progress) GET /health")
            try await phase(http, of: server.process, into: &health) { _, _, _ in healthRequest }
            context.progress("\(progress) POST /api/heartbeat")
            try await phase(http, of: server.process, into: &heartbeats, request: heartbeatRequest)
            context.progress("\(progress) GET /health of a bare Hummingbird server")
            try await phase(floorHTTP, of: floorServer, into: &floor) { _, _, _ in healthRequest }
            // The same bodies to a bare route that only reads them: what a POST with a body costs
            // Hummingbird itself, next to its GET.
            context.progress("\(progress) POST /api/heartbeat of a bare Hummingbird server")
            try await phase(floorHTTP, of: floorServer, into: &floorPosts, request: heartbeatRequest)
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
        let (knownTokens, newTokens) = try await jwtHeartbeats(context)

        for (what, tally) in [
            ("HTTP heartbeats", heartbeats.tally), ("GET /health", health.tally), ("WebSocket heartbeats", webSocketTally),
            ("the bare route", floor.tally), ("the bare POST route", floorPosts.tally),
            ("JWT heartbeats with known tokens", knownTokens.tally), ("JWT heartbeats with new tokens", newTokens.tally),
        ]
        where tally.failures > 0 || tally.responses == 0 {
            throw BenchmarkError("\(what): \(tally.failures) of \(tally.responses) failed, first: \(tally.firstFailure ?? "none")")
        }
        guard joinDiffs > 0 else { throw BenchmarkError("the subscriber saw no joins: it cannot have seen heartbeats either") }

        let heartbeatCount = heartbeats.tally.responses + webSocketTally.responses
        return [
            Figure(scenario: Self.name, name: "`GET /health`, \(connections) keep-alive connections", value: health.rate, unit: "req/s"),
            Figure(scenario: Self.name, name: "`POST /api/heartbeat` of online users", value: heartbeats.rate, unit: "req/s"),
            .atLeast(0.8, scenario: Self.name, name: "heartbeat ÷ `/health` throughput", value: heartbeats.rate / health.rate, unit: "×"),
            Figure(scenario: Self.name, name: "server CPU per `GET /health`", value: health.cpuPerRequest * 1e6, unit: "µs"),
            Figure(scenario: Self.name, name: "server CPU per heartbeat", value: heartbeats.cpuPerRequest * 1e6, unit: "µs"),
            Figure(scenario: Self.name, name: "bare Hummingbird route, server CPU per request", value: floor.cpuPerRequest * 1e6, unit: "µs"),
            .atMost(
                2, scenario: Self.name, name: "server CPU per heartbeat ÷ bare route",
                value: heartbeats.cpuPerRequest / floor.cpuPerRequest, unit: "×"),
            Figure(
                scenario: Self.name, name: "bare Hummingbird POST route reading the same bodies, server CPU per request",
                value: floorPosts.cpuPerRequest * 1e6, unit: "µs"),
            Figure(scenario: Self.name, name: "bare Hummingbird: POST ÷ GET throughput", value: floorPosts.rate / floor.rate, unit: "×"),
            Figure(
                scenario: Self.name, name: "server CPU per heartbeat ÷ bare POST route",
                value: heartbeats.cpuPerRequest / floorPosts.cpuPerRequest, unit: "×"),
            Figure(
                scenario: Self.name, name: "JWT mode: server CPU per heartbeat, the client's token again",
                value: knownTokens.cpuPerRequest * 1e6, unit: "µs"),
            Figure(
                scenario: Self.name, name: "JWT mode: server CPU per heartbeat, a new token every time",
                value: newTokens.cpuPerRequest * 1e6, unit: "µs"),
            Figure(
                scenario: Self.name, name: "JWT mode, the client's token again: server CPU per heartbeat ÷ open mode",
                value: knownTokens.cpuPerRequest / heartbeats.cpuPerRequest, unit: "×"),
            Figure(
                scenario: Self.name, name: "WebSocket heartbeats, \(connections) sockets",
                value: Double(webSocketTally.responses) / webSocketSeconds, unit: "msg/s"),
            .atMost(
                0, scenario: Self.name, name: "messages to subscribers during \(Figure.format(Double(heartbeatCount))) heartbeats",
                value: Double(messagesDuringHeartbeats), unit: "msg"),
        ]
    }

    /// HTTP heartbeats of online users on a server in the JWT mode, in alternating phases: with
    /// each client's own token every time, as clients send them (the server checks a token once,
    /// then knows it), and with a new token every time (a signature check for each; the tokens
    /// go round a ring larger than the server remembers).
    private func jwtHeartbeats(_ context: BenchmarkContext) async throws -> (knownTokens: PhaseTotals, newTokens: PhaseTotals) {
        let server = try await context.startServer(extraArguments: BenchmarkTokens.serverArguments)
        let http = try await context.connectHTTP(connections, to: server.address)
        let (rooms, sessionsPerConnection) = (self.rooms, self.sessionsPerConnection)
        let tokensPerUser = max(2, 20_000 / (connections * sessionsPerConnection) + 1)
        context.progress("heartbeat cost: joining \(connections * sessionsPerConnection) sessions in the JWT mode")
        var requests: [[[HTTPLoadRequest]]] = []  // by connection, session, then token
        for (index, connection) in http.enumerated() {
            var ofConnection: [[HTTPLoadRequest]] = []
            for session in 0..<sessionsPerConnection {
                let (room, user) = Self.member("j", connection: index, session: session, rooms: rooms)
                let body = Wire.heartbeat(room: room, user: user, session: user, interval: Self.interval)
                let tokens = (0..<tokensPerUser).map { BenchmarkTokens.token(subject: user, serial: $0) }
                _ = try await connection.heartbeat(room: room, user: user, session: user, interval: Self.interval, bearer: tokens[0])
                ofConnection.append(tokens.map { HTTPLoadRequest.post("/api/heartbeat", json: body, bearer: $0) })
            }
            requests.append(ofConnection)
        }
        let prepared = requests
        var knownTokens = PhaseTotals()
        var newTokens = PhaseTotals()
        for round in 1...rounds {
            context.progress("heartbeat cost: round \(round) of \(rounds), JWT heartbeats with the client's token, then new tokens")
            try await phase(http, of: server.process, into: &knownTokens) { connection, _, index in
                prepared[connection][index % sessionsPerConnection][0]
            }
            try await phase(http, of: server.process, into: &newTokens) { connection, _, index in
                prepared[connection][index % sessionsPerConnection][index / sessionsPerConnection % tokensPerUser]
            }
        }
        for connection in http { await connection.close() }
        try await server.stop()
        return (knownTokens, newTokens)
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

    /// What the phases of one kind counted over all rounds: responses, time, and the server's CPU.
    struct PhaseTotals {
        var tally = RequestTally()
        var seconds = 0.0
        var cpu = 0.0

        var rate: Double { Double(tally.responses) / seconds }
        var cpuPerRequest: Double { cpu / Double(tally.responses) }
    }

    /// Every connection sends back to back for one phase, counted into `totals` with `server`'s CPU.
    private func phase(
        _ connections: [HTTPLoadConnection], of server: ServerProcess, into totals: inout PhaseTotals,
        request: @escaping @Sendable (_ connection: Int, HTTPResponse?, _ index: Int) -> HTTPLoadRequest
    ) async throws {
        let cpuBefore = try server.cpuSeconds()
        let deadline = NIODeadline.after(seconds: phaseSeconds)
        let started = ContinuousClock.now
        let tally = try await RequestTally.concurrently(connections) { index, connection in
            try await connection.loop(until: deadline) { request(index, $0, $1) }
        }
        totals.seconds += (ContinuousClock.now - started).inSeconds
        totals.cpu += try server.cpuSeconds() - cpuBefore
        totals.tally.add(tally)
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
