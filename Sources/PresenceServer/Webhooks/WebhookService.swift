import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PresenceStore
import ServiceLifecycle
import Synchronization

/// Runs one delivery loop per endpoint for as long as the server runs.
struct WebhookService: Service {
    let registry: WebhookRegistry
    let store: any PresenceStore
    let timings: WebhookTimings
    let logger: Logger

    func run() async throws {
        guard !registry.endpoints.isEmpty else {
            try? await gracefulShutdown()
            return
        }
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.timeout.connect = .milliseconds(timings.requestTimeout.milliseconds)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        await cancelWhenGracefulShutdown {
            // Every process registers the endpoints at once, leading or not: an endpoint gets the
            // events from when a server first ran with it, not from when one first delivered to it.
            for endpoint in registry.endpoints {
                while (try? await store.webhookCursor(endpoint: endpoint.url)) == nil {
                    guard (try? await Task.sleep(for: timings.idlePoll)) != nil else { return }
                }
            }
            await withTaskGroup(of: Void.self) { group in
                // Committed changes wake the loops; they read the log, not the changes.
                group.addTask {
                    for await batch in store.commits() where !batch.events.isEmpty { registry.wakeAll() }
                }
                for endpoint in registry.endpoints {
                    group.addTask {
                        await WebhookDelivery(
                            endpoint: endpoint, store: store, registry: registry, client: client, timings: timings,
                            logger: logger
                        ).run()
                    }
                }
                await group.waitForAll()
            }
        }
        try? await client.shutdown()
    }
}
