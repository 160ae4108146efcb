import Synchronization

/// Wakes the expiry loop early, and only when it must: when a deadline is queued
/// that is earlier than the one the loop sleeps until. Heartbeats that move a
/// deadline later never ring it.
///
/// ```swift
/// alarm.beginCycle()
/// let target = try await store.nextDeadline() ?? .max
/// await alarm.wait(earlierThan: target)   // returns when a deadline before target is noted
/// ```
public final class DeadlineAlarm: Sendable {
    private struct State {
        var waitingUntil: Int64?
        var continuation: CheckedContinuation<Void, Never>?
        var earliestNoted: Int64?
        var rings = 0
    }
    private let state = Mutex(State())

    public init() {}

    /// How many times the alarm woke a waiting loop.
    public var ringCount: Int { state.withLock { $0.rings } }

    /// Forgets deadlines noted so far: the loop is about to read the store's next deadline, which includes them.
    public func beginCycle() {
        state.withLock { $0.earliestNoted = nil }
    }

    public func note(deadline: Int64) {
        let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waitingUntil = state.waitingUntil {
                guard deadline < waitingUntil, let continuation = state.continuation else { return nil }
                state.continuation = nil
                state.waitingUntil = nil
                state.rings += 1
                return continuation
            }
            state.earliestNoted = min(state.earliestNoted ?? .max, deadline)
            return nil
        }
        continuation?.resume()
    }

    /// Returns when a deadline earlier than `target` is noted (or was since `beginCycle`), or on cancellation.
    public func wait(earlierThan target: Int64) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if Task.isCancelled { return true }
                    if let noted = state.earliestNoted, noted < target {
                        state.earliestNoted = nil
                        return true
                    }
                    state.waitingUntil = target
                    state.continuation = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer {
                    state.continuation = nil
                    state.waitingUntil = nil
                }
                return state.continuation
            }
            continuation?.resume()
        }
    }
}
