import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// Forgets long-offline users (when a user retention is set) and old events on a schedule, in
/// batches, so offline records, their data and the event log do not pile up forever.
struct RetentionService: Service {
    let store: any PresenceStore
    let userRetention: Duration?
    let eventRetention: Duration
    let interval: Duration
    let logger: Logger

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            let clock = store.clock
            while !Task.isCancelled {
                // A shutdown while sleeping is no failure of the service.
                guard (try? await clock.sleep(untilMillis: clock.nowMillis() + interval.milliseconds)) != nil else { return }
                do {
                    let forgotten = try await store.forgetEvents(before: clock.nowMillis() - eventRetention.milliseconds)
                    if forgotten > 0 { logger.info("retention forgot old events", metadata: ["count": "\(forgotten)"]) }
                } catch {
                    logger.warning("could not forget old events", metadata: ["error": "\(error)"])
                }
                guard let retention = userRetention else { continue }
                let cutoff = clock.nowMillis() - retention.milliseconds
                var total = 0
                while true {
                    let forgotten = try await store.forgetOfflineUsers(before: cutoff, limit: 1_000)
                    total += forgotten
                    if forgotten < 1_000 { break }
                    await Task.yield()
                }
                if total > 0 { logger.info("retention forgot offline users", metadata: ["count": "\(total)"]) }
            }
        }
    }
}
