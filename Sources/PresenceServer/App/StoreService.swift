import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// The store's own upkeep as a service; it starts first and stops last.
struct StoreService: Service {
    let store: any PresenceStore

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await store.run()
        }
    }
}
