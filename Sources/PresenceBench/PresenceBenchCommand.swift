import PresenceProcess
import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import PresenceLoad
import PresencePostgres
import PresenceSQLite
import PresenceStore

#if canImport(Glibc)
import Glibc
#endif

@main
struct PresenceBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "presence-bench",
        abstract: "Measures presence-server: heartbeat cost, a change's fixed cost, fan-out latency, big rooms, friends lists, expiry precision, memory, churn, webhooks.",
        subcommands: [Run.self, StoreChurnCommand.self, FloorServerCommand.self],
        defaultSubcommand: Run.self)
}

enum Scenario: String, CaseIterable, ExpressibleByArgument {
    case heartbeat, fixedcost, fanout, bigroom, friends, expiry, memory, steady, churn, webhooks, multinode
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Starts the given presence-server for each scenario, drives it over 127.0.0.1, and prints one table.")

    @Argument(help: "Scenarios to run: \(Scenario.allCases.map(\.rawValue).joined(separator: ", ")). Default: all.")
    var scenarios: [Scenario] = []

    @Option(help: "The presence-server executable to start (a release build for real figures).")
    var server: String = ".build/release/presence-server"

    @Flag(help: "Tiny counts and durations: checks that every scenario still works, measures nothing worth quoting.")
    var smoke = false

    @Option(help: "Also write the measurements as JSON to this file.")
    var json: String?

    @Option(help: "Rewrite the figures section of this Markdown file (BENCHMARKS.md) with this run's table, date and commit.")
    var markdown: String?

    @Option(help: "The commit measured, for --markdown (scripts/bench.sh passes git's).")
    var commit: String?

    @Option(help: "fanout's sizes instead of its own, each SUBSCRIBERS:OPERATIONS (repeatable), e.g. --fanout-size 500:300.")
    var fanoutSize: [String] = []

    @Option(help: "A Centrifuge server to run fanout's joins and leaves through too, side by side (scripts/bench/centrifuge.sh builds it) [PRESENCE_BENCH_CENTRIFUGE].")
    var centrifuge: String?

    @Option(help: "A PostgreSQL server for the multinode scenario; each run makes databases of its own there [PRESENCE_BENCH_POSTGRES_URL].")
    var postgresUrl: String?

    func run() async throws {
        raiseOpenFileLimit()
        let executable = URL(fileURLWithPath: server)
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw ValidationError("no presence-server at \(server); build it with: swift build -c release --product presence-server")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let context = BenchmarkContext(serverExecutable: executable, group: group) { line in
            FileHandle.standardError.write(Data("\(line)\n".utf8))
        }
        let postgres = postgresUrl ?? ProcessInfo.processInfo.environment["PRESENCE_BENCH_POSTGRES_URL"]
        // Without a PostgreSQL server the default run leaves the several-process scenario out.
        let chosen = scenarios.isEmpty ? Scenario.allCases.filter { $0 != .multinode || postgres != nil } : scenarios
        let started = ContinuousClock.now
        var measurements = [Figure]()
        for scenario in chosen {
            switch scenario {
            case .heartbeat:
                measurements += try await (smoke ? HeartbeatCost.smoke : HeartbeatCost()).run(context)
            case .fixedcost:
                measurements += try await (smoke ? FixedCost.smoke : FixedCost()).run(context)
            case .fanout:
                var fanout = smoke ? FanOut.smoke : FanOut()
                if !fanoutSize.isEmpty { fanout.sizes = try fanoutSize.map(Self.fanoutSize) }
                fanout.centrifuge = (centrifuge ?? ProcessInfo.processInfo.environment["PRESENCE_BENCH_CENTRIFUGE"]).map { URL(fileURLWithPath: $0) }
                measurements += try await fanout.run(context)
            case .bigroom:
                measurements += try await (smoke ? BigRoom.smoke : BigRoom()).run(context)
            case .friends:
                measurements += try await (smoke ? FriendsList.smoke : FriendsList()).run(context)
            case .expiry:
                measurements += try await (smoke ? ExpiryPrecision.smoke : ExpiryPrecision()).run(context)
            case .memory:
                measurements += try await (smoke ? ServerMemory.smoke : ServerMemory()).run(context)
                let storeMemory = smoke ? StoreMemory.smoke : StoreMemory()
                measurements.append(try await storeMemory.run(context, name: "memory", make: { MemoryStore() }, close: { _ in }))
                let directory = temporaryDirectory(named: "presence-bench")
                measurements.append(
                    try await storeMemory.run(
                        context, name: "sqlite", make: { try SQLiteStore(directory: directory) },
                        close: { store in
                            try store.close()
                            try? FileManager.default.removeItem(atPath: directory)
                        }))
            case .steady:
                measurements += try await (smoke ? ServerMemory.steadySmoke : ServerMemory.steady).run(context)
            case .churn:
                measurements += try await (smoke ? ServerChurn.smoke : ServerChurn()).run(context)
            case .webhooks:
                measurements += try await (smoke ? WebhookChurn.smoke : WebhookChurn()).run(context)
            case .multinode:
                guard let postgres else {
                    throw ValidationError("multinode needs --postgres-url (or PRESENCE_BENCH_POSTGRES_URL): scripts/postgres.sh start DIR prints one")
                }
                measurements += try await (smoke ? MultiNode.smoke : MultiNode()).run(context, database: try Self.databases(on: postgres))
            }
        }
        try await group.shutdownGracefully()

        let elapsed = ContinuousClock.now - started
        print("presence-bench\(smoke ? " (smoke run)" : ""): \(System.coreCount) cores, server \(server), \(Int(elapsed.components.seconds)) s")
        print()
        print(Figure.table(measurements))
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(measurements).write(to: URL(fileURLWithPath: json))
        }
        if let markdown {
            let heading = "`scripts/bench.sh --update`, \(Date.now.formatted(.iso8601.year().month().day())), commit \(commit ?? "unknown"), \(System.coreCount) cores, \(Int(elapsed.components.seconds)) s:"
            try Figure.replaceTable(in: URL(fileURLWithPath: markdown), with: heading + "\n\n" + Figure.table(measurements))
        }
        let missed = measurements.filter { $0.met == false }
        if !missed.isEmpty {
            print("\nmissed targets: \(missed.count)")
        }
    }
}

extension Run {
    static func fanoutSize(_ text: String) throws -> (subscribers: Int, operations: Int) {
        let parts = text.split(separator: ":").compactMap { Int($0) }
        guard parts.count == 2, parts.allSatisfy({ $0 > 0 }) else {
            throw ValidationError("--fanout-size takes SUBSCRIBERS:OPERATIONS, both positive, not \(text)")
        }
        return (parts[0], parts[1])
    }
}

struct StoreChurnCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store-churn", abstract: "Joins and leaves per second of each store in this process, without the server.")

    @Option(help: "Concurrent clients.")
    var clients = 256

    @Option(help: "Seconds per store.")
    var seconds = 5.0

    func run() async throws {
        let churn = StoreChurn(clients: clients, seconds: seconds)
        let directory = temporaryDirectory(named: "presence-bench")
        let sqlite = try SQLiteStore(directory: directory)
        var measurements = try await churn.run(MemoryStore(), name: "memory")
        measurements += try await churn.run(sqlite, name: "sqlite")
        try sqlite.close()
        try? FileManager.default.removeItem(atPath: directory)
        print(Figure.table(measurements))
    }
}

/// Ten thousand sockets need more descriptors than the usual soft limit of 1,024;
/// the server started from here inherits the raised limit.
private func raiseOpenFileLimit() {
    #if canImport(Glibc)
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    #endif
}

extension Run {
    /// Fresh databases on the given server, and PostgreSQL's own count of committed transactions.
    static func databases(on url: String) throws -> MultiNode.Database {
        let settings = try PostgresSettings(url: url)
        return MultiNode.Database(
            makeURL: {
                let name = "bench_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
                _ = try await settings.creatingDatabase(named: name)
                var components = URLComponents(string: url)!
                components.path = "/" + name
                return components.string!
            },
            committedTransactions: { databaseURL in
                try await PostgresSettings(url: databaseURL).committedTransactions()
            })
    }
}
