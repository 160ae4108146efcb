import Foundation
import PresenceSQLite
import PresenceStore

/// Joins and leaves per second a store sustains, with many clients at once
/// (so a durable store's group commit has something to group).
struct StoreChurn {
    let clients: Int
    let seconds: Double

    struct Result {
        let store: String
        let joins: Int
        let leaves: Int
        let elapsed: Double
        var joinsPerSecond: Double { Double(joins) / elapsed }
        var leavesPerSecond: Double { Double(leaves) / elapsed }
    }

    func run(_ store: any PresenceStore, name: String) async throws -> Result {
        let started = ContinuousClock.now
        let deadline = started + .milliseconds(Int(seconds * 1000))
        let counts = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for client in 0..<clients {
                group.addTask {
                    var joins = 0
                    var leaves = 0
                    var round = 0
                    while ContinuousClock.now < deadline {
                        let request = try HeartbeatRequest(
                            roomId: "room\(client % 50)", userId: "user\(client)", sessionId: "c\(client)-\(round)")
                        let tokens = try await store.heartbeat(request)
                        joins += 1
                        try await store.disconnect(sessionToken: tokens.sessionToken)
                        leaves += 1
                        round += 1
                    }
                    return (joins, leaves)
                }
            }
            var total = (0, 0)
            for try await (joins, leaves) in group {
                total.0 += joins
                total.1 += leaves
            }
            return total
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Result(store: name, joins: counts.0, leaves: counts.1, elapsed: seconds)
    }
}
