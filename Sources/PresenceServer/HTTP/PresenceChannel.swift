import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import PresenceCore

/// HTTP/1.1 for the API, and the presence WebSocket upgraded into plain channel handlers
/// (`PresenceSocketHandler`). An upgraded socket keeps no task: Hummingbird's WebSocket layer
/// gives each socket a task that waits on its messages for the socket's life, about 25 KiB of
/// task memory and a hop from the event loop into it per message, which is most of what an idle
/// subscriber costs. Here a socket is its channel's handlers, and a message starts work only
/// when there is work.
struct PresenceChannel: ServerChildChannel, HTTPChannelHandler {
    enum Negotiated: Sendable {
        /// The channel is a WebSocket now; its handlers run it.
        case webSocket
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case refusedUpgrade(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, PresenceError)
    }

    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Negotiated>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let http1: HTTP1Channel.Configuration
    let sockets: WebSocketEndpoint
    let calls: HTTPCalls
    let metrics: PresenceMetrics

    init(
        responder: @escaping HTTPChannelHandler.Responder, http1: HTTP1Channel.Configuration, sockets: WebSocketEndpoint,
        metrics: PresenceMetrics, calls: HTTPCalls
    ) {
        self.responder = Self.redirectingLateUpgrades(responder)
        self.http1 = http1
        self.sockets = sockets
        self.metrics = metrics
        self.calls = calls
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // What the upgrade's admission decided, for the pipeline handler (same request, same loop).
            let admission = NIOLoopBoundBox<Result<WebSocketEndpoint.Admission, PresenceError>?>(nil, eventLoop: channel.eventLoop)
            let upgrader = PresenceWebSocketUpgrader(
                shouldUpgrade: { channel, head in
                    let decided = channel.eventLoop.makePromise(of: Result<WebSocketEndpoint.Admission, PresenceError>.self)
                    decided.completeWithTask { await sockets.admit(head, channel: channel) }
                    return decided.futureResult.map { result in
                        admission.value = result
                        if case .success = result { return HTTPHeaders() }
                        return nil
                    }
                },
                open: { channel in
                    guard case .success(let admitted) = admission.value else {
                        throw PresenceError(status: 500, code: "internal", message: "a WebSocket was upgraded without its admission")
                    }
                    try sockets.open(channel, admission: admitted)
                })
            let upgrades = NIOTypedHTTPServerUpgradeConfiguration(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandlers(http1.additionalChannelHandlers())
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: http1.idleTimeout.map { .init($0) }, logger: logger))
                        // After the timeouts and the connection's state, which must see every request and answer.
                        try channel.pipeline.syncOperations.addHandler(calls.makeHandler())
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        if case .failure(let refusal) = admission.value { return .refusedUpgrade(asyncChannel, refusal) }
                        return .http(asyncChannel)
                    }
                })
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Negotiated>(upgradeConfiguration: upgrades)
            // The same choices as Hummingbird's own HTTP/1 channel: it pipelines and validates itself.
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            configuration.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
            configuration.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
            configuration.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(MalformedRequestHandler(metrics: metrics), position: .after(decoder))
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            let negotiated: Negotiated = try await value.negotiated.get()
            switch negotiated {
            case .webSocket:
                return
            case .http(let http):
                // Hummingbird's task for the connection stays on Swift's pool. On the channel's
                // event loop (`EventLoopTaskExecutor`) a quiet connection's request took one thread
                // wake-up fewer, but a busy server answered 20 % fewer `GET /health` a second, at
                // 25 % more CPU each (`presence-bench run heartbeat`, side by side). Heartbeats and
                // disconnects never reach this task: `HTTPCallsHandler` answers them on the loop.
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refusedUpgrade(let http, let refusal):
                await Self.refuse(http, with: refusal, logger: logger)
            }
        } catch let error as ChannelError where error == .inputClosed {
            logger.trace("the connection closed before its first request")
        } catch {
            logger.debug("could not set up a connection", metadata: ["error": "\(error)"])
        }
    }

    /// A refused upgrade gets PROTOCOL.md's error body with its status, and the connection ends.
    private static func refuse(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, with refusal: PresenceError, logger: Logger) async {
        do {
            try await http.executeThenClose { _, outbound in
                var body = ByteBuffer(string: refusal.jsonBody)
                var head = HTTPResponse(
                    status: .init(code: refusal.status),
                    headerFields: [.contentType: Response.jsonContentType, .contentLength: "\(body.readableBytes)"])
                WebSocketHandshake.addRefusalHeaders(for: refusal, to: &head.headerFields)
                try await outbound.write(contentsOf: [.head(head), .body(body.readSlice(length: body.readableBytes)!), .end(nil)])
            }
        } catch {
            logger.trace("could not answer a refused upgrade", metadata: ["error": "\(error)"])
        }
    }

    /// NIO upgrades only a connection's first request. A WebSocket upgrade asked for later on a
    /// kept-alive connection is sent to the same address with the connection closed, so the
    /// client retries it as the first request of a new one (what Hummingbird does too). A
    /// handshake that is not one (no `Connection: Upgrade`, no key) is answered with its error.
    private static func redirectingLateUpgrades(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        /// Ends the connection once its answer is written.
        struct ClosedAfterAnswer: Error {}
        return { request, responseWriter, channel in
            guard WebSocketHandshake.isAsked(request.head) else {
                return try await responder(request, responseWriter, channel)
            }
            do throws(PresenceError) {
                try WebSocketHandshake.check(request.head)
            } catch {
                var response = Response.error(error)
                WebSocketHandshake.addRefusalHeaders(for: error, to: &response.headers)
                try await responseWriter.write(response: response.head, body: response.body)
                throw ClosedAfterAnswer()
            }
            var location = request.uri.path
            if let query = request.uri.query { location += "?\(query)" }
            try await responseWriter.writeResponse(
                HTTPResponse(status: .temporaryRedirect, headerFields: [.connection: "close", .location: location]))
            throw ClosedAfterAnswer()
        }
    }
}
