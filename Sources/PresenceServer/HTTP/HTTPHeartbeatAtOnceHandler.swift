import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTPTypes
import PresenceCore
import Synchronization

/// Answers `POST /api/heartbeat` of a live session on the connection's event loop, before
/// Hummingbird's handling of the request: with the body, router, middleware and task that
/// handling costs, the heartbeat cost more than `/health`, for about 1 µs of presence work.
/// Only a request nothing waits before is answered here, so answers keep their order on a
/// pipelined connection; anything else, and whatever this path cannot answer, goes on to
/// Hummingbird unchanged.
final class HTTPHeartbeatAtOnceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum Reading {
        case betweenRequests
        /// A heartbeat this handler may answer, read up to here.
        case holding(HTTPRequest, body: ByteBuffer?)
        /// The request being read is Hummingbird's.
        case passing
    }

    private let shared: HTTPHeartbeatAtOnce
    private var reading = Reading.betweenRequests
    /// Requests passed on whose answer's end has not been written yet.
    private var unanswered = 0
    private var needsFlush = false

    init(shared: HTTPHeartbeatAtOnce) {
        self.shared = shared
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (reading, unwrapInboundIn(data)) {
        case (.betweenRequests, .head(let head)):
            // A full outbound buffer means a client that does not read: let Hummingbird's
            // backpressure hold it, rather than queue answers here.
            if unanswered == 0, context.channel.isWritable, HTTPHeartbeatAtOnce.mayAnswer(head) {
                reading = .holding(head, body: nil)
            } else {
                pass(.head(head), context: context)
            }
        case (.holding(let head, var body), .body(var part)):
            reading = .passing  // not a copy-on-write of the held body while it grows
            if body == nil {
                body = part
            } else {
                body!.writeBuffer(&part)
            }
            if body!.readableBytes > ProtocolLimits.maxBodyBytes {
                passHeld(head, body: body, context: context)
            } else {
                reading = .holding(head, body: body)
            }
        case (.holding(let head, let body), .end):
            if let (response, reply) = shared.answer(head, body: body, peer: context.channel.remoteAddress) {
                context.write(wrapOutboundOut(.head(response)), promise: nil)
                context.write(wrapOutboundOut(.body(reply)), promise: nil)
                context.write(wrapOutboundOut(.end(nil)), promise: nil)
                needsFlush = true
            } else {
                passHeld(head, body: body, context: context)
                context.fireChannelRead(data)
            }
            reading = .betweenRequests
        case (.holding(let held, let body), .head):
            // The decoder never sends a head inside a request; pass both on for Hummingbird to refuse.
            passHeld(held, body: body, context: context)
            context.fireChannelRead(data)
        case (.passing, let part):
            if case .end = part { reading = .betweenRequests }
            context.fireChannelRead(data)
        case (.betweenRequests, let part):
            // Parts without a head: Hummingbird reports them.
            context.fireChannelRead(wrapInboundOut(part))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // One flush for all the answers of one read: a pipelining client gets them in one write.
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { unanswered -= 1 }
        context.write(data, promise: promise)
    }

    private func pass(_ head: HTTPRequestPart, context: ChannelHandlerContext) {
        unanswered += 1
        reading = .passing
        context.fireChannelRead(wrapInboundOut(head))
    }

    private func passHeld(_ head: HTTPRequest, body: ByteBuffer?, context: ChannelHandlerContext) {
        pass(.head(head), context: context)
        if let body { context.fireChannelRead(wrapInboundOut(.body(body))) }
    }
}
