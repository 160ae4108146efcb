import ArgumentParser
import Foundation
import Hummingbird
import Logging
import PresencePostgres
import PresenceServer
import PresenceSQLite
import PresenceStore

@main
struct PresenceServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "presence-server",
        abstract: "Real-time presence: who is in a room, and when those who left were last seen.",
        discussion: """
            Every option can also be set with an environment variable (shown in brackets); \
            a command-line flag wins over the environment.
            """)

    @Option(help: "Address to listen on [PRESENCE_HOST]. Default 127.0.0.1.")
    var host: String?

    @Option(help: "Port to listen on, 0 for any free port [PRESENCE_PORT]. Default 8080.")
    var port: Int?

    @Option(help: "Storage: sqlite (durable, in --data-dir), postgres (shared by several servers, at --postgres-url) or memory (gone on restart) [PRESENCE_STORE]. Default sqlite.")
    var store: String?

    @Option(help: "postgres://user:password@host:5432/database[?sslmode=disable|prefer|require] for --store postgres [PRESENCE_POSTGRES_URL].")
    var postgresUrl: String?

    @Option(help: "A URL for the connection that LISTENs, when --postgres-url goes through PgBouncer in transaction mode [PRESENCE_POSTGRES_LISTEN_URL]. Default: --postgres-url.")
    var postgresListenUrl: String?

    @Option(help: "Seconds a server may stay silent before another takes over expiry; a server cut off from PostgreSQL stops serving after two thirds of it [PRESENCE_POSTGRES_LEASE]. Default 6.")
    var postgresLease: Double?

    @Option(help: "Folder of the sqlite store's presence.sqlite [PRESENCE_DATA_DIR]. Default ./presence-data.")
    var dataDir: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical [PRESENCE_LOG_LEVEL]. Default info.")
    var logLevel: String?

    @Option(help: "Bearer key for the admin calls [PRESENCE_ADMIN_KEY]. Default: a random key, printed once at start.")
    var adminKey: String?

    @Option(name: .customLong("cors-origin"), help: "An origin allowed by CORS and to open WebSockets, repeatable; * allows any [PRESENCE_CORS_ORIGINS, comma-separated].")
    var corsOrigins: [String] = []

    @Option(help: "User authentication: none or jwt [PRESENCE_AUTH]. Default none.")
    var auth: String?

    @Option(help: "HS256 secret for jwt, at least 32 bytes [PRESENCE_JWT_SECRET].")
    var jwtSecret: String?

    @Option(name: .customLong("jwt-public-key"), help: "A PEM file with an RS256 or ES256 public key, repeatable [PRESENCE_JWT_PUBLIC_KEYS, comma-separated].")
    var jwtPublicKeys: [String] = []

    @Option(help: "A JWKS file with the verification keys [PRESENCE_JWT_JWKS].")
    var jwtJwks: String?

    @Option(help: "Required iss claim [PRESENCE_JWT_ISSUER].")
    var jwtIssuer: String?

    @Option(help: "Required aud claim [PRESENCE_JWT_AUDIENCE].")
    var jwtAudience: String?

    @Option(help: "Requests + WebSocket messages per second per client address [PRESENCE_RATE_LIMIT]. Default 200.")
    var rateLimit: Double?

    @Option(name: .customLong("trusted-proxy"), help: "A load balancer's address or CIDR range whose forwarding header (--forwarded-header) names the client for the per-address limits, repeatable [PRESENCE_TRUSTED_PROXIES, comma-separated]. Default: none; the headers are ignored.")
    var trustedProxies: [String] = []

    @Option(help: "The header the trusted proxies write the client's address into: x-forwarded-for or forwarded; the other is never read [PRESENCE_FORWARDED_HEADER]. Default x-forwarded-for.")
    var forwardedHeader: String?

    @Option(help: "Open WebSockets per client address [PRESENCE_MAX_CONNECTIONS_PER_ADDRESS]. Default 100.")
    var maxConnectionsPerAddress: Int?

    @Option(help: "Open TCP connections per peer address that is not a trusted proxy [PRESENCE_MAX_TCP_CONNECTIONS_PER_ADDRESS]. Default 256.")
    var maxTcpConnectionsPerAddress: Int?

    @Option(help: "WebSocket messages per second per socket [PRESENCE_SOCKET_RATE_LIMIT]. Default 50.")
    var socketRateLimit: Double?

    @Option(help: "Rooms one socket may subscribe to [PRESENCE_MAX_SUBSCRIPTIONS_PER_SOCKET]. Default 100.")
    var maxSubscriptionsPerSocket: Int?

    @Option(name: .customLong("diff-merge-ms"), help: "The longest a busy room's changes wait to be merged into one diff, at most 250; 0 sends every change at once [PRESENCE_DIFF_MERGE_MS]. Default 250.")
    var diffMergeMilliseconds: Int?

    @Option(name: .customLong("diff-merge-us-per-subscriber"), help: "A room's merge window per subscriber, in microseconds: the window is this times the room's subscribers, at most --diff-merge-ms [PRESENCE_DIFF_MERGE_US_PER_SUBSCRIBER]. Default 25.")
    var diffMergeMicrosecondsPerSubscriber: Int?

    @Option(name: .customLong("ws-ping-seconds"), help: "Ping a WebSocket peer silent this long, and close it if it stays silent as long again; keep it under your proxy's read timeout [PRESENCE_WS_PING_SECONDS]. Default 30.")
    var webSocketPingSeconds: Double?

    @Option(help: "Live sessions per user [PRESENCE_MAX_SESSIONS_PER_USER]. Default 100.")
    var maxSessionsPerUser: Int?

    @Option(help: "Rooms a user may be online in at once [PRESENCE_MAX_ROOMS_PER_USER]. Default 100.")
    var maxRoomsPerUser: Int?

    @Option(help: "Forget users offline for longer than this many days [PRESENCE_RETENTION_DAYS]. Default: keep forever.")
    var retentionDays: Double?

    @Option(help: "Keep presence events (GET /api/events, webhooks) this many days [PRESENCE_EVENT_RETENTION_DAYS]. Default 7.")
    var eventRetentionDays: Double?

    @Option(name: .customLong("webhook"), help: "A receiver of every presence event as URL,SECRET (the secret as whsec_ + base64), repeatable [PRESENCE_WEBHOOKS, space-separated].")
    var webhooks: [String] = []

    @Option(help: "A JSON file of webhook endpoints: [{\"url\", \"secret\", \"flapSuppressionSeconds\"?, \"giveUpHours\"?}] [PRESENCE_WEBHOOKS_FILE].")
    var webhooksFile: String?

    @Option(help: "Hours a failing webhook endpoint is retried before it is marked failed [PRESENCE_WEBHOOK_GIVE_UP_HOURS]. Default 24.")
    var webhookGiveUpHours: Double?

    @Option(help: "Seconds within which a leave followed by a join of the same user is sent as neither [PRESENCE_WEBHOOK_FLAP_SECONDS]. Default 0 (off).")
    var webhookFlapSeconds: Double?

    func run() async throws {
        // A file-size limit (ulimit -f) must fail the write, which the store answers with 503,
        // not kill the server with every acknowledged change still safe on disk.
        signal(SIGXFSZ, SIG_IGN)
        let environment = ProcessInfo.processInfo.environment
        func setting(_ flag: String?, _ variable: String) -> String? {
            if let flag { return flag }
            guard let value = environment[variable], !value.isEmpty else { return nil }
            return value
        }

        let levelName = setting(logLevel, "PRESENCE_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelName.lowercased()) else {
            throw ValidationError("unknown log level \(levelName)")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "presence")

        var configuration = PresenceServerConfiguration()
        configuration.host = setting(host, "PRESENCE_HOST") ?? configuration.host
        if let portText = setting(port.map(String.init), "PRESENCE_PORT") {
            guard let value = Int(portText), (0...65_535).contains(value) else {
                throw ValidationError("port must be a number from 0 to 65535, got \(portText)")
            }
            configuration.port = value
        }
        /// A repeatable flag, or else its comma-separated environment variable.
        func list(_ flags: [String], _ variable: String) -> [String] {
            let values = flags.isEmpty
                ? (environment[variable] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                : flags
            return values.filter { !$0.isEmpty }
        }
        configuration.allowedOrigins = list(corsOrigins, "PRESENCE_CORS_ORIGINS")
        do {
            let headerName = setting(forwardedHeader, "PRESENCE_FORWARDED_HEADER") ?? TrustedProxies.Header.xForwardedFor.rawValue
            guard let header = TrustedProxies.Header(rawValue: headerName.lowercased()) else {
                throw ValidationError("--forwarded-header must be x-forwarded-for or forwarded, got \(headerName)")
            }
            configuration.trustedProxies = try TrustedProxies(list(trustedProxies, "PRESENCE_TRUSTED_PROXIES"), header: header)
        } catch let error as PresenceError {
            throw ValidationError("--trusted-proxy: \(error.message)")
        }

        func number<T: LosslessStringConvertible & Comparable>(_ flag: T?, _ variable: String, minimum: T) throws -> T? {
            guard let text = setting(flag.map { "\($0)" }, variable) else { return nil }
            guard let value = T(text), value >= minimum else {
                throw ValidationError("\(variable.lowercased()) must be a number of at least \(minimum), got \(text)")
            }
            return value
        }
        if let rate = try number(rateLimit, "PRESENCE_RATE_LIMIT", minimum: 1.0) {
            configuration.addressRequestsPerSecond = rate
            configuration.addressRequestBurst = rate * 2
        }
        if let rate = try number(socketRateLimit, "PRESENCE_SOCKET_RATE_LIMIT", minimum: 1.0) {
            configuration.socketMessagesPerSecond = rate
            configuration.socketMessageBurst = rate * 4
        }
        configuration.connectionsPerAddress =
            try number(maxConnectionsPerAddress, "PRESENCE_MAX_CONNECTIONS_PER_ADDRESS", minimum: 1) ?? configuration.connectionsPerAddress
        configuration.tcpConnectionsPerAddress =
            try number(maxTcpConnectionsPerAddress, "PRESENCE_MAX_TCP_CONNECTIONS_PER_ADDRESS", minimum: 1)
            ?? max(configuration.tcpConnectionsPerAddress, configuration.connectionsPerAddress + 16)
        configuration.subscriptionsPerSocket =
            try number(maxSubscriptionsPerSocket, "PRESENCE_MAX_SUBSCRIPTIONS_PER_SOCKET", minimum: 1) ?? configuration.subscriptionsPerSocket
        if let window = try number(diffMergeMilliseconds, "PRESENCE_DIFF_MERGE_MS", minimum: 0) {
            guard window <= 250 else { throw ValidationError("presence_diff_merge_ms must be at most 250, got \(window)") }
            configuration.diffMerging.maximum = .milliseconds(window)
        }
        if let perSubscriber = try number(diffMergeMicrosecondsPerSubscriber, "PRESENCE_DIFF_MERGE_US_PER_SUBSCRIBER", minimum: 0) {
            configuration.diffMerging.perSubscriber = .microseconds(perSubscriber)
        }
        if let seconds = try number(webSocketPingSeconds, "PRESENCE_WS_PING_SECONDS", minimum: 1.0) {
            configuration.webSocketPingAfter = .milliseconds(Int64(seconds * 1_000))
        }
        if let days = try number(retentionDays, "PRESENCE_RETENTION_DAYS", minimum: 0.001) {
            configuration.retention = .seconds(days * 86_400)
        }
        if let days = try number(eventRetentionDays, "PRESENCE_EVENT_RETENTION_DAYS", minimum: 0.0001) {
            configuration.eventRetention = .milliseconds(Int64(days * 86_400_000))
        }
        let giveUpAfter = try number(webhookGiveUpHours, "PRESENCE_WEBHOOK_GIVE_UP_HOURS", minimum: 0.0001)
            .map { Duration.milliseconds(Int64($0 * 3_600_000)) } ?? .seconds(86_400)
        let flapWindow = try number(webhookFlapSeconds, "PRESENCE_WEBHOOK_FLAP_SECONDS", minimum: 0.0)
            .map { Duration.milliseconds(Int64($0 * 1_000)) }
        do {
            let flags = webhooks.isEmpty
                ? (environment["PRESENCE_WEBHOOKS"] ?? "").split(separator: " ").map(String.init).filter { !$0.isEmpty } : webhooks
            configuration.webhooks = try flags.map { flag throws(PresenceError) in
                try WebhookEndpoint(flag: flag, flapWindow: flapWindow, giveUpAfter: giveUpAfter)
            }
            if let path = setting(webhooksFile, "PRESENCE_WEBHOOKS_FILE") {
                guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
                    throw ValidationError("cannot read the webhooks file \(path)")
                }
                configuration.webhooks += try WebhookEndpoint.list(fileContents: contents, flapWindow: flapWindow, giveUpAfter: giveUpAfter)
            }
        } catch let error as PresenceError {
            throw ValidationError(error.message)
        }
        var userQuotas = PresenceState.UserQuotas()
        userQuotas.sessionsPerUser = try number(maxSessionsPerUser, "PRESENCE_MAX_SESSIONS_PER_USER", minimum: 1) ?? userQuotas.sessionsPerUser
        userQuotas.roomsPerUser = try number(maxRoomsPerUser, "PRESENCE_MAX_ROOMS_PER_USER", minimum: 1) ?? userQuotas.roomsPerUser

        switch setting(auth, "PRESENCE_AUTH") ?? "none" {
        case "none":
            configuration.authorizer = OpenAuthorizer()
        case "jwt":
            var jwt = JWTAuthorizer.Configuration()
            jwt.hmacSecret = setting(jwtSecret, "PRESENCE_JWT_SECRET")
            jwt.publicKeysPEM = try list(jwtPublicKeys, "PRESENCE_JWT_PUBLIC_KEYS").map { path in
                do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
                    throw ValidationError("cannot read the JWT public key \(path)")
                }
            }
            if let path = setting(jwtJwks, "PRESENCE_JWT_JWKS") {
                do { jwt.jwks = try String(contentsOfFile: path, encoding: .utf8) } catch {
                    throw ValidationError("cannot read the JWKS file \(path)")
                }
            }
            jwt.issuer = setting(jwtIssuer, "PRESENCE_JWT_ISSUER")
            jwt.audience = setting(jwtAudience, "PRESENCE_JWT_AUDIENCE")
            do {
                configuration.authorizer = try await JWTAuthorizer(configuration: jwt)
            } catch let error as PresenceError {
                throw ValidationError(error.message)
            }
        case let other:
            throw ValidationError("unknown auth mode \(other); choose none or jwt")
        }

        let generatedKey = setting(adminKey, "PRESENCE_ADMIN_KEY") == nil
        let key = setting(adminKey, "PRESENCE_ADMIN_KEY") ?? Tokens.make(prefix: "admin_")
        configuration.adminKey = key

        var storeName = setting(store, "PRESENCE_STORE") ?? "sqlite"
        let presenceStore: any PresenceStore
        switch storeName {
        case "memory":
            presenceStore = MemoryStore(quotas: userQuotas)
        case "sqlite":
            let directory = setting(dataDir, "PRESENCE_DATA_DIR") ?? "./presence-data"
            presenceStore = try SQLiteStore(directory: directory, quotas: userQuotas, logger: logger)
            storeName = "sqlite, \((directory as NSString).standardizingPath)/\(SQLiteStore.fileName)"
        case "postgres":
            guard let url = setting(postgresUrl, "PRESENCE_POSTGRES_URL") else {
                throw ValidationError("--store postgres needs --postgres-url (or PRESENCE_POSTGRES_URL)")
            }
            var settings = try PostgresSettings(url: url, listenURL: setting(postgresListenUrl, "PRESENCE_POSTGRES_LISTEN_URL"))
            if let leaseText = setting(postgresLease.map { String($0) }, "PRESENCE_POSTGRES_LEASE") {
                guard let seconds = Double(leaseText), seconds >= 0.3, seconds <= 600 else {
                    throw ValidationError("--postgres-lease must be a number of seconds from 0.3 to 600")
                }
                settings.useLease(.milliseconds(Int64(seconds * 1_000)))
            }
            presenceStore = try await PostgresStore.open(settings: settings, quotas: userQuotas, logger: logger)
            storeName = "postgres, \(settings.displayName)"
        default:
            throw ValidationError("unknown store \(storeName); choose sqlite, postgres or memory")
        }

        let host = configuration.host
        let storeDescription = storeName
        let webhookNames = configuration.webhooks.map(\.name)
        let app = PresenceApplication.make(
            configuration: configuration, store: presenceStore, logger: logger,
            onServerRunning: { port in
                var lines = ["presence-server listening on http://\(host):\(port) (store: \(storeDescription))"]
                // Names, not URLs: a webhook URL is often a capability.
                if !webhookNames.isEmpty { lines.append("webhooks: " + webhookNames.joined(separator: ", ")) }
                if generatedKey {
                    lines.append("admin key (generated; set --admin-key or PRESENCE_ADMIN_KEY to keep one): \(key)")
                }
                print(lines.joined(separator: "\n"))
                fflush(nil)
            })
        try await app.runService()
    }
}
