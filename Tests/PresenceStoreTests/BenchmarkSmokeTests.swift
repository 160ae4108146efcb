import Foundation
import Testing
import PresenceTestSupport

/// A few-hundred-millisecond run of presence-bench, so the benchmark cannot rot.
@Suite struct BenchmarkSmokeTests {
    @Test func storeChurnRunsAndPrintsItsTable() async throws {
        let executable = presenceServerExecutable.deletingLastPathComponent().appendingPathComponent("presence-bench")
        let process = Process()
        process.executableURL = executable
        process.arguments = ["4", "0.2"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = try await offThePool {
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
        #expect(process.terminationStatus == 0)
        let rows = text.split(separator: "\n").filter { $0.hasPrefix("| memory") || $0.hasPrefix("| sqlite") }
        #expect(rows.count == 2, "\(text)")
        for row in rows {
            let joins = row.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }[1]
            #expect((Int(joins) ?? 0) > 0, "\(row)")
        }
    }
}
