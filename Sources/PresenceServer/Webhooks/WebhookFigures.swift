import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PresenceStore
import ServiceLifecycle
import Synchronization

/// Delivery figures of one endpoint, for `/metrics` and `GET /api/webhooks`.
struct WebhookFigures: Sendable {
    var attempted = 0
    var succeeded = 0
    var failed = 0
    /// When the oldest event not yet delivered happened, as last seen; nil when none waited.
    /// Kept as a time, not an age, so the lag read while a delivery is stuck keeps growing.
    var oldestUndeliveredAt: Int64?
    var failedAt: Int64?
    /// When a leave held back for flap suppression may go out.
    var holdUntil: Int64?

    /// Age of the oldest undelivered event at `now` (milliseconds); 0 when none waits.
    func lagMillis(now: Int64) -> Int64 {
        oldestUndeliveredAt.map { max(0, now - $0) } ?? 0
    }
}
