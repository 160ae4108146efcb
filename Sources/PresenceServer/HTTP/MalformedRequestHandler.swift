import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import PresenceCore
import Synchronization

/// Answers a request NIO's parser refused (a space in the target, a raw non-ASCII byte, a header
/// too large) with 400 (431 for headers) and PROTOCOL.md's error body, and closes the connection.
/// Without it the parser's error reached no one: the connection stayed open, answered nothing,
/// and held its descriptor for good.
///
/// Sits right after the request decoder; an upgrade to a WebSocket removes it with the HTTP handlers.
final class MalformedRequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let metrics: PresenceMetrics
    /// Requests whose answer has not ended: an error answer cannot go in front of theirs.
    private var answersOwed = 0
    /// The refusal that waits for the answers owed.
    private var refusal: PresenceError?

    init(metrics: PresenceMetrics) {
        self.metrics = metrics
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) { answersOwed += 1 }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        answersOwed = max(0, answersOwed - 1)
        context.write(data, promise: promise)
        if answersOwed == 0, let refusal {
            self.refusal = nil
            refuse(refusal, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard refusal == nil else { return }
        metrics.malformedRequests.increment()
        let refusal: PresenceError =
            switch parserError {
            case .headerOverflow: PresenceError(status: 431, code: "invalid_argument", message: "the request's headers are too large")
            default: .invalidArgument("the request is not valid HTTP/1.1")
            }
        // The requests before it are answered first (the decoder read them in the same bytes).
        if answersOwed > 0 {
            self.refusal = refusal
        } else {
            refuse(refusal, context: context)
        }
    }

    private func refuse(_ refusal: PresenceError, context: ChannelHandlerContext) {
        let body = ByteBuffer(string: refusal.jsonBody)
        var head = HTTPResponseHead(version: .http1_1, status: .init(statusCode: refusal.status))
        head.headers = [
            "Content-Type": Response.jsonContentType, "Content-Length": "\(body.readableBytes)", "Connection": "close",
            "Server": PresenceApplication.serverName,
        ]
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let loopBound = context.loopBound
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in loopBound.value.close(promise: nil) }
    }
}
