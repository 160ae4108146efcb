import Foundation
import PresenceSQLite
import PresenceStore

// presence-bench: measures the store layer in-process and prints one table.
// Usage: presence-bench [clients] [seconds]
let arguments = CommandLine.arguments.dropFirst()
let clients = arguments.first.flatMap(Int.init) ?? 256
let seconds = arguments.dropFirst().first.flatMap(Double.init) ?? 5

let churn = StoreChurn(clients: clients, seconds: seconds)
let directory = FileManager.default.temporaryDirectory.appendingPathComponent("presence-bench-\(UUID().uuidString)").path
let sqlite = try SQLiteStore(directory: directory)
var results = [try await churn.run(MemoryStore(), name: "memory")]
results.append(try await churn.run(sqlite, name: "sqlite (WAL, synchronous=FULL)"))
try sqlite.close()
try? FileManager.default.removeItem(atPath: directory)

print("store churn: \(clients) concurrent clients, \(seconds) s each, join then leave in a loop")
print("| store | joins/s | leaves/s | joins | leaves |")
print("|---|---:|---:|---:|---:|")
for result in results {
    print(String(format: "| %@ | %.0f | %.0f | %d | %d |", result.store, result.joinsPerSecond, result.leavesPerSecond, result.joins, result.leaves))
}
