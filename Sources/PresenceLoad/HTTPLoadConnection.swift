import NIOCore
import NIOHTTP1
import NIOPosix

/// Where the load goes: a server on this machine.
public struct ServerAddress: Sendable, CustomStringConvertible {
    public let host: String
    public let port: Int
    public init(host: String = "127.0.0.1", port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { "http://\(host):\(port)" }
}

public struct HTTPResponse: Sendable {
    public let status: Int
    public let body: ByteBuffer
    public var text: String { String(buffer: body) }
}

/// A failed connection, an unexpected reply, or a scenario whose run broke one of its own checks.
public struct BenchmarkError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Responses counted by a closed loop of requests.
public struct RequestTally: Sendable {
    public var responses = 0
    public var failures = 0
    public var firstFailure: String?

    mutating func add(_ other: RequestTally) {
        responses += other.responses
        failures += other.failures
        firstFailure = firstFailure ?? other.firstFailure
    }

    /// Runs one closed loop per connection, all at once, and adds up what they counted;
    /// `loop` gets each connection with its position.
    static func concurrently<Connection: Sendable>(
        _ connections: [Connection], _ loop: @escaping @Sendable (_ position: Int, Connection) async throws -> RequestTally
    ) async throws -> RequestTally {
        try await withThrowingTaskGroup(of: RequestTally.self) { tasks in
            for (position, connection) in connections.enumerated() {
                tasks.addTask { try await loop(position, connection) }
            }
            var total = RequestTally()
            for try await tally in tasks { total.add(tally) }
            return total
        }
    }

    /// Sends a request, and the next one when its reply arrives, until `deadline`, all on
    /// `eventLoop`: a closed loop with no thread hop per request. `failure` describes a
    /// reply that is an error.
    static func closedLoop<Reply>(
        on eventLoop: any EventLoop, until deadline: NIODeadline,
        send: @escaping @Sendable (_ previous: Reply?, _ index: Int) -> EventLoopFuture<Reply>,
        failure: @escaping @Sendable (Reply) -> String?
    ) async throws -> RequestTally {
        try await eventLoop.flatSubmit {
            let promise = eventLoop.makePromise(of: RequestTally.self)
            var tally = RequestTally()
            func step(_ previous: Reply?, _ index: Int) {
                guard NIODeadline.now() < deadline else { return promise.succeed(tally) }
                send(previous, index).assumeIsolated().whenComplete { result in
                    switch result {
                    case .success(let reply):
                        tally.responses += 1
                        if let description = failure(reply) {
                            tally.failures += 1
                            tally.firstFailure = tally.firstFailure ?? description
                        }
                        step(reply, index + 1)
                    case .failure(let error):
                        promise.fail(error)
                    }
                }
            }
            step(nil, 0)
            return promise.futureResult
        }.get()
    }
}

/// A request for a load connection: SwiftNIO's HTTP/1.1 codec writes it.
public struct HTTPLoadRequest: Sendable {
    let head: HTTPRequestHead
    let body: ByteBuffer?

    public static func get(_ path: String, host: String = "127.0.0.1") -> HTTPLoadRequest {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
        head.headers.add(name: "Host", value: host)
        return HTTPLoadRequest(head: head, body: nil)
    }

    public static func post(_ path: String, json: String, bearer: String? = nil, host: String = "127.0.0.1") -> HTTPLoadRequest {
        let body = ByteBuffer(string: json)
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Host", value: host)
        if let bearer { head.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        return HTTPLoadRequest(head: head, body: body)
    }
}

/// One keep-alive HTTP/1.1 connection with one request in flight at a time.
public final class HTTPLoadConnection: Sendable {
    private let channel: any Channel
    private let handler: NIOLoopBound<HTTPExchangeHandler>

    private init(channel: any Channel, handler: NIOLoopBound<HTTPExchangeHandler>) {
        self.channel = channel
        self.handler = handler
    }

    public static func connect(to address: ServerAddress, group: any EventLoopGroup) async throws -> HTTPLoadConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(HTTPExchangeHandler())
                }
            }
            .connect(host: address.host, port: address.port).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: HTTPExchangeHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return HTTPLoadConnection(channel: channel, handler: handler)
    }

    public func send(_ request: HTTPLoadRequest) async throws -> HTTPResponse {
        let handler = self.handler
        return try await channel.eventLoop.flatSubmit { handler.value.send(request) }.get()
    }

    /// Sends requests back to back until `deadline`, each made by `next` from the
    /// previous response and its index, without leaving the event loop.
    public func loop(
        until deadline: NIODeadline, next: @escaping @Sendable (_ previous: HTTPResponse?, _ index: Int) -> HTTPLoadRequest
    ) async throws -> RequestTally {
        let handler = self.handler
        return try await RequestTally.closedLoop(on: channel.eventLoop, until: deadline) { previous, index in
            handler.value.send(next(previous, index))
        } failure: { response in
            (200..<300).contains(response.status) ? nil : "\(response.status) \(response.text)"
        }
    }

    public func close() async {
        try? await channel.close()
    }
}

/// Writes one request at a time and collects its response from SwiftNIO's HTTP/1.1 decoder.
final class HTTPExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private var pending: EventLoopPromise<HTTPResponse>?
    private var status = 0
    private var body = ByteBuffer()
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func send(_ request: HTTPLoadRequest) -> EventLoopFuture<HTTPResponse> {
        guard let context else { preconditionFailure("send before the handler was added") }
        guard pending == nil else {
            return context.eventLoop.makeFailedFuture(BenchmarkError("a request is already in flight"))
        }
        guard context.channel.isActive else {
            return context.eventLoop.makeFailedFuture(BenchmarkError("the connection is closed"))
        }
        let promise = context.eventLoop.makePromise(of: HTTPResponse.self)
        pending = promise
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        if let body = request.body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        return promise.futureResult
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
        case .body(var part):
            body.writeBuffer(&part)
        case .end:
            guard let promise = pending else {
                fail(BenchmarkError("a response nobody asked for"))
                context.close(promise: nil)
                return
            }
            pending = nil
            promise.succeed(HTTPResponse(status: status, body: body))
            body = ByteBuffer()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(BenchmarkError("the server closed the connection"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: any Error) {
        let promise = pending
        pending = nil
        promise?.fail(error)
    }
}
