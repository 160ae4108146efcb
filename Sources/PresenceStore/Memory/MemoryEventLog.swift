/// The event log of a store that keeps it in memory: the newest events within the retention,
/// at most `capacity` of them, and the webhook cursors. Not thread-safe; its owner locks it.
public struct MemoryEventLog: Sendable {
    private var events: [PresenceEvent] = []
    /// Index of the oldest kept event in `events`: trimming moves it and compacts now and then.
    private var start = 0
    public private(set) var forgottenThrough: UInt64 = 0
    public private(set) var lastSequence: UInt64 = 0
    public var cursors: [String: WebhookCursor] = [:]
    public let capacity: Int

    public init(capacity: Int = 100_000) {
        self.capacity = capacity
    }

    public var count: Int { events.count - start }

    public mutating func append(_ newEvents: [PresenceEvent]) {
        guard let last = newEvents.last else { return }
        events.append(contentsOf: newEvents)
        lastSequence = last.sequence
        if count > capacity { forget(count - capacity) }
    }

    public func page(after: UInt64?, roomId: String?, limit: Int) throws(PresenceError) -> EventPage {
        try EventPaging.checkNotExpired(after: after, forgottenThrough: forgottenThrough)
        let kept = events[start...]
        // Sequences are ascending, so the first event after `after` is found by bisection.
        var low = kept.startIndex, high = kept.endIndex
        if let after {
            while low < high {
                let middle = (low + high) / 2
                if kept[middle].sequence <= after { low = middle + 1 } else { high = middle }
            }
        }
        var page: [PresenceEvent] = []
        for event in kept[low...] where roomId.map(event.roomId.isSameID) ?? true {
            page.append(event)
            if page.count == limit { break }
        }
        return EventPage(events: page, after: after, forgottenThrough: forgottenThrough)
    }

    /// Forgets the events recorded before `cutoff`; returns how many.
    public mutating func forget(before cutoff: Int64) -> Int {
        // An expiry's events are dated by the deadline, so `at` is not sorted: forget up to the last old one.
        guard let lastOld = events[start...].lastIndex(where: { $0.at < cutoff }) else { return 0 }
        let forgotten = lastOld - start + 1
        forget(forgotten)
        return forgotten
    }

    private mutating func forget(_ number: Int) {
        guard number > 0 else { return }
        forgottenThrough = events[start + number - 1].sequence
        start += number
        if start > 4_096, start * 2 > events.count {
            events.removeFirst(start)
            start = 0
        }
    }

    /// The endpoint's cursor; an endpoint seen for the first time starts after the newest event.
    public mutating func cursor(endpoint: String) -> WebhookCursor {
        if let cursor = cursors[endpoint] { return cursor }
        let cursor = WebhookCursor(deliveredThrough: lastSequence)
        cursors[endpoint] = cursor
        return cursor
    }
}
