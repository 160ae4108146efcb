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
        let calls = HTTPCalls(
            operations: operations, addressLimits: addressLimits, trustedProxies: configuration.trustedProxies,
            origins: origins, serverName: serverName)
        HTTPRoutes(operations: operations, calls: calls, metrics: metrics).register(on: router)
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
                        // One idle timer: `RequestTimeoutHandler` closes a connection whose next head does
                        // not come within the idle timeout, so Hummingbird's own is not set.
                        http1: .init(
                            additionalChannelHandlers: [
                                RequestTimeoutHandler(requestTimeout: requestTimeout, idleTimeout: idleTimeout, metrics: metrics)
                            ],
                            idleTimeout: nil),
                        sockets: sockets, metrics: metrics,
                        calls: calls),
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
