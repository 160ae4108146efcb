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

/// Open TCP connections per peer address, whatever they carry (requests, WebSockets, nothing):
/// each holds a file descriptor, and one address must not hold them all. Connections from a
/// trusted proxy carry many clients and are not capped here; the per-client limits behind the
/// proxy count what it forwards.
final class ConnectionsPerAddress: Sendable {
    let maximum: Int
    private let trustedProxies: TrustedProxies
    private let counts = Mutex<[String: Int]>([:])

    init(maximum: Int, trustedProxies: TrustedProxies) {
        self.maximum = maximum
        self.trustedProxies = trustedProxies
    }

    /// Counts `channel` until it closes; false (and not counted) when its address is at the maximum.
    func open(_ channel: any Channel) -> Bool {
        guard let address = channel.remoteAddress.flatMap(TrustedProxies.canonicalAddress(of:)) else { return true }
        if trustedProxies.trusts(address) { return true }
        let admitted = counts.withLock { counts in
            let count = counts[address, default: 0]
            guard count < maximum else { return false }
            counts[address] = count + 1
            return true
        }
        guard admitted else { return false }
        channel.closeFuture.whenComplete { [self] _ in
            counts.withLock { counts in
                counts[address, default: 1] -= 1
                if counts[address] == 0 { counts.removeValue(forKey: address) }
            }
        }
        return true
    }
}

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
