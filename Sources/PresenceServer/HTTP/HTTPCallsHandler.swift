import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTPTypes
import PresenceCore

/// Answers the calls of `HTTPCalls` on the connection's event loop, before Hummingbird's
/// handling of the request: its body, router, middleware and task cost more than a heartbeat's
/// or a disconnect's presence work. An answer that must wait (an authorizer to ask, a change to
/// store) is written when it comes, from a task on this loop.
///
/// Answers keep the order of their requests on a pipelined connection: a call is taken only when
/// Hummingbird owes no answer, and while a call's answer is awaited nothing after it is passed on
/// or read (the parts already read wait here, and the channel's next read waits with them).
/// Everything else goes on to Hummingbird unchanged.
final class HTTPCallsHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum Reading {
        case betweenRequests
        /// A call this handler answers, read up to here.
        case reading(HTTPCalls.Call, HTTPRequest, body: ByteBuffer?)
        /// A call whose body passed the limit: the rest is dropped, then it is refused.
        case discarding(HTTPRequest)
        /// The request being read is Hummingbird's.
        case passing
    }

    private let calls: HTTPCalls
    private var reading = Reading.betweenRequests
    /// Requests passed on whose answer's end has not been written yet.
    private var unanswered = 0
    /// A call's answer is being awaited.
    private var awaitingAnswer = false
    /// Parts read that wait for the answers before them.
    private var waiting = CircularBuffer<HTTPRequestPart>(initialCapacity: 4)
    /// The channel asked to read while parts waited.
    private var readHeld = false
    private var needsFlush = false
    /// Parts passed on outside a read, which Hummingbird's channel takes in at the read's complete.
    private var passedSinceReadComplete = false

    init(calls: HTTPCalls) {
        self.calls = calls
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if waiting.isEmpty && mayTake(part) {
            take(part, context: context)
        } else {
            waiting.append(part)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // One flush for all the answers of one read: a pipelining client gets them in one write.
        flushIfNeeded(context)
        passedSinceReadComplete = false
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if awaitingAnswer || !waiting.isEmpty {
            readHeld = true
        } else {
            context.read()
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
        guard case .end = unwrapOutboundIn(data) else { return }
        unanswered -= 1
        if unanswered == 0 && !waiting.isEmpty {
            // After Hummingbird's write has returned, not inside it.
            context.eventLoop.assumeIsolated().execute { self.takeWaiting(context: context) }
        }
    }

    /// Whether `part` can be handled now: no call's answer is awaited, and a call comes only
    /// once Hummingbird has answered everything before it.
    private func mayTake(_ part: HTTPRequestPart) -> Bool {
        guard !awaitingAnswer else { return false }
        if unanswered > 0, case .betweenRequests = reading, case .head(let head) = part, HTTPCalls.answeredOnLoop(head) != nil {
            return false
        }
        return true
    }

    private func takeWaiting(context: ChannelHandlerContext) {
        while let part = waiting.first, mayTake(part) {
            waiting.removeFirst()
            take(part, context: context)
        }
        flushIfNeeded(context)
        if passedSinceReadComplete {
            passedSinceReadComplete = false
            context.fireChannelReadComplete()
        }
        if waiting.isEmpty && !awaitingAnswer && readHeld {
            readHeld = false
            context.read()
        }
    }

    private func take(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (reading, part) {
        case (.betweenRequests, .head(let head)):
            // A full outbound buffer means a client that does not read: Hummingbird's
            // backpressure holds it, rather than answers queued here.
            if context.channel.isWritable, let call = HTTPCalls.answeredOnLoop(head) {
                reading = .reading(call, head, body: nil)
            } else {
                pass(.head(head), context: context)
            }
        case (.reading(let call, let head, var body), .body(var chunk)):
            reading = .passing  // not a copy-on-write of the body while it grows
            if body == nil {
                body = chunk
            } else {
                body!.writeBuffer(&chunk)
            }
            reading = body!.readableBytes > ProtocolLimits.maxBodyBytes ? .discarding(head) : .reading(call, head, body: body)
        case (.discarding, .body):
            break
        case (.reading(let call, let head, let body), .end):
            reading = .betweenRequests
            answer(calls.answer(call, head: head, body: body, peer: context.channel.remoteAddress), to: head, context: context)
        case (.discarding(let head), .end):
            reading = .betweenRequests
            write(calls.tooLarge(), to: head, context: context)
        case (.reading(_, let head, let body), .head):
            // The decoder never sends a head inside a request; pass both on for Hummingbird to refuse.
            pass(.head(head), context: context)
            if let body { passOn(.body(body), context: context) }
            pass(part, context: context)
        case (.discarding(let head), .head):
            pass(.head(head), context: context)
            pass(part, context: context)
        case (.passing, let part):
            if case .end = part { reading = .betweenRequests }
            passOn(part, context: context)
        case (.betweenRequests, let part):
            // Parts without a head: Hummingbird reports them.
            passOn(part, context: context)
        }
    }

    private func answer(_ answer: HTTPCalls.Answer, to head: HTTPRequest, context: ChannelHandlerContext) {
        switch answer {
        case .now(let json):
            write(json, to: head, context: context)
        case .later(let work):
            awaitingAnswer = true
            let answered = context.eventLoop.makePromise(of: JSONAnswer.self)
            // On this loop, so the answer is written where it arrives, without another hop.
            Task(executorPreference: EventLoopTaskExecutor(context.eventLoop)) { answered.succeed(await work()) }
            answered.futureResult.assumeIsolated().whenSuccess { json in
                self.awaitingAnswer = false
                self.write(json, to: head, context: context)
                self.takeWaiting(context: context)
            }
        }
    }

    private func write(_ json: JSONAnswer, to head: HTTPRequest, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(calls.head(of: json, for: head.headerFields))), promise: nil)
        context.write(wrapOutboundOut(.body(json.body)), promise: nil)
        context.write(wrapOutboundOut(.end(nil)), promise: nil)
        needsFlush = true
    }

    private func flushIfNeeded(_ context: ChannelHandlerContext) {
        guard needsFlush else { return }
        needsFlush = false
        context.flush()
    }

    /// Passes on the head of a request Hummingbird answers.
    private func pass(_ head: HTTPRequestPart, context: ChannelHandlerContext) {
        unanswered += 1
        reading = .passing
        passOn(head, context: context)
    }

    private func passOn(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        passedSinceReadComplete = true
        context.fireChannelRead(wrapInboundOut(part))
    }
}
