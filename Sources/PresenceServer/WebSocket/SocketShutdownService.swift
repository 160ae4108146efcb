import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// Says goodbye (1000) to every open WebSocket when the server stops, and waits until they have
/// closed, at most the close grace, after which their handlers have cut them anyway. Sockets have
/// no task of their own for the server to wait for.
struct SocketShutdownService: Service {
    let sockets: OpenSockets
    let closeGrace: Duration

    func run() async throws {
        try? await gracefulShutdown()
        for outbox in sockets.all { outbox.close(code: CloseCode.normal, reason: "the server is shutting down") }
        let deadline = ContinuousClock.now + closeGrace + .seconds(1)
        // Only while shutting down, so a poll costs nothing that matters.
        while !sockets.isEmpty, ContinuousClock.now < deadline {
            // Cancelled (not a graceful stop): the process is going anyway, and a cancelled sleep returns at once.
            guard (try? await Task.sleep(for: .milliseconds(20))) != nil else { return }
        }
    }
}
