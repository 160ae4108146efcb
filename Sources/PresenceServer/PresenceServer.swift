import Hummingbird
import HummingbirdWebSocket
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
/// let app = PresenceServer.makeApplication(configuration: .init(), store: MemoryStore())
/// try await app.runService()
/// ```
public enum PresenceServer {
    public static func makeApplication(
        configuration: PresenceServerConfiguration,
        store: any PresenceStore,
        metrics: PresenceMetrics = PresenceMetrics(),
        logger: Logger = Logger(label: "presence"),
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let hub = FanoutHub(store: store, metrics: metrics, logger: logger)
        let expiry = ExpiryService(loop: ExpiryLoop(
                store: store, batchSize: configuration.expiryBatchSize, logger: logger,
                onExpired: { metrics.expiries.increment(by: $0) }))

        let router = Router(context: PresenceRequestContext.self)
        router.middlewares.add(ErrorMiddleware(logger: logger))
        if !configuration.allowedOrigins.isEmpty {
            router.middlewares.add(CORSOriginsMiddleware(allowedOrigins: configuration.allowedOrigins))
        }
        HTTPRoutes(store: store, metrics: metrics, configuration: configuration).register(on: router)
        WebAssets.load().register(on: router)

        let connectionIds = Atomic<Int>(0)
        let webSocketRouter = Router(context: PresenceRequestContext.self)
        webSocketRouter.ws("/api/ws") { inbound, outbound, context in
            let id = connectionIds.wrappingAdd(1, ordering: .relaxed).newValue
            let outbox = Outbox(id: id, capacity: configuration.outboxCapacity)
            let connection = WebSocketConnection(
                store: store, hub: hub, metrics: metrics, configuration: configuration, logger: context.logger)
            await connection.run(
                inbound: inbound, outbound: outbound, outbox: outbox, channel: context.requestContext.channel)
        }

        return Application(
            router: router,
            server: .http1WebSocketUpgrade(
                webSocketRouter: webSocketRouter,
                configuration: .init(
                    http1: .init(idleTimeout: .seconds(75)),
                    ws: .init(maxFrameSize: Limits.maxBodyBytes, autoPing: .enabled(timePeriod: .seconds(30))))),
            configuration: .init(
                address: .hostname(configuration.host, port: configuration.port),
                serverName: "presence-server",
                backlog: configuration.backlog),
            services: [StoreService(store: store), hub, expiry],
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
            logger: logger)
    }
}

/// The request context of every route: Hummingbird's, plus the connection's channel,
/// which the WebSocket handler needs to cut off a client too stuck to be closed politely.
public struct PresenceRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<Self>
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
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

/// The store's expiry loop as a service that stops with the server.
struct ExpiryService: Service {
    let loop: ExpiryLoop

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await loop.run()
        }
    }
}
