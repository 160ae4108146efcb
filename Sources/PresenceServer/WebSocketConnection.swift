import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import PresenceStore

/// Close codes PROTOCOL.md gives the server.
enum CloseCode {
    static let policyViolation: UInt16 = 1008
    static let tryAgainLater: UInt16 = 1013
}

/// A token bucket: `rate` per second sustained, `burst` at once.
struct RateLimiter {
    let rate: Double
    let burst: Double
    private var tokens: Double
    private var last: Int64

    init(rate: Double, burst: Double, now: Int64) {
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now
    }

    mutating func allow(now: Int64) -> Bool {
        tokens = min(burst, tokens + Double(max(0, now - last)) * rate / 1000)
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}

/// One WebSocket: a reader that handles client messages and a writer that drains
/// the socket's outbox. Either ending ends the connection; closing the socket
/// leaves the user's sessions alive until their deadline.
struct WebSocketConnection {
    let store: any PresenceStore
    let hub: FanoutHub
    let metrics: PresenceMetrics
    let configuration: PresenceServerConfiguration
    let logger: Logger

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, outbox: Outbox, channel: any Channel) async {
        metrics.sockets.increment()
        defer { metrics.sockets.decrement() }
        enum Part { case writer, reader, watchdog }
        await withTaskGroup(of: Part.self) { group in
            group.addTask {
                await writeOutbox(outbox, to: outbound)
                return .writer
            }
            group.addTask {
                await readMessages(inbound, outbox: outbox)
                return .reader
            }
            group.addTask {
                if await outbox.waitForOverflow() { await dropSlowSubscriber(outbound: outbound, channel: channel) }
                return .watchdog
            }
            var writerDone = false
            var readerDone = false
            while let part = await group.next() {
                switch part {
                case .writer:
                    writerDone = true
                    // A writer that closed the socket or failed ends the connection; after an overflow
                    // the watchdog is still sending the 1013 close and must not be cancelled.
                    if !outbox.overflowed { group.cancelAll() }
                case .reader: readerDone = true
                case .watchdog: break
                }
                if writerDone, readerDone { group.cancelAll() }
            }
        }
        hub.submit(.removeSubscriber(outbox))
    }

    /// Ends when the outbox ends, after writing a close, or when a write fails.
    private func writeOutbox(_ outbox: Outbox, to outbound: WebSocketOutboundWriter) async {
        do {
            for await item in outbox.stream {
                // An overflowed outbox is being dropped: its remaining frames are not worth sending.
                if outbox.overflowed { return }
                switch item {
                case .frame(let buffer):
                    try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .text, data: buffer)))
                    metrics.messagesSent.increment()
                    metrics.bytesSent.increment(by: buffer.readableBytes)
                case .close(let code, let reason):
                    try await outbound.close(.init(codeNumber: Int(code)), reason: reason)
                    return
                }
            }
        } catch {
            logger.debug("websocket write failed", metadata: ["error": "\(error)"])
        }
    }

    /// Closes with 1013. A client too stuck to take the close frame, or to answer it, within the
    /// grace period has its connection cut, so it holds no server resources.
    private func dropSlowSubscriber(outbound: WebSocketOutboundWriter, channel: any Channel) async {
        let closed = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                (try? await outbound.close(.init(codeNumber: Int(CloseCode.tryAgainLater)), reason: "subscriber too slow")) != nil
            }
            group.addTask {
                try? await Task.sleep(for: configuration.slowSubscriberCloseGrace)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if closed {
            // Cancelled when the client answers the close in time.
            guard (try? await Task.sleep(for: configuration.slowSubscriberCloseGrace)) != nil else { return }
        }
        try? await channel.close()
    }

    private func readMessages(_ inbound: WebSocketInboundStream, outbox: Outbox) async {
        defer { outbox.finish() }
        var limiter = RateLimiter(
            rate: configuration.socketMessagesPerSecond, burst: configuration.socketMessageBurst, now: store.clock.nowMillis())
        do {
            for try await message in inbound.messages(maxSize: Limits.maxBodyBytes) {
                guard limiter.allow(now: store.clock.nowMillis()) else {
                    metrics.floodingSocketsClosed.increment()
                    outbox.close(code: CloseCode.policyViolation, reason: "too many messages")
                    return
                }
                guard case .text(let text) = message else {
                    outbox.send(ServerMessage.error(id: nil, .invalidArgument("messages must be JSON text frames")))
                    continue
                }
                await handle(text, outbox: outbox)
            }
        } catch {
            // Oversized messages and protocol errors are closed by the WebSocket layer with their own code.
            logger.debug("websocket read ended", metadata: ["error": "\(error)"])
        }
    }

    private func handle(_ text: String, outbox: Outbox) async {
        var requestId: JSONValue?
        do {
            let message = try JSONObject(parsing: Array(text.utf8))
            requestId = message.fields["id"]
            if let id = requestId {
                switch id {
                case .string, .integer, .double: break
                default:
                    requestId = nil
                    throw PresenceError.invalidArgument("id must be a number or a string")
                }
            }
            switch try message.string("type") {
            case "heartbeat":
                let tokens = try await store.heartbeat(message.heartbeatRequest())
                metrics.heartbeats.increment()
                outbox.send(ServerMessage.heartbeat(id: requestId, tokens: tokens))
            case "subscribe":
                let roomToken = try message.string("roomToken")
                let limit = try Validate.limit(message.optionalInteger("limit").map { Int(clamping: $0) })
                hub.submit(.subscribe(outbox, roomToken: roomToken, limit: limit, requestId: requestId))
            case "unsubscribe":
                hub.submit(.unsubscribe(outbox, roomToken: try message.string("roomToken"), requestId: requestId))
            case "update":
                let sessionToken = try message.string("sessionToken")
                try await store.update(sessionToken: sessionToken, data: message.data())
                outbox.send(ServerMessage.reply(type: "updated", id: requestId))
            case "disconnect":
                try await store.disconnect(sessionToken: try message.string("sessionToken"))
                outbox.send(ServerMessage.reply(type: "disconnected", id: requestId))
            case let other:
                throw PresenceError.invalidArgument("unknown message type \"\(other.prefix(64))\"")
            }
        } catch let error as PresenceError {
            outbox.send(ServerMessage.error(id: requestId, error))
        } catch {
            logger.error("websocket message failed", metadata: ["error": "\(error)"])
            outbox.send(ServerMessage.error(id: requestId, .unavailable("the request could not be completed")))
        }
    }
}
