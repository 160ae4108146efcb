import DequeModule
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// How long a busy room's changes wait to be merged into one diff: `perSubscriber` for each of
/// its subscribers, at most `maximum`. A diff costs the server a write per subscriber, so this
/// bounds a room's frames per second (1 / `perSubscriber`) whatever its size, while a room with a
/// few subscribers merges within microseconds, which is no merging at all.
public struct DiffMerging: Sendable, Hashable {
    public var maximum: Duration
    public var perSubscriber: Duration

    public init(maximum: Duration, perSubscriber: Duration) {
        self.maximum = maximum
        self.perSubscriber = perSubscriber
    }

    /// One diff per change, at once.
    public static let off = DiffMerging(maximum: .zero, perSubscriber: .zero)

    /// The window of a room with this many subscribers.
    func window(subscribers: Int) -> Duration {
        min(maximum, perSubscriber * subscribers)
    }

    /// When the next read for changes may start, or nil for at once: a room whose last read for
    /// changes started within its window waits for the window's end.
    func deadline(lastChangeRead: ContinuousClock.Instant?, subscribers: Int, now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        let window = window(subscribers: subscribers)
        guard window > .zero, let lastChangeRead else { return nil }
        let end = lastChangeRead + window
        return end > now ? end : nil
    }
}
