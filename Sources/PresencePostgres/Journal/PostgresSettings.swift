import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// Why the PostgreSQL store could not start; the message says what to do.
public struct PostgresStoreError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Where the database is and how the processes sharing it keep time with each other.
public struct PostgresSettings: Sendable {
    /// The pool's connections (writes, reads, the lease).
    public var client: PostgresClient.Configuration
    /// The connection that LISTENs, which must reach PostgreSQL itself, not a PgBouncer in transaction mode.
    public var listenClient: PostgresClient.Configuration
    /// Printable without the password.
    public var displayName: String
    /// How long a process's lease (and the expiry leader's) lasts without renewal.
    public var lease: Duration = .seconds(6)
    /// How often a process renews its lease, stores the deadlines its heartbeats moved, and polls
    /// for changes it was not notified of.
    public var tick: Duration = .seconds(1)
    /// A process that has not reached the database for this long stops serving (503, sockets
    /// closed with 1013) until it does again; shorter than `lease`, so it stops before others take over.
    public var fenceAfter: Duration = .seconds(4)
    /// The longest a commit, catch-up or reload may take before it is given up on (and its callers
    /// answered 503). Longer than `fenceAfter`: a large batch is slow, not lost, and new calls
    /// are refused by fencing meanwhile anyway.
    public var statementTimeout: Duration = .seconds(10)
    /// A heartbeat whose stored deadline is nearer than this is stored before it is answered.
    public var syncMargin: Duration = .seconds(1)
    /// The expiry leader checks due sessions at most this often (each check is one transaction).
    public var expiryGranularity: Duration = .milliseconds(100)
    /// Log entries older than this are trimmed; a process further behind reloads everything.
    public var logRetention: Duration = .seconds(300)
    /// How often the expiry leader trims the log.
    public var trimInterval: Duration = .seconds(60)

    /// Sets the lease and the timings that follow from it: a tick of a sixth of it, fencing after
    /// two thirds, so a cut-off process stops before another may take over.
    public mutating func useLease(_ lease: Duration) {
        self.lease = lease
        tick = lease / 6
        fenceAfter = lease * 2 / 3
        syncMargin = min(.seconds(1), lease / 6)
        // A commit stuck on a connection the database dropped (seen during its restarts) holds
        // every write behind it: give up on it within about a lease, not ten seconds.
        statementTimeout = max(.seconds(2), lease * 4 / 3)
    }

    /// - Parameters:
    ///   - url: `postgres://user:password@host:port/database`, with `?sslmode=disable|prefer|require`
    ///     (default `prefer`) and `?host=/path/to/socket-directory` for a Unix socket.
    ///   - listenURL: the same for the listening connection; defaults to `url`.
    public init(url: String, listenURL: String? = nil) throws {
        let main = try Self.parse(url)
        client = main.configuration
        displayName = main.displayName
        listenClient = try listenURL.map { try Self.parse($0).configuration } ?? main.configuration
        listenClient.options.maximumConnections = 1
        client.options.maximumConnections = 8
    }

    static func parse(_ text: String) throws -> (configuration: PostgresClient.Configuration, displayName: String) {
        guard let components = URLComponents(string: text), let scheme = components.scheme,
            scheme == "postgres" || scheme == "postgresql"
        else {
            throw PostgresStoreError("the PostgreSQL URL must look like postgres://user:password@host:5432/database (got \(Self.redacted(text)))")
        }
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        let username = components.percentEncodedUser.flatMap { $0.removingPercentEncoding } ?? "postgres"
        let password = components.percentEncodedPassword.flatMap { $0.removingPercentEncoding }
        var database = components.path
        if database.hasPrefix("/") { database.removeFirst() }
        let databaseName = database.isEmpty ? username : (database.removingPercentEncoding ?? database)
        if let socketDirectory = query["host"], socketDirectory.hasPrefix("/") {
            let port = components.port ?? 5432
            let path = "\(socketDirectory)/.s.PGSQL.\(port)"
            let configuration = PostgresClient.Configuration(
                unixSocketPath: path, username: username, password: password, database: databaseName)
            return (configuration, "postgres://\(username)@\(path)/\(databaseName)")
        }
        guard let host = components.host, !host.isEmpty else {
            throw PostgresStoreError("the PostgreSQL URL names no host: \(Self.redacted(text))")
        }
        let tls: PostgresClient.Configuration.TLS
        switch query["sslmode"] ?? "prefer" {
        case "disable": tls = .disable
        case "allow", "prefer": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        case let other: throw PostgresStoreError("unknown sslmode \(other): use disable, prefer or require")
        }
        let port = components.port ?? 5432
        let configuration = PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: databaseName, tls: tls)
        return (configuration, "postgres://\(username)@\(host):\(port)/\(databaseName)")
    }

    /// The URL with its password replaced, for error messages and logs.
    static func redacted(_ text: String) -> String {
        guard var components = URLComponents(string: text), components.password != nil else { return text }
        components.password = "***"
        return components.string ?? "(unprintable URL)"
    }
}

extension PostgresSettings {
    /// Runs `body` with a pool of its own, running only while `body` does: for one-off work
    /// (opening a store, making a database, reading statistics).
    public func withClient<Value: Sendable>(
        logger: Logger? = nil, _ body: @Sendable (PostgresClient) async throws -> Value
    ) async throws -> Value {
        let pool = logger.map { PostgresClient(configuration: client, backgroundLogger: $0) } ?? PostgresClient(configuration: client)
        return try await withThrowingTaskGroup(of: Void.self, returning: Value.self) { group in
            group.addTask { await pool.run() }
            defer { group.cancelAll() }
            return try await body(pool)
        }
    }

    /// The same server with another database, created now: each test and benchmark run gets its own.
    public func creatingDatabase(named name: String) async throws -> PostgresSettings {
        precondition(name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" }, "a plain database name")
        try await withClient { admin in
            _ = try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"))
        }
        var settings = self
        settings.client.database = name
        settings.listenClient.database = name
        if let slash = displayName.lastIndex(of: "/") { settings.displayName = displayName[...slash] + name }
        return settings
    }

    /// PostgreSQL's count of transactions committed in this database (`pg_stat_database`), for
    /// measuring what a workload costs the database. The statistics lag by up to half a second.
    public func committedTransactions() async throws -> Int {
        try await withClient { reader in
            // Ask for fresh statistics, not the snapshot this session may hold.
            try await reader.query("SELECT pg_stat_clear_snapshot()")
            try await Task.sleep(for: .milliseconds(600))
            var count = 0
            for try await value in try await reader.query(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).decode(Int64.self) {
                count = Int(value)
            }
            return count
        }
    }
}
