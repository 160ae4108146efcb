import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import PresenceCore
import Synchronization

/// Wraps a server child channel so every connection is counted against its address's cap and
/// starts with a `FirstHeadDeadlineHandler`.
struct GuardedChannel<Inner: ServerChildChannel>: ServerChildChannel {
    typealias Value = Inner.Value
    let inner: Inner
    let timeout: TimeAmount
    let connections: ConnectionsPerAddress
    let metrics: PresenceMetrics

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        guard connections.open(channel) else {
            metrics.connectionsRefused.increment()
            return channel.close().flatMapThrowing { throw ChannelError.inputClosed }
        }
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(FirstHeadDeadlineHandler(timeout: timeout, metrics: metrics), position: .first)
        }.flatMap {
            inner.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}
