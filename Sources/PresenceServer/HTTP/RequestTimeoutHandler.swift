import HummingbirdCore
import Logging
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
    /// What the client must have sent by when; nil while the server answers a complete request.
    private var deadline: NIODeadline?
    /// One timer per connection, not one per request: it never fires later than `deadline`
    /// (it is set at most the shorter timeout ahead, and a deadline is never nearer than that),
    /// and on firing it checks the deadline and sets itself again.
    private var timer: Scheduled<Void>?

    init(requestTimeout: TimeAmount, idleTimeout: TimeAmount, metrics: PresenceMetrics) {
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
        self.metrics = metrics
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { expect(context, within: requestTimeout) }
    }

    func channelActive(context: ChannelHandlerContext) {
        expect(context, within: requestTimeout)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            expect(context, within: requestTimeout)  // now the body
        case .end:
            deadline = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { expect(context, within: idleTimeout) }
        context.write(data, promise: promise)
    }

    private func expect(_ context: ChannelHandlerContext, within timeout: TimeAmount) {
        deadline = .now() + timeout
        if timer == nil { setTimer(context, at: .now() + min(requestTimeout, idleTimeout)) }
    }

    private func setTimer(_ context: ChannelHandlerContext, at when: NIODeadline) {
        timer = context.scheduleTask(for: self, at: when) { $0.timerFired($1) }
    }

    private func timerFired(_ context: ChannelHandlerContext) {
        timer = nil
        guard let deadline else { return }  // answering: the next `expect` sets the timer again
        let now = NIODeadline.now()
        if deadline <= now {
            metrics.slowClientsCut.increment()
            context.close(promise: nil)
        } else {
            setTimer(context, at: min(deadline, now + min(requestTimeout, idleTimeout)))
        }
    }

    private func stop() {
        timer?.cancel()
        timer = nil
        deadline = nil
    }
}

extension ChannelHandlerContext {
    /// Runs `fired` with `handler` and this context on the channel's event loop at `deadline`:
    /// a handler's timer, which may hold neither outside the loop.
    func scheduleTask<Handler: ChannelHandler>(
        for handler: Handler, at deadline: NIODeadline, _ fired: @escaping (Handler, ChannelHandlerContext) -> Void
    ) -> Scheduled<Void> {
        // Bound as one closure, so the timer's own closure captures nothing generic.
        let run = NIOLoopBound({ [self] in fired(handler, self) }, eventLoop: eventLoop)
        return eventLoop.scheduleTask(deadline: deadline) { run.value() }
    }
}
