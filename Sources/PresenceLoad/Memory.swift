import PresenceProcess
import CMallocInfo
import Foundation
import NIOCore
import PresenceCore
import PresenceStore

/// Scenario 4a: the server's resident memory per connected session, and its CPU in that steady
/// state. Every socket joins its own session, subscribes to its room and keeps heartbeating;
/// the memory figure is the growth of the server's RSS over its idle, warmed-up size, divided by
/// the sockets; the CPU figure is the server's share of a core over the heartbeating window.
public struct ServerMemory: Sendable {
    public var sessions: Int
    public var usersPerRoom: Int
    /// How long the sockets heartbeat while RSS and CPU are sampled.
    public var steadySeconds: Double
    /// Each socket heartbeats this often (the sessions' interval is 10 s).
    public var heartbeatEvery: Double
    public var name: String
    public var rssTarget: Double
    public var cpuTarget: Double?
    /// Also runs the same sockets and messages against a bare Hummingbird WebSocket and a bare
    /// SwiftNIO one.
    public var compareWithFloor = false

    public init(
        sessions: Int = 10_000, usersPerRoom: Int = 20, steadySeconds: Double = 10, heartbeatEvery: Double = 2,
        name: String = "memory", rssTarget: Double = 64, cpuTarget: Double? = nil
    ) {
        self.sessions = sessions
        self.usersPerRoom = usersPerRoom
        self.steadySeconds = steadySeconds
        self.heartbeatEvery = heartbeatEvery
        self.name = name
        self.rssTarget = rssTarget
        self.cpuTarget = cpuTarget
    }

    public static let smoke = ServerMemory(sessions: 200, steadySeconds: 1)

    /// Issue 13's steady state: 15,000 sockets, each subscribed to its room of 10 and
    /// heartbeating every 10 s (1,500 heartbeats a second in all), for 30 s.
    public static let steady = ServerMemory(
        sessions: 15_000, usersPerRoom: 10, steadySeconds: 30, heartbeatEvery: 10, name: "steady state", rssTarget: 32, cpuTarget: 0.05
    ).comparedWithFloor()
    public static let steadySmoke = ServerMemory(
        sessions: 100, usersPerRoom: 10, steadySeconds: 1, heartbeatEvery: 0.5, name: "steady state", rssTarget: 32, cpuTarget: 0.05
    ).comparedWithFloor()

    private func comparedWithFloor() -> ServerMemory {
        var copy = self
        copy.compareWithFloor = true
        return copy
    }

    static let interval = 10_000

    public func run(_ context: BenchmarkContext) async throws -> [Figure] {
        let server = try await context.startServer()
        // Open every socket first and measure, then join and subscribe: the split shows
        // what the connection itself costs and what presence adds to it.
        let (sockets, baseline, connected) = try await openSocketsMeasured(context, to: server.process)

        context.progress("\(name): joining and subscribing on every socket")
        let rooms = max(1, sessions / usersPerRoom)
        let roomTokens = Locked(Set<String>())
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for lane in 0..<64 {
                tasks.addTask {
                    for index in stride(from: lane, to: sockets.count, by: 64) {
                        let reply = try await sockets[index].request(Self.heartbeat(index, rooms: rooms))
                        let token = try Wire.field("roomToken", of: reply)
                        _ = try await sockets[index].request(Wire.subscribe(roomToken: token, id: 1))
                        roomTokens.withLock { _ = $0.insert(token) }
                    }
                }
            }
            try await tasks.waitForAll()
        }

        context.progress("\(name): heartbeating for \(steadySeconds) s")
        let (cores, peak) = try await heartbeatSteadily(sockets, server: server.process) { Self.heartbeat($0, rooms: rooms) }
        let open = sockets.filter { $0.isActive }.count
        let resident = try server.process.residentBytes()
        await context.closeAll(sockets)
        try await server.stop()
        guard open == sessions else { throw BenchmarkError("memory: only \(open) of \(sessions) sockets stayed open") }
        let distinctRooms = roomTokens.withLock { $0.count }
        guard distinctRooms == rooms else { throw BenchmarkError("memory: \(distinctRooms) rooms, \(rooms) expected") }

        let highest = max(resident, peak)
        let kibPerSocket = { (bytes: Int) in Double(bytes) / Double(sessions) / 1024 }
        let label = "\(Figure.format(Double(sessions))) sockets"
        let cpuName = "server CPU, \(label) each heartbeating every \(Figure.format(heartbeatEvery)) s"
        var floorFigures: [Figure] = []
        if compareWithFloor {
            for (nio, floorName) in [(false, "bare Hummingbird WebSocket"), (true, "bare SwiftNIO WebSocket")] {
                let floor = try await measureFloor(context, nio: nio)
                floorFigures += [
                    Figure(scenario: name, name: "\(floorName), RSS per open socket", value: kibPerSocket(floor.bytesPerSocket), unit: "KiB"),
                    Figure(
                        scenario: name, name: "\(floorName), server CPU, \(label) each sending a message every \(Figure.format(heartbeatEvery)) s",
                        value: floor.cores, unit: "cores"),
                    Figure(scenario: name, name: "server CPU ÷ \(floorName)", value: cores / floor.cores, unit: "×"),
                ]
            }
        }
        return floorFigures + [
            Figure(scenario: name, name: "server RSS, idle after warm-up", value: Double(baseline) / 1_048_576, unit: "MiB"),
            Figure(scenario: name, name: "server RSS, \(label) subscribed and heartbeating", value: Double(highest) / 1_048_576, unit: "MiB"),
            Figure(scenario: name, name: "of which per open WebSocket before any message", value: kibPerSocket(connected - baseline), unit: "KiB"),
            Figure(scenario: name, name: "of which per session and subscription on it", value: kibPerSocket(highest - connected), unit: "KiB"),
            .atMost(rssTarget, scenario: name, name: "RSS per connected, subscribed, heartbeating session (\(label))", value: kibPerSocket(highest - baseline), unit: "KiB"),
            cpuTarget.map { .atMost($0, scenario: name, name: cpuName, value: cores, unit: "cores") }
                ?? Figure(scenario: name, name: cpuName, value: cores, unit: "cores"),
        ]
    }

    /// Sends one message per socket per `heartbeatEvery`, spread evenly, for `steadySeconds`;
    /// returns the server's CPU over that time (in cores) and its peak RSS.
    private func heartbeatSteadily(
        _ sockets: [WebSocketLoadConnection], server: ServerProcess, message: @escaping @Sendable (Int) -> String
    ) async throws -> (cores: Double, peakBytes: Int) {
        var peak = 0
        let cpuBefore = try server.cpuSeconds()
        let started = ContinuousClock.now
        let heartbeatEvery = self.heartbeatEvery
        repeat {
            let round = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for lane in 0..<16 {
                    tasks.addTask {
                        for index in stride(from: lane, to: sockets.count, by: 16) {
                            let due = round + .seconds(heartbeatEvery * Double(index) / Double(sockets.count))
                            if due > .now { try await Task.sleep(until: due) }
                            let reply = try await sockets[index].request(message(index))
                            guard reply.readableBytesView.starts(with: #"{"type":"heartbeat""#.utf8) else {
                                throw BenchmarkError("heartbeat refused: \(String(buffer: reply))")
                            }
                        }
                    }
                }
                try await tasks.waitForAll()
            }
            peak = max(peak, try server.residentBytes())
            // A round that ends early waits for its period: each socket heartbeats once per `heartbeatEvery`.
            let next = round + .seconds(heartbeatEvery)
            if next > .now, (next - started).inSeconds < steadySeconds { try await Task.sleep(until: next) }
        } while (ContinuousClock.now - started).inSeconds < steadySeconds
        return ((try server.cpuSeconds() - cpuBefore) / (ContinuousClock.now - started).inSeconds, peak)
    }

    /// The same sockets and message rate against `presence-bench floor-server`: what Hummingbird's
    /// WebSocket (or, with `nio`, SwiftNIO's alone) costs before any presence work.
    private func measureFloor(_ context: BenchmarkContext, nio: Bool) async throws -> (bytesPerSocket: Int, cores: Double) {
        context.progress("\(name): the same against a bare \(nio ? "SwiftNIO" : "Hummingbird") WebSocket")
        let floor = try await context.startFloorServer(nio: nio)
        let (sockets, baseline, connected) = try await openSocketsMeasured(context, to: floor)
        let (cores, _) = try await heartbeatSteadily(sockets, server: floor) { Self.heartbeat($0, rooms: 1) }
        await context.closeAll(sockets)
        floor.process.terminate()
        _ = try await floor.waitForExit()
        return (connected - baseline, cores)
    }

    /// Warms `server` up (its paths and its allocator's arenas), then opens `sessions` sockets:
    /// the sockets, and the server's RSS before and after them.
    private func openSocketsMeasured(
        _ context: BenchmarkContext, to server: ServerProcess
    ) async throws -> (sockets: [WebSocketLoadConnection], baseline: Int, connected: Int) {
        let address = ServerAddress(port: server.port)
        // Sessions of 1 s, gone (2.5 s later) before the baseline.
        let warmUp = try await context.openSockets(20, to: address) { index, socket in
            _ = try await socket.request(Wire.heartbeat(room: "warm", user: "warm\(index)", session: "warm\(index)", interval: 1_000, id: 0))
        }
        await context.closeAll(warmUp)
        try await Task.sleep(for: .seconds(3.5))
        let baseline = try server.residentBytes()
        context.progress("\(name): opening \(sessions) sockets")
        let sockets = try await context.openSockets(sessions, to: address)
        try await Task.sleep(for: .seconds(1))
        return (sockets, baseline, try server.residentBytes())
    }

    static func heartbeat(_ index: Int, rooms: Int) -> String {
        Wire.heartbeat(room: "mem-\(index % rooms)", user: "m\(index)", session: "m\(index)", interval: interval, id: index)
    }
}

/// Scenario 4b: the store's own memory per session, in this process: heap bytes
/// in use (glibc's `mallinfo2`) before and after `sessions` sessions join.
public struct StoreMemory: Sendable {
    public var sessions: Int
    public var usersPerRoom: Int

    public init(sessions: Int = 100_000, usersPerRoom: Int = 100) {
        self.sessions = sessions
        self.usersPerRoom = usersPerRoom
    }

    public static let smoke = StoreMemory(sessions: 2_000)

    /// Measures the store `make` creates; `close` releases it afterwards. Sessions
    /// join from many tasks at once, so a durable store commits them in groups.
    public func run<Store: PresenceStore>(
        _ context: BenchmarkContext, name: String, make: () throws -> Store, close: (Store) throws -> Void
    ) async throws -> Figure {
        context.progress("\(name): \(sessions) sessions in the \(name) store")
        let before = heapInUse()
        let store = try make()
        let (sessions, rooms) = (self.sessions, max(1, self.sessions / usersPerRoom))
        let statistics = try await store.whileRunning {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
            for lane in 0..<256 {
                tasks.addTask {
                    for index in stride(from: lane, to: sessions, by: 256) {
                        let request = try HeartbeatRequest(
                            roomId: "room-\(index % rooms)", userId: "user-\(index)", sessionId: "session-\(index)", interval: 10_000)
                        _ = try await store.heartbeat(request)
                    }
                }
            }
            try await tasks.waitForAll()
            }
            return try await store.statistics()
        }
        let after = heapInUse()
        try close(store)
        guard statistics.sessions == sessions else {
            throw BenchmarkError("the \(name) store holds \(statistics.sessions) sessions, \(sessions) expected")
        }
        return .atMost(
            2_048, scenario: "memory", name: "\(name) store heap per session (\(Figure.format(Double(sessions))) sessions)",
            value: Double(after - before) / Double(sessions), unit: "B")
    }

    private func heapInUse() -> Int {
        Int(presence_heap_bytes_in_use())
    }
}
