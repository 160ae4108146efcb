import Foundation
import Testing
import PresenceServer

@Suite struct WebSocketKeepAliveTests {
    /// A peer that answers neither messages nor pings is pinged once, then cut off.
    @Test func aSilentPeerIsPingedThenCutOff() async throws {
        try await withServer(configure: { $0.webSocketPingAfter = .milliseconds(300) }) { http in
            // Before connecting: the server's clock for this socket starts later, so this bound holds.
            let started = ContinuousClock.now
            let silent = try await offThePool { try RawWebSocket(port: http.port) }
            let frames = RawWebSocket.frames(in: try await offThePool { silent.readToEnd() })
            let elapsed = ContinuousClock.now - started
            #expect(frames.map(\.opcode) == [9])
            // Pinged after 300 ms of silence, cut 300 ms after that.
            #expect(elapsed >= .milliseconds(550), "cut at \(elapsed)")
            #expect(elapsed < .seconds(9), "cut at \(elapsed)")
            try await http.waitForMetric("presence_ws_silent_closed_total", toBe: 1)
            try await http.waitForMetric("presence_ws_connections", toBe: 0)
        }
    }

    /// A peer that answers each ping stays connected, and its socket still works. (A second
    /// per ping: this client must answer within it, even on a loaded machine.)
    @Test func aPeerAnsweringPingsStays() async throws {
        try await withServer(configure: { $0.webSocketPingAfter = .seconds(1) }) { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port) }
            for _ in 0..<3 {
                let ping = try #require(try await offThePool { socket.readFrame() })
                #expect(ping.opcode == 9)
                try socket.sendFrame(opcode: 0xA, payload: ping.payload)
            }
            try socket.sendText(RawWebSocket.heartbeat)
            let reply = try #require(try await offThePool { socket.readFrame() })
            #expect(reply.opcode == 1)
            #expect(String(decoding: reply.payload, as: UTF8.self).contains(#""type":"heartbeat""#))
            #expect(try await http.metric("presence_ws_silent_closed_total") == 0)
        }
    }

    /// A peer that sends something more often than the ping interval is never pinged. A loaded
    /// machine can delay this client or the server's reads enough for a ping to be fair, so a
    /// ping counts against the server only when this client kept its pace around it (messages
    /// under half an interval apart); a server that ignored what it reads pings on any pace.
    @Test func aTalkingPeerIsNeverPinged() async throws {
        // A second: a loaded machine can stall this client for a few hundred milliseconds, and a
        // peer silent for two intervals is rightly cut.
        let interval = Duration.seconds(1)
        try await withServer(configure: { $0.webSocketPingAfter = interval }) { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port) }
            var replies = 0
            var previous = ContinuousClock.now
            // 5 s: five ping intervals, a message every 200 ms.
            for _ in 0..<25 {
                let sent = ContinuousClock.now
                try socket.sendText(RawWebSocket.heartbeat)
                while true {
                    let frame = try #require(try await offThePool { socket.readFrame() })
                    guard frame.opcode == 9 else {
                        #expect(frame.opcode == 1)
                        replies += 1
                        break
                    }
                    let gap = max(sent - previous, ContinuousClock.now - sent)
                    #expect(gap > interval / 2, "pinged although messages were \(gap) apart at most")
                    try socket.sendFrame(opcode: 0xA, payload: frame.payload)
                }
                previous = sent
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(replies == 25)
        }
    }

    /// Nothing follows the server's close frame, a ping neither, while the server waits for the
    /// peer's answer: here a flooding peer closed with 1008 that never answers, with a grace of
    /// many ping intervals.
    @Test func noPingFollowsTheCloseFrame() async throws {
        try await withServer(configure: {
            $0.webSocketPingAfter = .milliseconds(200)
            $0.closeGrace = .seconds(2)
            $0.socketMessagesPerSecond = 5
            $0.socketMessageBurst = 10
        }) { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port) }
            for index in 0..<20 { try socket.sendText(#"{"type":"unsubscribe","roomToken":"t\#(index)"}"#) }
            let frames = RawWebSocket.frames(in: try await offThePool { socket.readToEnd() })
            let close = try #require(frames.firstIndex { $0.opcode == 8 }, "no close frame: \(frames.map(\.opcode))")
            #expect(frames[close].closeCode == 1008)
            #expect(close == frames.count - 1, "after the close: \(frames[(close + 1)...].map(\.opcode))")
        }
    }
}
