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

/// One WebSocket: a reader that handles client messages and a writer that drains
/// the socket's outbox. Either ending ends the connection; closing the socket
/// leaves the user's sessions alive until their deadline.
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

    func run(
        inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, outbox: Outbox, channel: any Channel,
        identity: Identity?
    ) async {
        metrics.sockets.increment()
        defer { metrics.sockets.decrement() }
        enum Part { case writer, reader, watchdog }
        // Ends when the writer stops, so the 1013 close is never sent ahead of a frame still being written.
        let (writerStopped, writerStoppedContinuation) = AsyncStream<Void>.makeStream()
        await withTaskGroup(of: Part.self) { group in
            group.addTask {
                await writeOutbox(outbox, to: outbound)
                writerStoppedContinuation.finish()
                return .writer
            }
            group.addTask {
                await readMessages(inbound, outbox: outbox, identity: identity)
                return .reader
            }
            group.addTask {
                if await outbox.waitForOverflow() {
                    await dropSlowSubscriber(outbound: outbound, channel: channel, writerStopped: writerStopped)
                }
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
        watchers.submit(.removeWatcher(outbox))
    }

    /// Frames go to the channel directly (`Outbox.send`); this writes the close, if one is asked
    /// for, after them. Ends when the outbox ends or the close is written.
    private func writeOutbox(_ outbox: Outbox, to outbound: WebSocketOutboundWriter) async {
        for await close in outbox.closes {
            if outbox.overflowed { return }
            do {
                try await outbound.close(.init(codeNumber: Int(close.code)), reason: close.reason)
            } catch {
                logger.debug("websocket close failed", metadata: ["error": "\(error)"])
            }
            return
        }
    }

    /// Closes with 1013. A client too stuck to take the close frame, or to answer it, within the
    /// grace period has its connection cut, so it holds no server resources.
    private func dropSlowSubscriber(outbound: WebSocketOutboundWriter, channel: any Channel, writerStopped: AsyncStream<Void>) async {
        let closed = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                // The writer may be blocked on a frame the client has not read yet: the close goes after it.
                for await _ in writerStopped {}
                guard !Task.isCancelled else { return false }
                return (try? await outbound.close(.init(codeNumber: Int(CloseCode.tryAgainLater)), reason: "subscriber too slow")) != nil
            }
            group.addTask {
                try? await Task.sleep(for: configuration.closeGrace)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if closed {
            // Cancelled when the client answers the close in time.
            guard (try? await Task.sleep(for: configuration.closeGrace)) != nil else { return }
        }
        try? await channel.close()
    }

    private func readMessages(_ inbound: WebSocketInboundStream, outbox: Outbox, identity: Identity?) async {
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
                    outbox.close(code: CloseCode.policyViolation, reason: "too many messages")
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
