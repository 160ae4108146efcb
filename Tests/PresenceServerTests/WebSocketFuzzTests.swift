import Foundation
import Testing
import PresenceServer
import PresenceStore
import PresenceTestSupport

/// Whatever bytes a client sends after the upgrade, the server stays up, keeps serving others,
/// and ends every socket whose client has gone.
@Suite struct WebSocketFuzzTests {
    @Test func randomFramesNeitherStopTheServerNorOutliveTheirClients() async throws {
        try await withServer(configure: {
            $0.addressRequestsPerSecond = 100_000
            $0.addressRequestBurst = 100_000
            $0.connectionsPerAddress = 10_000
            $0.tcpConnectionsPerAddress = 10_000
            // The test client's connection opens with the server and sends its first request after
            // the loop, which a loaded machine can stretch past the first request's 30 s.
            $0.requestTimeout = .seconds(600)
            $0.idleTimeout = .seconds(600)
            $0.socketMessagesPerSecond = 10_000
            $0.socketMessageBurst = 10_000
        }) { http in
            var generator = SeededGenerator(seed: 20_261_130)
            for _ in 0..<1_000 {
                let socket = try await offThePool { try RawWebSocket(port: http.port) }
                var bytes: [UInt8] = []
                for _ in 0..<(1 + generator.next() % 6) { bytes += Self.randomFrame(&generator) }
                if generator.next() % 4 == 0 { bytes.removeLast(Int(generator.next() % UInt64(bytes.count))) }
                // The server may have closed the socket already (a broken frame); that is its right.
                try? socket.write(bytes)
            }
            // Every raw socket is closed by now (each went at the end of its iteration).
            try await http.waitForMetric("presence_ws_connections", toBe: 0)
            let healthy = TestSocket(port: http.port)
            defer { healthy.close() }
            let tokens = try await healthy.heartbeat(user: "after", session: "after-s")
            #expect(try await healthy.subscribe(tokens.roomToken).users.contains { $0.userId == "after" })
            #expect(try await http.call(.get, "/health").status == 200)
        }
    }

    /// One frame, mostly well formed: any opcode (reserved ones too), reserved bits now and then,
    /// unmasked now and then, lengths in all three encodings (some declaring more than a message
    /// may be, some over a control frame's 125), payloads from a valid heartbeat to random bytes.
    static func randomFrame(_ generator: inout SeededGenerator) -> [UInt8] {
        let opcodes: [UInt8] = [0, 1, 1, 1, 2, 8, 9, 10, 3, 7, 11, 15]
        let opcode = opcodes[Int(generator.next() % UInt64(opcodes.count))]
        let fin: UInt8 = generator.next() % 5 == 0 ? 0 : 0x80
        let reserved: UInt8 = generator.next() % 10 == 0 ? UInt8(generator.next() % 8) << 4 : 0
        let masked = generator.next() % 10 != 0
        let payload: [UInt8]
        switch generator.next() % 5 {
        case 0: payload = Array(#"{"type":"heartbeat","roomId":"fuzz","userId":"f\#(generator.next() % 5)","sessionId":"s","interval":10000}"#.utf8)
        case 1: payload = Array(#"{"type":"subscribe","roomToken":"\#(generator.next())"}"#.utf8)
        case 2: payload = (0..<(generator.next() % 300)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        case 3: payload = opcode == 8 ? [UInt8(generator.next() % 256), UInt8(generator.next() % 256)] : Array("{".utf8)
        default: payload = Array(repeating: UInt8(ascii: "x"), count: Int(generator.next() % 200))
        }
        var frame: [UInt8] = [fin | reserved | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        switch generator.next() % 10 {
        case 0:
            // Declares a length over the 64 KiB limit, sends a little.
            frame.append(maskBit | 127)
            frame += withUnsafeBytes(of: UInt64(70_000 + generator.next() % 1_000_000).bigEndian, Array.init)
        case 1:
            frame.append(maskBit | 126)
            frame += withUnsafeBytes(of: UInt16(payload.count).bigEndian, Array.init)
        default:
            guard payload.count < 126 else {
                frame.append(maskBit | 126)
                frame += withUnsafeBytes(of: UInt16(payload.count).bigEndian, Array.init)
                break
            }
            frame.append(maskBit | UInt8(payload.count))
        }
        guard masked else { return frame + payload }
        let mask = (0..<4).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        return frame
    }
}
