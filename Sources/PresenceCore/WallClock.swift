import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Wall-clock time in milliseconds since the Unix epoch, as the protocol counts it,
/// and a way to sleep until such a time. Injected everywhere time matters, so tests
/// move time by hand instead of sleeping.
///
/// ```swift
/// let clock: any WallClock = SystemWallClock()
/// try await clock.sleep(untilMillis: clock.nowMillis() + 1_000)
/// ```
public protocol WallClock: Sendable {
    func nowMillis() -> Int64
    /// Returns at or after `untilMillis`; throws `CancellationError` when the task is cancelled.
    func sleep(untilMillis: Int64) async throws
}

extension Duration {
    /// The duration in whole milliseconds, the protocol's unit.
    public var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }

    /// The duration in whole nanoseconds, as metrics' timers take it.
    public var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }

    /// The duration in seconds, fractions included, for rates and reports.
    public var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// The machine's real-time clock.
public struct SystemWallClock: WallClock {
    public init() {}

    public func nowMillis() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }

    public func sleep(untilMillis: Int64) async throws {
        // Sleep in slices of at most a minute so a wall-clock step (NTP) is noticed in time.
        while true {
            let remaining = untilMillis - nowMillis()
            if remaining <= 0 { return }
            try await Task.sleep(for: .milliseconds(min(remaining, 60_000)))
        }
    }
}

/// A clock that only moves when told to: sleepers wake when `advance` passes their time.
///
/// ```swift
/// let clock = ManualWallClock(nowMillis: 1_000)
/// clock.advance(by: 25_000)   // wakes everything sleeping until 26_000 or earlier
/// ```
public final class ManualWallClock: WallClock {
    private struct Sleeper {
        let until: Int64
        let continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var now: Int64
        var nextId = 0
        var sleepers: [Int: Sleeper] = [:]
    }
    private let state: Mutex<State>

    public init(nowMillis: Int64 = 1_764_393_600_000) {
        state = Mutex(State(now: nowMillis))
    }

    public func nowMillis() -> Int64 {
        state.withLock { $0.now }
    }

    /// How many tasks are sleeping on this clock: lets a test wait until a loop has gone to sleep.
    public var sleeperCount: Int {
        state.withLock { $0.sleepers.count }
    }

    public func advance(by milliseconds: Int64) {
        let woken = state.withLock { state -> [Sleeper] in
            state.now += milliseconds
            let now = state.now
            let due = state.sleepers.filter { $0.value.until <= now }
            for key in due.keys { state.sleepers.removeValue(forKey: key) }
            return Array(due.values)
        }
        for sleeper in woken { sleeper.continuation.resume() }
    }

    public func sleep(untilMillis: Int64) async throws {
        let id = state.withLock { state -> Int in
            state.nextId += 1
            return state.nextId
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let immediate: (any Error)?? = state.withLock { state in
                    if Task.isCancelled { return .some(CancellationError()) }
                    if untilMillis <= state.now { return .some(nil) }
                    state.sleepers[id] = Sleeper(until: untilMillis, continuation: continuation)
                    return .none
                }
                switch immediate {
                case .none: break
                case .some(.none): continuation.resume()
                case .some(.some(let error)): continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            let sleeper = state.withLock { $0.sleepers.removeValue(forKey: id) }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }
}
