import NIOCore
import NIOPosix
import PresenceCore
import Synchronization

/// Issue 16's friends list: thousands of sockets each watching a few hundred users, while those
/// users join and leave rooms. Every status change must reach exactly the sockets watching that
/// user, and a data change (which leaves every status as it was) must reach none.
public struct FriendsList: Sendable {
    public var sockets: Int
    public var watchedPerSocket: Int
    /// The users watched and churned.
    public var population: Int
    /// Users that join (and leave again half a second later) per second.
    public var joinsPerSecond: Double
    public var churnSeconds: Double
    /// Every this-many-th socket times the statuses it reads.
    public var sampleEvery: Int

    public init(
        sockets: Int = 5_000, watchedPerSocket: Int = 200, population: Int = 2_000, joinsPerSecond: Double = 50,
        churnSeconds: Double = 10, sampleEvery: Int = 25
    ) {
        self.sockets = sockets
        self.watchedPerSocket = watchedPerSocket
        self.population = population
        self.joinsPerSecond = joinsPerSecond
        self.churnSeconds = churnSeconds
        self.sampleEvery = sampleEvery
    }

    public static let smoke = FriendsList(sockets: 40, watchedPerSocket: 20, population: 100, joinsPerSecond: 20, churnSeconds: 1, sampleEvery: 4)

    static let name = "friends list"

    /// The users socket `socket` watches: distinct, spread over the population.
    func watched(by socket: Int) -> [Int] {
        let stride = max(1, population / watchedPerSocket)
        return (0..<watchedPerSocket).map { (socket * 7 + $0 * stride) % population }
    }

    public func run(_ context: BenchmarkContext) async throws -> [Figure] {
        let server = try await context.startServer(store: "sqlite")
        // Its own event loop, as in `BigRoom`: the churn must not queue behind the watchers' reads.
        let controlLoop = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { controlLoop.shutdownGracefully { _ in } }
        let control = try await HTTPLoadConnection.connect(to: server.address, group: controlLoop)
        var watchers = [Int](repeating: 0, count: population)
        for socket in 0..<sockets {
            for user in watched(by: socket) { watchers[user] += 1 }
        }
        let joins = Int(joinsPerSecond * churnSeconds)
        let sent = StatusSendTimes(users: population)
        let received = Counter()
        let frames = Counter()
        let delays = Locked([Double]())
        context.progress("friends list: \(sockets) sockets watching \(watchedPerSocket) users each")
        let watchedLists = (0..<sockets).map { watched(by: $0).map { "u\($0)" } }
        let sockets = try await context.openSockets(
            sockets, to: server.address,
            prepare: { index, socket in
                let ids = watchedLists[index].map { "\"\($0)\"" }.joined(separator: ",")
                let reply = try await socket.request(#"{"type":"watchUsers","id":1,"userIds":[\#(ids)]}"#)
                guard reply.readableBytesView.starts(with: #"{"type":"users""#.utf8) else {
                    throw BenchmarkError("watchUsers: \(String(buffer: reply))")
                }
            },
            onPush: { [sampleEvery] index in
                let sampled = index.isMultiple(of: sampleEvery)
                return { message, at in
                    guard message.readableBytesView.starts(with: #"{"type":"usersChanged""#.utf8) else { return }
                    frames.add()
                    guard sampled else {
                        received.add(message.readableBytesView.occurrences(of: #""userId":"#))
                        return
                    }
                    guard case .object(let object)? = try? JSONParser.parse(message.readableBytesView),
                          case .array(let statuses)? = object["users"] else { return }
                    received.add(statuses.count)
                    var measured = [Double]()
                    for case .object(let status) in statuses {
                        guard case .string(let userId)? = status["userId"], case .bool(let online)? = status["online"],
                              let user = Int(userId.dropFirst()), let since = sent.time(of: user, online: online) else { continue }
                        measured.append(Double((at - since).nanoseconds) / 1e6)
                    }
                    delays.withLock { $0 += measured }
                }
            })

        context.progress("friends list: \(joins) users join and leave, each with a data change between")
        let cpuBefore = try server.process.cpuSeconds()
        let started = ContinuousClock.now
        var expected = 0
        var online: [(user: Int, sessionToken: String, leaveAt: ContinuousClock.Instant)] = []
        var join = 0
        while join < joins || !online.isEmpty {
            let nextJoin = join < joins ? started + .seconds(Double(join) / joinsPerSecond) : nil
            if let first = online.first, nextJoin.map({ first.leaveAt <= $0 }) ?? true {
                if first.leaveAt > .now { try await Task.sleep(until: first.leaveAt) }
                online.removeFirst()
                sent.record(first.user, online: false)
                let response = try await control.send(
                    HTTPLoadRequest.post("/api/disconnect", json: Wire.disconnect(sessionToken: first.sessionToken)))
                guard response.status == 200 else { throw BenchmarkError("disconnect: \(response.status) \(response.text)") }
                expected += watchers[first.user]
            } else if let nextJoin {
                if nextJoin > .now { try await Task.sleep(until: nextJoin) }
                let user = join % population
                sent.record(user, online: true)
                let tokens = try await control.heartbeat(room: "room\(join % 50)", user: "u\(user)", session: "s\(join)", interval: 300_000)
                expected += watchers[user]
                // A data change leaves the status as it was: it must reach no watcher.
                let update = try await control.send(
                    HTTPLoadRequest.post("/api/update", json: #"{"sessionToken":"\#(tokens.sessionToken)","data":{"n":\#(join)}}"#))
                guard update.status == 200 else { throw BenchmarkError("update: \(update.status) \(update.text)") }
                online.append((user, tokens.sessionToken, .now + .milliseconds(500)))
                join += 1
            }
        }
        let churnDuration = (ContinuousClock.now - started).inSeconds
        let cpu = try server.process.cpuSeconds() - cpuBefore
        try await settle(received, quiet: .seconds(1), timeout: .seconds(60))
        await context.closeAll(sockets)
        await control.close()
        try await server.stop()

        let statusChanges = joins * 2
        let percentiles = Percentiles(delays.withLock { $0 })
        let label = "\(Figure.format(Double(self.sockets))) sockets × \(watchedPerSocket) users"
        return [
            Figure(scenario: Self.name, name: "\(label): status changes (joins and leaves; as many data changes)", value: Double(statusChanges), unit: "changes"),
            .atMost(0, scenario: Self.name, name: "\(label): statuses read beyond the watchers of each change", value: Double(received.current - expected), unit: "statuses"),
            .atLeast(Double(expected), scenario: Self.name, name: "\(label): statuses read (one per watcher of each change)", value: Double(received.current), unit: "statuses"),
            Figure(scenario: Self.name, name: "\(label): messages per status change (watchers each: \(Figure.format(Double(expected) / Double(statusChanges))))", value: Double(frames.current) / Double(statusChanges), unit: "messages"),
            Figure(scenario: Self.name, name: "\(label): server CPU during the churn", value: cpu / churnDuration, unit: "cores"),
            Figure(scenario: Self.name, name: "\(label): server CPU per status entry sent", value: cpu / Double(max(received.current, 1)) * 1e6, unit: "µs"),
            Figure(scenario: Self.name, name: "\(label): delay per status, p50", value: percentiles.p50, unit: "ms"),
            Figure(scenario: Self.name, name: "\(label): delay per status, p99", value: percentiles.p99, unit: "ms"),
        ]
    }
}

/// When each user's last join and leave were sent.
final class StatusSendTimes: Sendable {
    private let times: Mutex<[(joined: NIODeadline?, left: NIODeadline?)]>

    init(users: Int) {
        times = Mutex(Array(repeating: (nil, nil), count: users))
    }

    func record(_ user: Int, online: Bool) {
        times.withLock {
            if online { $0[user].joined = .now() } else { $0[user].left = .now() }
        }
    }

    func time(of user: Int, online: Bool) -> NIODeadline? {
        times.withLock { times in
            guard times.indices.contains(user) else { return nil }
            return online ? times[user].joined : times[user].left
        }
    }
}

extension ByteBufferView {
    func occurrences(of needle: String) -> Int {
        let bytes = Array(needle.utf8)
        var count = 0
        var rest = self[...]
        while let range = rest.firstRange(of: bytes) {
            count += 1
            rest = rest[range.upperBound...]
        }
        return count
    }
}
