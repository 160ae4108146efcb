import NIOCore
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

/// Request bytes, written once; the load generator shares the CPU with the server,
/// so it keeps its own per-request work to a minimum.
public enum HTTPRequestBytes {
    public static func get(_ path: String, host: String = "127.0.0.1") -> ByteBuffer {
        ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: \(host)\r\n\r\n")
    }

    public static func post(_ path: String, json: String, host: String = "127.0.0.1") -> ByteBuffer {
        let body = Array(json.utf8)
        var buffer = ByteBuffer(
            string: "POST \(path) HTTP/1.1\r\nHost: \(host)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n")
        buffer.writeBytes(body)
        return buffer
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
                    try channel.pipeline.syncOperations.addHandler(HTTPExchangeHandler())
                }
            }
            .connect(host: address.host, port: address.port).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: HTTPExchangeHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return HTTPLoadConnection(channel: channel, handler: handler)
    }

    public func send(_ request: ByteBuffer) async throws -> HTTPResponse {
        let handler = self.handler
        return try await channel.eventLoop.flatSubmit { handler.value.send(request) }.get()
    }

    /// Sends requests back to back until `deadline`, each made by `next` from the
    /// previous response and its index, without leaving the event loop.
    public func loop(
        until deadline: NIODeadline, next: @escaping @Sendable (_ previous: HTTPResponse?, _ index: Int) -> ByteBuffer
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

/// Parses responses from raw bytes: a status line, headers with a `Content-Length`, a body.
final class HTTPExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var received = ByteBuffer()
    private var pending: EventLoopPromise<HTTPResponse>?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func send(_ request: ByteBuffer) -> EventLoopFuture<HTTPResponse> {
        guard let context else { preconditionFailure("send before the handler was added") }
        guard pending == nil else {
            return context.eventLoop.makeFailedFuture(BenchmarkError("a request is already in flight"))
        }
        guard context.channel.isActive else {
            return context.eventLoop.makeFailedFuture(BenchmarkError("the connection is closed"))
        }
        let promise = context.eventLoop.makePromise(of: HTTPResponse.self)
        pending = promise
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        return promise.futureResult
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        received.writeBuffer(&incoming)
        do {
            while let response = try Self.parse(&received) {
                guard let promise = pending else { throw BenchmarkError("a response nobody asked for") }
                pending = nil
                promise.succeed(response)
            }
        } catch {
            fail(error)
            context.close(promise: nil)
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

    /// One whole response off the front of `buffer`, or nil when more bytes are needed.
    static func parse(_ buffer: inout ByteBuffer) throws -> HTTPResponse? {
        let view = buffer.readableBytesView
        guard let headEnd = endOfHead(view) else { return nil }
        let head = view[view.startIndex..<headEnd]
        guard head.count > 12, head.starts(with: "HTTP/1.1 ".utf8),
            let status = Int(String(decoding: head.dropFirst(9).prefix(3), as: UTF8.self))
        else { throw BenchmarkError("not an HTTP/1.1 response: \(String(decoding: head.prefix(64), as: UTF8.self))") }
        guard let length = contentLength(head) else { throw BenchmarkError("a response without Content-Length") }
        let bodyStart = headEnd + 4 - view.startIndex
        guard buffer.readableBytes >= bodyStart + length else { return nil }
        buffer.moveReaderIndex(forwardBy: bodyStart)
        let body = buffer.readSlice(length: length)!
        if buffer.readableBytes == 0 { buffer.clear() }
        return HTTPResponse(status: status, body: body)
    }

    private static func endOfHead(_ view: ByteBufferView) -> ByteBufferView.Index? {
        var index = view.startIndex
        while index + 3 < view.endIndex {
            if view[index] == 13, view[index + 1] == 10, view[index + 2] == 13, view[index + 3] == 10 { return index }
            index += 1
        }
        return nil
    }

    private static func contentLength(_ head: ByteBufferView.SubSequence) -> Int? {
        let name = Array("content-length:".utf8)
        for line in head.split(separator: 10) {
            guard line.count > name.count,
                zip(line.prefix(name.count), name).allSatisfy({ ($0 | 0x20) == $1 })
            else { continue }
            let digits = line.dropFirst(name.count).filter { $0 >= 48 && $0 <= 57 }
            return Int(String(decoding: digits, as: UTF8.self))
        }
        return nil
    }
}
