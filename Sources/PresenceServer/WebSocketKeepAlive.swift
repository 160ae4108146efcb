import NIOCore

/// Finds dead WebSocket peers without pinging live ones. A peer silent for `interval` gets a
/// ping; one still silent `interval` after it (no pong, no message) is cut off. Any bytes from
/// the peer count as life, so a client heartbeating more often than `interval` is never pinged:
/// with 15,000 such sockets that is 500 pings, pongs and task wake-ups a second saved over
/// pinging every socket on a fixed period. One NIO timer per socket, on its event loop, which
/// fires once per `interval` at most and reads a timestamp instead of waking a task.
///
/// It sits first in the pipeline, on raw bytes, so it also sees pongs, which the WebSocket
/// handler above consumes. Its ping is a complete frame written there, between whole frames.
final class WebSocketKeepAlive: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// FIN + ping, no payload: the peer answers with an empty pong.
    private static let pingFrame = ByteBuffer(bytes: [0x89, 0x00])

    private let interval: TimeAmount
    private let metrics: PresenceMetrics
    private var lastHeard = NIODeadline.now()
    private var pingedAt: NIODeadline?
    private var timer: Scheduled<Void>?

    init(interval: TimeAmount, metrics: PresenceMetrics) {
        self.interval = interval
        self.metrics = metrics
    }

    func handlerAdded(context: ChannelHandlerContext) {
        lastHeard = .now()
        schedule(context, at: lastHeard + interval)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastHeard = .now()
        pingedAt = nil
        context.fireChannelRead(data)
    }

    /// Timers fire on a grid (an eighth of the interval, at most a second), late by at most one
    /// step: sockets opened or heard in the same step share the loop's wake-up instead of each
    /// waking it, as 15,000 sockets opened within seconds otherwise did 30 s later.
    private func schedule(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        let step = UInt64(max(1, min(interval.nanoseconds / 8, 1_000_000_000)))
        let onGrid = NIODeadline.uptimeNanoseconds((deadline.uptimeNanoseconds / step + 1) * step)
        timer = context.scheduleTask(for: self, at: onGrid) { $0.timerFired($1) }
    }

    private func timerFired(_ context: ChannelHandlerContext) {
        timer = nil
        guard context.channel.isActive else { return }
        let now = NIODeadline.now()
        if let pingedAt {
            if now - pingedAt >= interval {
                metrics.silentSocketsCut.increment()
                context.close(promise: nil)
                return
            }
            schedule(context, at: pingedAt + interval)
        } else if now - lastHeard >= interval {
            pingedAt = now
            context.writeAndFlush(wrapOutboundOut(Self.pingFrame), promise: nil)
            schedule(context, at: now + interval)
        } else {
            schedule(context, at: lastHeard + interval)
        }
    }
}
