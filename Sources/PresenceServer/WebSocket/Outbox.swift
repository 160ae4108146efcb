import NIOCore
import Synchronization

/// One socket's outgoing frames. Frames go straight to the socket's channel on its event loop:
/// a diff for thousands of subscribers is framed once and costs one task per event loop, not a
/// task wake-up and an encoding per subscriber. While the channel is not writable (NIO holds more
/// than its high-water mark for the kernel), at most `capacity` more frames may be sent; one more
/// means the subscriber is too slow: the outbox ends with `.overflow` and the connection closes
/// it (1013) instead of letting memory grow.
///
/// How an outbox ends from outside its socket's reader (a close asked for, an overflow) goes to
/// `onEnding`, once. Both are rare, so nothing waits for them per socket: no task, no stream.
final class Outbox: Sendable {
    enum Ending: Sendable {
        case close(code: UInt16, reason: String)
        case overflow
    }

    let id: Int
    private let channel: any Channel
    private let capacity: Int
    private let metrics: PresenceMetrics?
    /// Frames sent since the channel was last seen writable.
    private let pending = Atomic<Int>(0)
    /// The socket handler's place in the pipeline, the last: frames are written from there.
    /// Found on the first write, dropped when the socket ends (`detachFromSocket`).
    private let socketContext: NIOLoopBoundBox<SocketContext>
    private enum SocketContext {
        case notLookedUp
        case found(ChannelHandlerContext)
        case detached
    }
    /// Until when (wall-clock milliseconds) the socket's user token is honoured: the hubs end
    /// its subscriptions and watches instead of delivering to it after that. `.max` for none
    /// that expires.
    private let authorizedUntilMillis = Atomic<Int64>(.max)
    private let overflowFlag = Atomic<Bool>(false)
    private let finishedFlag = Atomic<Bool>(false)
    private let onEnding: @Sendable (Ending) -> Void

    init(
        id: Int, capacity: Int, channel: any Channel, metrics: PresenceMetrics? = nil,
        onEnding: @escaping @Sendable (Ending) -> Void = { _ in }
    ) {
        self.id = id
        self.capacity = capacity
        self.channel = channel
        self.metrics = metrics
        self.onEnding = onEnding
        socketContext = .makeBoxSendingValue(.notLookedUp, eventLoop: channel.eventLoop)
    }

    var overflowed: Bool { overflowFlag.load(ordering: .acquiring) }

    /// Whether the socket's user token (if any) has expired at `nowMillis`.
    func tokenExpired(at nowMillis: Int64) -> Bool {
        authorizedUntilMillis.load(ordering: .relaxed) <= nowMillis
    }

    /// The socket now acts with a token honoured until `expiresAt` (nil: none that expires).
    func authorize(until expiresAt: Int64?) {
        authorizedUntilMillis.store(expiresAt ?? .max, ordering: .relaxed)
    }

    /// Sends a frame; returns false when the outbox is full (the socket is being dropped) or finished.
    @discardableResult
    func send(_ message: ByteBuffer) -> Bool {
        // Every reply comes here: no grouping by event loop for a single outbox.
        guard reserve() else { return false }
        let frame = WebSocketWire.textFrame(message)
        // A reply made on the socket's own loop (its read, or its reader's task) is written at
        // once: going round the loop's queue costs more than the reply itself.
        if channel.eventLoop.inEventLoop {
            writeCountedOnLoop(frame, message: message)
        } else {
            channel.eventLoop.execute { [self] in writeCountedOnLoop(frame, message: message) }
        }
        return true
    }

    private func writeCountedOnLoop(_ frame: ByteBuffer, message: ByteBuffer) {
        writeOnLoop(frame, message: message)
        metrics?.messagesSent.increment()
        metrics?.bytesSent.increment(by: message.readableBytes)
    }

    /// Sends one frame to many outboxes, with one task per event loop that writes and flushes it
    /// on each of that loop's channels. Returns the outboxes that refused it (full or finished).
    static func send(_ message: ByteBuffer, to outboxes: [Outbox]) -> [Outbox] {
        if outboxes.count == 1 { return outboxes[0].send(message) ? [] : outboxes }
        var refused: [Outbox] = []
        var byLoop: [ObjectIdentifier: (loop: any EventLoop, outboxes: [Outbox])] = [:]
        for outbox in outboxes {
            guard outbox.reserve() else {
                refused.append(outbox)
                continue
            }
            byLoop[ObjectIdentifier(outbox.channel.eventLoop), default: (outbox.channel.eventLoop, [])].outboxes.append(outbox)
        }
        guard !byLoop.isEmpty else { return refused }
        let frame = WebSocketWire.textFrame(message)
        for (loop, targets) in byLoop.values {
            loop.execute {
                for outbox in targets { outbox.writeOnLoop(frame, message: message) }
                targets.first?.metrics?.messagesSent.increment(by: targets.count)
                targets.first?.metrics?.bytesSent.increment(by: targets.count * message.readableBytes)
            }
        }
        return refused
    }

    /// Counts a frame in; false (and overflowed, the first time) when it does not fit.
    private func reserve() -> Bool {
        guard !finishedFlag.load(ordering: .acquiring) else { return false }
        if pending.wrappingAdd(1, ordering: .relaxed).newValue <= capacity { return true }
        pending.subtract(1, ordering: .relaxed)
        if !overflowFlag.exchange(true, ordering: .acquiringAndReleasing), finish() { onEnding(.overflow) }
        return false
    }

    /// `frame` is `message` framed.
    private func writeOnLoop(_ frame: ByteBuffer, message: ByteBuffer) {
        // An overflowed outbox is being dropped: its remaining frames are not worth sending.
        guard !overflowed else { return }
        // A closed socket is not a slow one: its reader ends and finishes the outbox.
        guard channel.isActive else {
            pending.store(0, ordering: .relaxed)
            return
        }
        if case .notLookedUp = socketContext.value {
            socketContext.value =
                (try? channel.pipeline.syncOperations.context(handlerType: PresenceSocketHandler.self)).map(SocketContext.found) ?? .detached
        }
        switch socketContext.value {
        case .found(let context): context.writeAndFlush(NIOAny(frame), promise: nil)
        case .notLookedUp, .detached: channel.writeAndFlush(frame, promise: nil)
        }
        if channel.isWritable { pending.store(0, ordering: .relaxed) }
    }

    /// Lets go of the socket handler's context, on the channel's loop when the socket ends. The
    /// context holds the handler, which holds this outbox: kept, every socket that had written a
    /// reply outlived its close, channel and unsent bytes included.
    func detachFromSocket() {
        socketContext.value = .detached
    }

    /// Asks the connection to close the socket, unless the outbox has already ended.
    func close(code: UInt16, reason: String) {
        if finish() { onEnding(.close(code: code, reason: reason)) }
    }

    /// Takes no more frames. True for the call that ended the outbox.
    @discardableResult
    func finish() -> Bool {
        !finishedFlag.exchange(true, ordering: .acquiringAndReleasing)
    }
}
