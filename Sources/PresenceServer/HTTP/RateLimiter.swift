import NIOCore
import Synchronization

/// A token bucket: `rate` per second sustained, `burst` at once.
struct RateLimiter: Sendable {
    let rate: Double
    let burst: Double
    private var tokens: Double
    private var last: Int64

    init(rate: Double, burst: Double, now: Int64) {
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now
    }

    mutating func allow(now: Int64) -> Bool {
        tokens = min(burst, tokens + Double(max(0, now - last)) * rate / 1000)
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Gives back a token `allow` took.
    mutating func refund() {
        tokens = min(burst, tokens + 1)
    }

    var lastUsed: Int64 { last }
}
