import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// The lowest floor for the steady state: a WebSocket on SwiftNIO alone, its handler answering
/// each text frame on the event loop with the same fixed reply as the Hummingbird floor. No task,
/// no stream, no frame aggregation: what the sockets, the kernel and NIO cost by themselves.
enum NIOWebSocketFloor {
    static func run(port: Int) async throws {
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: 64 * 1024, automaticErrorHandling: true,
            shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture([:]) },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FixedReplyHandler()) }
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

private final class FixedReplyHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private static let reply = #"{"type":"heartbeat","id":0,"roomToken":"floor","sessionToken":"floor"}"#

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
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
