// swift-tools-version:6.1
// The libFuzzer target for everything the server decodes from untrusted bytes. A package of its
// own, so the main build never compiles it with the fuzzer's instrumentation; `scripts/fuzz.sh` builds it.
import PackageDescription

let package = Package(
    name: "presence-fuzz",
    dependencies: [.package(name: "swift-presence", path: "..")],
    targets: [
        .target(name: "FuzzDriver"),
        .executableTarget(
            name: "PresenceFuzz",
            dependencies: ["FuzzDriver", .product(name: "PresenceCore", package: "swift-presence")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
