import Foundation
import Testing
import PresenceServer
import PresenceStore

@Suite struct SlowSubscriberTests {
    /// Opens a subscriber that never reads, then posts 4 KB data changes until the server drops it.
    /// `afterEach` runs after every change; returns the stuck socket and how many changes it took.
    func floodUntilStuckSubscriberIsDropped(
        _ http: HTTPClient, afterEach: (Int, String) async throws -> Void = { _, _ in }
    ) async throws -> (RawWebSocket, Int, SessionTokens) {
        // The longest interval: on a loaded machine the flood can outlast a 10 s interval's 25 s
        // session, and an expired writer's updates change nothing, so nothing would ever be dropped.
        let writer = try await http.heartbeat(user: "writer", session: "w", interval: Int(ProtocolLimits.intervalRange.upperBound))
        let stuck = try await offThePool { try RawWebSocket(port: http.port) }
        try stuck.sendText(#"{"type":"subscribe","roomToken":"\#(writer.roomToken)"}"#)
        try await afterEach(0, writer.roomToken)
        let padding = String(repeating: "x", count: 4_000)
        var updates = 0
        while try await http.metric("presence_slow_subscribers_dropped_total") == 0 {
            updates += 1
            guard updates <= 5_000 else { throw TestFailure("the stuck subscriber was never dropped") }
            let data = padding + String(updates)
            let reply = try await http.call(.post, "/api/update", body: #"{"sessionToken":"\#(writer.sessionToken)","data":"\#(data)"}"#)
            guard reply.status == 200 else { throw TestFailure("update \(updates) failed: \(reply.status) \(reply.body)") }
            try await afterEach(updates, data)
        }
        return (stuck, updates, writer)
    }

    /// A subscriber that stops reading fills its bounded outbox and is dropped with 1013,
    /// while a subscriber that keeps up gets every diff.
    @Test func aStuckSubscriberIsDroppedAndTheOthersKeepUp() async throws {
        try await withServer(configure: {
            $0.outboxCapacity = 8
            $0.closeGrace = .seconds(20)
            // The stuck client is silent: on a loaded machine the flood outlasted the keep-alive's
            // two 30 s intervals, which cut it as silent before its outbox could overflow.
            $0.webSocketPingAfter = .seconds(600)
            // One diff per change: the healthy subscriber checks each in turn.
            $0.diffMerging = .off
        }) { http in
            let healthy = TestSocket(port: http.port)
            defer { healthy.close() }
            let (stuck, updates, writer) = try await floodUntilStuckSubscriberIsDropped(http) { update, value in
                if update == 0 {
                    _ = try await healthy.subscribe(value)
                } else {
                    // The healthy subscriber receives each diff in turn.
                    let diff = try await healthy.receive(type: "diff").decode(DiffMessage.self)
                    #expect(diff.upsert.first?.data == .string(value))
                }
            }
            // Now read everything the server sent the stuck client: its last frame is the 1013 close.
            let frames = RawWebSocket.frames(in: try await offThePool { stuck.readToEnd() })
            #expect(frames.first?.opcode == 1)
            #expect(frames.last?.closeCode == 1013)
            let diffs = frames.filter { $0.opcode == 1 }.count - 1  // after the snapshot
            #expect(diffs < updates, "the dropped subscriber did not get every diff")
            // The healthy one goes on.
            _ = try await http.call(.post, "/api/update", body: #"{"sessionToken":"\#(writer.sessionToken)","data":"after"}"#)
            #expect(try await healthy.receive(type: "diff").decode(DiffMessage.self).upsert.first?.data == .string("after"))
        }
    }

    /// A client that never reads at all is cut off after the grace period.
    @Test func aClientThatNeverReadsIsCutOff() async throws {
        try await withServer(configure: {
            $0.outboxCapacity = 4
            $0.closeGrace = .milliseconds(200)
            $0.webSocketPingAfter = .seconds(600)
            $0.diffMerging = .off
        }) { http in
            let (stuck, _, _) = try await floodUntilStuckSubscriberIsDropped(http)
            // The connection is cut after the grace (200 ms): the server's side ends without the client
            // reading a byte, and reading then drains what was buffered and sees the end.
            try await http.waitForMetric("presence_ws_connections", toBe: 0)
            let started = ContinuousClock.now
            _ = try await offThePool { stuck.readToEnd() }
            #expect(ContinuousClock.now - started < .seconds(9), "the server closed the connection")
        }
    }
}
