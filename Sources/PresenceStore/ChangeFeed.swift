import Synchronization

/// Fans room changes out to any number of listeners, in order.
public final class ChangeFeed: Sendable {
    private struct State {
        var nextId = 0
        var continuations: [Int: AsyncStream<RoomChange>.Continuation] = [:]
    }
    private let state = Mutex(State())

    public init() {}

    public func stream() -> AsyncStream<RoomChange> {
        let (stream, continuation) = AsyncStream<RoomChange>.makeStream()
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
    public func publish(_ changes: [RoomChange]) {
        guard !changes.isEmpty else { return }
        let listeners = state.withLock { Array($0.continuations.values) }
        for listener in listeners {
            for change in changes { listener.yield(change) }
        }
    }

    public func finish() {
        let listeners = state.withLock { state -> [AsyncStream<RoomChange>.Continuation] in
            defer { state.continuations.removeAll() }
            return Array(state.continuations.values)
        }
        for listener in listeners { listener.finish() }
    }
}
