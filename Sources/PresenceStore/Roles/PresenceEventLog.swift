/// The log of committed events (PROTOCOL.md's `events` call) and where each webhook endpoint's
/// deliveries stand.
public protocol PresenceEventLog: Sendable {
    /// Events after the sequence `after` (nil: from the oldest kept), oldest first, at most `limit`,
    /// of one room or of all. Throws `events_expired` when events after `after` are forgotten.
    func events(after: UInt64?, roomId: String?, limit: Int) async throws -> EventPage
    /// Forgets the events recorded before `cutoff` (retention); returns how many. A shared store
    /// sweeps on one process only.
    func forgetEvents(before cutoff: Int64) async throws -> Int
    /// Where a webhook endpoint's deliveries stand; an endpoint seen for the first time starts
    /// after the newest event (it is not sent the history).
    func webhookCursor(endpoint: String) async throws -> WebhookCursor
    /// Stores where an endpoint stands; a store shared by several processes never moves
    /// `deliveredThrough` back (a deliverer that lost its lease may save late).
    func saveWebhookCursor(_ cursor: WebhookCursor, endpoint: String) async throws
}

/// Where one webhook endpoint stands: the last event it acknowledged, and whether deliveries
/// stopped after failing for the give-up time (until an admin enables the endpoint again).
public struct WebhookCursor: Sendable, Hashable {
    public var deliveredThrough: UInt64
    /// When deliveries gave up (milliseconds); nil while the endpoint is active.
    public var failedAt: Int64?

    public init(deliveredThrough: UInt64, failedAt: Int64? = nil) {
        self.deliveredThrough = deliveredThrough
        self.failedAt = failedAt
    }
}

/// One page of the event log, and where the next page starts: the last event returned, or
/// when none was, the `after` asked for (without one: just before the oldest kept event).
public struct EventPage: Sendable, Hashable {
    public var events: [PresenceEvent]
    public var next: UInt64

    public init(events: [PresenceEvent], after: UInt64?, forgottenThrough: UInt64) {
        self.events = events
        next = events.last?.sequence ?? after ?? forgottenThrough
    }
}

/// The rule every store applies to a page of events: `after` older than the forgotten ones is
/// `events_expired`, since the caller would silently miss events otherwise.
public enum EventPaging {
    public static let maximumLimit = 1_000

    public static func checkNotExpired(after: UInt64?, forgottenThrough: UInt64) throws(PresenceError) {
        guard let after, after < forgottenThrough else { return }
        throw .eventsExpired(
            "events after \(PresenceEvent.id(forSequence: after)) are no longer kept; re-read the rooms and continue from the oldest kept event (omit after)")
    }
}

