import NIOCore
import NIOPosix
import PresenceCore
import Synchronization

/// One room with thousands of subscribers and a steady churn of joins and leaves, once per
/// way of merging diffs: what merging saves in server CPU and what it costs in delay.
///
/// Every change bumps the room's version by one and is made in order through one connection,
/// so the change behind each version, and when it was sent, is known. Each subscriber checks
/// that its diffs form one unbroken chain of versions; a sample also applies them and compares
/// the list and counts it ends with to the server's own answer, and times every change it sees
/// (from just before the request to the diff that covers its version).
public struct BigRoom: Sendable {
    /// One run: a room size and how the server merges diffs.
    public struct Setting: Sendable {
        public var subscribers: Int
        public var merging: String
        public var serverArguments: [String]

        public static func off(_ subscribers: Int) -> Setting {
            Setting(subscribers: subscribers, merging: "merging off", serverArguments: ["--diff-merge-ms", "0"])
        }

        /// The same window whatever the room's size.
        public static func fixed(_ subscribers: Int, milliseconds: Int) -> Setting {
            Setting(
                subscribers: subscribers, merging: "merge \(milliseconds) ms",
                serverArguments: ["--diff-merge-ms", "\(milliseconds)", "--diff-merge-us-per-subscriber", "1000000"])
        }

        /// The server's default: 25 µs per subscriber, at most 250 ms.
        public static func byDefault(_ subscribers: Int) -> Setting {
            Setting(subscribers: subscribers, merging: "default merging", serverArguments: [])
        }
    }

    public var settings: [Setting]
    /// Joins plus leaves per second.
    public var changesPerSecond: Double
    public var churnSeconds: Double
    /// Users online in the room before the churn starts, so the counts are not small.
    public var residents: Int
    /// Every this-many-th subscriber applies its diffs and times them.
    public var sampleEvery: Int

    public init(
        settings: [Setting] = [.off(10_000), .fixed(10_000, milliseconds: 100), .byDefault(10_000), .byDefault(1_000)],
        changesPerSecond: Double = 200, churnSeconds: Double = 10, residents: Int = 1_000, sampleEvery: Int = 50
    ) {
        self.settings = settings
        self.changesPerSecond = changesPerSecond
        self.churnSeconds = churnSeconds
        self.residents = residents
        self.sampleEvery = sampleEvery
    }

    public static let smoke = BigRoom(
        settings: [.off(60), .fixed(60, milliseconds: 100)], changesPerSecond: 50, churnSeconds: 1, residents: 30, sampleEvery: 4)

    static let name = "big room"
    /// The users still online from the churn; a leave makes the oldest of them go.
    static let churnOnline = 50

    public func run(_ context: BenchmarkContext) async throws -> [Figure] {
        var figures = [Figure]()
        for setting in settings {
            figures += try await run(setting, context: context)
        }
        return figures
    }

    private func run(_ setting: Setting, context: BenchmarkContext) async throws -> [Figure] {
        let subscribers = setting.subscribers
        let server = try await context.startServer(store: "sqlite", extraArguments: setting.serverArguments)
        // Its own event loop: on the subscribers' loops, each change's request would queue behind
        // thousands of diffs being read, and the churn could never reach its rate.
        let controlLoop = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { controlLoop.shutdownGracefully { _ in } }
        let control = try await HTTPLoadConnection.connect(to: server.address, group: controlLoop)
        let room = "webinar"
        context.progress("big room (\(subscribers), \(setting.merging)): \(residents) residents join")
        var joined = [String]()
        for resident in 0..<residents {
            joined.append(try await control.heartbeat(room: room, user: "r\(resident)", session: "r\(resident)", interval: 300_000).roomToken)
        }
        guard let roomToken = joined.last else { throw BenchmarkError("big room: no residents") }
        let changes = Int(changesPerSecond * churnSeconds)
        let sent = SendTimes(count: changes)
        let tracks = (0..<subscribers).map { SubscriberTrack(sampled: $0.isMultiple(of: sampleEvery)) }
        context.progress("big room (\(subscribers), \(setting.merging)): opening \(subscribers) subscribers")
        let sockets = try await context.openSockets(
            subscribers, to: server.address,
            prepare: { index, socket in
                let reply = try await socket.request(Wire.subscribe(roomToken: roomToken, id: 1))
                try tracks[index].start(with: reply)
            },
            onPush: { index in
                { message, received in tracks[index].receive(message, at: received, sent: sent) }
            })
        let firstVersion = tracks[0].version
        sent.setFirstVersion(firstVersion)

        context.progress("big room (\(subscribers), \(setting.merging)): \(changes) joins and leaves at \(Int(changesPerSecond))/s")
        let cpuBefore = try server.process.cpuSeconds()
        let churnStarted = ContinuousClock.now
        var online = [(user: String, sessionToken: String)]()
        // A server that cannot keep up slows the churn's requests; the run stops at half as long again.
        let churnLimit = churnStarted + .seconds(churnSeconds * 1.5)
        var made = 0
        for change in 0..<changes where ContinuousClock.now < churnLimit {
            made += 1
            let due = churnStarted + .seconds(Double(change) / changesPerSecond)
            if due > .now { try await Task.sleep(until: due) }
            sent.record(change)
            if online.count < Self.churnOnline || change.isMultiple(of: 2) {
                let user = "c\(change)"
                let tokens = try await control.heartbeat(room: room, user: user, session: user, interval: 300_000)
                online.append((user, tokens.sessionToken))
            } else {
                let leaving = online.removeFirst()
                let response = try await control.send(
                    HTTPLoadRequest.post("/api/disconnect", json: Wire.disconnect(sessionToken: leaving.sessionToken)))
                guard response.status == 200 else { throw BenchmarkError("disconnect: \(response.status) \(response.text)") }
            }
        }
        let churnStopped = NIODeadline.now()
        let churnDuration = (ContinuousClock.now - churnStarted).inSeconds
        let cpuDuringChurn = try server.process.cpuSeconds() - cpuBefore

        // Settled when no subscriber has read anything for a while.
        let settleLimit = NIODeadline.after(seconds: 30)
        while NIODeadline.now() < settleLimit {
            try await Task.sleep(for: .milliseconds(500))
            let last = tracks.map(\.lastReceipt).max() ?? churnStopped
            if NIODeadline.now() - last > .seconds(1) { break }
        }
        let cpuTotal = try server.process.cpuSeconds() - cpuBefore

        // The truth: the server's list at the subscribers' limit, and a fresh subscriber's version.
        let listed = try await control.send(.get("/api/list?roomToken=\(roomToken)&limit=\(ProtocolLimits.defaultLimit)"))
        guard listed.status == 200 else { throw BenchmarkError("list: \(listed.status) \(listed.text)") }
        let truth = try RoomContents(parsing: listed.body)
        let fresh = try await WebSocketLoadConnection.connect(to: server.address, group: context.group)
        let freshTrack = SubscriberTrack(sampled: true)
        try freshTrack.start(with: try await fresh.request(Wire.subscribe(roomToken: roomToken, id: 1)))
        await fresh.close()
        await context.closeAll(sockets)
        await control.close()
        try await server.stop()

        let lastVersion = firstVersion + UInt64(made)
        guard truth.version == lastVersion else {
            throw BenchmarkError("big room: the room is at version \(truth.version) after \(made) changes from \(firstVersion)")
        }
        var broken = 0, behind = 0, wrongContents = 0, diffs = 0
        var delays = [Double]()
        var convergence = 0.0
        for track in tracks {
            let result = track.result
            diffs += result.diffs
            if result.brokenChain { broken += 1 }
            if result.version != freshTrack.version { behind += 1 }
            if let contents = result.contents, contents != freshTrack.result.contents || contents.counts != truth.counts || contents.online != truth.online {
                wrongContents += 1
            }
            delays += result.delays
            if let last = result.lastReceipt { convergence = max(convergence, Double((last - churnStopped).nanoseconds) / 1e6) }
        }
        let percentiles = Percentiles(delays)
        let label = "\(Figure.format(Double(subscribers))) subscribers, \(Int(changesPerSecond)) changes/s, \(setting.merging)"
        return [
            .atLeast(Double(changes), scenario: Self.name, name: "\(label): changes made in \(Figure.format(churnSeconds * 1.5)) s", value: Double(made), unit: "changes"),
            .below(1, scenario: Self.name, name: "\(label): server CPU during the churn", value: cpuDuringChurn / churnDuration, unit: "cores"),
            Figure(scenario: Self.name, name: "\(label): server CPU per change, churn and catching up", value: cpuTotal / Double(max(made, 1)) * 1e3, unit: "ms"),
            Figure(scenario: Self.name, name: "\(label): diffs read per second", value: Double(diffs) / churnDuration, unit: "diffs/s"),
            Figure(scenario: Self.name, name: "\(label): delay per change, p50", value: percentiles.p50, unit: "ms"),
            .below(500, scenario: Self.name, name: "\(label): delay per change, p99", value: percentiles.p99, unit: "ms"),
            .atMost(1_000, scenario: Self.name, name: "\(label): last diff read after the churn stopped", value: convergence, unit: "ms"),
            .atMost(0, scenario: Self.name, name: "\(label): subscribers not at the final version, or with a gap", value: Double(behind + broken), unit: "subscribers"),
            .atMost(0, scenario: Self.name, name: "\(label): sampled subscribers whose list or counts differ from the server's", value: Double(wrongContents), unit: "subscribers"),
        ]
    }
}

/// When each change was sent, by the room version it makes.
final class SendTimes: Sendable {
    private struct State {
        var times: [NIODeadline]
        var firstVersion: UInt64 = 0
    }
    private let state: Mutex<State>

    init(count: Int) {
        state = Mutex(State(times: Array(repeating: .distantFuture, count: count)))
    }

    func setFirstVersion(_ version: UInt64) {
        state.withLock { $0.firstVersion = version }
    }

    func record(_ change: Int) {
        state.withLock { $0.times[change] = .now() }
    }

    /// The send times of the changes that made versions `from + 1 ... to`.
    func times(after from: UInt64, through to: UInt64) -> [NIODeadline] {
        state.withLock { state in
            let first = Int(from) - Int(state.firstVersion)
            let last = Int(to) - Int(state.firstVersion)
            return (max(first, 0)..<min(last, state.times.count)).map { state.times[$0] }
        }
    }
}

/// A room's list as `(userId, online)` pairs, with its counts and version.
struct RoomContents: Equatable {
    var online: [String: Bool] = [:]
    var counts: [Int] = [0, 0]
    var version: UInt64 = 0

    /// From a `snapshot` frame or a `GET /api/list` answer.
    init(parsing message: ByteBuffer) throws {
        guard case .object(let object) = try JSONParser.parse(message.readableBytesView) else { throw BenchmarkError("not an object") }
        if case .integer(let version)? = object["roomVersion"] { self.version = UInt64(version) }
        try applyCounts(of: object)
        guard case .array(let users)? = object["users"] else { throw BenchmarkError("no users in \(String(buffer: message))") }
        try upsert(users)
    }

    mutating func apply(diff object: [String: JSONValue]) throws {
        if case .integer(let version)? = object["roomVersion"] { self.version = UInt64(version) }
        if case .array(let removed)? = object["remove"] {
            for case .string(let userId) in removed { online.removeValue(forKey: userId) }
        }
        if case .array(let users)? = object["upsert"] { try upsert(users) }
        if object["onlineCount"] != nil { try applyCounts(of: object) }
    }

    private mutating func upsert(_ users: [JSONValue]) throws {
        for case .object(let user) in users {
            guard case .string(let userId)? = user["userId"], case .bool(let isOnline)? = user["online"] else {
                throw BenchmarkError("a user without userId or online")
            }
            online[userId] = isOnline
        }
    }

    private mutating func applyCounts(of object: [String: JSONValue]) throws {
        guard case .integer(let onlineCount)? = object["onlineCount"], case .integer(let userCount)? = object["userCount"] else {
            throw BenchmarkError("no counts")
        }
        counts = [Int(onlineCount), Int(userCount)]
    }
}

/// What one subscriber has read: the chain of versions, and for a sample the contents and delays.
final class SubscriberTrack: Sendable {
    struct Result: Sendable {
        var version: UInt64 = 0
        var brokenChain = false
        var diffs = 0
        var lastReceipt: NIODeadline?
        var contents: RoomContents?
        var delays: [Double] = []
    }
    private let sampled: Bool
    private let state = Mutex(Result())

    init(sampled: Bool) {
        self.sampled = sampled
    }

    func start(with snapshot: ByteBuffer) throws {
        let contents = try RoomContents(parsing: snapshot)
        state.withLock {
            $0.version = contents.version
            if sampled { $0.contents = contents }
        }
    }

    var version: UInt64 { state.withLock { $0.version } }
    var lastReceipt: NIODeadline { state.withLock { $0.lastReceipt ?? .uptimeNanoseconds(0) } }
    var result: Result { state.withLock { $0 } }

    func receive(_ message: ByteBuffer, at received: NIODeadline, sent: SendTimes) {
        guard Wire.isDiff(message) else { return }
        let view = message.readableBytesView
        let from = Self.number(after: #""from":"#, in: view)
        let to = Self.number(after: #""roomVersion":"#, in: view)
        var object: [String: JSONValue]?
        if sampled, case .object(let parsed)? = try? JSONParser.parse(view) { object = parsed }
        let delays = sampled ? sent.times(after: from, through: to).map { Double((received - $0).nanoseconds) / 1e6 } : []
        state.withLock { state in
            if from != state.version || to <= from { state.brokenChain = true }
            state.version = to
            state.diffs += 1
            state.lastReceipt = received
            state.delays += delays
            if let object {
                do { try state.contents?.apply(diff: object) } catch { state.brokenChain = true }
            }
        }
    }

    /// The unsigned integer right after `key` in a frame, 0 when there is none.
    static func number(after key: String, in bytes: ByteBufferView) -> UInt64 {
        let keyBytes = Array(key.utf8)
        guard let start = bytes.firstRange(of: keyBytes)?.upperBound else { return 0 }
        var value: UInt64 = 0
        var index = start
        while index < bytes.endIndex, let digit = bytes[index].wholeNumberDigit {
            value = value * 10 + UInt64(digit)
            index = bytes.index(after: index)
        }
        return value
    }
}

private extension UInt8 {
    var wholeNumberDigit: UInt8? { (48...57).contains(self) ? self - 48 : nil }
}
