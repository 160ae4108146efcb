import Logging

/// The one expiry loop of a store: sleeps until the earliest deadline, expires
/// every session past it in batches (yielding between batches so 100,000 expiring
/// sessions never stall the server), and sleeps again. Run it as a `Service`
/// (see PresenceServer) or call `run()` in a task.
///
/// ```swift
/// let loop = ExpiryLoop(store: store)
/// try await loop.run()   // until cancelled
/// ```
public struct ExpiryLoop: Sendable {
    public let store: any PresenceStore
    public let batchSize: Int
    let logger: Logger
    /// Told how many sessions each step expired (for metrics).
    let onExpired: @Sendable (Int) -> Void

    public init(
        store: any PresenceStore, batchSize: Int = 1_000, logger: Logger = Logger(label: "presence.expiry"),
        onExpired: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.store = store
        self.batchSize = batchSize
        self.logger = logger
        self.onExpired = onExpired
    }

    public func run() async throws {
        let clock = store.clock
        let alarm = store.deadlineAlarm
        while !Task.isCancelled {
            do {
                while true {
                    let expired = try await store.expireDueSessions(limit: batchSize)
                    if expired > 0 { onExpired(expired) }
                    if expired < batchSize { break }
                    await Task.yield()
                }
                alarm.beginCycle()
                let target = try await store.nextDeadline() ?? .max
                await withTaskGroup(of: Void.self) { group in
                    if target != .max {
                        group.addTask { try? await clock.sleep(untilMillis: target) }
                    }
                    group.addTask { await alarm.wait(earlierThan: target) }
                    await group.next()
                    group.cancelAll()
                }
            } catch is CancellationError {
                return
            } catch {
                // A store that fails (a database gone away) must not end expiry for good: retry shortly.
                logger.error("expiry failed, retrying in 1 s", metadata: ["error": "\(error)"])
                try? await clock.sleep(untilMillis: clock.nowMillis() + 1_000)
            }
        }
    }
}
