import Synchronization

/// Fans a store's committed batches out to any number of listeners, in order.
public final class Feed<Element: Sendable>: Sendable {
    private struct State {
        var nextId = 0
        var continuations: [Int: AsyncStream<Element>.Continuation] = [:]
        var listeners: [Int: @Sendable (Element) -> Void] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    public func stream() -> AsyncStream<Element> {
        let (stream, continuation) = AsyncStream<Element>.makeStream()
        let id = state.withLock { state -> Int in
            state.nextId += 1
            state.continuations[state.nextId] = continuation
            return state.nextId
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.continuations.removeValue(forKey: id) }
        }
        return stream
    }

    /// Calls `body` with each element as it is published, on the publishing thread, until the
    /// listening is cancelled. A stream's reader is a task woken for every element; a listener
    /// that only hands the element on (into a set, a stream that wakes for the first of many)
    /// costs no wake-up. `body` runs under the lock that ordered the elements: it must not wait,
    /// nor call the store.
    public func listen(_ body: @escaping @Sendable (Element) -> Void) -> FeedListening {
        let id = state.withLock { state -> Int in
            state.nextId += 1
            state.listeners[state.nextId] = body
            return state.nextId
        }
        return FeedListening { [weak self] in _ = self?.state.withLock { $0.listeners.removeValue(forKey: id) } }
    }

    /// Callers publish while holding the lock that ordered the changes, so listeners see store order.
    public func publish(_ changes: [Element]) {
        guard !changes.isEmpty else { return }
        let (streams, listeners) = state.withLock { (Array($0.continuations.values), Array($0.listeners.values)) }
        for stream in streams {
            for change in changes { stream.yield(change) }
        }
        for listener in listeners {
            for change in changes { listener(change) }
        }
    }

    public func finish() {
        let listeners = state.withLock { state -> [AsyncStream<Element>.Continuation] in
            defer { state.continuations.removeAll() }
            return Array(state.continuations.values)
        }
        for listener in listeners { listener.finish() }
    }
}

/// A feed's listener until `cancel` (also on deinit).
public final class FeedListening: Sendable {
    private let cancellation: Mutex<(@Sendable () -> Void)?>

    init(cancel: @escaping @Sendable () -> Void) {
        cancellation = Mutex(cancel)
    }

    public func cancel() {
        cancellation.withLock { cancel in
            defer { cancel = nil }
            return cancel
        }?()
    }

    deinit { cancel() }
}
