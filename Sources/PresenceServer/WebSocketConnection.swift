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

/// One WebSocket: a reader that handles client messages; replies and diffs go straight to the
/// channel through the socket's outbox. Closing the socket leaves the user's sessions alive
/// until their deadline.
struct WebSocketConnection {
    let operations: PresenceOperations
    let hub: FanoutHub
    let watchers: UserWatchHub
    let metrics: PresenceMetrics
    let configuration: PresenceServerConfiguration
    let addressLimits: AddressLimits
    let address: String
    let logger: Logger

    private var clock: any WallClock { operations.store.clock }

    /// Reads and answers the client's messages until the socket closes, in the connection's own
    /// task: one task per socket, whose frames are most of what an idle socket costs.
    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, outbox: Outbox, identity: Identity?) async {
        metrics.sockets.increment()
        defer { metrics.sockets.decrement() }
        await readMessages(inbound, outbound: outbound, outbox: outbox, identity: identity)
        hub.submit(.removeSubscriber(outbox))
        watchers.submit(.removeWatcher(outbox))
    }

    /// What the socket's outbox calls when it ends from outside the reader. The close frame goes
    /// after every frame already handed to the channel (both go through the channel's event
    /// loop in order). A client too stuck to take the close frame, or to answer it, within the
    /// grace period has its connection cut, so it holds no server resources: a NIO timer, free
    /// until it fires.
    func onEnding(outbound: WebSocketOutboundWriter, channel: any Channel) -> @Sendable (Outbox.Ending) -> Void {
        let closeGrace = TimeAmount(configuration.closeGrace)
        let logger = logger
        return { ending in
            let (code, reason) = switch ending {
            case .close(let code, let reason): (code, reason)
            case .overflow: (CloseCode.tryAgainLater, "subscriber too slow")
            }
            channel.eventLoop.scheduleTask(in: closeGrace) { channel.close(promise: nil) }
            Task {
                do {
                    try await outbound.close(.init(codeNumber: Int(code)), reason: reason)
                } catch {
                    logger.debug("websocket close failed", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    private func readMessages(_ inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, outbox: Outbox, identity: Identity?) async {
        defer { outbox.finish() }
        var limiter = RateLimiter(
            rate: configuration.socketMessagesPerSecond, burst: configuration.socketMessageBurst, now: clock.nowMillis())
        var identity = identity
        do {
            for try await message in inbound.messages(maxSize: ProtocolLimits.maxBodyBytes) {
                let now = clock.nowMillis()
                guard limiter.allow(now: now), addressLimits.allow(address, now: now) else {
                    metrics.floodingSocketsClosed.increment()
                    metrics.rateLimited.increment()
                    // Here, not through the outbox: the close must go before the one the WebSocket layer
                    // sends when this reader returns.
                    guard outbox.finish() else { return }
                    try? await outbound.close(.init(codeNumber: Int(CloseCode.policyViolation)), reason: "too many messages")
                    return
                }
                guard case .text(let text) = message else {
                    outbox.send(ServerFrame.error(id: nil, .invalidArgument("messages must be JSON text frames")))
                    continue
                }
                await handle(text, outbox: outbox, identity: &identity)
            }
        } catch {
            // Oversized messages and protocol errors are closed by the WebSocket layer with their own code.
            logger.debug("websocket read ended", metadata: ["error": "\(error)"])
        }
    }

    /// A codec from a message to `PresenceOperations` and its reply into the outbox.
    private func handle(_ text: String, outbox: Outbox, identity: inout Identity?) async {
        var requestId: JSONValue?
        do throws(PresenceError) {
            let request: SocketRequest
            do {
                request = try SocketRequest.decode(text.utf8)
            } catch {
                requestId = error.id
                throw error.error
            }
            requestId = request.id
            switch request.kind {
            case .auth(let token):
                let caller = try await operations.authenticateUser(token: token)
                identity = caller.identity
                outbox.send(ServerFrame.reply(type: "authenticated", id: requestId) { $0.field("userId", caller.identity?.userId) })
            case .heartbeat(let heartbeat):
                let caller = try await operations.authenticateSocket(identity: identity)
                let tokens = try await operations.heartbeat(heartbeat, by: caller)
                outbox.send(ServerFrame.heartbeat(id: requestId, tokens: tokens))
            case .subscribe(let list):
                let caller = try await operations.authenticateSocket(identity: identity)
                try await operations.authorizeSubscription(list, by: caller)
                hub.submit(.subscribe(outbox, roomToken: list.roomToken, limit: list.limit, requestId: requestId))
            case .unsubscribe(let roomToken):
                hub.submit(.unsubscribe(outbox, roomToken: roomToken, requestId: requestId))
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
                watchers.submit(.watch(outbox, userIds: watch.userIds, requestId: requestId))
            case .unwatchUsers(let unwatch):
                watchers.submit(.unwatch(outbox, userIds: unwatch.userIds, requestId: requestId))
            }
        } catch {
            metrics.count(error)
            outbox.send(ServerFrame.error(id: requestId, error))
        }
    }
}
