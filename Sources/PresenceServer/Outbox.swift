import NIOCore
import Synchronization

/// One socket's bounded queue of outgoing frames. The hub and the socket's own
/// replies enqueue without waiting; a socket's writer drains it. When the queue is
/// full the subscriber is too slow: the outbox marks itself overflowed and the
/// writer closes the socket (1013) instead of letting memory grow.
final class Outbox: Sendable {
    enum Item: Sendable {
        case frame(ByteBuffer)
        case close(code: UInt16, reason: String)
    }

    let id: Int
    let stream: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation
    private let overflowFlag = Atomic<Bool>(false)
    /// Yields once when the outbox overflows, and ends when the outbox finishes.
    private let overflowEvents: AsyncStream<Void>
    private let overflowContinuation: AsyncStream<Void>.Continuation

    init(id: Int, capacity: Int) {
        self.id = id
        (stream, continuation) = AsyncStream<Item>.makeStream(bufferingPolicy: .bufferingOldest(capacity))
        (overflowEvents, overflowContinuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// True when the outbox overflowed; false when it finished normally first.
    func waitForOverflow() async -> Bool {
        for await _ in overflowEvents { return true }
        return false
    }

    var overflowed: Bool { overflowFlag.load(ordering: .acquiring) }

    /// Enqueues a frame; returns false when the outbox is full (the socket is being dropped) or finished.
    @discardableResult
    func send(_ frame: ByteBuffer) -> Bool {
        switch continuation.yield(.frame(frame)) {
        case .enqueued: return true
        case .dropped:
            overflowFlag.store(true, ordering: .releasing)
            continuation.finish()
            overflowContinuation.yield()
            overflowContinuation.finish()
            return false
        case .terminated: return false
        @unknown default: return false
        }
    }

    func close(code: UInt16, reason: String) {
        continuation.yield(.close(code: code, reason: reason))
        finish()
    }

    func finish() {
        continuation.finish()
        overflowContinuation.finish()
    }
}
