import NIOCore
import Synchronization

/// Per client address: a rate limiter shared by its HTTP requests and WebSocket messages, and a
/// count of its open WebSocket connections. Idle addresses are forgotten, so memory stays bounded.
final class AddressLimits: Sendable {
    private struct Entry {
        var limiter: RateLimiter
        var connections = 0
    }
    private struct State {
        var entries: [String: Entry] = [:]
        var checksSincePrune = 0
    }
    private let state = Mutex(State())
    let rate: Double
    let burst: Double
    let maxConnections: Int

    init(rate: Double, burst: Double, maxConnections: Int) {
        self.rate = rate
        self.burst = burst
        self.maxConnections = maxConnections
    }

    /// One request or message from `address`; false when it is over the limit.
    func allow(_ address: String, now: Int64) -> Bool {
        state.withLock { state in
            state.checksSincePrune += 1
            if state.checksSincePrune >= 10_000 {
                state.checksSincePrune = 0
                // A bucket idle this long is full again: forgetting it changes nothing.
                let idle = Int64(burst / max(rate, 0.001) * 1000) + 60_000
                state.entries = state.entries.filter { $0.value.connections > 0 || now - $0.value.limiter.lastUsed < idle }
            }
            // One look-up, changed in place: every request and every socket message comes here.
            return state.entries[address, default: Entry(limiter: RateLimiter(rate: rate, burst: burst, now: now))].limiter.allow(now: now)
        }
    }

    /// Gives back what `allow` took, for a request that will be counted again on another path.
    func refund(_ address: String) {
        state.withLock { $0.entries[address]?.limiter.refund() }
    }

    /// Counts a new connection; false (and not counted) when the address already has the maximum.
    func openConnection(_ address: String, now: Int64) -> Bool {
        state.withLock { state in
            var entry = state.entries[address] ?? Entry(limiter: RateLimiter(rate: rate, burst: burst, now: now))
            guard entry.connections < maxConnections else { return false }
            entry.connections += 1
            state.entries[address] = entry
            return true
        }
    }

    func closeConnection(_ address: String) {
        state.withLock { state in
            state.entries[address]?.connections -= 1
        }
    }
}
