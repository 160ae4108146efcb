import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Testing
import PresenceStore
@testable import PresenceServer

/// What a WebSocket leaves behind when it ends: nothing.
@Suite struct SocketLifetimeTests {
    /// The socket's handler is freed with its channel. The outbox (still queued in a hub here)
    /// calls back into the handler, and the handler holds the outbox: a strong reference either
    /// way kept every closed socket's objects alive, about 5.5 KiB each.
    @Test(arguments: [false, true]) func aClosedSocketFreesItsHandler(afterAReply: Bool) throws {
        let store = MemoryStore()
        let metrics = PresenceMetrics()
        let logger = Logger(label: "test")
        let configuration = PresenceServerConfiguration()
        let endpoint = WebSocketEndpoint(
            operations: PresenceOperations(
                store: store, authorizer: configuration.authorizer, adminKey: nil, metrics: metrics, logger: logger,
                webhooks: WebhookRegistry(endpoints: [])),
            hub: FanoutHub(store: store, metrics: metrics, logger: logger),
            watchers: UserWatchHub(store: store, logger: logger),
            metrics: metrics, configuration: configuration, origins: CORSOrigins(allowed: configuration.allowedOrigins),
            addressLimits: AddressLimits(rate: 1_000, burst: 1_000, maxConnections: 10),
            openSockets: OpenSockets(), keepAliveWheels: KeepAliveWheels(interval: .seconds(30)), logger: logger)
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        try endpoint.open(channel, admission: .init(address: "127.0.0.1", identity: nil))
        weak let handler = try channel.pipeline.syncOperations.handler(type: PresenceSocketHandler.self)
        #expect(handler != nil)
        #expect(!endpoint.openSockets.isEmpty)
        if afterAReply {
            // A reply makes the outbox find the handler's context to write from: the context holds
            // the handler, which holds the outbox, a cycle that kept every closed socket's channel.
            let outbox = try #require(endpoint.openSockets.all.first)
            #expect(outbox.send(ByteBuffer(string: #"{"type":"error"}"#)))
            (channel.eventLoop as! EmbeddedEventLoop).run()
            #expect(try channel.readOutbound(as: ByteBuffer.self) != nil)
        }

        _ = try channel.finish(acceptAlreadyClosed: true)
        (channel.eventLoop as! EmbeddedEventLoop).run()
        #expect(endpoint.openSockets.isEmpty)
        #expect(handler == nil, "the closed socket's handler is still alive")
    }

    /// A peer that half-closes its connection (FIN, no close frame: a killed tab, a dropped
    /// laptop) ends the socket at once, not after the keep-alive's two intervals.
    @Test func aPeerThatStopsSendingEndsTheSocket() async throws {
        try await withServer { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port) }
            try socket.sendText(RawWebSocket.heartbeat)
            _ = try #require(try await offThePool { socket.readFrame() })
            try await http.waitForMetric("presence_ws_connections", toBe: 1)
            shutdown(socket.fd, Int32(SHUT_WR))
            // The keep-alive's interval is 30 s: only the FIN can end it within the wait.
            try await http.waitForMetric("presence_ws_connections", toBe: 0, timeout: .seconds(5))
            // Its session stays until its deadline, as after any close.
            #expect(try await http.listRoom("room").users.map(\.online) == [true])
        }
    }

    /// A server stopped by cancellation (not gracefully) does not wait out the close grace for
    /// sockets that never answer, and does not spin on a sleep that returns at once.
    @Test func aCancelledShutdownReturnsAtOnce() async throws {
        let sockets = OpenSockets()
        sockets.insert(Outbox(id: 1, capacity: 1, channel: EmbeddedChannel()))
        // A grace far beyond the bound below: a loaded test run can delay the task by seconds.
        let service = SocketShutdownService(sockets: sockets, closeGrace: .seconds(60))
        // Timed inside the task, from when it runs: a loaded run took 20 s and more to give this
        // test's own task a turn, which is no wait of the service's.
        let running = Task { () async throws -> Duration in
            let started = ContinuousClock.now
            try await service.run()
            return ContinuousClock.now - started
        }
        running.cancel()
        let took = try await running.value
        #expect(took < .seconds(30), "\(took)")
    }
}
