import NIOCore
import Synchronization

/// Finds dead WebSocket peers without pinging live ones. A peer silent for `interval` gets a
/// ping; one still silent `interval` after it (no pong, no message) is cut off. Any bytes from
/// the peer count as life, so a client heartbeating more often than `interval` is never pinged:
/// with 15,000 such sockets that is 500 pings, pongs and task wake-ups a second saved over
/// pinging every socket on a fixed period. Its timer is a place on its event loop's
/// `KeepAliveWheel`, which it checks at most once per `interval`, reading a timestamp.
///
/// Its socket's handler tells it when the peer is heard; its ping is a whole frame, written
/// between the socket's frames. Used on the channel's event loop only.
final class WebSocketKeepAlive {
    /// FIN + ping, no payload: the peer answers with an empty pong.
    static let pingFrame = ByteBuffer(bytes: [0x89, 0x00])

    private let metrics: PresenceMetrics
    private let wheel: KeepAliveWheel
    private var interval: TimeAmount { wheel.interval }
    /// The socket's channel until the keep-alive stops: the wheel may hold a stopped keep-alive
    /// until its step comes, and must not hold a closed channel that long.
    private var channel: (any Channel)?
    private var lastHeard = NIODeadline.uptimeNanoseconds(0)
    private var pingedAt: NIODeadline?
    /// The wheel's step this keep-alive waits for; nil once it waits no more (stopped).
    /// The wheel holds it until that step comes, and calls it only if this still matches.
    var awaitedStep: Int64?

    /// Pings after the wheel's interval of silence.
    init(metrics: PresenceMetrics, wheel: KeepAliveWheel) {
        self.metrics = metrics
        self.wheel = wheel
    }

    /// Starts timing `channel`'s silence from now.
    func start(_ channel: any Channel) {
        self.channel = channel
        lastHeard = channel.eventLoop.now
        wheel.schedule(self, at: lastHeard + interval)
    }

    /// The peer sent something.
    func heard(at now: NIODeadline) {
        lastHeard = now
        pingedAt = nil
    }

    /// No ping or cut from now on, as after the socket's close frame.
    func stop() {
        awaitedStep = nil
        channel = nil
    }

    func due(now: NIODeadline) {
        guard let channel, channel.isActive else { return }
        if let pingedAt {
            if now - pingedAt >= interval {
                metrics.silentSocketsCut.increment()
                channel.close(promise: nil)
                return
            }
            wheel.schedule(self, at: pingedAt + interval)
        } else if now - lastHeard >= interval {
            pingedAt = now
            channel.writeAndFlush(Self.pingFrame, promise: nil)
            wheel.schedule(self, at: now + interval)
        } else {
            wheel.schedule(self, at: lastHeard + interval)
        }
    }
}
