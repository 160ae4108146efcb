import PresenceProcess
import Foundation
import NIOCore
import NIOPosix
import PresenceCore
import Synchronization

/// One figure of a benchmark run, with the target it is held to (if any).
public struct Figure: Sendable, Codable {
    public let scenario: String
    public let name: String
    public let value: Double
    public let unit: String
    /// The target in words, such as "≥ 0.8" or "< 50".
    public let target: String?
    public let met: Bool?

    public init(scenario: String, name: String, value: Double, unit: String, target: String? = nil, met: Bool? = nil) {
        self.scenario = scenario
        self.name = name
        self.value = value
        self.unit = unit
        self.target = target
        self.met = met
    }

    static func atMost(_ limit: Double, scenario: String, name: String, value: Double, unit: String) -> Figure {
        Figure(scenario: scenario, name: name, value: value, unit: unit, target: "≤ \(format(limit))", met: value <= limit)
    }

    static func below(_ limit: Double, scenario: String, name: String, value: Double, unit: String) -> Figure {
        Figure(scenario: scenario, name: name, value: value, unit: unit, target: "< \(format(limit))", met: value < limit)
    }

    static func atLeast(_ limit: Double, scenario: String, name: String, value: Double, unit: String) -> Figure {
        Figure(scenario: scenario, name: name, value: value, unit: unit, target: "≥ \(format(limit))", met: value >= limit)
    }

    static func format(_ value: Double) -> String {
        guard value.isFinite else { return "\(value)" }
        if value == value.rounded() || abs(value) >= 100 {
            return Int(value.rounded()).formatted(.number.grouping(.automatic).locale(Locale(identifier: "en_US")))
        }
        return String(format: abs(value) >= 10 ? "%.1f" : "%.2f", value)
    }

    /// A measured value: three significant digits below 1, as a steady state's 0.075 cores is not 0.08.
    static func formatMeasured(_ value: Double) -> String {
        guard value.isFinite, abs(value) < 1, value != 0 else { return format(value) }
        return String(format: "%.3g", value)
    }

    /// The figures as one Markdown table.
    public static func table(_ measurements: [Figure]) -> String {
        var lines = ["| scenario | measure | value | target | |", "|---|---|---:|---|---|"]
        for measurement in measurements {
            let verdict = measurement.met.map { $0 ? "met" : "**missed**" } ?? ""
            lines.append(
                "| \(measurement.scenario) | \(measurement.name) | \(formatMeasured(measurement.value)) \(measurement.unit) | \(measurement.target.map { "\($0) \(measurement.unit)" } ?? "") | \(verdict) |")
        }
        return lines.joined(separator: "\n")
    }

    static let tableBegins = "<!-- figures: written by scripts/bench.sh --update; edits here are overwritten -->"
    static let tableEnds = "<!-- end of figures -->"

    /// Replaces what stands between the figures markers of a Markdown file with `text`.
    public static func replaceTable(in file: URL, with text: String) throws {
        let document = try String(contentsOf: file, encoding: .utf8)
        guard let begin = document.range(of: tableBegins), let end = document.range(of: tableEnds), begin.upperBound <= end.lowerBound
        else { throw BenchmarkError("\(file.path) has no figures markers (\(tableBegins) … \(tableEnds))") }
        let updated = document[..<begin.upperBound] + "\n" + text + "\n" + document[end.lowerBound...]
        try String(updated).write(to: file, atomically: true, encoding: .utf8)
    }
}

/// Nearest-rank percentiles of a sample.
public struct Percentiles: Sendable {
    public let count: Int
    public let p50: Double
    public let p99: Double
    public let max: Double

    public init(_ samples: [Double]) {
        let sorted = samples.sorted()
        count = sorted.count
        func rank(_ fraction: Double) -> Double {
            guard !sorted.isEmpty else { return .nan }
            return sorted[Swift.max(0, Int((fraction * Double(sorted.count)).rounded(.up)) - 1)]
        }
        p50 = rank(0.5)
        p99 = rank(0.99)
        max = sorted.last ?? .nan
    }
}

/// What every scenario needs: the server binary to start, the event loops that
/// drive the load, and a line for progress.
public struct BenchmarkContext: Sendable {
    public let serverExecutable: URL
    public let group: MultiThreadedEventLoopGroup
    public let progress: @Sendable (String) -> Void

    public init(serverExecutable: URL, group: MultiThreadedEventLoopGroup, progress: @escaping @Sendable (String) -> Void) {
        self.serverExecutable = serverExecutable
        self.group = group
        self.progress = progress
    }

    /// A fresh server whose limits let one address open thousands of sockets and
    /// send as fast as it can (the per-address limits would otherwise be the bottleneck).
    public func startServer(store: String = "memory", extraArguments: [String] = []) async throws -> RunningServer {
        var arguments = extraArguments + [
            "--port", "0", "--store", store, "--admin-key", "bench", "--log-level", "error",
            "--rate-limit", "1000000000", "--socket-rate-limit", "1000000000",
            "--max-connections-per-address", "19000", "--max-sessions-per-user", "1000",
        ]
        var dataDirectory: String?
        if store == "sqlite" {
            let directory = temporaryDirectory(named: "presence-bench")
            arguments += ["--data-dir", directory]
            dataDirectory = directory
        }
        let process = try ServerProcess(executable: serverExecutable, arguments: arguments, showErrors: true)
        try await process.waitUntilListening()
        return RunningServer(process: process, dataDirectory: dataDirectory)
    }

    /// A bare server to measure against: this executable's own `floor-server` subcommand
    /// (`presence-bench`), on Hummingbird, or with `nio` on SwiftNIO alone.
    public func startFloorServer(nio: Bool = false) async throws -> ServerProcess {
        let process = try ServerProcess(
            executable: URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath(),
            arguments: ["floor-server"] + (nio ? ["--nio"] : []), showErrors: true)
        try await process.waitUntilListening()
        return process
    }
}

public struct RunningServer: Sendable {
    public let process: ServerProcess
    let dataDirectory: String?

    public var address: ServerAddress { ServerAddress(port: process.port) }

    public func stop() async throws {
        process.process.terminate()
        let status = try await process.waitForExit(timeout: .seconds(30))
        if let dataDirectory { try? FileManager.default.removeItem(atPath: dataDirectory) }
        guard status == 0 else { throw BenchmarkError("the server exited with status \(status)") }
    }
}

/// Client messages and the bits of replies the scenarios read.
enum Wire {
    static func heartbeat(room: String, user: String, session: String, interval: Int, id: Int? = nil) -> String {
        let type = id == nil ? "" : #""type":"heartbeat","id":\#(id!),"#
        return #"{\#(type)"roomId":"\#(room)","userId":"\#(user)","sessionId":"\#(session)","interval":\#(interval)}"#
    }

    static func subscribe(roomToken: String, limit: Int? = nil, id: Int) -> String {
        let limitField = limit.map { #","limit":\#($0)"# } ?? ""
        return #"{"type":"subscribe","id":\#(id),"roomToken":"\#(roomToken)"\#(limitField)}"#
    }

    static func disconnect(sessionToken: String) -> String {
        #"{"sessionToken":"\#(sessionToken)"}"#
    }

    /// A string field of a JSON object reply.
    static func field(_ name: String, of message: ByteBuffer) throws -> String {
        try strings([name], of: message)[0]
    }

    /// String fields of a JSON object reply, in the order asked, from one parse.
    static func strings(_ names: [String], of message: ByteBuffer) throws -> [String] {
        guard case .object(let object) = try JSONParser.parse(message.readableBytesView) else {
            throw BenchmarkError("not a JSON object: \(String(buffer: message))")
        }
        return try names.map { name in
            guard case .string(let field)? = object[name] else { throw BenchmarkError("no \(name) in \(String(buffer: message))") }
            return field
        }
    }

    static func isDiff(_ message: ByteBuffer) -> Bool {
        message.readableBytesView.starts(with: #"{"type":"diff""#.utf8)
    }
}

extension HTTPLoadConnection {
    /// Joins (or heartbeats) a session over HTTP and returns its tokens.
    func heartbeat(
        room: String, user: String, session: String, interval: Int, bearer: String? = nil
    ) async throws -> (roomToken: String, sessionToken: String) {
        let response = try await send(
            HTTPLoadRequest.post("/api/heartbeat", json: Wire.heartbeat(room: room, user: user, session: session, interval: interval), bearer: bearer))
        guard response.status == 200 else { throw BenchmarkError("heartbeat: \(response.status) \(response.text)") }
        let tokens = try Wire.strings(["roomToken", "sessionToken"], of: response.body)
        return (tokens[0], tokens[1])
    }
}

extension BenchmarkContext {
    /// Opens `count` sockets at a steady pace (the listen backlog is capped, so a
    /// burst of thousands of connects would be refused), running `prepare` on each
    /// as soon as it is open.
    func openSockets(
        _ count: Int, to address: ServerAddress, dialect: WebSocketDialect = .presence, perSecond: Double = 2_000, inFlight: Int = 128,
        prepare: @escaping @Sendable (Int, WebSocketLoadConnection) async throws -> Void = { _, _ in },
        onPush: @escaping @Sendable (Int) -> WebSocketLoadConnection.PushHandler = { _ in { _, _ in } }
    ) async throws -> [WebSocketLoadConnection] {
        let started = ContinuousClock.now
        let group = self.group
        let sockets = try await withThrowingTaskGroup(of: (Int, WebSocketLoadConnection).self) { tasks in
            var sockets = [WebSocketLoadConnection?](repeating: nil, count: count)
            func collect(_ result: (Int, WebSocketLoadConnection)) { sockets[result.0] = result.1 }
            for index in 0..<count {
                if index >= inFlight, let done = try await tasks.next() { collect(done) }
                let due = started + .seconds(Double(index) / perSecond)
                if due > .now { try await Task.sleep(until: due) }
                tasks.addTask {
                    let socket = try await WebSocketLoadConnection.connect(
                        to: address, dialect: dialect, group: group, onPush: onPush(index))
                    try await prepare(index, socket)
                    return (index, socket)
                }
            }
            for try await done in tasks { collect(done) }
            return sockets.compactMap { $0 }
        }
        return sockets
    }

    func closeAll(_ sockets: [WebSocketLoadConnection]) async {
        await withTaskGroup(of: Void.self) { tasks in
            for chunk in stride(from: 0, to: sockets.count, by: 500) {
                tasks.addTask {
                    for socket in sockets[chunk..<min(chunk + 500, sockets.count)] { await socket.close() }
                }
            }
        }
    }

    func connectHTTP(_ count: Int, to address: ServerAddress) async throws -> [HTTPLoadConnection] {
        var connections = [HTTPLoadConnection]()
        for _ in 0..<count { connections.append(try await HTTPLoadConnection.connect(to: address, group: group)) }
        return connections
    }
}

/// A value that event-loop callbacks change and a scenario reads, as a class so
/// closures can share it.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result { mutex.withLock { body(&$0) } }
}

/// A count that event-loop callbacks bump and a scenario reads.
typealias Counter = Locked<Int>

extension Locked where Value == Int {
    convenience init() { self.init(0) }
    func add(_ amount: Int = 1) { withLock { $0 += amount } }
    var current: Int { withLock { $0 } }
    func reset() -> Int { withLock { count in defer { count = 0 }; return count } }
}

extension NIODeadline {
    static func after(seconds: Double) -> NIODeadline { .now() + .nanoseconds(Int64(seconds * 1e9)) }
}
