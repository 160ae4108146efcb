import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// When the store stops serving (cut off from its database), every socket is closed with 1013:
/// a subscriber must not keep showing a list that no longer changes, and its client reconnects,
/// through a load balancer perhaps to a process that still serves.
struct OutageService: Service {
    let store: any PresenceStore
    let sockets: OpenSockets
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            for await _ in store.outages() {
                let outboxes = sockets.all
                logger.warning("the store is unavailable: closing every WebSocket with 1013", metadata: ["sockets": "\(outboxes.count)"])
                for outbox in outboxes { outbox.close(code: CloseCode.tryAgainLater, reason: "the store is unavailable") }
            }
        }
        // A store that never stops serving ends the stream at once; a service that returned would end the server.
        try? await gracefulShutdown()
    }
}
