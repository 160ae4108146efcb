import PresenceProcess
import Foundation
import NIOCore
import PresenceCore
import Synchronization

/// Scenario 2: one room with many subscribers; a user joins or leaves over HTTP,
/// and the clock runs from just before the request is written until the last
/// subscriber has read the diff.
public struct FanOut: Sendable {
    /// Subscriber counts, each with the number of joins and leaves timed at that size.
    public var sizes: [(subscribers: Int, operations: Int)]
    /// p99 targets by subscriber count, in milliseconds.
    public var targets: [Int: Double]
    /// A Centrifuge server to run the same joins and leaves through, side by side (see `Centrifuge`).
    public var centrifuge: URL?

    public init(sizes: [(subscribers: Int, operations: Int)] = [(100, 400), (1_000, 200), (10_000, 60)], targets: [Int: Double] = [1_000: 50, 10_000: 500]) {
        self.sizes = sizes
        self.targets = targets
    }

    public static let smoke = FanOut(sizes: [(20, 10), (100, 6)])

    static let name = "fan-out"

    public func run(_ context: BenchmarkContext) async throws -> [Figure] {
        // One diff per change: this times the fan-out path itself, changes back to back, which
        // merging would hold for its window (`BigRoom` measures merging).
        let server = try await context.startServer(extraArguments: ["--diff-merge-ms", "0"])
        let address = server.address
        let control = try await HTTPLoadConnection.connect(to: address, group: context.group)
        var measurements = [Figure]()
        for (subscribers, operations) in sizes {
            let room = "fan-\(subscribers)"
            let (roomToken, _) = try await control.heartbeat(room: room, user: "host", session: "host-\(subscribers)", interval: 300_000)
            let arrivals = ArrivalTracker(subscribers: subscribers)
            context.progress("fan-out: opening \(subscribers) subscribers")
            let sockets = try await context.openSockets(
                subscribers, to: address,
                prepare: { _, socket in _ = try await socket.request(Wire.subscribe(roomToken: roomToken, id: 1)) },
                onPush: arrivals.countingDiffs)

            context.progress("fan-out: \(operations) joins and leaves to \(subscribers) subscribers")
            let cpuBefore = try server.process.cpuSeconds()
            let latencies = try await Self.timeJoinsAndLeaves(
                operations, room: room, sessionPrefix: "s\(subscribers)", through: control, arrivals: arrivals,
                subscribers: subscribers, context: context)
            // Every diff has been read when the last operation's wait ends: nothing more to do.
            let cpu = try server.process.cpuSeconds() - cpuBefore
            try await Task.sleep(for: .milliseconds(200))
            let counts = arrivals.countsBySubscriber
            await context.closeAll(sockets)
            guard counts.allSatisfy({ $0 == operations }) else {
                let wrong = counts.enumerated().filter { $0.element != operations }
                throw BenchmarkError(
                    "fan-out to \(subscribers): \(wrong.count) subscribers did not read exactly \(operations) diffs, e.g. #\(wrong[0].offset): \(wrong[0].element)")
            }
            let percentiles = Percentiles(latencies)
            let label = "\(Figure.format(Double(subscribers))) subscribers, \(operations) joins and leaves"
            measurements.append(Figure(scenario: Self.name, name: "\(label), p50", value: percentiles.p50, unit: "ms"))
            if let target = targets[subscribers] {
                measurements.append(.below(target, scenario: Self.name, name: "\(label), p99", value: percentiles.p99, unit: "ms"))
            } else {
                measurements.append(Figure(scenario: Self.name, name: "\(label), p99", value: percentiles.p99, unit: "ms"))
            }
            measurements.append(Figure(scenario: Self.name, name: "\(label), max", value: percentiles.max, unit: "ms"))
            // The whole run's server CPU (the requests too) over the diffs delivered.
            measurements.append(Figure(
                scenario: Self.name, name: "\(label), server CPU per delivered diff",
                value: cpu / Double(operations * subscribers) * 1e6, unit: "µs"))
        }
        await control.close()
        try await server.stop()
        let floor = try await floorFigures(context)
        var other = [Figure]()
        if let centrifuge { other = try await centrifugeFigures(context, executable: centrifuge) }
        // Side by side, size by size: what presence adds to the sockets' own cost, and how it compares.
        var ratios = [Figure]()
        let measures = [
            (ours: "server CPU per delivered diff", theirs: ["server CPU per delivered frame", "server CPU per delivered message"], what: "server CPU per diff"),
            (ours: "p50", theirs: ["p50"], what: "p50"), (ours: "p99", theirs: ["p99"], what: "p99"),
        ]
        for (subscribers, _) in sizes {
            let count = Figure.format(Double(subscribers))
            let label = "\(count) subscribers"
            for (theirs, of) in [(floor, "bare SwiftNIO"), (other, "Centrifuge")] {
                for measure in measures {
                    guard let mine = measurements.first(where: { $0.name.hasPrefix(label + ",") && $0.name.hasSuffix(measure.ours) }),
                        let other = theirs.first(where: { figure in
                            (figure.name.contains(" \(count) sockets,") || figure.name.contains(" \(count) subscribers,"))
                                && measure.theirs.contains(where: figure.name.hasSuffix)
                        })
                    else { continue }
                    // /proc counts CPU in ticks of 10 ms: a smoke run's floor may read 0.
                    guard other.value > 0 else { continue }
                    ratios.append(Figure(scenario: Self.name, name: "\(label), \(measure.what) ÷ \(of)", value: mine.value / other.value, unit: "×"))
                }
            }
        }
        return measurements + floor + other + ratios
    }

    /// The same joins and leaves through Centrifuge: `subscribers` clients follow a channel, and
    /// one client subscribes and unsubscribes, which sends each of them a join or a leave message.
    private func centrifugeFigures(_ context: BenchmarkContext, executable: URL) async throws -> [Figure] {
        let server = try ServerProcess(executable: executable, arguments: [], showErrors: true)
        try await server.waitUntilListening()
        let address = ServerAddress(port: server.port)
        let joiner = try await WebSocketLoadConnection.connect(to: address, dialect: Centrifuge.dialect, group: context.group)
        try await Centrifuge.connect(joiner, name: "joiner")
        var figures = [Figure]()
        for (subscribers, operations) in sizes {
            let channel = "fan-\(subscribers)"
            let arrivals = ArrivalTracker(subscribers: subscribers)
            context.progress("fan-out: the same to \(subscribers) subscribers of Centrifuge")
            let sockets = try await context.openSockets(
                subscribers, to: address, dialect: Centrifuge.dialect,
                prepare: { _, socket in
                    try await Centrifuge.connect(socket)
                    try await Centrifuge.subscribe(socket, to: channel, id: 2)
                },
                onPush: { arrivals.counting($0, messages: Centrifuge.joinsAndLeaves) })
            figures += try await timeOthers(
                context, server: server, sockets: sockets, arrivals: arrivals, operations: operations,
                label: "Centrifuge, \(Figure.format(Double(subscribers))) subscribers, \(operations) joins and leaves", delivered: "message"
            ) { operation in
                if operation.isMultiple(of: 2) {
                    try await Centrifuge.subscribe(joiner, to: channel, id: operation + 10)
                } else {
                    try await Centrifuge.unsubscribe(joiner, from: channel, id: operation + 10)
                }
            }
        }
        await joiner.close()
        server.process.terminate()
        _ = try await server.waitForExit()
        return figures
    }

    /// The same frame counts through `presence-bench floor-server --nio`, which sends a diff-sized
    /// frame to every socket the way this server sends a diff: what the kernel and SwiftNIO cost
    /// by themselves on this machine, with no presence work at all.
    private func floorFigures(_ context: BenchmarkContext) async throws -> [Figure] {
        let floor = try await context.startFloorServer(nio: true)
        let address = ServerAddress(port: floor.port)
        let control = try await WebSocketLoadConnection.connect(to: address, group: context.group)
        var figures = [Figure]()
        for (subscribers, operations) in sizes {
            let arrivals = ArrivalTracker(subscribers: subscribers)
            context.progress("fan-out: the same to \(subscribers) sockets of a bare SwiftNIO WebSocket")
            let sockets = try await context.openSockets(
                subscribers, to: address,
                onPush: arrivals.countingDiffs)
            figures += try await timeOthers(
                context, server: floor, sockets: sockets, arrivals: arrivals, operations: operations,
                label: "bare SwiftNIO WebSocket, \(Figure.format(Double(subscribers))) sockets, \(operations) frames to all", delivered: "frame"
            ) { _ in _ = try await control.request("broadcast") }
        }
        await control.close()
        floor.process.terminate()
        _ = try await floor.waitForExit()
        return figures
    }

    /// Times `operations` changes made on another server by `change` (given each one's index),
    /// each until every socket has read its message: p50, p99 and the server's CPU per delivered
    /// message, named after `label` and what is `delivered`, as the ratios look them up.
    private func timeOthers(
        _ context: BenchmarkContext, server: ServerProcess, sockets: [WebSocketLoadConnection], arrivals: ArrivalTracker,
        operations: Int, label: String, delivered: String, change: (Int) async throws -> Void
    ) async throws -> [Figure] {
        let cpuBefore = try server.cpuSeconds()
        var latencies = [Double]()
        for operation in 0..<operations {
            latencies.append(try await arrivals.time(sockets.count, on: context.group.next()) { try await change(operation) })
        }
        let cpu = try server.cpuSeconds() - cpuBefore
        await context.closeAll(sockets)
        guard arrivals.countsBySubscriber.allSatisfy({ $0 == operations }) else {
            throw BenchmarkError("\(label): a socket did not read exactly \(operations) \(delivered)s")
        }
        let percentiles = Percentiles(latencies)
        return [
            Figure(scenario: Self.name, name: "\(label), p50", value: percentiles.p50, unit: "ms"),
            Figure(scenario: Self.name, name: "\(label), p99", value: percentiles.p99, unit: "ms"),
            Figure(
                scenario: Self.name, name: "\(label), server CPU per delivered \(delivered)",
                value: cpu / Double(operations * sockets.count) * 1e6, unit: "µs"),
        ]
    }
}

extension FanOut {
    /// Alternately joins a user and makes it leave through `control`, `operations` times; each
    /// latency runs from just before the request until the last of `subscribers` has read the diff.
    static func timeJoinsAndLeaves(
        _ operations: Int, room: String, sessionPrefix: String, through control: HTTPLoadConnection,
        arrivals: ArrivalTracker, subscribers: Int, context: BenchmarkContext
    ) async throws -> [Double] {
        var latencies = [Double]()
        var sessionToken = ""
        for operation in 0..<operations {
            latencies.append(
                try await arrivals.time(subscribers, on: context.group.next()) {
                    if operation.isMultiple(of: 2) {
                        sessionToken = try await control.heartbeat(
                            room: room, user: "u\(operation)", session: "\(sessionPrefix)-\(operation)", interval: 300_000
                        ).sessionToken
                    } else {
                        let response = try await control.send(
                            HTTPLoadRequest.post("/api/disconnect", json: Wire.disconnect(sessionToken: sessionToken)))
                        guard response.status == 200 else { throw BenchmarkError("disconnect: \(response.status) \(response.text)") }
                    }
                })
        }
        return latencies
    }
}

/// Counts a change's diffs as subscribers read them, and tells when the last one arrived.
final class ArrivalTracker: Sendable {
    private struct State {
        var remaining = 0
        var last = NIODeadline.uptimeNanoseconds(0)
        var countsBySubscriber: [Int]
        var promise: EventLoopPromise<NIODeadline>?
    }
    private let state: Mutex<State>

    init(subscribers: Int) {
        state = Mutex(State(countsBySubscriber: Array(repeating: 0, count: subscribers)))
    }

    /// Starts waiting for `count` arrivals; call before the change is made.
    private func expect(_ count: Int, on eventLoop: any EventLoop) -> EventLoopFuture<NIODeadline> {
        let promise = eventLoop.makePromise(of: NIODeadline.self)
        state.withLock {
            $0.remaining = count
            $0.last = .uptimeNanoseconds(0)
            $0.promise = promise
        }
        return promise.futureResult
    }

    private func arrive(_ count: Int, from subscriber: Int, at time: NIODeadline) {
        let finished: (EventLoopPromise<NIODeadline>, NIODeadline)? = state.withLock {
            $0.countsBySubscriber[subscriber] += count
            $0.remaining -= count
            $0.last = max($0.last, time)
            guard $0.remaining == 0, let promise = $0.promise else { return nil }
            $0.promise = nil
            return (promise, $0.last)
        }
        if let (promise, last) = finished { promise.succeed(last) }
    }

    /// How many diffs each subscriber has read in all.
    var countsBySubscriber: [Int] { state.withLock { $0.countsBySubscriber } }

    /// A socket's push handler (`openSockets`' `onPush`) that counts the diffs subscriber `index` reads.
    func countingDiffs(_ index: Int) -> WebSocketLoadConnection.PushHandler {
        counting(index) { Wire.isDiff($0) ? 1 : 0 }
    }

    /// A push handler that counts, for subscriber `index`, the messages `messages` says count.
    func counting(_ index: Int, messages: @escaping @Sendable (ByteBuffer) -> Int) -> WebSocketLoadConnection.PushHandler {
        { [self] frame, received in
            let count = messages(frame)
            if count > 0 { arrive(count, from: index, at: received) }
        }
    }

    /// Milliseconds from just before `change` until the last of `count` subscribers has read its diff.
    func time(_ count: Int, on eventLoop: any EventLoop, _ change: () async throws -> Void) async throws -> Double {
        let wait = expect(count, on: eventLoop)
        let started = NIODeadline.now()
        try await change()
        let lastArrival = try await self.wait(wait, timeout: .seconds(60))
        return Double((lastArrival - started).nanoseconds) / 1e6
    }

    private func wait(_ future: EventLoopFuture<NIODeadline>, timeout: Duration) async throws -> NIODeadline {
        let timer = future.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.inSeconds * 1e9))) { [self] in
            let promise = state.withLock { state -> EventLoopPromise<NIODeadline>? in
                defer { state.promise = nil }
                return state.promise
            }
            promise?.fail(BenchmarkError("diffs still missing after \(timeout)"))
        }
        defer { timer.cancel() }
        return try await future.get()
    }
}
