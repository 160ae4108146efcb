import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Synchronization

/// The lowest floor for the steady state and for fan-out: a WebSocket on SwiftNIO alone, its
/// handler answering each text frame on the event loop with the same fixed reply as the
/// Hummingbird floor. No task, no stream, no frame aggregation: what the sockets, the kernel and
/// NIO cost by themselves. The text `broadcast` also sends one diff-sized frame to every open
/// socket, framed once and written the way the presence server writes a diff (one job per event
/// loop, each socket written and flushed in turn): the floor under `fanout`'s figures.
enum NIOWebSocketFloor {
    static func run(port: Int) async throws {
        let sockets = FloorSockets()
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: 64 * 1024, automaticErrorHandling: true,
            shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture([:]) },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FixedReplyHandler(sockets: sockets)) }
            })
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
            }
        let channel = try await bootstrap.bind(host: "127.0.0.1", port: port).get()
        print("listening on 127.0.0.1:\(channel.localAddress?.port ?? 0)")
        fflush(nil)
        try await channel.closeFuture.get()
    }
}

/// Every open floor socket, by event loop.
private final class FloorSockets: Sendable {
    private struct Loop {
        let eventLoop: any EventLoop
        var handlers: [ObjectIdentifier: NIOLoopBound<FixedReplyHandler>] = [:]
    }

    /// A diff-sized frame (the presence server's join diffs are about this long), framed once.
    static let diffFrame: ByteBuffer = {
        let prefix = #"{"type":"diff","roomToken":"floor","from":1,"roomVersion":2,"upsert":[{"userId":"floor","online":true,"#
        let payload = prefix + #""pad":""# + String(repeating: "x", count: max(0, 240 - prefix.utf8.count)) + #""}],"remove":[]}"#
        var frame = ByteBuffer()
        frame.writeInteger(UInt8(0x81))
        frame.writeInteger(UInt8(126))
        frame.writeInteger(UInt16(payload.utf8.count))
        frame.writeString(payload)
        return frame
    }()

    private let loops = Mutex<[ObjectIdentifier: Loop]>([:])

    func insert(_ handler: FixedReplyHandler, on eventLoop: any EventLoop) {
        let bound = NIOLoopBound(handler, eventLoop: eventLoop)
        loops.withLock { $0[ObjectIdentifier(eventLoop), default: Loop(eventLoop: eventLoop)].handlers[ObjectIdentifier(handler)] = bound }
    }

    func remove(_ handler: FixedReplyHandler, on eventLoop: any EventLoop) {
        loops.withLock { _ = $0[ObjectIdentifier(eventLoop)]?.handlers.removeValue(forKey: ObjectIdentifier(handler)) }
    }

    func broadcast() {
        let snapshot = loops.withLock { Array($0.values) }
        for loop in snapshot {
            let handlers = Array(loop.handlers.values)
            loop.eventLoop.execute {
                for handler in handlers { handler.value.push(Self.diffFrame) }
            }
        }
    }
}

private final class FixedReplyHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private static let reply = #"{"type":"heartbeat","id":0,"roomToken":"floor","sessionToken":"floor"}"#

    private let sockets: FloorSockets
    /// Frames framed here are written from the encoder's place, past it.
    private var encoderContext: ChannelHandlerContext?

    init(sockets: FloorSockets) {
        self.sockets = sockets
    }

    func handlerAdded(context: ChannelHandlerContext) {
        encoderContext = try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        sockets.insert(self, on: context.eventLoop)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sockets.remove(self, on: context.eventLoop)
        encoderContext = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        sockets.remove(self, on: context.eventLoop)
        context.fireChannelInactive()
    }

    func push(_ frame: ByteBuffer) {
        guard let encoderContext else { return }
        encoderContext.write(NIOAny(frame), promise: nil)
        encoderContext.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            // The length first: the steady state's messages are never unmasked here.
            if frame.length == 9, frame.unmaskedData.readableBytesView.elementsEqual("broadcast".utf8) { sockets.broadcast() }
            let payload = context.channel.allocator.buffer(string: Self.reply)
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: payload)), promise: nil)
        case .connectionClose:
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: frame.unmaskedData)))
                .whenComplete { _ in bound.value.close(promise: nil) }
        default:
            break
        }
    }
}
