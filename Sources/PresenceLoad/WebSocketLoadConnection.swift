import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// One WebSocket to `/api/ws` (or another server's `path`). Replies come back in the order
/// requests were sent (every request carries an `id`); diffs and other pushes (`isPush`) go to
/// `onPush` on the socket's event loop with the time they were read, so the receiving side of a
/// latency measurement costs no thread hop.
public final class WebSocketLoadConnection: Sendable {
    public typealias PushHandler = @Sendable (_ message: ByteBuffer, _ received: NIODeadline) -> Void

    private let channel: any Channel
    private let handler: NIOLoopBound<WebSocketExchangeHandler>

    private init(channel: any Channel, handler: NIOLoopBound<WebSocketExchangeHandler>) {
        self.channel = channel
        self.handler = handler
    }

    /// Connects and upgrades with SwiftNIO's own client upgrader, which also checks the server's
    /// `Sec-WebSocket-Accept`.
    public static func connect(
        to address: ServerAddress, dialect: WebSocketDialect = .presence, group: any EventLoopGroup,
        onPush: @escaping PushHandler = { _, _ in }
    ) async throws -> WebSocketLoadConnection {
        let eventLoop = group.next()
        let upgrade = try await ClientBootstrap(group: eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connect(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOTypedWebSocketClientUpgrader<(any Channel)?>(
                        maxFrameSize: 1 << 24, enableAutomaticErrorHandling: false,
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandlers([
                                    NIOWebSocketFrameAggregator(
                                        minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16, maxAccumulatedFrameSize: 1 << 24),
                                    WebSocketExchangeHandler(dialect: dialect, onPush: onPush),
                                ])
                                return channel
                            }
                        })
                    var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: dialect.path)
                    head.headers.add(name: "Host", value: address.host)
                    var configuration = NIOUpgradableHTTPClientPipelineConfiguration(
                        upgradeConfiguration: NIOTypedHTTPClientUpgradeConfiguration(
                            upgradeRequestHead: head, upgraders: [upgrader],
                            notUpgradingCompletionHandler: { channel in channel.eventLoop.makeSucceededFuture(nil) }))
                    // Whatever the server sends right after its 101 belongs to the WebSocket.
                    configuration.leftOverBytesStrategy = .forwardBytes
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: configuration)
                }
            }
        guard let channel = try await upgrade.get() else {
            throw BenchmarkError("the server refused the WebSocket upgrade")
        }
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: WebSocketExchangeHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return WebSocketLoadConnection(channel: channel, handler: handler)
    }

    /// Sends one message and waits for its reply.
    public func request(_ message: String) async throws -> ByteBuffer {
        let handler = self.handler
        let bytes = ByteBuffer(string: message)
        return try await channel.eventLoop.flatSubmit { handler.value.send(bytes) }.get()
    }

    /// Sends messages back to back until `deadline`, each made by `next` from its index,
    /// the next one when the previous one's reply arrives.
    public func loop(until deadline: NIODeadline, next: @escaping @Sendable (_ index: Int) -> ByteBuffer) async throws -> RequestTally {
        let handler = self.handler
        return try await RequestTally.closedLoop(on: channel.eventLoop, until: deadline) { _, index in
            handler.value.send(next(index))
        } failure: { reply in
            reply.readableBytesView.starts(with: #"{"type":"error""#.utf8) ? String(buffer: reply) : nil
        }
    }

    public var isActive: Bool { channel.isActive }

    public func close() async {
        try? await channel.close()
    }
}

/// Where a server takes its WebSocket, how it packs messages into frames, and how its pushes
/// differ from its replies.
public struct WebSocketDialect: Sendable {
    public let path: String
    public let messages: @Sendable (ByteBuffer) -> [ByteBuffer]
    public let isPush: @Sendable (ByteBuffer) -> Bool

    public init(
        path: String, messages: @escaping @Sendable (ByteBuffer) -> [ByteBuffer] = { [$0] },
        isPush: @escaping @Sendable (ByteBuffer) -> Bool
    ) {
        self.path = path
        self.messages = messages
        self.isPush = isPush
    }

    public static let presence = WebSocketDialect(path: "/api/ws", isPush: WebSocketExchangeHandler.isPush)
}

/// Sends text frames (masked, as a client must) and sorts what comes back into
/// replies and pushes.
final class WebSocketExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let dialect: WebSocketDialect
    private let onPush: WebSocketLoadConnection.PushHandler
    private var replies = CircularBuffer<EventLoopPromise<ByteBuffer>>()
    private var context: ChannelHandlerContext?

    init(dialect: WebSocketDialect, onPush: @escaping WebSocketLoadConnection.PushHandler) {
        self.dialect = dialect
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func send(_ message: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        guard let context else { preconditionFailure("send before the handler was added") }
        guard context.channel.isActive else {
            return context.eventLoop.makeFailedFuture(BenchmarkError("the socket is closed"))
        }
        let promise = context.eventLoop.makePromise(of: ByteBuffer.self)
        replies.append(promise)
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: message)
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        return promise.futureResult
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            let received = NIODeadline.now()
            for message in dialect.messages(frame.unmaskedData) {
                if dialect.isPush(message) {
                    onPush(message, received)
                } else if let promise = replies.popFirst() {
                    promise.succeed(message)
                } else {
                    onPush(message, received)
                }
            }
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            var data = frame.unmaskedData
            let code = data.readInteger(as: UInt16.self).map(String.init) ?? "none"
            failAll(BenchmarkError("the server closed the socket with code \(code)"))
            context.close(promise: nil)
        default:
            break
        }
    }

    /// The server pushes diffs and the `unsubscribed` that ends a subscription
    /// (without an `id`); everything else answers a request, and requests here
    /// always carry an `id`.
    static func isPush(_ message: ByteBuffer) -> Bool {
        let view = message.readableBytesView
        return view.starts(with: #"{"type":"diff""#.utf8)
            || (view.starts(with: #"{"type":"unsubscribed","roomToken""#.utf8))
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(BenchmarkError("the socket closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: any Error) {
        while let promise = replies.popFirst() { promise.fail(error) }
    }
}
