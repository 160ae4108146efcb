import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// Builds the presence server as a Hummingbird application: the HTTP API, the
/// WebSocket endpoint, the fan-out hub and the store's expiry loop, wired once
/// so that `main` and the tests run the same thing.
///
/// ```swift
/// let app = PresenceApplication.make(configuration: .init(), store: MemoryStore())
/// try await app.runService()
/// ```
public enum PresenceApplication {
    /// The `Server` header of every answer.
    static let serverName = "presence-server"

    public static func make(
        configuration: PresenceServerConfiguration,
        store: any PresenceStore,
        metrics: PresenceMetrics = PresenceMetrics(),
        logger: Logger = Logger(label: "presence"),
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let hub = FanoutHub(
            store: store, metrics: metrics, logger: logger, subscriptionsPerSocket: configuration.subscriptionsPerSocket,
            merging: configuration.diffMerging)
        let watchers = UserWatchHub(store: store, logger: logger)
        let expiry = ExpiryService(
            loop: ExpiryLoop(
                store: store, batchSize: configuration.expiryBatchSize, logger: logger,
                onExpired: { metrics.expiries.increment(by: $0) }))
        let addressLimits = AddressLimits(
            rate: configuration.addressRequestsPerSecond, burst: configuration.addressRequestBurst,
            maxConnections: configuration.connectionsPerAddress)

        let router = Router(context: PresenceRequestContext.self)
        router.middlewares.add(ErrorMiddleware(logger: logger, metrics: metrics))
        router.middlewares.add(AddressRateLimitMiddleware(
            limits: addressLimits, trustedProxies: configuration.trustedProxies, clock: store.clock, metrics: metrics))
        let origins = CORSOrigins(allowed: configuration.allowedOrigins)
        if !configuration.allowedOrigins.isEmpty {
            router.middlewares.add(CORSOriginsMiddleware(origins: origins))
        }
        let webhooks = WebhookRegistry(endpoints: configuration.webhooks, clock: store.clock)
        let operations = PresenceOperations(
            store: store, authorizer: configuration.authorizer, adminKey: configuration.adminKey, metrics: metrics, logger: logger,
            webhooks: webhooks)
        HTTPRoutes(operations: operations, metrics: metrics).register(on: router)
        WebAssets.load().register(on: router)

        let openSockets = OpenSockets()
        let sockets = WebSocketEndpoint(
            operations: operations, hub: hub, watchers: watchers, metrics: metrics, configuration: configuration, origins: origins,
            addressLimits: addressLimits, openSockets: openSockets,
            keepAliveWheels: KeepAliveWheels(interval: TimeAmount(configuration.webSocketPingAfter)), logger: logger)
        let connections = ConnectionsPerAddress(
            maximum: configuration.tcpConnectionsPerAddress, trustedProxies: configuration.trustedProxies)
        let requestTimeout = TimeAmount(configuration.requestTimeout)
        let idleTimeout = TimeAmount(configuration.idleTimeout)
        return Application(
            router: router,
            server: HTTPServerBuilder { responder in
                GuardedChannel(
                    inner: PresenceChannel(
                        responder: responder,
                        http1: .init(
                            additionalChannelHandlers: [
                                RequestTimeoutHandler(requestTimeout: requestTimeout, idleTimeout: idleTimeout, metrics: metrics)
                            ],
                            idleTimeout: idleTimeout),
                        sockets: sockets, metrics: metrics,
                        heartbeatsAtOnce: HTTPHeartbeatAtOnce(
                            operations: operations, addressLimits: addressLimits, trustedProxies: configuration.trustedProxies,
                            origins: origins, serverName: serverName)),
                    timeout: requestTimeout, connections: connections, metrics: metrics)
            },
            configuration: .init(
                address: .hostname(configuration.host, port: configuration.port),
                serverName: serverName,
                backlog: configuration.backlog),
            // A service group stops its services last to first, after the server stops taking connections.
            services: [
                StoreService(store: store), hub, watchers, OutageService(store: store, sockets: openSockets, logger: logger),
                RetentionService(
                    store: store, userRetention: configuration.retention, eventRetention: configuration.eventRetention,
                    interval: configuration.retentionSweepInterval, logger: logger),
                WebhookService(registry: webhooks, store: store, timings: configuration.webhookTimings, logger: logger),
                // Says goodbye to every socket and waits up to the close grace for them.
                SocketShutdownService(sockets: openSockets, closeGrace: configuration.closeGrace),
                // Last, so it stops first: the server no longer takes heartbeats, and must not expire
                // sessions for the time it refuses them itself (the socket drain takes up to the close
                // grace, a session's timeout can be 2.5 s). The next start grants them a grace period.
                expiry,
            ],
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
            logger: logger)
    }
}

/// What a WebSocket upgrade must pass: an allowed `Origin`, and where its token comes from.
enum WebSocketAdmission {
    /// See `CORSOrigins.mayOpenWebSocket`.
    static func checkOrigin(_ request: Request, origins: CORSOrigins) throws(PresenceError) {
        let origin = request.headers[.origin]
        guard origins.mayOpenWebSocket(origin: origin, host: request.head.authority) else {
            throw .permissionDenied("origin \(origin ?? "") may not open a WebSocket here")
        }
    }

    /// The user token: `Authorization: Bearer …`, or `access_token` in the query (browsers cannot
    /// set headers on a WebSocket).
    static func token(_ request: Request) -> String? {
        request.bearerToken ?? request.uri.queryParameters.get("access_token")
    }
}

/// The request context of every route: Hummingbird's, plus the connection's channel, whose
/// peer address the per-address limits count.
public struct PresenceRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// The store's own upkeep as a service; it starts first and stops last.
struct StoreService: Service {
    let store: any PresenceStore

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await store.run()
        }
    }
}

/// The outboxes of the open WebSockets, so all of them can be closed at once.
final class OpenSockets: Sendable {
    private let outboxes = Mutex<[Int: Outbox]>([:])
    private let lastId = Atomic<Int>(0)

    func nextId() -> Int { lastId.wrappingAdd(1, ordering: .relaxed).newValue }

    func insert(_ outbox: Outbox) { outboxes.withLock { $0[outbox.id] = outbox } }
    func remove(_ outbox: Outbox) { _ = outboxes.withLock { $0.removeValue(forKey: outbox.id) } }
    var all: [Outbox] { outboxes.withLock { Array($0.values) } }
    var isEmpty: Bool { outboxes.withLock { $0.isEmpty } }
}

/// Says goodbye (1000) to every open WebSocket when the server stops, and waits until they have
/// closed, at most the close grace, after which their handlers have cut them anyway. Sockets have
/// no task of their own for the server to wait for.
struct SocketShutdownService: Service {
    let sockets: OpenSockets
    let closeGrace: Duration

    func run() async throws {
        try? await gracefulShutdown()
        for outbox in sockets.all { outbox.close(code: CloseCode.normal, reason: "the server is shutting down") }
        let deadline = ContinuousClock.now + closeGrace + .seconds(1)
        // Only while shutting down, so a poll costs nothing that matters.
        while !sockets.isEmpty, ContinuousClock.now < deadline {
            // Cancelled (not a graceful stop): the process is going anyway, and a cancelled sleep returns at once.
            guard (try? await Task.sleep(for: .milliseconds(20))) != nil else { return }
        }
    }
}

/// When the store stops serving (cut off from its database), every socket is closed with 1013:
/// a subscriber must not keep showing a list that no longer changes, and its client reconnects,
/// through a load balancer perhaps to a process that still serves.
struct OutageService: Service {
    let store: any PresenceStore
    let sockets: OpenSockets
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            for await _ in store.outages() {
                let outboxes = sockets.all
                logger.warning("the store is unavailable: closing every WebSocket with 1013", metadata: ["sockets": "\(outboxes.count)"])
                for outbox in outboxes { outbox.close(code: CloseCode.tryAgainLater, reason: "the store is unavailable") }
            }
        }
        // A store that never stops serving ends the stream at once; a service that returned would end the server.
        try? await gracefulShutdown()
    }
}

/// Forgets long-offline users (when a user retention is set) and old events on a schedule, in
/// batches, so offline records, their data and the event log do not pile up forever.
struct RetentionService: Service {
    let store: any PresenceStore
    let userRetention: Duration?
    let eventRetention: Duration
    let interval: Duration
    let logger: Logger

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            let clock = store.clock
            while !Task.isCancelled {
                // A shutdown while sleeping is no failure of the service.
                guard (try? await clock.sleep(untilMillis: clock.nowMillis() + interval.milliseconds)) != nil else { return }
                do {
                    let forgotten = try await store.forgetEvents(before: clock.nowMillis() - eventRetention.milliseconds)
                    if forgotten > 0 { logger.info("retention forgot old events", metadata: ["count": "\(forgotten)"]) }
                } catch {
                    logger.warning("could not forget old events", metadata: ["error": "\(error)"])
                }
                guard let retention = userRetention else { continue }
                let cutoff = clock.nowMillis() - retention.milliseconds
                var total = 0
                while true {
                    let forgotten = try await store.forgetOfflineUsers(before: cutoff, limit: 1_000)
                    total += forgotten
                    if forgotten < 1_000 { break }
                    await Task.yield()
                }
                if total > 0 { logger.info("retention forgot offline users", metadata: ["count": "\(total)"]) }
            }
        }
    }
}

/// The store's expiry loop as a service that stops with the server.
struct ExpiryService: Service {
    let loop: ExpiryLoop

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await loop.run()
        }
    }
}
