import NIOCore
import PresenceCore
import PresenceStore

/// Scenario 5: joins and leaves per second through the server, with the SQLite
/// default store and with the memory store. Every connection joins a new session
/// and leaves it again in a loop, in rooms a subscriber follows, so each change
/// is also committed and fanned out.
public struct ServerChurn: Sendable {
    public var connections: Int
    public var rooms: Int
    public var seconds: Double

    public init(connections: Int = 64, rooms: Int = 50, seconds: Double = 5) {
        self.connections = connections
        self.rooms = rooms
        self.seconds = seconds
    }

    public static let smoke = ServerChurn(connections: 8, rooms: 4, seconds: 0.5)

    static let name = "churn"

    public func run(_ context: BenchmarkContext) async throws -> [Figure] {
        var measurements = [Figure]()
        for store in ["sqlite", "memory"] {
            context.progress("churn: \(connections) connections join and leave for \(seconds) s, \(store) store")
            let result = try await measure(context, store: store)
            measurements.append(Figure(scenario: Self.name, name: "joins/s through the server, \(store) store", value: result.joinsPerSecond, unit: "/s"))
            measurements.append(Figure(scenario: Self.name, name: "leaves/s through the server, \(store) store", value: result.leavesPerSecond, unit: "/s"))
            measurements.append(Figure(scenario: Self.name, name: "diffs read by the rooms' subscriber, \(store) store", value: result.diffsPerSecond, unit: "/s"))
        }
        return measurements
    }

    public struct Result: Sendable {
        public var joins: Int
        public var leaves: Int
        public var joinsPerSecond: Double
        public var leavesPerSecond: Double
        public var diffsPerSecond: Double
    }

    /// One run against a server of `store` started with `extraArguments`; `beforeStop` runs once
    /// the load has ended, while the server still runs, with the number of changes (the rooms'
    /// first joins, then every join and leave of the load).
    public func measure(
        _ context: BenchmarkContext, store: String, extraArguments: [String] = [],
        beforeStop: @Sendable (Int) async throws -> Void = { _ in }
    ) async throws -> Result {
        let server = try await context.startServer(store: store, extraArguments: extraArguments)
        let address = server.address
        let http = try await context.connectHTTP(connections, to: address)
        let diffs = Counter()
        let watcher = try await WebSocketLoadConnection.connect(to: address, group: context.group) { message, _ in
            if Wire.isDiff(message) { diffs.add() }
        }
        for room in 0..<rooms {
            let (token, _) = try await http[0].heartbeat(room: "churn-\(room)", user: "anchor", session: "anchor-\(room)", interval: 300_000)
            _ = try await watcher.request(Wire.subscribe(roomToken: token, id: room))
        }
        try await settle(diffs)
        _ = diffs.reset()

        let deadline = NIODeadline.after(seconds: seconds)
        let started = ContinuousClock.now
        let rooms = self.rooms
        let tally = try await RequestTally.concurrently(http) { lane, connection in
            try await connection.loop(until: deadline) { previous, index in
                if index.isMultiple(of: 2) {
                    let json = Wire.heartbeat(
                        room: "churn-\(lane % rooms)", user: "c\(lane)", session: "c\(lane)-\(index / 2)", interval: 10_000)
                    return HTTPLoadRequest.post("/api/heartbeat", json: json)
                }
                let token = previous.flatMap { try? Wire.field("sessionToken", of: $0.body) } ?? "missing"
                return HTTPLoadRequest.post("/api/disconnect", json: Wire.disconnect(sessionToken: token))
            }
        }
        let elapsed = (ContinuousClock.now - started).inSeconds
        try await settle(diffs)
        let delivered = diffs.current
        try await beforeStop(rooms + tally.responses)
        await context.closeAll([watcher])
        for connection in http { await connection.close() }
        try await server.stop()
        guard tally.failures == 0 else {
            throw BenchmarkError("churn: \(tally.failures) of \(tally.responses) requests failed, first: \(tally.firstFailure ?? "")")
        }
        let joins = (tally.responses + 1) / 2
        let leaves = tally.responses / 2
        // Changes that land while the hub is reading the room share one diff, so fewer diffs than changes is fine; none is not.
        guard delivered > 0 else {
            throw BenchmarkError("churn: the watcher read \(delivered) diffs for \(joins) joins and \(leaves) leaves")
        }
        return Result(
            joins: joins, leaves: leaves, joinsPerSecond: Double(joins) / elapsed, leavesPerSecond: Double(leaves) / elapsed,
            diffsPerSecond: Double(delivered) / elapsed)
    }
}

/// Joins and leaves per second a store sustains in this process, with many
/// clients at once (so a durable store's group commit has something to group).
public struct StoreChurn: Sendable {
    public var clients: Int
    public var seconds: Double

    public init(clients: Int = 256, seconds: Double = 5) {
        self.clients = clients
        self.seconds = seconds
    }

    public func run(_ store: any PresenceStore, name: String) async throws -> [Figure] {
        let started = ContinuousClock.now
        let deadline = started + .seconds(seconds)
        let clients = self.clients
        let (joins, leaves) = try await store.whileRunning { try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for client in 0..<clients {
                group.addTask {
                    var joins = 0
                    var leaves = 0
                    var round = 0
                    while ContinuousClock.now < deadline {
                        let request = try HeartbeatRequest(
                            roomId: "room\(client % 50)", userId: "user\(client)", sessionId: "c\(client)-\(round)")
                        let tokens = try await store.heartbeat(request)
                        joins += 1
                        try await store.disconnect(sessionToken: tokens.sessionToken)
                        leaves += 1
                        round += 1
                    }
                    return (joins, leaves)
                }
            }
            var total = (0, 0)
            for try await (joins, leaves) in group {
                total.0 += joins
                total.1 += leaves
            }
            return total
        } }
        let elapsed = (ContinuousClock.now - started).inSeconds
        let label = "\(name) store in-process, \(clients) clients"
        return [
            Figure(scenario: "store churn", name: "joins/s, \(label)", value: Double(joins) / elapsed, unit: "/s"),
            Figure(scenario: "store churn", name: "leaves/s, \(label)", value: Double(leaves) / elapsed, unit: "/s"),
        ]
    }
}
