import ArgumentParser
import Foundation
import Hummingbird
import Logging
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

    @Option(help: "Storage: sqlite (durable, in --data-dir) or memory (gone on restart) [PRESENCE_STORE]. Default sqlite.")
    var store: String?

    @Option(help: "Folder of the sqlite store's presence.sqlite [PRESENCE_DATA_DIR]. Default ./presence-data.")
    var dataDir: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical [PRESENCE_LOG_LEVEL]. Default info.")
    var logLevel: String?

    @Option(help: "Bearer key for the admin calls [PRESENCE_ADMIN_KEY]. Default: a random key, printed once at start.")
    var adminKey: String?

    @Option(name: .customLong("cors-origin"), help: "An origin allowed by CORS, repeatable; * allows any [PRESENCE_CORS_ORIGINS, comma-separated].")
    var corsOrigins: [String] = []

    func run() async throws {
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
        let origins = corsOrigins.isEmpty
            ? (environment["PRESENCE_CORS_ORIGINS"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            : corsOrigins
        configuration.allowedOrigins = origins.filter { !$0.isEmpty }

        let generatedKey = setting(adminKey, "PRESENCE_ADMIN_KEY") == nil
        let key = setting(adminKey, "PRESENCE_ADMIN_KEY") ?? Tokens.make(prefix: "admin_")
        configuration.adminKey = key

        var storeName = setting(store, "PRESENCE_STORE") ?? "sqlite"
        let presenceStore: any PresenceStore
        switch storeName {
        case "memory":
            presenceStore = MemoryStore()
        case "sqlite":
            let directory = setting(dataDir, "PRESENCE_DATA_DIR") ?? "./presence-data"
            presenceStore = try SQLiteStore(directory: directory, logger: logger)
            storeName = "sqlite, \((directory as NSString).standardizingPath)/\(SQLiteStore.fileName)"
        default:
            throw ValidationError("unknown store \(storeName); choose sqlite or memory")
        }

        let host = configuration.host
        let storeDescription = storeName
        let app = PresenceServer.makeApplication(
            configuration: configuration, store: presenceStore, logger: logger,
            onServerRunning: { port in
                var lines = ["presence-server listening on http://\(host):\(port) (store: \(storeDescription))"]
                if generatedKey {
                    lines.append("admin key (generated; set --admin-key or PRESENCE_ADMIN_KEY to keep one): \(key)")
                }
                print(lines.joined(separator: "\n"))
                fflush(nil)
            })
        try await app.runService()
    }
}
