// swift-tools-version:6.1
// The libFuzzer target for everything the server decodes from untrusted bytes. A package of its
// own, so the main build never compiles it with the fuzzer's instrumentation; `scripts/fuzz.sh` builds it.
import PackageDescription

let package = Package(
    name: "presence-fuzz",
    dependencies: [
        .package(name: "swift-presence", path: ".."),
        // NIO's HTTP/1 parser, as the server runs it, in front of the handshake and header checks.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .target(name: "FuzzDriver"),
        .executableTarget(
            name: "PresenceFuzz",
            dependencies: [
                "FuzzDriver", .product(name: "PresenceCore", package: "swift-presence"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
