/// What a `StoreEngine` cannot know by itself: how a batch is loaded, stored and replicated,
/// and when a session may be extended in memory only. The engine owns the presence state, the
/// lock, the queue, the writer, the reads and the feed; a journal owns its medium.
///
/// A journal keeps its own figures (`Memo`) beside the presence state, under the engine's one lock.
/// Every hook that takes an `EngineState` runs under that lock: it must not wait.
public protocol StoreJournal: Sendable {
    /// The journal's own figures, kept under the engine's lock.
    associatedtype Memo: Sendable

    /// True for a journal with nothing to wait for (memory): operations are applied and published
    /// by their caller at once, under the lock, and `commit` is never called.
    static var appliesInline: Bool { get }
    /// True when the journal stores session deadlines (PostgreSQL): a heartbeat that goes through
    /// the writer stores its session's deadline with the batch, however little else changed.
    static var storesDeadlines: Bool { get }
    /// True when other processes commit to the same journal: a token or session not found may
    /// have been made a moment ago elsewhere, so the engine catches up and looks again.
    static var isShared: Bool { get }
    /// The most operations one commit takes (so one stays well inside a statement timeout).
    static var maximumBatch: Int { get }

    /// Throws 503 while the journal cannot serve (cut off from its database, reloading): the
    /// engine asks before every operation and read.
    func checkServing(_ state: EngineState<Self>) throws(PresenceError)
    /// Throws 503 while the journal cannot store (for `/health`): `checkServing`, and failed writes.
    func checkCanCommit(_ state: EngineState<Self>) throws(PresenceError)
    /// Whether a heartbeat of a live, stored session may move its deadline in memory only.
    func mayExtendInMemory(sessionKey: String, now: Int64, _ state: EngineState<Self>) -> Bool
    /// A heartbeat moved a session's deadline in memory only (PostgreSQL stores it with a later tick).
    func extendedInMemory(sessionKey: String, deadline: Int64, _ state: inout EngineState<Self>)
    /// Whether this process expires sessions, forgets old users and events, and delivers webhooks
    /// now: a shared journal lets one process at a time.
    func leads(_ state: EngineState<Self>) -> Bool
    /// When the expiry loop should next look, given memory's earliest deadline (nil: not at all).
    /// Called after `leads` said yes.
    func nextExpiryCheck(earliest: Int64?, _ state: EngineState<Self>) -> Int64?
    /// The expiry loop is about to expire what is due at `now`.
    func expiring(now: Int64, _ state: inout EngineState<Self>)

    /// An inline journal's commit: the events the caller's operation made, under the lock.
    func recordInline(_ events: [PresenceEvent], _ state: inout EngineState<Self>)
    /// Stores one batch: applies `operations` to the engine's state at the moment the medium
    /// allows (`EngineState.apply`), writes what they changed, and returns what to publish
    /// (with a shared journal: what other processes committed first, then the batch's own).
    /// Throwing leaves memory ahead of the medium: the engine reloads before it serves again.
    func commit(_ operations: [QueuedOperation], engine: StoreEngine<Self>) async throws -> CommittedBatch
    /// Replaces the engine's state with the stored one (`EngineState.replacePresence`), after a
    /// failed commit; returns what to publish.
    func reload(engine: StoreEngine<Self>) async throws -> CommittedBatch
    /// The journal's own work while the store serves. Calls `engine.runWriter(afterWake:)`, which
    /// returns once the store stops, and then finishes (a last mark, giving up leases).
    func run(engine: StoreEngine<Self>) async
    /// Returns once the engine's state shows every change committed anywhere before the call.
    func synchronize(engine: StoreEngine<Self>) async throws
    /// See `PresenceCluster.outages()`.
    func outages() -> AsyncStream<Void>
    /// The journal's figures for `/metrics`.
    func gauges(_ state: EngineState<Self>) -> [StoreGauge]

    /// See `PresenceEventLog`.
    func events(after: UInt64?, roomId: String?, limit: Int, engine: StoreEngine<Self>) async throws -> EventPage
    func forgetEvents(before cutoff: Int64, engine: StoreEngine<Self>) async throws -> Int
    func webhookCursor(endpoint: String, engine: StoreEngine<Self>) async throws -> WebhookCursor
    func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String, engine: StoreEngine<Self>) async throws
}

/// The answers of a journal with one process, nothing stored per heartbeat and a writer.
extension StoreJournal {
    public static var appliesInline: Bool { false }
    public static var storesDeadlines: Bool { false }
    public static var isShared: Bool { false }
    public static var maximumBatch: Int { .max }

    public func checkServing(_ state: EngineState<Self>) throws(PresenceError) {}
    public func checkCanCommit(_ state: EngineState<Self>) throws(PresenceError) { try checkServing(state) }
    public func mayExtendInMemory(sessionKey: String, now: Int64, _ state: EngineState<Self>) -> Bool { true }
    public func extendedInMemory(sessionKey: String, deadline: Int64, _ state: inout EngineState<Self>) {}
    public func leads(_ state: EngineState<Self>) -> Bool { true }
    public func nextExpiryCheck(earliest: Int64?, _ state: EngineState<Self>) -> Int64? { earliest }
    public func expiring(now: Int64, _ state: inout EngineState<Self>) {}
    public func recordInline(_ events: [PresenceEvent], _ state: inout EngineState<Self>) {}
    public func synchronize(engine: StoreEngine<Self>) async throws {}
    public func outages() -> AsyncStream<Void> {
        // No continuation is kept, so the stream ends at once: this journal is never cut off.
        AsyncStream { _ in }
    }
    public func gauges(_ state: EngineState<Self>) -> [StoreGauge] { [] }
}

/// What one commit made visible: room changes and events together, in commit order. The fan-out,
/// the watchers of users and the webhook deliverer all read this one feed.
public struct CommittedBatch: Sendable {
    public var changes: [RoomChange]
    public var events: [PresenceEvent]
    /// The store replaced its state with the stored one (a failed commit, a log trimmed past this
    /// process): what changed meanwhile came with no events, so watchers read again.
    public var reloaded: Bool

    public init(changes: [RoomChange] = [], events: [PresenceEvent] = [], reloaded: Bool = false) {
        self.changes = changes
        self.events = events
        self.reloaded = reloaded
    }

    public var isEmpty: Bool { changes.isEmpty && events.isEmpty && !reloaded }

    public mutating func append(_ other: CommittedBatch) {
        changes.append(contentsOf: other.changes)
        events.append(contentsOf: other.events)
        reloaded = reloaded || other.reloaded
    }
}
