import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// The store's expiry loop as a service that stops with the server.
struct ExpiryService: Service {
    let loop: ExpiryLoop

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await loop.run()
        }
    }
}
