import PresenceProcess
import ArgumentParser
import Foundation
import Hummingbird
import HummingbirdWebSocket

/// The floor for the cost figures: Hummingbird with two routes and no middleware, built with the
/// same settings as `presence-server`: `GET /health` answering what the server's answers,
/// `POST /api/heartbeat` reading its body and answering a fixed pair of tokens; and a WebSocket at
/// `/api/ws` that answers every text message with a fixed heartbeat reply, written the way the
/// Hummingbird WebSocket documentation writes a handler. The heartbeat and steady-state scenarios
/// start it as its own process and measure it the same way as the server.
struct FloorServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floor-server", abstract: "A bare Hummingbird server with one route (what presence-bench compares against).",
        shouldDisplay: false)

    @Option(help: "Port to listen on, 0 for any free port.")
    var port = 0

    @Flag(help: "Serve the WebSocket with SwiftNIO alone (no Hummingbird), the lowest floor.")
    var nio = false

    func run() async throws {
        if nio { return try await NIOWebSocketFloor.run(port: port) }
        let router = Router()
        router.get("/health") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ok"}"#)))
        }
        router.post("/api/heartbeat") { request, _ in
            var request = request
            _ = try await request.collectBody(upTo: 64 * 1024)
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"roomToken":"floor","sessionToken":"floor"}"#)))
        }
        let webSocketRouter = Router(context: BasicWebSocketRequestContext.self)
        webSocketRouter.ws("/api/ws") { inbound, outbound, _ in
            for try await message in inbound.messages(maxSize: 64 * 1024) {
                guard case .text = message else { continue }
                try await outbound.write(.text(#"{"type":"heartbeat","id":0,"roomToken":"floor","sessionToken":"floor"}"#))
            }
        }
        let app = Application(
            router: router,
            server: .http1WebSocketUpgrade(webSocketRouter: webSocketRouter, configuration: .init(ws: .init(autoPing: .disabled))),
            configuration: .init(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { channel in
                // The same banner as presence-server's, which ServerProcess waits for.
                print("listening on 127.0.0.1:\(channel.localAddress?.port ?? 0)")
                fflush(nil)
            })
        try await app.runService()
    }
}
