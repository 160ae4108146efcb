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
        // Side by side with the floor, size by size: what presence adds to the sockets' own cost.
        var ratios = [Figure]()
        for (subscribers, _) in sizes {
            let label = "\(Figure.format(Double(subscribers))) subscribers"
            for (ours, theirs, what) in [("server CPU per delivered diff", "server CPU per delivered frame", "server CPU per diff"), ("p99", "p99", "p99")] {
                guard let mine = measurements.first(where: { $0.name.hasPrefix(label + ",") && $0.name.hasSuffix(ours) }),
                    let bare = floor.first(where: { $0.name.contains(" \(Figure.format(Double(subscribers))) sockets,") && $0.name.hasSuffix(theirs) })
                // /proc counts CPU in ticks of 10 ms: a smoke run's floor may read 0.
                else { continue }
                guard bare.value > 0 else { continue }
                ratios.append(Figure(scenario: Self.name, name: "\(label), \(what) ÷ bare SwiftNIO", value: mine.value / bare.value, unit: "×"))
            }
        }
        return measurements + floor + ratios
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
            let cpuBefore = try floor.cpuSeconds()
            var latencies = [Double]()
            for _ in 0..<operations {
                latencies.append(try await arrivals.time(subscribers, on: context.group.next()) { _ = try await control.request("broadcast") })
            }
            let cpu = try floor.cpuSeconds() - cpuBefore
            await context.closeAll(sockets)
            guard arrivals.countsBySubscriber.allSatisfy({ $0 == operations }) else {
                throw BenchmarkError("fan-out floor to \(subscribers): a socket did not read exactly \(operations) frames")
            }
            let percentiles = Percentiles(latencies)
            let label = "bare SwiftNIO WebSocket, \(Figure.format(Double(subscribers))) sockets, \(operations) frames to all"
            figures += [
                Figure(scenario: Self.name, name: "\(label), p50", value: percentiles.p50, unit: "ms"),
                Figure(scenario: Self.name, name: "\(label), p99", value: percentiles.p99, unit: "ms"),
                Figure(
                    scenario: Self.name, name: "\(label), server CPU per delivered frame",
                    value: cpu / Double(operations * subscribers) * 1e6, unit: "µs"),
            ]
        }
        await control.close()
        floor.process.terminate()
        _ = try await floor.waitForExit()
        return figures
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

    private func arrive(from subscriber: Int, at time: NIODeadline) {
        let finished: (EventLoopPromise<NIODeadline>, NIODeadline)? = state.withLock {
            $0.countsBySubscriber[subscriber] += 1
            $0.remaining -= 1
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
        { [self] message, received in
            if Wire.isDiff(message) { arrive(from: index, at: received) }
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
