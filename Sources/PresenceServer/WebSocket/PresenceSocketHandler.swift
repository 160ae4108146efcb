import HTTPTypes
import Hummingbird
import DequeModule
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import NIOWebSocket
import PresenceCore
import PresenceStore
import Synchronization

final class WeakHandler {
    weak var handler: PresenceSocketHandler?
}

/// One presence WebSocket on its event loop, the only handler of its channel: it reads the
/// client's frames from the socket's bytes (`ClientFrameReader`), answers pings, runs the close
/// handshake, the keep-alive and the per-socket rate limit, synchronously; messages go to the
/// socket's `SocketReader`. One handler, not NIO's decoder, encoder and aggregator around it:
/// each handler is a pipeline step, and a boxed frame, for every message.
///
/// It reads only while its writes drain: a peer that sends (pings, say) and never reads what the
/// server answers would otherwise make the server hold every answer.
final class PresenceSocketHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let endpoint: WebSocketEndpoint
    private let reader: SocketReader
    private let address: String
    private let holdsSlot: Bool
    private let closeGrace: TimeAmount
    private let keepAlive: WebSocketKeepAlive
    private var frames: ClientFrameReader
    private var limiter: RateLimiter
    private var context: ChannelHandlerContext?
    /// The server has sent its close frame: the next frame that matters is the peer's close.
    private var closeSent = false
    private var ended = false
    /// A read was asked for while the channel was not writable; it is made once it is again.
    private var readHeldBack = false

    init(
        endpoint: WebSocketEndpoint, reader: SocketReader, address: String, holdsSlot: Bool, closeGrace: TimeAmount,
        keepAlive: WebSocketKeepAlive
    ) {
        self.endpoint = endpoint
        self.reader = reader
        self.address = address
        self.holdsSlot = holdsSlot
        self.closeGrace = closeGrace
        self.keepAlive = keepAlive
        frames = ClientFrameReader(maxMessageBytes: endpoint.maxMessageBytes)
        limiter = RateLimiter(
            rate: endpoint.configuration.socketMessagesPerSecond, burst: endpoint.configuration.socketMessageBurst,
            now: endpoint.clock.nowMillis())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        keepAlive.start(context.channel)
        // Upgraded on a connection that closed at once: no inactive event will come.
        if !context.channel.isActive { end() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        end()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) {
        guard context.channel.isWritable else {
            readHeldBack = true
            return
        }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, readHeldBack {
            readHeldBack = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        keepAlive.heard(at: context.eventLoop.now)
        frames.append(unwrapInboundIn(data))
        while true {
            let frame: ClientFrameReader.Frame?
            do {
                frame = try frames.next()
            } catch {
                reader.stop()
                switch error {
                case .tooBig: close(code: CloseCode.messageTooBig, reason: "message too large", failing: true)
                case .protocolError(let reason): close(code: CloseCode.protocolError, reason: reason, failing: true)
                case .invalidUTF8: close(code: CloseCode.invalidPayload, reason: "text is not UTF-8", failing: true)
                }
                return
            }
            guard let frame else { return }
            guard read(frame, context: context) else { return }
        }
    }

    /// Acts on one frame; false when the socket reads no more.
    private func read(_ frame: ClientFrameReader.Frame, context: ChannelHandlerContext) -> Bool {
        switch frame {
        case .text, .binary:
            guard !closeSent else { return true }
            let now = endpoint.clock.nowMillis()
            guard limiter.allow(now: now), endpoint.addressLimits.allow(address, now: now) else {
                closeFlooding()
                return true
            }
            if case .text(let text) = frame {
                reader.receive(text: text)
            } else {
                reader.enqueue(.binary)
            }
        case .ping, .pong:
            guard !closeSent else { return true }
            // Control frames spend the socket's message budget like messages: each ping costs a
            // pong, and unasked-for pongs (allowed, RFC 6455 §5.5.3) are bytes to read all the same.
            guard limiter.allow(now: endpoint.clock.nowMillis()) else {
                closeFlooding()
                return true
            }
            if case .ping(let payload) = frame {
                context.writeAndFlush(wrapOutboundOut(WebSocketWire.frame(opcode: .pong, payload)), promise: nil)
            }
        case .close(let code):
            reader.stop()
            if closeSent {
                context.close(promise: nil)
                return false
            }
            // Echo the peer's code (RFC 6455 §5.5.1), then end the connection.
            closeSent = true
            keepAlive.stop()
            let echo = WebSocketWire.frame(opcode: .connectionClose, WebSocketWire.closePayload(code: code, reason: ""))
            let loopBound = context.loopBound
            context.writeAndFlush(wrapOutboundOut(echo)).whenComplete { _ in loopBound.value.close(promise: nil) }
            return false
        }
        return true
    }

    private func closeFlooding() {
        endpoint.metrics.floodingSocketsClosed.increment()
        endpoint.metrics.rateLimited.increment()
        reader.stop()
        close(code: CloseCode.policyViolation, reason: "too many messages")
    }

    /// The server allows half-closed connections (for HTTP), so a peer's FIN arrives as an event,
    /// not as the channel's end. A WebSocket whose peer stopped sending is over: without this it
    /// lingered until the keep-alive found it silent, up to two ping intervals later.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            reader.stop()
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        endpoint.logger.debug("websocket failed", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    /// Starts the close handshake: the close frame goes after every frame already written, and a
    /// peer that has not answered within the grace period is cut off (a NIO timer, free until it
    /// fires). Later frames from the peer are ignored, but for its close. A peer that broke the
    /// protocol (`failing`) is not waited for (RFC 6455 §7.1.7): the connection ends once the
    /// close frame is written.
    func close(code: UInt16, reason: String, failing: Bool = false) {
        guard !closeSent, let context else { return }
        closeSent = true
        reader.outbox.finish()
        // Nothing may follow a close frame (RFC 6455 §5.5.1), a keep-alive ping neither; the grace
        // timer bounds the connection from here.
        keepAlive.stop()
        let frame = WebSocketWire.frame(opcode: .connectionClose, WebSocketWire.closePayload(code: code, reason: reason))
        let written = context.writeAndFlush(wrapOutboundOut(frame))
        let channel = context.channel
        if failing {
            written.whenComplete { _ in channel.close(promise: nil) }
            return
        }
        channel.eventLoop.scheduleTask(in: closeGrace) { channel.close(promise: nil) }
    }

    private func end() {
        guard !ended else { return }
        ended = true
        keepAlive.stop()
        reader.stop()
        reader.outbox.detachFromSocket()
        reader.whenIdle { [endpoint, reader, address, holdsSlot] in
            endpoint.closed(reader.outbox, address: address, heldSlot: holdsSlot)
        }
    }
}
