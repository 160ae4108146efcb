import Logging
import PresenceCore

/// Everything that shapes a running server; every field has a default.
///
/// ```swift
/// var configuration = PresenceServerConfiguration()
/// configuration.port = 0            // any free port
/// configuration.adminKey = "secret"
/// ```
public struct PresenceServerConfiguration: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 8080
    /// Bearer key for the maintenance calls; `nil` means no admin call is allowed.
    public var adminKey: String?
    /// Origins allowed by CORS and by the WebSocket `Origin` check; `["*"]` allows any.
    /// Empty allows only same-origin pages (and clients that send no `Origin`, which are not browsers).
    public var allowedOrigins: [String] = []
    /// Frames queued for one subscriber before it counts as too slow and is closed with 1013.
    public var outboxCapacity: Int = 512
    /// How long a client gets to take a close frame from the server and answer it before its
    /// connection is cut: a subscriber dropped for slowness, every socket at shutdown, any other close.
    public var closeGrace: Duration = .seconds(5)
    /// Messages one socket may send per second (sustained) before it is closed with 1008.
    public var socketMessagesPerSecond: Double = 50
    /// Messages one socket may send in a burst above the sustained rate.
    public var socketMessageBurst: Double = 200
    /// How many expired sessions one expiry step handles before yielding.
    public var expiryBatchSize: Int = 1_000
    /// Listen backlog for the server socket.
    public var backlog: Int = 4_096
    /// Forget users who have been offline longer than this (and rooms left empty); nil keeps them forever.
    public var retention: Duration?
    /// Events older than this are forgotten (PROTOCOL.md's default: 7 days).
    public var eventRetention: Duration = .seconds(7 * 86_400)
    /// Receivers of every event (Standard Webhooks). With a store shared by several processes,
    /// configure every process alike: one of them delivers at a time.
    public var webhooks: [WebhookEndpoint] = []
    public var webhookTimings = WebhookTimings()
    /// How often the retention sweeps (users and events) run.
    public var retentionSweepInterval: Duration = .seconds(3_600)
    /// Who may do what: `OpenAuthorizer` (no user authentication), `JWTAuthorizer`, or your own.
    public var authorizer: any PresenceAuthorizer = OpenAuthorizer()
    /// HTTP requests plus WebSocket messages one client address may send per second (sustained).
    public var addressRequestsPerSecond: Double = 200
    /// …and in a burst above that.
    public var addressRequestBurst: Double = 400
    /// Open WebSocket connections from one client address.
    public var connectionsPerAddress: Int = 100
    /// Open TCP connections (any, WebSocket or not) from one peer address that is not a trusted
    /// proxy: each holds a file descriptor, and one address must not take them all. Above the
    /// WebSocket limit, so a client at that limit can still make its HTTP calls.
    public var tcpConnectionsPerAddress: Int = 256
    /// Proxies whose forwarding header (and which one: `TrustedProxies.Header`) names the client
    /// address the limits count.
    public var trustedProxies: TrustedProxies = .none
    /// Rooms one socket may subscribe to at once.
    public var subscriptionsPerSocket: Int = 100
    /// Changes to a room within its window of its last diff are merged into its next diff, sent
    /// when the window ends; a change after a quiet spell goes out at once. The window is 25 µs
    /// per subscriber of the room, at most 250 ms: at most 40,000 frames per second per room.
    /// `.off` sends one diff per change.
    public var diffMerging = DiffMerging(maximum: .milliseconds(250), perSubscriber: .microseconds(25))
    /// How long a client may take to send a request's head (counted from connecting, for the
    /// first request), and then its body, before it is cut off.
    public var requestTimeout: Duration = .seconds(30)
    /// How long a keep-alive connection may sit idle between requests.
    public var idleTimeout: Duration = .seconds(75)
    /// A WebSocket peer silent this long is pinged, and one silent as long again after the ping
    /// is cut off: dead peers go within twice this. Peers that send anything (heartbeats, pongs)
    /// more often are never pinged. Under the 60 s read timeout proxies such as nginx default to.
    public var webSocketPingAfter: Duration = .seconds(30)

    public init() {}
}
