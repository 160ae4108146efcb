import CMallocInfo
import Foundation
import Testing
import PresenceStore
@testable import PresenceServer

#if canImport(Glibc)
import Glibc
#endif

/// What one client can do to the server over a WebSocket, tried as an attacker would: each of
/// these took the server down, around its limits, or past the protocol before it was fixed.
@Suite struct AttackerTests {
    static let handshakeKey = "dGhlIHNhbXBsZSBub25jZQ=="

    static func handshake(
        method: String = "GET", version: String = "HTTP/1.1", key: String? = handshakeKey, webSocketVersion: String? = "13",
        connection: String? = "Upgrade", port: Int
    ) -> [UInt8] {
        var lines = ["\(method) /api/ws \(version)", "Host: 127.0.0.1:\(port)", "Upgrade: websocket"]
        if let connection { lines.append("Connection: \(connection)") }
        if let key { lines.append("Sec-WebSocket-Key: \(key)") }
        if let webSocketVersion { lines.append("Sec-WebSocket-Version: \(webSocketVersion)") }
        return Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
    }

    /// RFC 6455 §4.2.1 and §4.4: a handshake that is not one gets its status and error body (426
    /// with the version spoken for a version it does not speak), never a 101 or a dropped connection.
    @Test func handshakesThatAreNotOneAreAnswered() async throws {
        try await withServer { http in
            let cases: [(String, [UInt8], String)] = [
                ("POST", Self.handshake(method: "POST", port: http.port), "405"),
                ("HTTP/1.0", Self.handshake(version: "HTTP/1.0", port: http.port), "400"),
                ("a malformed key", Self.handshake(key: "not base64!", port: http.port), "400"),
                ("a key of 15 bytes", Self.handshake(key: "AAAAAAAAAAAAAAAAAAAA", port: http.port), "400"),
                ("no key", Self.handshake(key: nil, port: http.port), "400"),
                ("version 8", Self.handshake(webSocketVersion: "8", port: http.port), "426"),
                ("no version", Self.handshake(webSocketVersion: nil, port: http.port), "426"),
                ("no Connection: Upgrade", Self.handshake(connection: nil, port: http.port), "400"),
            ]
            for (what, request, status) in cases {
                let answer = try #require(try await RawWebSocket.exchange(port: http.port, request, timeout: 5), "\(what): no answer")
                #expect(answer.hasPrefix("HTTP/1.1 \(status)"), "\(what): \(answer)")
                #expect(answer.contains(#""error":{"code":""#), "\(what): \(answer)")
                if status == "426" { #expect(answer.lowercased().contains("sec-websocket-version: 13"), "\(what): \(answer)") }
            }
            // The same handshake, whole, is upgraded.
            let upgraded = try await offThePool { try RawWebSocket(port: http.port, handshake: false) }
            try upgraded.write(Self.handshake(port: http.port))
            let head = try await offThePool { () -> [UInt8] in
                var head: [UInt8] = []
                var byte: UInt8 = 0
                while !head.suffix(4).elementsEqual([13, 10, 13, 10]), recv(upgraded.fd, &byte, 1, 0) == 1 { head.append(byte) }
                return head
            }
            #expect(String(decoding: head, as: UTF8.self).hasPrefix("HTTP/1.1 101"))
        }
    }

    /// RFC 6455 §8.1: text that is not UTF-8 fails the connection with 1007, whole or fragmented,
    /// and so does a close frame's reason.
    @Test func textThatIsNotUTF8IsClosedWith1007() async throws {
        try await withServer { http in
            let sends: [(String, (RawWebSocket) throws -> Void)] = [
                ("a lone continuation byte", { try $0.sendFrame(opcode: 1, payload: Array(#"{"type":"x","a":""#.utf8) + [0x80, 0x22, 0x7D]) }),
                ("an overlong slash", { try $0.sendFrame(opcode: 1, payload: [0xC0, 0xAF]) }),
                ("a surrogate", { try $0.sendFrame(opcode: 1, payload: [0xED, 0xA0, 0x80]) }),
                ("split over fragments", { socket in
                    try socket.sendFrame(opcode: 1, payload: [0x22, 0xE2], fin: false)
                    try socket.sendFrame(opcode: 0, payload: [0x28, 0xA1, 0x22])
                }),
                ("a close reason", { try $0.sendFrame(opcode: 8, payload: [0x03, 0xE8, 0xFF]) }),
            ]
            for (what, send) in sends {
                let socket = try await offThePool { try RawWebSocket(port: http.port) }
                try send(socket)
                let frames = RawWebSocket.frames(in: try await offThePool { socket.readToEnd() })
                #expect(frames.map(\.opcode) == [8], "\(what)")
                #expect(frames.first?.closeCode == 1007, "\(what)")
            }
            // A character split across fragments is still one character.
            let split = try await offThePool { try RawWebSocket(port: http.port) }
            let text = Array(#"{"type":"heartbeat","roomId":"r","userId":"é","sessionId":"s"}"#.utf8)
            let cut = text.firstIndex(of: 0xC3)! + 1
            try split.sendFrame(opcode: 1, payload: Array(text[..<cut]), fin: false)
            try split.sendFrame(opcode: 0, payload: Array(text[cut...]))
            let reply = try #require(try await offThePool { split.readFrame() })
            #expect(String(decoding: reply.payload, as: UTF8.self).contains(#""type":"heartbeat""#))
        }
    }

    /// "Zoé" in NFC and in NFD are two users to PROTOCOL.md, though Swift's `String` calls them
    /// equal: the second used to take over the first's record, and a subscriber saw one user.
    @Test func canonicallyEquivalentIdsAreDifferentIdsOverTheWire() async throws {
        try await withServer { http in
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            let first = try await http.call(.post, "/api/heartbeat", body: #"{"roomId":"room","userId":"Zo\u00e9","sessionId":"s"}"#)
            let tokens = try first.json.decode(SessionTokens.self)
            _ = try await socket.subscribe(tokens.roomToken)
            let second = try await http.call(.post, "/api/heartbeat", body: #"{"roomId":"room","userId":"Zoe\u0301","sessionId":"s"}"#)
            #expect(try second.json.decode(SessionTokens.self).sessionToken != tokens.sessionToken)
            let diff = try await socket.receive(type: "diff")
            #expect(diff["upsert"]?.array?.compactMap { $0["userId"]?.string }.map { Array($0.utf8) } == [Array("Zoe\u{301}".utf8)])
            let listed = try await http.listRoom("room").users.map { Array($0.userId.utf8) }
            #expect(listed == [Array("Zo\u{E9}".utf8), Array("Zoe\u{301}".utf8)])
            // Rooms too, by their path.
            _ = try await http.call(.post, "/api/heartbeat", body: #"{"roomId":"Zo\u00e9","userId":"u","sessionId":"s1"}"#)
            #expect(try await http.call(.get, "/api/rooms/Zoe%CC%81/users", admin: true).body.contains(#""users":[]"#))
            #expect(try await http.call(.get, "/api/rooms/Zo%C3%A9/users", admin: true).body.contains(#""userId":"u""#))
        }
    }

    /// Pings spend the socket's message budget: a flood of them is closed with 1008.
    @Test func pingFloodsAreClosedWith1008() async throws {
        try await withServer(configure: {
            $0.socketMessagesPerSecond = 5
            $0.socketMessageBurst = 10
        }) { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port) }
            for _ in 0..<100 { try socket.sendFrame(opcode: 9, payload: Array("ping".utf8)) }
            let frames = RawWebSocket.frames(in: try await offThePool { socket.readToEnd() })
            #expect(frames.filter { $0.opcode == 10 }.count <= 12, "pongs: \(frames.filter { $0.opcode == 10 }.count)")
            #expect(frames.last?.opcode == 8)
            #expect(frames.last?.closeCode == 1008)
            try await http.waitForMetric("presence_ws_connections", toBe: 0)
        }
    }
}

/// The attacks that take many sockets or many megabytes: run with the several-process tests
/// (scripts/test.sh), apart from the tests whose timing bounds a saturated machine would break.
@Suite struct SocketChurnTests {
    /// A peer that pings and never reads the pongs: the server stops reading once its writes do
    /// not drain, so what it holds for the socket stays bounded (it grew by three times what was
    /// sent), and the kernel's buffers push back on the sender.
    @Test func aPeerThatNeverReadsCannotMakeTheServerHoldItsAnswers() async throws {
        try await withServer(configure: {
            $0.socketMessagesPerSecond = 1_000_000_000
            $0.socketMessageBurst = 1_000_000_000
        }) { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port, receiveBuffer: 4_096) }
            // One write of many pings at a time; the socket's send blocks (here: times out) once
            // the server stops reading.
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(socket.fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let ping = RawWebSocket.clientFrame(opcode: 9, payload: Array(repeating: 0x61, count: 125), fin: true, mask: [1, 2, 3, 4])
            let batch = Array([[UInt8]](repeating: ping, count: 1_000).joined())
            let heapBefore = Int(presence_heap_bytes_in_use())
            let sent = try await offThePool { () -> Int in
                var sent = 0
                // At most 64 MB: a server that reads it all holds about as much in pongs.
                while sent < 64 << 20 {
                    let count = batch.withUnsafeBytes { Glibc.send(socket.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    guard count > 0 else { break }
                    sent += count
                }
                return sent
            }
            let heapGrowth = Int(presence_heap_bytes_in_use()) - heapBefore
            #expect(sent < 32 << 20, "the server read \(sent >> 20) MB from a peer that reads nothing")
            #expect(heapGrowth < 24 << 20, "the heap grew by \(heapGrowth >> 20) MB")
            #expect(try await http.call(.get, "/health").status == 200)
        }
    }

    /// Sockets that answered a message and closed leave nothing behind: 10,000 of them (each a
    /// heartbeat, a subscribe or an unknown message, its reply read, then a close) grew the heap
    /// by about 6 KB each before the outbox let go of its socket's handler.
    @Test func closedSocketsLeaveTheHeapFlat() async throws {
        try await withServer { http in
            let port = http.port
            let messages = [
                RawWebSocket.heartbeat, #"{"type":"subscribe","roomToken":"r_none"}"#, #"{"type":"what"}"#,
            ]
            @Sendable func useAndClose(_ count: Int, worker: Int) throws {
                for index in 0..<count {
                    let socket = try RawWebSocket(port: port)
                    try socket.sendText(messages[(index + worker) % messages.count])
                    guard socket.readFrame() != nil else { throw TestFailure("no reply") }
                    try socket.sendFrame(opcode: 8, payload: [0x03, 0xE8])
                    _ = socket.readToEnd()
                }
            }
            func round(_ count: Int) async throws {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<4 { group.addTask { try await offThePool { try useAndClose(count / 4, worker: worker) } } }
                    try await group.waitForAll()
                }
                try await http.waitForMetric("presence_ws_connections", toBe: 0)
                // The hubs forget a socket in their own step.
                try await Task.sleep(for: .milliseconds(200))
            }
            try await round(1_000)
            let before = Int(presence_heap_bytes_in_use())
            try await round(10_000)
            let growth = Int(presence_heap_bytes_in_use()) - before
            #expect(growth < 8 << 20, "10,000 closed sockets grew the heap by \(growth >> 10) KiB")
        }
    }
}
