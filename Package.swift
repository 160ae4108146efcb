// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "swift-presence",
    platforms: [.macOS(.v14), .iOS(.v17), .tvOS(.v17)],
    products: [
        .library(name: "PresenceCore", targets: ["PresenceCore"]),
        .library(name: "PresenceStore", targets: ["PresenceStore"]),
        .library(name: "PresenceSQLite", targets: ["PresenceSQLite"]),
        .library(name: "PresencePostgres", targets: ["PresencePostgres"]),
        .library(name: "PresenceServer", targets: ["PresenceServer"]),
        .library(name: "PresenceClient", targets: ["PresenceClient"]),
        .executable(name: "presence-server", targets: ["PresenceServerExecutable"]),
        .executable(name: "presence-bench", targets: ["PresenceBench"]),
        .executable(name: "presence-watch", targets: ["PresenceWatch"]),
        // For the tests that pin allocations per request: preloaded into a server, it counts them.
        .library(name: "PresenceAllocationCounter", type: .dynamic, targets: ["CAllocationCounter"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        .target(
            name: "PresenceCore",
            dependencies: [.product(name: "HeapModule", package: "swift-collections")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "PresenceStore",
            dependencies: [
                "PresenceCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "PresenceSQLite",
            dependencies: [
                "PresenceStore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "PresencePostgres",
            dependencies: [
                "PresenceStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "PresenceServer",
            dependencies: [
                "PresenceCore",
                "PresenceStore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.copy("Resources/web")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "PresenceClient",
            dependencies: [
                "PresenceCore",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(name: "CMallocInfo"),
        .target(name: "CAllocationCounter"),
        .target(
            name: "PresenceLoad",
            dependencies: [
                "CMallocInfo",
                "PresenceProcess",
                "PresenceCore",
                "PresenceStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                // Already built for the server (JWTKit): signs the tokens of the JWT heartbeat phases.
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // Real server processes, for the tests and the benchmark alike.
        .target(
            name: "PresenceProcess",
            dependencies: ["PresenceCore"],
            swiftSettings: swiftSettings
        ),
        // The tests' harness; the benchmark's load generators are not part of it.
        .target(
            name: "PresenceTestSupport",
            dependencies: ["PresenceProcess", "PresenceStore"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "PresenceServerExecutable",
            dependencies: [
                "PresenceServer",
                "PresenceSQLite",
                "PresencePostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "PresenceWatch",
            dependencies: [
                "PresenceClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "PresenceBench",
            dependencies: [
                "PresenceLoad",
                "PresenceSQLite",
                "PresencePostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "PresenceCoreTests",
            dependencies: ["PresenceCore", "PresenceTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "PresenceStoreTests",
            dependencies: [
                "PresenceStore", "PresenceSQLite", "PresencePostgres", "PresenceTestSupport",
                // BenchmarkSmokeTests runs the benchmark's phases.
                "PresenceLoad",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "PresenceServerTests",
            dependencies: [
                "PresenceServer",
                "PresenceSQLite",
                "PresencePostgres",
                "PresenceTestSupport",
                "CMallocInfo",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "PresenceClientTests",
            dependencies: ["PresenceClient", "PresenceTestSupport", .product(name: "JWTKit", package: "jwt-kit")],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
