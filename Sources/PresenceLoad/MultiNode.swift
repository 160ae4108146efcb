import Foundation
import NIOCore
import PresenceCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Scenario: several `presence-server` processes on one PostgreSQL. Fan-out from a change made
/// on one process to subscribers spread over all of them; PostgreSQL transactions per heartbeat
/// of online users heartbeating through every process (no stickiness); join/leave throughput
/// with one process and with several; and how late the survivors report the sessions of a
/// process killed without warning.
public struct MultiNode: Sendable {
    /// Makes a fresh database and returns its URL, and reads PostgreSQL's count of committed
    /// transactions of a database: PresenceLoad speaks no PostgreSQL itself.
    public struct Database: Sendable {
        public let makeURL: @Sendable () async throws -> String
        public let committedTransactions: @Sendable (_ url: String) async throws -> Int
        public init(
            makeURL: @escaping @Sendable () async throws -> String,
            committedTransactions: @escaping @Sendable (String) async throws -> Int
        ) {
            self.makeURL = makeURL
            self.committedTransactions = committedTransactions
        }
    }

    public var processes = 3
    public var subscribers = 1_000
    public var fanOutOperations = 100
    public var heartbeatSessions = 2_000
    public var heartbeatSeconds = 10.0
    public var heartbeatRate = 3_000.0
    public var churnConnections = 24
    public var churnSeconds = 5.0
    public var lostSessions = 200
    public var lease = 5.0

    public init() {}

    public static let smoke: MultiNode = {
        var smoke = MultiNode()
        smoke.processes = 2
        smoke.subscribers = 20
        smoke.fanOutOperations = 6
        smoke.heartbeatSessions = 40
        smoke.heartbeatSeconds = 1.5
        smoke.heartbeatRate = 300
        smoke.churnConnections = 4
        smoke.churnSeconds = 0.5
        smoke.lostSessions = 10
        smoke.lease = 1.2
        return smoke
    }()

    static let name = "several processes"

    public func run(_ context: BenchmarkContext, database: Database) async throws -> [Figure] {
        var figures = try await fanOutAndHeartbeats(context, database: database)
        for count in Set([1, processes]).sorted() {
            figures.append(try await churn(context, database: database, processes: count))
        }
        figures += try await nodeLoss(context, database: database)
        return figures
    }

    /// Merging is off: the fan-out figures time one change at a time, as `FanOut` does.
    private func startCluster(_ context: BenchmarkContext, url: String, count: Int) async throws -> [RunningServer] {
        var servers: [RunningServer] = []
        for _ in 0..<count {
            servers.append(try await context.startServer(
                store: "postgres",
                extraArguments: ["--postgres-url", url, "--postgres-lease", "\(lease)", "--diff-merge-ms", "0"]))
        }
        return servers
    }

    private func fanOutAndHeartbeats(_ context: BenchmarkContext, database: Database) async throws -> [Figure] {
        let url = try await database.makeURL()
        let servers = try await startCluster(context, url: url, count: processes)
        var controls: [HTTPLoadConnection] = []
        for server in servers { controls.append(try await HTTPLoadConnection.connect(to: server.address, group: context.group)) }
        var figures: [Figure] = []

        // Fan-out: subscribers spread evenly; the change is made on the first process.
        let (roomToken, _) = try await controls[0].heartbeat(room: "spread", user: "host", session: "host", interval: 300_000)
        let arrivals = ArrivalTracker(subscribers: subscribers)
        context.progress("several processes: \(subscribers) subscribers over \(processes) processes")
        var sockets: [WebSocketLoadConnection] = []
        var offset = 0
        for (index, server) in servers.enumerated() {
            let share = subscribers / processes + (index < subscribers % processes ? 1 : 0)
            let base = offset
            sockets += try await context.openSockets(
                share, to: server.address,
                prepare: { _, socket in _ = try await socket.request(Wire.subscribe(roomToken: roomToken, id: 1)) },
                onPush: { arrivals.countingDiffs(base + $0) })
            offset += share
        }
        let latencies = try await FanOut.timeJoinsAndLeaves(
            fanOutOperations, room: "spread", sessionPrefix: "fan", through: controls[0], arrivals: arrivals,
            subscribers: subscribers, context: context)
        await context.closeAll(sockets)
        let percentiles = Percentiles(latencies)
        let label = "cross-process fan-out, \(Figure.format(Double(subscribers))) subscribers over \(processes) processes"
        figures.append(Figure(scenario: Self.name, name: "\(label), p50", value: percentiles.p50, unit: "ms"))
        figures.append(.below(50, scenario: Self.name, name: "\(label), p99", value: percentiles.p99, unit: "ms"))

        // Heartbeats of online users, each sent to the next process in turn.
        context.progress("several processes: \(heartbeatSessions) sessions heartbeating through every process")
        let sessions = (0..<heartbeatSessions).map { "beat-\($0)" }
        for (index, session) in sessions.enumerated() {
            _ = try await controls[index % processes].heartbeat(room: "beats-\(index % 50)", user: "b\(index)", session: session, interval: 300_000)
        }
        try await Task.sleep(for: .seconds(lease))
        let before = try await database.committedTransactions(url)
        // Paced, not flat out: the question is what a steady load of online users costs PostgreSQL,
        // on a machine whose two cores also run every process, PostgreSQL and this client.
        let perConnection = heartbeatRate / Double(controls.count)
        let total = Int(heartbeatSeconds * perConnection)
        let connectionCount = controls.count
        let started = ContinuousClock.now
        let sent = try await withThrowingTaskGroup(of: Int.self) { group in
            for (position, control) in controls.enumerated() {
                group.addTask {
                    for index in 0..<total {
                        let due = started + .seconds(Double(index) / perConnection)
                        if due > .now { try await Task.sleep(until: due) }
                        // The residue moves with the index, so each session is heartbeated through every process in turn.
                        let number = (index * connectionCount + position + index) % sessions.count
                        let response = try await control.send(HTTPLoadRequest.post(
                            "/api/heartbeat",
                            json: Wire.heartbeat(room: "beats-\(number % 50)", user: "b\(number)", session: sessions[number], interval: 300_000)))
                        guard response.status == 200 else { throw BenchmarkError("heartbeat: \(response.status) \(response.text)") }
                    }
                    return total
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = (ContinuousClock.now - started).inSeconds
        let after = try await database.committedTransactions(url)
        figures.append(Figure(
            scenario: Self.name, name: "heartbeats/s of online users through \(processes) processes (no stickiness), paced",
            value: Double(sent) / elapsed, unit: "/s"))
        figures.append(.below(
            0.01, scenario: Self.name, name: "PostgreSQL transactions per heartbeat of an online user",
            value: Double(after - before) / Double(max(sent, 1)), unit: ""))
        figures += try await expiryOnTime(context, servers: servers, control: controls[0])
        for control in controls { await control.close() }
        for server in servers { try await server.stop() }
        return figures
    }

    /// Sessions that stop heartbeating while every process lives: how long after each deadline
    /// a subscriber on another process sees the user go offline.
    private func expiryOnTime(_ context: BenchmarkContext, servers: [RunningServer], control: HTTPLoadConnection) async throws -> [Figure] {
        let interval = 1_000
        let (roomToken, _) = try await control.heartbeat(room: "expiry", user: "anchor", session: "expiry-anchor", interval: 300_000)
        let (offline, subscriber) = try await OfflineArrivals.watch(roomToken, on: servers[servers.count - 1], context)
        context.progress("several processes: \(lostSessions) sessions expiring while every process lives")
        var deadlines: [String: Int64] = [:]
        for index in 0..<lostSessions {
            _ = try await control.heartbeat(room: "expiry", user: "e\(index)", session: "e\(index)", interval: interval)
            deadlines["e\(index)"] = Int64(Date().timeIntervalSince1970 * 1_000) + Int64(interval) * 5 / 2
            // Spread the deadlines over a second, as real sessions' are.
            try await Task.sleep(for: .milliseconds(1_000 / max(lostSessions, 1)))
        }
        let seen = try await offline.waitFor(lostSessions, timeout: .seconds(lease * 2 + 10))
        await context.closeAll(subscriber)
        let lateness = seen.compactMap { id, arrived in deadlines[id].map { Double(arrived - $0) } }
        let percentiles = Percentiles(lateness)
        let label = "offline diff after the deadline, processes alive, subscriber on another process"
        return [
            Figure(scenario: Self.name, name: "\(label), p50", value: percentiles.p50, unit: "ms"),
            .below(250, scenario: Self.name, name: "\(label), p99", value: percentiles.p99, unit: "ms"),
        ]
    }

    /// Joins and leaves (one transaction each, group-committed) through `processes` processes.
    private func churn(_ context: BenchmarkContext, database: Database, processes count: Int) async throws -> Figure {
        let url = try await database.makeURL()
        let servers = try await startCluster(context, url: url, count: count)
        context.progress("several processes: joins and leaves through \(count) process(es)")
        var connections: [HTTPLoadConnection] = []
        for index in 0..<churnConnections {
            connections.append(try await HTTPLoadConnection.connect(to: servers[index % count].address, group: context.group))
        }
        let deadline = NIODeadline.now() + .nanoseconds(Int64(churnSeconds * 1e9))
        let tally = try await RequestTally.concurrently(connections) { position, connection in
            try await connection.loop(until: deadline) { previous, index in
                // Even: join a new session; odd: leave with the token the join returned.
                if index.isMultiple(of: 2) {
                    return HTTPLoadRequest.post(
                        "/api/heartbeat",
                        json: Wire.heartbeat(room: "churn-\(position % 8)", user: "c\(position)-\(index)", session: "c\(position)-\(index)", interval: 300_000))
                }
                let token = previous.flatMap { try? Wire.field("sessionToken", of: $0.body) } ?? ""
                return HTTPLoadRequest.post("/api/disconnect", json: Wire.disconnect(sessionToken: token))
            }
        }
        guard tally.failures == 0 else { throw BenchmarkError("churn failed: \(tally.firstFailure ?? "")") }
        for connection in connections { await connection.close() }
        for server in servers { try await server.stop() }
        return Figure(
            scenario: Self.name, name: "joins + leaves/s through \(count) process\(count == 1 ? "" : "es"), \(churnConnections) clients",
            value: Double(tally.responses) / churnSeconds, unit: "/s")
    }

    /// Sessions heartbeated only through a process that is then SIGKILLed: how long after each
    /// session's real deadline a subscriber on a survivor sees it go offline.
    private func nodeLoss(_ context: BenchmarkContext, database: Database) async throws -> [Figure] {
        let url = try await database.makeURL()
        let servers = try await startCluster(context, url: url, count: 2)
        let doomed = try await HTTPLoadConnection.connect(to: servers[0].address, group: context.group)
        let interval = 2_000
        let (roomToken, _) = try await doomed.heartbeat(room: "loss", user: "anchor", session: "anchor", interval: 300_000)
        let (offline, subscriber) = try await OfflineArrivals.watch(roomToken, on: servers[1], context)
        context.progress("several processes: \(lostSessions) sessions on a process about to be killed")
        var lastBeat: [String: Int64] = [:]
        for round in 0..<3 {
            for index in 0..<lostSessions {
                _ = try await doomed.heartbeat(room: "loss", user: "l\(index)", session: "l\(index)", interval: interval)
                lastBeat["l\(index)"] = Int64(Date().timeIntervalSince1970 * 1_000)
            }
            if round < 2 { try await Task.sleep(for: .milliseconds(interval / 2)) }
        }
        await doomed.close()
        kill(servers[0].process.process.processIdentifier, SIGKILL)
        _ = try await servers[0].process.waitForExit()
        let seen = try await offline.waitFor(lostSessions, timeout: .seconds(lease * 2 + Double(interval) * 2.5 / 1_000 + 20))
        let lateness = seen.compactMap { id, arrived in lastBeat[id].map { Double(arrived - ($0 + Int64(interval) * 5 / 2)) / 1_000 } }
        await context.closeAll(subscriber)
        try await servers[1].stop()
        let percentiles = Percentiles(lateness)
        let label = "offline after a process is SIGKILLed, seconds past the real deadline (lease \(Figure.format(lease)) s)"
        return [
            Figure(scenario: Self.name, name: "\(label), p50", value: percentiles.p50, unit: "s"),
            .below(10, scenario: Self.name, name: "\(label), max", value: percentiles.max, unit: "s"),
        ]
    }
}

/// When each user first went offline in a subscriber's diffs, by the wall clock.
final class OfflineArrivals: Sendable {
    private let arrivals = Mutex<[String: Int64]>([:])

    /// A subscriber of the room on `server` that records every user going offline.
    static func watch(
        _ roomToken: String, on server: RunningServer, _ context: BenchmarkContext
    ) async throws -> (OfflineArrivals, [WebSocketLoadConnection]) {
        let offline = OfflineArrivals()
        let socket = try await context.openSockets(
            1, to: server.address,
            // A view large enough to show every session, or offline users past the limit are never sent.
            prepare: { _, socket in _ = try await socket.request(Wire.subscribe(roomToken: roomToken, limit: 1_000, id: 1)) },
            onPush: { _ in offline.record })
        return (offline, socket)
    }

    var record: WebSocketLoadConnection.PushHandler {
        { [self] message, _ in
            guard Wire.isDiff(message), case .object(let diff) = try? JSONParser.parse(message.readableBytesView),
                case .array(let upserts)? = diff["upsert"]
            else { return }
            let now = Int64(Date().timeIntervalSince1970 * 1_000)
            for case .object(let user) in upserts {
                if case .bool(false)? = user["online"], case .string(let id)? = user["userId"] {
                    arrivals.withLock { if $0[id] == nil { $0[id] = now } }
                }
            }
        }
    }

    /// The arrivals once `count` users went offline, or a failure after `timeout`.
    func waitFor(_ count: Int, timeout: Duration) async throws -> [String: Int64] {
        let end = ContinuousClock.now + timeout
        while arrivals.withLock({ $0.count }) < count {
            guard ContinuousClock.now < end else {
                throw BenchmarkError("only \(arrivals.withLock { $0.count }) of \(count) sessions went offline in \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return arrivals.withLock { $0 }
    }
}
