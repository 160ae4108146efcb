import Synchronization

/// Fans room changes out to any number of listeners, in order.
public typealias ChangeFeed = Feed<RoomChange>

/// Fans a store's committed room changes or events out to any number of listeners, in order.
public final class Feed<Element: Sendable>: Sendable {
    private struct State {
        var nextId = 0
        var continuations: [Int: AsyncStream<Element>.Continuation] = [:]
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

    /// Callers publish while holding the lock that ordered the changes, so listeners see store order.
    public func publish(_ changes: [Element]) {
        guard !changes.isEmpty else { return }
        let listeners = state.withLock { Array($0.continuations.values) }
        for listener in listeners {
            for change in changes { listener.yield(change) }
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
