import ArgumentParser
import Foundation
import Hummingbird

/// The floor for the request-cost figures: Hummingbird with one route and no middleware, built
/// with the same settings as `presence-server`, answering what `GET /health` answers. The
/// heartbeat scenario starts it as its own process and measures its CPU per request the same way.
struct FloorServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floor-server", abstract: "A bare Hummingbird server with one route (what presence-bench compares against).",
        shouldDisplay: false)

    @Option(help: "Port to listen on, 0 for any free port.")
    var port = 0

    func run() async throws {
        let router = Router()
        router.get("/health") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ok"}"#)))
        }
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { channel in
                // The same banner as presence-server's, which ServerProcess waits for.
                print("listening on 127.0.0.1:\(channel.localAddress?.port ?? 0)")
                fflush(nil)
            })
        try await app.runService()
    }
}
