import HTTPTypes
import Hummingbird
import DequeModule
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import NIOWebSocket
import PresenceCore
import PresenceStore
import Synchronization

/// The presence WebSocket at `/api/ws`: who may open one (`admit`, before the 101), and the
/// handlers that run an open one (`open`, on its event loop, right after the 101).
struct WebSocketEndpoint: Sendable {
    static let path = "/api/ws"

    /// What the upgrade learned about its client.
    struct Admission: Sendable {
        let address: String
        let identity: Identity?
    }

    let operations: PresenceOperations
    let hub: FanoutHub
    let watchers: UserWatchHub
    let metrics: PresenceMetrics
    let configuration: PresenceServerConfiguration
    /// `configuration.allowedOrigins`, read once.
    let origins: CORSOrigins
    let addressLimits: AddressLimits
    let openSockets: OpenSockets
    let keepAliveWheels: KeepAliveWheels
    let logger: Logger

    var maxMessageBytes: Int { ProtocolLimits.maxBodyBytes }
    var clock: any WallClock { operations.store.clock }

    /// Whether this request may become a presence WebSocket; a refusal is answered with its error.
    func admit(_ head: HTTPRequestHead, channel: any Channel) async -> Result<Admission, PresenceError> {
        do throws(PresenceError) {
            let request: Request
            do {
                request = Request(head: try HTTPRequest(head, secure: false, splitCookie: false), body: .init(buffer: ByteBuffer()))
            } catch {
                throw .invalidArgument("the upgrade request is not valid HTTP")
            }
            guard request.uri.path == Self.path else { throw .notFound("no WebSocket at \(request.uri.path); it is at \(Self.path)") }
            try WebSocketHandshake.check(request.head, httpVersion: (head.version.major, head.version.minor))
            try WebSocketAdmission.checkOrigin(request, origins: origins)
            let address = configuration.trustedProxies.clientAddress(peer: channel.remoteAddress, headers: request.headers)
            guard addressLimits.allow(address, now: clock.nowMillis()) else {
                metrics.rateLimited.increment()
                throw .rateLimited("too many requests from this address; slow down")
            }
            // A token at the upgrade must be valid; without one a client may still send an `auth` message.
            var identity: Identity?
            if let token = WebSocketAdmission.token(request) {
                identity = try await operations.authenticateUser(token: token).identity
            }
            return .success(Admission(address: address, identity: identity))
        } catch {
            metrics.count(error)
            return .failure(error)
        }
    }

    /// Sets up an upgraded channel's handlers. Runs on the channel's event loop.
    func open(_ channel: any Channel, admission: Admission) throws {
        let pipeline = channel.pipeline.syncOperations
        let holdsSlot = addressLimits.openConnection(admission.address, now: clock.nowMillis())
        // Weak: the handler holds the reader, which holds the outbox, which holds this closure; a
        // strong reference would keep every closed socket's objects (and its channel) alive.
        let socketHandler = NIOLoopBound(WeakHandler(), eventLoop: channel.eventLoop)
        let outbox = Outbox(
            id: openSockets.nextId(), capacity: configuration.outboxCapacity, channel: channel, metrics: metrics,
            onEnding: { ending in
                channel.eventLoop.execute {
                    switch ending {
                    case .close(let code, let reason): socketHandler.value.handler?.close(code: code, reason: reason)
                    case .overflow: socketHandler.value.handler?.close(code: CloseCode.tryAgainLater, reason: "subscriber too slow")
                    }
                }
            })
        let reader = SocketReader(endpoint: self, outbox: outbox, identity: admission.identity, executor: EventLoopTaskExecutor(channel.eventLoop))
        let handler = PresenceSocketHandler(
            endpoint: self, reader: reader, address: admission.address, holdsSlot: holdsSlot, closeGrace: TimeAmount(configuration.closeGrace),
            keepAlive: WebSocketKeepAlive(metrics: metrics, wheel: keepAliveWheels.wheel(on: channel.eventLoop)))
        socketHandler.value.handler = handler
        // Counted before the handler is added: on a connection already gone, adding it ends it at once.
        openSockets.insert(outbox)
        if holdsSlot { metrics.sockets.increment() }
        do {
            try pipeline.addHandler(handler)
        } catch {
            closed(outbox, address: admission.address, heldSlot: holdsSlot)
            throw error
        }
        if !holdsSlot {
            metrics.connectionsRefused.increment()
            handler.close(code: CloseCode.policyViolation, reason: "too many connections from this address")
        }
    }

    /// What a socket does once it is gone: its subscriptions, watches and slot go with it.
    /// Closing a socket leaves the user's sessions alive until their deadline.
    func closed(_ outbox: Outbox, address: String, heldSlot: Bool) {
        outbox.finish()
        hub.submit(.removeSubscriber(outbox))
        watchers.submit(.removeWatcher(outbox))
        openSockets.remove(outbox)
        if heldSlot {
            metrics.sockets.decrement()
            addressLimits.closeConnection(address)
        }
    }
}

extension WebSocketHandshake {
    static let versionHeader = HTTPField.Name("Sec-WebSocket-Version")!

    /// Whether `request` asks for a WebSocket at all (`Upgrade: websocket`).
    static func isAsked(_ request: HTTPRequest) -> Bool {
        isAsked(upgrade: request.headerFields[values: .upgrade])
    }

    /// The headers an answer refusing a handshake carries besides its error: 426 names the
    /// version this server speaks (RFC 6455 §4.4).
    static func addRefusalHeaders(for refusal: PresenceError, to fields: inout HTTPFields) {
        fields[.connection] = "close"
        if refusal.status == 426 { fields[versionHeader] = "13" }
    }

    /// `check` of a request NIO read; a later request of a kept-alive connection, read as
    /// HTTP/1.1, says no version.
    static func check(_ request: HTTPRequest, httpVersion: (major: Int, minor: Int) = (1, 1)) throws(PresenceError) {
        try check(method: request.method.rawValue, httpVersion: httpVersion) { name in
            request.headerFields[values: HTTPField.Name(name)!]
        }
    }
}
