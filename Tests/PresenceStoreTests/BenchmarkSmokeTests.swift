import PresenceLoad
import Foundation
import Testing
import PresenceTestSupport

/// A few seconds of each presence-bench scenario against the server of this build,
/// so the benchmark cannot rot. The figures of a debug build sharing the machine
/// with other tests mean nothing; what is checked is that every scenario runs to
/// the end, reports its figures, and that the one hard invariant holds.
@Suite struct BenchmarkSmokeTests {
    static var benchExecutable: URL {
        presenceServerExecutable.deletingLastPathComponent().appendingPathComponent("presence-bench")
    }

    /// Runs presence-bench and returns its exit status and standard output.
    static func runBench(_ arguments: [String]) async throws -> (Int32, String) {
        let process = Process()
        process.executableURL = benchExecutable
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        // Progress and errors go to a file, shown only when the run fails: why it failed.
        let errors = temporaryDirectory() + "/stderr.txt"
        _ = FileManager.default.createFile(atPath: errors, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errors))
        try process.run()
        let text = try await offThePool {
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
        guard process.terminationStatus == 0 else {
            let stderr = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
            return (process.terminationStatus, text + "\nstderr (last lines):\n" + stderr.split(separator: "\n").suffix(15).joined(separator: "\n"))
        }
        return (process.terminationStatus, text)
    }

    /// Runs one scenario's smoke form; returns the printed table and the figures of its JSON.
    static func smokeRun(_ scenario: String) async throws -> (table: String, figures: [Figure]) {
        let json = temporaryDirectory() + "/figures.json"
        let (status, table) = try await runBench(["run", scenario, "--smoke", "--server", presenceServerExecutable.path, "--json", json])
        #expect(status == 0, "\(table)")
        return (table, try JSONDecoder().decode([Figure].self, from: Data(contentsOf: URL(fileURLWithPath: json))))
    }

    @Test(arguments: [
        ("heartbeat", ["heartbeat ÷ `/health` throughput", "WebSocket heartbeats", "messages to subscribers during"]),
        ("fanout", [
            "20 subscribers, 10 joins and leaves, p99", "100 subscribers, 6 joins and leaves, p99",
            "bare SwiftNIO WebSocket, 100 sockets, 6 frames to all, server CPU per delivered frame",
        ]),
        ("expiry", ["40 sessions, offline diff after the deadline, p99"]),
        ("memory", ["RSS per connected, subscribed, heartbeating session", "memory store heap per session", "sqlite store heap per session"]),
        ("churn", ["joins/s through the server, sqlite store", "leaves/s through the server, memory store"]),
        ("fixedcost", ["memory: server CPU per change", "sqlite: server CPU per change", "sqlite: diffs delivered per change"]),
        ("webhooks", ["rate with a webhook ÷ rate without", "rate with a hanging endpoint ÷ rate without", "delivery lag after the event, p99", "events delivered of those written"]),
    ])
    func scenarioRunsAndReports(scenario: String, expectedFigures: [String]) async throws {
        let (table, figures) = try await Self.smokeRun(scenario)
        for expected in expectedFigures {
            let matching = figures.filter { $0.name.contains(expected) }
            #expect(matching.count >= 1, "no figure named \(expected) in \(figures.map(\.name))")
            for figure in matching where !figure.name.hasPrefix("messages to subscribers") {
                #expect(figure.value > 0 && figure.value.isFinite, "\(figure.name): \(figure.value)")
            }
            #expect(table.contains(expected), "the printed table lacks \(expected)")
        }
        if let messages = figures.first(where: { $0.name.hasPrefix("messages to subscribers") }) {
            #expect(messages.value == 0, "heartbeats of online users reached subscribers")
        }
    }

    /// The big room and the friends list report, and what they check of every message holds: each
    /// subscriber's diffs form one chain to the final version and agree with the server's list;
    /// each status change reaches exactly its watchers. (Rates are not checked: a debug server on a
    /// loaded machine may make fewer changes than asked in the time given.)
    @Test(arguments: [
        ("bigroom", ["diffs read per second", "delay per change, p99", "server CPU per change"],
         ["subscribers not at the final version, or with a gap", "sampled subscribers whose list or counts differ"]),
        ("friends", ["messages per status change", "delay per status, p99", "server CPU per status entry sent"],
         ["statuses read beyond the watchers of each change", "statuses read (one per watcher of each change)"]),
    ])
    func largeScaleScenarioRunsAndHoldsItsInvariants(scenario: String, positive: [String], invariants: [String]) async throws {
        let (_, figures) = try await Self.smokeRun(scenario)
        for expected in positive {
            let matching = figures.filter { $0.name.contains(expected) }
            #expect(!matching.isEmpty, "no figure named \(expected) in \(figures.map(\.name))")
            #expect(matching.allSatisfy { $0.value > 0 && $0.value.isFinite }, "\(expected): \(matching.map(\.value))")
        }
        for expected in invariants {
            let matching = figures.filter { $0.name.contains(expected) }
            #expect(!matching.isEmpty, "no figure named \(expected) in \(figures.map(\.name))")
            #expect(matching.allSatisfy { $0.met == true }, "\(expected): \(matching.map(\.value))")
        }
    }

    /// The steady-state scenario reports the server's CPU share and RSS per session; the heartbeat
    /// scenario reports the bare Hummingbird floor next to the heartbeat, and the JWT mode's cost.
    @Test(arguments: [
        ("steady", [
            "server CPU, 100 sockets each heartbeating every 0.50 s", "RSS per connected, subscribed, heartbeating session",
            "server CPU ÷ bare Hummingbird WebSocket", "bare Hummingbird WebSocket, RSS per open socket",
            "server CPU ÷ bare SwiftNIO WebSocket", "bare SwiftNIO WebSocket, RSS per open socket",
        ]),
        ("heartbeat", [
            "bare Hummingbird route, server CPU per request", "server CPU per heartbeat ÷ bare route",
            "JWT mode: server CPU per heartbeat, the client's token again", "JWT mode: server CPU per heartbeat, a new token every time",
        ]),
    ])
    func costScenarioReportsItsFigures(scenario: String, expectedFigures: [String]) async throws {
        let (table, figures) = try await Self.smokeRun(scenario)
        for expected in expectedFigures {
            let matching = figures.filter { $0.name.contains(expected) }
            #expect(!matching.isEmpty, "no figure named \(expected) in \(figures.map(\.name))")
            #expect(matching.allSatisfy { $0.value.isFinite && $0.value >= 0 }, "\(expected): \(matching.map(\.value))")
            #expect(table.contains(expected))
        }
    }

    @Test(.enabled(if: PostgresForTests.url != nil, "needs the PostgreSQL server of scripts/test.sh"))
    func severalProcessScenarioRunsAndReports() async throws {
        let json = temporaryDirectory() + "/figures.json"
        let (status, table) = try await Self.runBench([
            "run", "multinode", "--smoke", "--server", presenceServerExecutable.path, "--json", json,
            "--postgres-url", PostgresForTests.url!,
        ])
        #expect(status == 0, "\(table)")
        let figures = try JSONDecoder().decode([Figure].self, from: Data(contentsOf: URL(fileURLWithPath: json)))
        for expected in [
            "cross-process fan-out, 20 subscribers over 2 processes, p99", "PostgreSQL transactions per heartbeat",
            "joins + leaves/s through 1 process", "joins + leaves/s through 2 processes", "seconds past the real deadline",
            "offline diff after the deadline, processes alive",
        ] {
            let matching = figures.filter { $0.name.contains(expected) }
            #expect(!matching.isEmpty, "no figure named \(expected) in \(figures.map(\.name))")
            #expect(matching.allSatisfy { $0.value.isFinite }, "\(expected)")
            #expect(table.contains(expected))
        }
        #expect(figures.filter { $0.name.contains("joins + leaves/s") || $0.name.contains("heartbeats/s") }.allSatisfy { $0.value > 0 })
    }

    @Test func storeChurnRunsAndPrintsItsTable() async throws {
        let (status, text) = try await Self.runBench(["store-churn", "--clients", "4", "--seconds", "0.2"])
        #expect(status == 0)
        let rows = text.split(separator: "\n").filter { $0.contains("joins/s") }
        #expect(rows.count == 2, "\(text)")
        for row in rows {
            let value = row.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasSuffix(" /s") }
            let number = value.flatMap { Double($0.dropLast(3).replacingOccurrences(of: ",", with: "")) }
            #expect((number ?? 0) > 0, "\(row)")
        }
    }
}
