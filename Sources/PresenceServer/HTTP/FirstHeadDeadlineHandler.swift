import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes

/// Until a connection's first request head is complete, the HTTP handlers above do not exist
/// yet (the upgrade negotiation owns the pipeline), so this raw-bytes handler, first in the
/// pipeline, bounds that first head and then removes itself.
final class FirstHeadDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let metrics: PresenceMetrics
    private var deadline: Scheduled<Void>?
    /// The last bytes seen, to find "\r\n\r\n" across reads.
    private var tail: [UInt8] = []

    init(timeout: TimeAmount, metrics: PresenceMetrics) {
        self.timeout = timeout
        self.metrics = metrics
    }

    func handlerAdded(context: ChannelHandlerContext) {
        deadline = context.scheduleTask(for: self, at: .now() + timeout) { handler, context in
            handler.metrics.slowClientsCut.increment()
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        tail.append(contentsOf: buffer.readableBytesView)
        let complete = tail.count >= 4 && tail.indices.dropLast(3).contains { index in
            tail[index] == 13 && tail[index + 1] == 10 && tail[index + 2] == 13 && tail[index + 3] == 10
        }
        tail = Array(tail.suffix(3))
        context.fireChannelRead(data)
        if complete {
            deadline?.cancel()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}
