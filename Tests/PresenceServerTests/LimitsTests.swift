import Foundation
import HTTPTypes
import Testing
import PresenceServer
import PresenceStore

/// Floods past every limit: each gets its error (429, or close 1008) and a metric, and the
/// server stays up. All limits are configured explicitly here, since tests share one address.
@Suite struct LimitsTests {
    @Test func requestsPerAddress() async throws {
        let store = MemoryStore()
        // Practically no refill, so a slow machine cannot earn tokens back during the test.
        try await withServer(store: store, configure: {
            $0.addressRequestsPerSecond = 0.001
            $0.addressRequestBurst = 5
        }) { http in
            var statuses: [Int] = []
            for index in 0..<8 {
                statuses.append(try await http.call(.post, "/api/heartbeat", body: #"{"roomId":"r","userId":"u\#(index)","sessionId":"s\#(index)"}"#).status)
            }
            #expect(statuses == [200, 200, 200, 200, 200, 429, 429, 429])
            let limited = try await http.call(.get, "/api/list?roomToken=x")
            #expect(limited.errorCode == "rate_limited")
            #expect(limited.headers[.retryAfter] == "1")
            // Health and metrics stay reachable for the operator.
            #expect(try await http.call(.get, "/health").status == 200)
            #expect(try await http.metric("presence_rate_limited_total") == 4)
            // Refused requests changed nothing.
            #expect(try await store.roomUsers(roomId: "r", onlineOnly: false, limit: 100).users.count == 5)
        }
    }

    @Test func connectionsPerAddress() async throws {
        try await withServer(configure: { $0.connectionsPerAddress = 2 }) { http in
            let first = TestSocket(port: http.port)
            let second = TestSocket(port: http.port)
            defer { first.close(); second.close() }
            _ = try await first.subscribe("r_x")
            _ = try await second.subscribe("r_x")
            // A client of our own for the refused one: HummingbirdWSClient sometimes misses a close
            // that arrives right behind the 101, and then never ends.
            let third = try await offThePool { try RawWebSocket(port: http.port) }
            let refusal = try #require(try await offThePool { third.readFrame() })
            #expect(refusal.closeCode == 1008)
            try third.sendFrame(opcode: 8, payload: Array(refusal.payload.prefix(2)))
            #expect(try await offThePool { third.readToEnd() }.isEmpty, "nothing after the close")
            #expect(try await http.metric("presence_connections_refused_total") == 1)
            // Closing one frees a place.
            first.close()
            _ = try await first.closeFrame(what: "a socket the client closed")
            try await http.waitForMetric("presence_ws_connections", toBe: 1)
            let fourth = TestSocket(port: http.port)
            defer { fourth.close() }
            _ = try await fourth.subscribe("r_x")
        }
    }

    @Test func sessionsAndRoomsPerUser() async throws {
        let store = MemoryStore(quotas: .init(sessionsPerUser: 3, roomsPerUser: 2))
        try await withServer(store: store) { http in
            _ = try await http.heartbeat(room: "one", user: "alice", session: "1")
            _ = try await http.heartbeat(room: "one", user: "alice", session: "2")
            _ = try await http.heartbeat(room: "two", user: "alice", session: "3")
            var reply = try await http.call(.post, "/api/heartbeat", body: #"{"roomId":"one","userId":"alice","sessionId":"4"}"#)
            #expect(reply.status == 429)
            #expect(reply.errorCode == "rate_limited")
            // Heartbeats of existing sessions are never limited.
            _ = try await http.heartbeat(room: "one", user: "alice", session: "1")
            // Ending one session frees a place, but a third room is still one too many.
            let ended = try await http.heartbeat(room: "one", user: "alice", session: "2")
            _ = try await http.call(.post, "/api/disconnect", body: ended.sessionToken, headers: [.contentType: "text/plain"])
            reply = try await http.call(.post, "/api/heartbeat", body: #"{"roomId":"three","userId":"alice","sessionId":"5"}"#)
            #expect(reply.status == 429)
            #expect(try await http.listRoom("three").users.isEmpty)
            _ = try await http.heartbeat(room: "two", user: "alice", session: "6")
            // Other users are not affected.
            _ = try await http.heartbeat(room: "three", user: "bob", session: "b")
        }
    }

    @Test func subscriptionsPerSocket() async throws {
        try await withServer(configure: { $0.subscriptionsPerSocket = 2 }) { http in
            let tokens = try await (0..<3).asyncMap { try await http.heartbeat(room: "room\($0)", user: "u", session: "s\($0)") }
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            _ = try await socket.subscribe(tokens[0].roomToken)
            _ = try await socket.subscribe(tokens[1].roomToken)
            socket.send(#"{"type":"subscribe","roomToken":"\#(tokens[2].roomToken)"}"#)
            #expect(try await socket.receive(type: "error")["error"]?["code"]?.string == "rate_limited")
            // Re-subscribing to a followed room is not a new subscription.
            _ = try await socket.subscribe(tokens[1].roomToken, limit: 5)
            socket.send(#"{"type":"unsubscribe","roomToken":"\#(tokens[0].roomToken)"}"#)
            _ = try await socket.receive(type: "unsubscribed")
            _ = try await socket.subscribe(tokens[2].roomToken)
        }
    }

    @Test func disallowedOriginsCannotOpenWebSockets() async throws {
        try await withServer(configure: { $0.allowedOrigins = ["https://app.example"] }) { http in
            await #expect(throws: TestFailure.self) {
                _ = try await offThePool { try RawWebSocket(port: http.port, extraHeaders: "Origin: https://evil.example\r\n") }
            }
            _ = try await offThePool { try RawWebSocket(port: http.port, extraHeaders: "Origin: https://app.example\r\n") }
        }
        try await withServer { http in
            // With no origins configured only same-origin pages may connect.
            await #expect(throws: TestFailure.self) {
                _ = try await offThePool { try RawWebSocket(port: http.port, extraHeaders: "Origin: https://evil.example\r\n") }
            }
            _ = try await offThePool { try RawWebSocket(port: http.port, extraHeaders: "Origin: http://127.0.0.1:\(http.port)\r\n") }
        }
    }

    /// With an allow-list, only listed origins pass, compared as RFC 6454 origins: what is not
    /// lowercase http(s) used to be waved through.
    @Test func originsAreComparedAsWebOrigins() async throws {
        try await withServer(configure: { $0.allowedOrigins = ["https://app.example"] }) { http in
            for origin in [
                "null", "file://", "chrome-extension://abcdefghijklmnop", "HTTPS://evil.example", "https://app.example.evil.example",
                "https://app.example:444", "http://app.example", "https://app.example@evil.example", "",
            ] {
                let refusal = try await RawWebSocket.refusal(port: http.port, target: "/api/ws", headers: "Origin: \(origin)\r\n")
                #expect(refusal.status == "403", "Origin: \(origin) got \(refusal.status)")
            }
            // The same origin in other spellings.
            for origin in ["HTTPS://APP.example", "https://app.example:443"] {
                _ = try await offThePool { try RawWebSocket(port: http.port, extraHeaders: "Origin: \(origin)\r\n") }
            }
            // CORS grants what the WebSocket check allows, and only that.
            let granted = try await http.call(.get, "/health", headers: [.origin: "HTTPS://App.Example"])
            #expect(granted.headers[.accessControlAllowOrigin] == "HTTPS://App.Example")
            let notGranted = try await http.call(.get, "/health", headers: [.origin: "null"])
            #expect(notGranted.headers[.accessControlAllowOrigin] == nil)
        }
        try await withServer { http in
            // Same-origin only: a sandboxed frame's `null` is not the server's origin.
            for origin in ["null", "file://", "http://127.0.0.1:\(http.port + 1)"] {
                let refusal = try await RawWebSocket.refusal(port: http.port, target: "/api/ws", headers: "Origin: \(origin)\r\n")
                #expect(refusal.status == "403", "Origin: \(origin) got \(refusal.status)")
            }
            _ = try await offThePool { try RawWebSocket(port: http.port, extraHeaders: "Origin: HTTP://127.0.0.1:\(http.port)\r\n") }
            // What non-browser clients send (no browser sends a ws: origin).
            _ = try await offThePool { try RawWebSocket(port: http.port, extraHeaders: "Origin: ws://127.0.0.1\r\n") }
        }
    }

    /// What NIO's parser refuses gets 400 and PROTOCOL.md's error body, and the connection ends:
    /// these used to get no answer and hold their connection (and a file descriptor) for good.
    @Test func malformedRequestsAreAnsweredAndClosed() async throws {
        try await withServer { http in
            let requests: [(String, [UInt8])] = [
                ("a space in the target", Array("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".utf8)),
                ("a raw é in the target", Array("GET /".utf8) + [0xC3, 0xA9] + Array(" HTTP/1.1\r\nHost: x\r\n\r\n".utf8)),
                ("no HTTP at all", Array("HELLO\r\n\r\n".utf8)),
                ("a header without a colon", Array("GET /health HTTP/1.1\r\nHost x\r\n\r\n".utf8)),
                ("a bad upgrade head", Array("GET /api/ws HTTP/1.1\r\nUpgrade websocket\r\n\r\n".utf8)),
                (
                    "garbage after a good request on a kept-alive connection",
                    Array("GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /a b HTTP/1.1\r\n\r\n".utf8)
                ),
            ]
            for (what, request) in requests {
                let answer = try await RawWebSocket.exchange(port: http.port, request, timeout: 5)
                let text = try #require(answer, "\(what): no answer, and the connection stayed open")
                #expect(text.contains("HTTP/1.1 400"), "\(what): \(text)")
                #expect(text.contains(#""code":"invalid_argument""#), "\(what): \(text)")
            }
            #expect(try await http.call(.get, "/health").status == 200)
        }
    }

    /// Connections from one address are capped whatever they carry (idle, HTTP, WebSocket); other
    /// addresses are not affected, and a closed connection frees its place.
    @Test func tcpConnectionsPerAddressAreCapped() async throws {
        try await withServer(configure: { $0.tcpConnectionsPerAddress = 4 }) { http in
            var held: [RawWebSocket] = []
            for _ in 0..<4 {
                let socket = try await offThePool { try RawWebSocket(port: http.port, handshake: false, source: "127.0.0.3") }
                // Answered, so counted: the server takes connections on several event loops, in no set order.
                try socket.write(Array("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
                let answer = try await offThePool { () -> String in
                    var buffer = [UInt8](repeating: 0, count: 4_096)
                    let count = recv(socket.fd, &buffer, buffer.count, 0)
                    return String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)
                }
                #expect(answer.hasPrefix("HTTP/1.1 200"))
                held.append(socket)
            }
            // The fifth is closed at once, unanswered.
            let refused = try await RawWebSocket.exchange(port: http.port, Array("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8), source: "127.0.0.3", timeout: 20)
            #expect(refused == "")
            // Others are served, and the refusal is counted.
            #expect(try await http.call(.get, "/health").status == 200)
            try await http.waitForMetric("presence_connections_refused_total", toBe: 1)
            held.removeLast()
            // Its slot comes back once the server has seen the close.
            var answered = ""
            for _ in 0..<50 where !answered.contains("HTTP/1.1 200") {
                answered = try await RawWebSocket.exchange(
                    port: http.port, Array("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), source: "127.0.0.3",
                    timeout: 5) ?? ""
                if !answered.contains("HTTP/1.1 200") { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(answered.contains("HTTP/1.1 200"))
            _ = held
        }
    }

    /// A refused upgrade says why, in PROTOCOL.md's error body with its status, and closes.
    @Test func refusedUpgradesAnswerWithTheErrorBody() async throws {
        try await withServer(configure: { $0.allowedOrigins = ["https://app.example"] }) { http in
            let origin = try await RawWebSocket.refusal(port: http.port, target: "/api/ws", headers: "Origin: https://evil.example\r\n")
            #expect(origin.status == "403" && origin.body.contains(#""code":"permission_denied""#), "\(origin)")
            let path = try await RawWebSocket.refusal(port: http.port, target: "/api/elsewhere")
            #expect(path.status == "404" && path.body.contains(#""code":"not_found""#), "\(path)")
            #expect(try await http.call(.get, "/health").status == 200)
        }
    }

    @Test func slowlorisRequestsAreCutOff() async throws {
        try await withServer(configure: { $0.requestTimeout = .milliseconds(500) }) { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port, handshake: false) }
            let started = ContinuousClock.now
            // Dribble a request head, one header line every 200 ms, never finishing it.
            let dribble = Task {
                for index in 0..<40 {
                    try? socket.write(Array("X-Slow-\(index): 1\r\n".utf8))
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            try socket.write(Array("GET /health HTTP/1.1\r\nHost: x\r\n".utf8))
            _ = try await offThePool { socket.readToEnd() }
            dribble.cancel()
            let elapsed = ContinuousClock.now - started
            #expect(elapsed < .seconds(5), "cut off after about 0.5 s, not after the 8 s of dribbling")
            // (The test's own HTTP client sat idle past the timeout too, so ask on fresh connections.)
            func get(_ path: String) async throws -> String {
                try await offThePool {
                    let raw = try RawWebSocket(port: http.port, handshake: false)
                    try raw.write(Array("GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
                    return String(decoding: raw.readToEnd(), as: UTF8.self)
                }
            }
            #expect(try await get("/health").hasPrefix("HTTP/1.1 200"))
            #expect(metricValue("presence_slow_requests_cut_total", in: try await get("/metrics")) ?? 0 >= 1)
        }
    }
}

extension LimitsTests {
    @Test func anIdleKeepAliveConnectionIsClosed() async throws {
        try await withServer(configure: {
            $0.requestTimeout = .seconds(60)
            $0.idleTimeout = .milliseconds(500)
        }) { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port, handshake: false) }
            try socket.write(Array("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            let started = ContinuousClock.now
            let answer = String(decoding: try await offThePool { socket.readToEnd() }, as: UTF8.self)
            let elapsed = ContinuousClock.now - started
            #expect(answer.hasPrefix("HTTP/1.1 200"))
            #expect(elapsed >= .milliseconds(400) && elapsed < .seconds(5), "closed after the idle timeout, not at once: \(elapsed)")
        }
    }

    /// One timer per connection must not cut a connection that keeps sending, however long it lives.
    @Test func aBusyKeepAliveConnectionOutlivesItsTimeouts() async throws {
        try await withServer(configure: {
            $0.requestTimeout = .seconds(1)
            $0.idleTimeout = .seconds(1)
        }) { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port, handshake: false) }
            let requests = 30
            for index in 0..<requests {
                let last = index == requests - 1 ? "Connection: close\r\n" : ""
                try socket.write(Array("GET /health HTTP/1.1\r\nHost: x\r\n\(last)\r\n".utf8))
                try await Task.sleep(for: .milliseconds(100))
            }
            // Three seconds of requests, each timeout a third of that: every one answered.
            let answers = String(decoding: try await offThePool { socket.readToEnd() }, as: UTF8.self)
            #expect(answers.components(separatedBy: "HTTP/1.1 200").count - 1 == requests)
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
