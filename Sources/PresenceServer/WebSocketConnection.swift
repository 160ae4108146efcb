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

/// The presence WebSocket at `/api/ws`: who may open one (`admit`, before the 101), and the
/// handlers that run an open one (`open`, on its event loop, right after the 101).
struct WebSocketEndpoint: Sendable {
    static let path = "/api/ws"

    /// What the upgrade learned about its client.
    struct Admission: Sendable {
        let address: String
        let identity: Identity?
    }

    let operations: PresenceOperations
    let hub: FanoutHub
    let watchers: UserWatchHub
    let metrics: PresenceMetrics
    let configuration: PresenceServerConfiguration
    /// `configuration.allowedOrigins`, read once.
    let origins: CORSOrigins
    let addressLimits: AddressLimits
    let openSockets: OpenSockets
    let keepAliveWheels: KeepAliveWheels
    let logger: Logger

    var maxMessageBytes: Int { ProtocolLimits.maxBodyBytes }
    var clock: any WallClock { operations.store.clock }

    /// Whether this request may become a presence WebSocket; a refusal is answered with its error.
    func admit(_ head: HTTPRequestHead, channel: any Channel) async -> Result<Admission, PresenceError> {
        do throws(PresenceError) {
            let request: Request
            do {
                request = Request(head: try HTTPRequest(head, secure: false, splitCookie: false), body: .init(buffer: ByteBuffer()))
            } catch {
                throw .invalidArgument("the upgrade request is not valid HTTP")
            }
            guard request.uri.path == Self.path else { throw .notFound("no WebSocket at \(request.uri.path); it is at \(Self.path)") }
            try WebSocketHandshake.check(request.head, httpVersion: (head.version.major, head.version.minor))
            try WebSocketAdmission.checkOrigin(request, origins: origins)
            let address = configuration.trustedProxies.clientAddress(peer: channel.remoteAddress, headers: request.headers)
            guard addressLimits.allow(address, now: clock.nowMillis()) else {
                metrics.rateLimited.increment()
                throw .rateLimited("too many requests from this address; slow down")
            }
            // A token at the upgrade must be valid; without one a client may still send an `auth` message.
            var identity: Identity?
            if let token = WebSocketAdmission.token(request) {
                identity = try await operations.authenticateUser(token: token).identity
            }
            return .success(Admission(address: address, identity: identity))
        } catch {
            metrics.count(error)
            return .failure(error)
        }
    }

    /// Sets up an upgraded channel's handlers. Runs on the channel's event loop.
    func open(_ channel: any Channel, admission: Admission) throws {
        let pipeline = channel.pipeline.syncOperations
        let holdsSlot = addressLimits.openConnection(admission.address, now: clock.nowMillis())
        // Weak: the handler holds the reader, which holds the outbox, which holds this closure; a
        // strong reference would keep every closed socket's objects (and its channel) alive.
        let socketHandler = NIOLoopBound(WeakHandler(), eventLoop: channel.eventLoop)
        let outbox = Outbox(
            id: openSockets.nextId(), capacity: configuration.outboxCapacity, channel: channel, metrics: metrics,
            onEnding: { ending in
                channel.eventLoop.execute {
                    switch ending {
                    case .close(let code, let reason): socketHandler.value.handler?.close(code: code, reason: reason)
                    case .overflow: socketHandler.value.handler?.close(code: CloseCode.tryAgainLater, reason: "subscriber too slow")
                    }
                }
            })
        let reader = SocketReader(endpoint: self, outbox: outbox, identity: admission.identity, executor: EventLoopTaskExecutor(channel.eventLoop))
        let handler = PresenceSocketHandler(
            endpoint: self, reader: reader, address: admission.address, holdsSlot: holdsSlot, closeGrace: TimeAmount(configuration.closeGrace),
            keepAlive: WebSocketKeepAlive(metrics: metrics, wheel: keepAliveWheels.wheel(on: channel.eventLoop)))
        socketHandler.value.handler = handler
        // Counted before the handler is added: on a connection already gone, adding it ends it at once.
        openSockets.insert(outbox)
        if holdsSlot { metrics.sockets.increment() }
        do {
            try pipeline.addHandler(handler)
        } catch {
            closed(outbox, address: admission.address, heldSlot: holdsSlot)
            throw error
        }
        if !holdsSlot {
            metrics.connectionsRefused.increment()
            handler.close(code: CloseCode.policyViolation, reason: "too many connections from this address")
        }
    }

    /// What a socket does once it is gone: its subscriptions, watches and slot go with it.
    /// Closing a socket leaves the user's sessions alive until their deadline.
    fileprivate func closed(_ outbox: Outbox, address: String, heldSlot: Bool) {
        outbox.finish()
        hub.submit(.removeSubscriber(outbox))
        watchers.submit(.removeWatcher(outbox))
        openSockets.remove(outbox)
        if heldSlot {
            metrics.sockets.decrement()
            addressLimits.closeConnection(address)
        }
    }
}

extension WebSocketHandshake {
    static let versionHeader = HTTPField.Name("Sec-WebSocket-Version")!

    /// Whether `request` asks for a WebSocket at all (`Upgrade: websocket`).
    static func isAsked(_ request: HTTPRequest) -> Bool {
        isAsked(upgrade: request.headerFields[values: .upgrade])
    }

    /// The headers an answer refusing a handshake carries besides its error: 426 names the
    /// version this server speaks (RFC 6455 §4.4).
    static func addRefusalHeaders(for refusal: PresenceError, to fields: inout HTTPFields) {
        fields[.connection] = "close"
        if refusal.status == 426 { fields[versionHeader] = "13" }
    }

    /// `check` of a request NIO read; a later request of a kept-alive connection, read as
    /// HTTP/1.1, says no version.
    static func check(_ request: HTTPRequest, httpVersion: (major: Int, minor: Int) = (1, 1)) throws(PresenceError) {
        try check(method: request.method.rawValue, httpVersion: httpVersion) { name in
            request.headerFields[values: HTTPField.Name(name)!]
        }
    }
}

private final class WeakHandler {
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

/// Answers one socket's messages in order. A message that needs no waiting (most often a
/// heartbeat of a live session) is answered in the event loop's read, when nothing waits before
/// it. Others go to a task that runs only while messages wait, on the socket's event loop, and
/// ends when they are done: an idle socket holds no task.
final class SocketReader: Sendable {
    enum Message: Sendable {
        case request(SocketRequest)
        case undecodable(SocketRequest.DecodingError)
        case binary
    }

    private struct State {
        var waiting: Deque<Message> = []
        var running = false
        var stopped = false
        var identity: Identity?
        var whenIdle: (@Sendable () -> Void)?
    }

    let outbox: Outbox
    private let endpoint: WebSocketEndpoint
    private let executor: EventLoopTaskExecutor
    private let state: Mutex<State>

    init(endpoint: WebSocketEndpoint, outbox: Outbox, identity: Identity?, executor: EventLoopTaskExecutor) {
        self.endpoint = endpoint
        self.outbox = outbox
        self.executor = executor
        state = Mutex(State(identity: identity))
        outbox.authorize(until: identity?.expiresAt)
    }

    /// A text message, on the socket's event loop.
    func receive(text: [UInt8]) {
        let message: Message
        do {
            message = .request(try SocketRequest.decode(text))
        } catch {
            message = .undecodable(error)
        }
        if case .request(let request) = message, case .heartbeat(let heartbeat) = request.kind, let identity = identityWhenIdle(),
            let tokens = endpoint.operations.heartbeatAtOnce(heartbeat, as: identity)
        {
            outbox.send(ServerFrame.heartbeat(id: request.id, tokens: tokens))
            return
        }
        enqueue(message)
    }

    /// The socket's identity (the inner nil: none) while no message is waiting or being answered,
    /// so one answered at once cannot overtake them; nil otherwise.
    private func identityWhenIdle() -> Identity?? {
        state.withLock { state in
            guard !state.running, !state.stopped, state.waiting.isEmpty else { return nil }
            return .some(state.identity)
        }
    }

    func enqueue(_ message: Message) {
        let start = state.withLock { state -> Bool in
            guard !state.stopped else { return false }
            state.waiting.append(message)
            guard !state.running else { return false }
            state.running = true
            return true
        }
        if start { Task(executorPreference: executor) { await self.drain() } }
    }

    /// Takes no more messages and drops those still waiting.
    func stop() {
        state.withLock {
            $0.stopped = true
            $0.waiting.removeAll()
        }
    }

    /// Runs `body` once no message is being answered: at once, or when the running one is done,
    /// so a subscription it makes cannot outlive the socket's cleanup.
    func whenIdle(_ body: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            guard state.running else { return true }
            state.whenIdle = body
            return false
        }
        if now { body() }
    }

    private func drain() async {
        while true {
            enum Next {
                case message(Message, Identity?)
                case idle((@Sendable () -> Void)?)
            }
            // Going idle and taking what waits for it are one step: a drain started after this
            // one ended must not have its cleanup run by this one.
            let next = state.withLock { state -> Next in
                guard !state.stopped, let message = state.waiting.popFirst() else {
                    state.running = false
                    defer { state.whenIdle = nil }
                    return .idle(state.whenIdle)
                }
                return .message(message, state.identity)
            }
            switch next {
            case .idle(let whenIdle):
                whenIdle?()
                return
            case .message(.binary, _):
                outbox.send(ServerFrame.error(id: nil, .invalidArgument("messages must be JSON text frames")))
            case .message(.undecodable(let failure), _):
                endpoint.metrics.count(failure.error)
                outbox.send(ServerFrame.error(id: failure.id, failure.error))
            case .message(.request(let request), let identity):
                var updated = identity
                await handle(request, identity: &updated)
                if updated != identity { state.withLock { $0.identity = updated } }
            }
        }
    }

    /// A codec from a message to `PresenceOperations` and its reply into the outbox.
    private func handle(_ request: SocketRequest, identity: inout Identity?) async {
        let operations = endpoint.operations
        let requestId = request.id
        do throws(PresenceError) {
            switch request.kind {
            case .auth(let token):
                let caller = try await operations.authenticateUser(token: token)
                identity = caller.identity
                outbox.authorize(until: caller.identity?.expiresAt)
                outbox.send(ServerFrame.reply(type: "authenticated", id: requestId) { $0.field("userId", caller.identity?.userId) })
            case .heartbeat(let heartbeat):
                let caller = try await operations.authenticateSocket(identity: identity)
                let tokens = try await operations.heartbeat(heartbeat, by: caller)
                outbox.send(ServerFrame.heartbeat(id: requestId, tokens: tokens))
            case .subscribe(let list):
                let caller = try await operations.authenticateSocket(identity: identity)
                try await operations.authorizeSubscription(list, by: caller)
                endpoint.hub.submit(.subscribe(outbox, roomToken: list.roomToken, limit: list.limit, requestId: requestId))
            case .unsubscribe(let roomToken):
                endpoint.hub.submit(.unsubscribe(outbox, roomToken: roomToken, requestId: requestId))
            case .update(let update):
                let caller = try await operations.authenticateSocket(identity: identity)
                try await operations.update(update, by: caller)
                outbox.send(ServerFrame.reply(type: "updated", id: requestId))
            case .disconnect(let sessionToken):
                try await operations.disconnect(sessionToken: sessionToken)
                outbox.send(ServerFrame.reply(type: "disconnected", id: requestId))
            case .watchUsers(let watch):
                let caller = try await operations.authenticateSocket(identity: identity)
                try await operations.authorizeWatch(watch, by: caller)
                endpoint.watchers.submit(.watch(outbox, userIds: watch.userIds, requestId: requestId))
            case .unwatchUsers(let unwatch):
                endpoint.watchers.submit(.unwatch(outbox, userIds: unwatch.userIds, requestId: requestId))
            }
        } catch {
            endpoint.metrics.count(error)
            outbox.send(ServerFrame.error(id: requestId, error))
        }
    }
}
