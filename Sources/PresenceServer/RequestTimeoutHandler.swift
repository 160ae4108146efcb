import HummingbirdCore
import NIOCore
import NIOHTTPTypes

/// Cuts off clients that send a request too slowly (slowloris): a request's head, and then
/// its body, must each arrive within `requestTimeout`; between requests on a keep-alive
/// connection the next head must be complete within `idleTimeout`. Once a request is read,
/// the server's own time to answer is not limited.
final class RequestTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let requestTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private let metrics: PresenceMetrics
    private var deadline: Scheduled<Void>?

    init(requestTimeout: TimeAmount, idleTimeout: TimeAmount, metrics: PresenceMetrics) {
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
        self.metrics = metrics
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context, requestTimeout) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context, requestTimeout)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            arm(context, requestTimeout)  // now the body
        case .end:
            deadline?.cancel()
            deadline = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { arm(context, idleTimeout) }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext, _ timeout: TimeAmount) {
        deadline?.cancel()
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let metrics = self.metrics
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            metrics.slowClientsCut.increment()
            loopBound.value.close(promise: nil)
        }
    }
}
