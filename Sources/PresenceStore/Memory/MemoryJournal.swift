import Logging

/// The ephemeral store: everything in memory, gone when the process ends, events and webhook
/// progress included (at most `eventCapacity` events are kept). Operations run under the
/// engine's lock in their caller and never wait, so they are short and ordered.
///
/// ```swift
/// let store = MemoryStore(clock: ManualWallClock())
/// ```
public typealias MemoryStore = StoreEngine<MemoryJournal>

/// The journal of the memory store: nothing to store but the event log, which is its memo.
public struct MemoryJournal: StoreJournal {
    public typealias Memo = MemoryEventLog

    public static var appliesInline: Bool { true }

    public func recordInline(_ events: [PresenceEvent], _ state: inout EngineState<Self>) {
        if !events.isEmpty { state.memo.append(events) }
    }

    public func commit(_ operations: [QueuedOperation], engine: StoreEngine<Self>) async throws -> CommittedBatch {
        preconditionFailure("an inline journal's operations never reach the writer")
    }

    public func reload(engine: StoreEngine<Self>) async throws -> CommittedBatch {
        // Nothing is ever stale: there is no medium to fall behind.
        CommittedBatch()
    }

    public func run(engine: StoreEngine<Self>) async {
        // No writer work: wait for cancellation, like any service.
        await engine.runWriter {}
    }

    public func events(after: UInt64?, roomId: String?, limit: Int, engine: StoreEngine<Self>) async throws -> EventPage {
        try engine.withLock { state in try state.memo.page(after: after, roomId: roomId, limit: limit) }
    }

    public func forgetEvents(before cutoff: Int64, engine: StoreEngine<Self>) async throws -> Int {
        engine.withLock { $0.memo.forget(before: cutoff) }
    }

    public func webhookCursor(endpoint: String, engine: StoreEngine<Self>) async throws -> WebhookCursor {
        engine.withLock { $0.memo.cursor(endpoint: endpoint) }
    }

    public func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String, engine: StoreEngine<Self>) async throws {
        engine.withLock { $0.memo.cursors[endpoint] = cursor }
    }
}

extension StoreEngine where Journal == MemoryJournal {
    public convenience init(
        clock: any WallClock = SystemWallClock(), quotas: PresenceState.UserQuotas = .init(), eventCapacity: Int = 100_000
    ) {
        self.init(
            journal: MemoryJournal(), presence: PresenceState(recordsEvents: true, quotas: quotas),
            memo: MemoryEventLog(capacity: eventCapacity), clock: clock, logger: Logger(label: "presence.memory"))
    }
}
