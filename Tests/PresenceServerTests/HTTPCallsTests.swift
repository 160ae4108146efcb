import Foundation
import HTTPTypes
@testable import PresenceServer
import PresenceSQLite
import PresenceStore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `POST /api/heartbeat` and `POST /api/disconnect`, answered on the event loop before
/// Hummingbird (`HTTPCalls`, `HTTPCallsHandler`), at once or when their work is done.
@Suite struct HTTPCallsTests {
    /// Once the session is stored, its heartbeats ask the authorizer nothing, and their answers
    /// are the full path's: same status, body and headers (CORS included), `Date` aside. On
    /// SQLite, whose join is written before it is answered, so the join takes the full path.
    @Test func heartbeatsOfALiveSessionAreAnsweredAtOnceAsInFull() async throws {
        let authorizer = GatedAuthorizer()
        let store = try SQLiteStore(directory: temporaryDirectory())
        try await withServer(store: store, configure: {
            $0.authorizer = authorizer
            $0.allowedOrigins = ["https://app.example"]
        }) { http in
            let body = #"{"roomId":"room","userId":"alice","sessionId":"a","interval":10000}"#
            let origin: HTTPFields = [.origin: "https://app.example"]
            let joined = try await http.call(.post, "/api/heartbeat", body: body, headers: origin)
            #expect(joined.status == 200)
            #expect(authorizer.authentications == 1 && authorizer.joinsAuthorized == 1)
            // Until the join is committed a heartbeat may still take the full path.
            try await store.synchronize()
            try await Task.sleep(for: .milliseconds(200))
            let settled = authorizer.authentications
            for _ in 0..<20 {
                let again = try await http.call(.post, "/api/heartbeat", body: body, headers: origin)
                #expect(again.status == 200)
                #expect(again.body == joined.body)
                #expect(Self.withoutDate(again.headers) == Self.withoutDate(joined.headers))
                #expect(again.headers[.date] != nil)
            }
            #expect(joined.headers[.accessControlAllowOrigin] == "https://app.example")
            #expect(joined.headers[.server] == "presence-server")
            #expect(authorizer.authentications == settled)
            #expect(try await http.metric("presence_heartbeats_total") == 21)
            // Another origin is not granted on this path either.
            let elsewhere = try await http.call(.post, "/api/heartbeat", body: body, headers: [.origin: "https://evil.example"])
            #expect(elsewhere.status == 200 && elsewhere.headers[.accessControlAllowOrigin] == nil)
            #expect(authorizer.authentications == settled)
        }
    }

    /// What the path cannot answer goes the full way, which reports it and changes nothing.
    @Test func whatCannotBeAnsweredAtOnceGetsTheFullPathsAnswer() async throws {
        let authorizer = GatedAuthorizer()
        try await withServer(store: try SQLiteStore(directory: temporaryDirectory()), configure: { $0.authorizer = authorizer }) { http in
            _ = try await http.heartbeat(user: "alice", session: "a")
            let bad = try await http.call(.post, "/api/heartbeat", body: #"{"roomId":"room","userId":"alice""#)
            #expect(bad.status == 400 && bad.errorCode == "invalid_json", "\(bad.body)")
            let negative = try await http.call(
                .post, "/api/heartbeat", body: #"{"roomId":"room","userId":"alice","sessionId":"a","interval":-1}"#)
            #expect(negative.status == 400 && negative.errorCode == "invalid_argument", "\(negative.body)")
            // A new session is a join: the full path, and the authorizer is asked.
            _ = try await http.heartbeat(user: "alice", session: "b")
            #expect(authorizer.joinsAuthorized == 2)
            #expect(try await http.listRoom("room").users.map(\.userId) == ["alice"])
            #expect(try await http.metric("presence_heartbeats_total") == 2)
        }
    }

    /// A pipelined heartbeat is not answered before the slower request sent ahead of it.
    @Test func aPipelinedHeartbeatWaitsForTheAnswerBeforeIt() async throws {
        let authorizer = GatedAuthorizer()
        try await withServer(configure: { $0.authorizer = authorizer }) { http in
            let tokens = try await http.heartbeat(user: "alice", session: "a")
            let socket = try await offThePool { try RawWebSocket(port: http.port, handshake: false) }
            let update = #"{"sessionToken":"\#(tokens.sessionToken)","data":{"typing":true}}"#
            let heartbeat = #"{"roomId":"room","userId":"alice","sessionId":"a","interval":10000}"#
            try socket.write(Array((Self.post("/api/update", update) + Self.post("/api/heartbeat", heartbeat)).utf8))
            try await Task.sleep(for: .milliseconds(300))
            #expect(Self.availableBytes(socket).isEmpty, "an answer came while the update was held")
            authorizer.openGate()
            let answers = try await offThePool { try Self.readResponses(socket, count: 2) }
            #expect(answers.map(\.status) == [200, 200])
            #expect(answers.first?.body == "{}")
            #expect(answers.last?.body == tokens.jsonObject)
            // Heartbeats pipelined with nothing before them are answered in one go, in order.
            try socket.write(Array(String(repeating: Self.post("/api/heartbeat", heartbeat), count: 5).utf8))
            let more = try await offThePool { try Self.readResponses(socket, count: 5) }
            #expect(more.map(\.status) == Array(repeating: 200, count: 5))
            #expect(Set(more.map(\.body)) == [tokens.jsonObject])
            // A chunked body comes in parts, here in two writes.
            let (first, second) = (String(heartbeat.prefix(20)), String(heartbeat.dropFirst(20)))
            try socket.write(Array(
                "POST /api/heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n\(String(first.utf8.count, radix: 16))\r\n\(first)\r\n".utf8))
            try await Task.sleep(for: .milliseconds(20))
            try socket.write(Array("\(String(second.utf8.count, radix: 16))\r\n\(second)\r\n0\r\n\r\n".utf8))
            let chunked = try await offThePool { try Self.readResponses(socket, count: 1) }
            #expect(chunked.first?.status == 200 && chunked.first?.body == tokens.jsonObject)
        }
    }

    /// The rate limit counts each heartbeat once, whichever path answers it, and a limited one
    /// gets the full path's 429.
    @Test func theRateLimitCountsEachHeartbeatOnce() async throws {
        // On SQLite, where a join is tried at once, refused there, and answered the full way.
        try await withServer(store: try SQLiteStore(directory: temporaryDirectory()), configure: {
            $0.addressRequestsPerSecond = 0.001
            $0.addressRequestBurst = 4
        }) { http in
            // The join is tried here first, then goes the full way: one request, one token.
            _ = try await http.heartbeat(user: "alice", session: "a")
            for _ in 0..<3 { _ = try await http.heartbeat(user: "alice", session: "a") }
            let limited = try await http.call(
                .post, "/api/heartbeat", body: #"{"roomId":"room","userId":"alice","sessionId":"a","interval":10000}"#)
            #expect(limited.status == 429 && limited.errorCode == "rate_limited", "\(limited.body)")
            #expect(limited.headers[.retryAfter] == "1")
            #expect(try await http.metric("presence_rate_limited_total") == 1)
            #expect(try await http.metric("presence_heartbeats_total") == 4)
        }
    }

    /// An app's authorizer that does not say otherwise (`authenticateAtOnce`'s default) is
    /// asked for every heartbeat, and refuses a bad token there.
    @Test func anAppsAuthorizerIsAskedForEveryHeartbeat() async throws {
        let counting = CountingAuthorizer(inner: MembersOnly(jwt: try await AuthTests.jwtAuthorizer(), members: ["room": ["alice"]]))
        try await withServer(configure: { $0.authorizer = counting }) { http in
            let body = #"{"roomId":"room","userId":"alice","sessionId":"a","interval":10000}"#
            let token = try await TestKeys.token("alice")
            for _ in 0..<3 {
                let reply = try await http.call(.post, "/api/heartbeat", body: body, headers: [.authorization: "Bearer \(token)"])
                #expect(reply.status == 200, "\(reply.body)")
            }
            #expect(counting.authentications == 3)
            let refused = try await http.call(.post, "/api/heartbeat", body: body, headers: [.authorization: "Bearer nonsense"])
            #expect(refused.status == 401 && refused.errorCode == "unauthenticated", "\(refused.body)")
        }
    }

    /// In the JWT mode a token that passed is known at once: its subject's heartbeats are
    /// answered at once, and the same token heartbeating for another user is refused in full.
    @Test func theJWTModeAnswersItsSubjectsHeartbeatsAtOnce() async throws {
        let jwt = try await AuthTests.jwtAuthorizer()
        let store = try SQLiteStore(directory: temporaryDirectory())
        try await withServer(store: store, configure: { $0.authorizer = jwt }) { http in
            let token = try await TestKeys.token("alice")
            let bearer: HTTPFields = [.authorization: "Bearer \(token)"]
            let alice = #"{"roomId":"room","userId":"alice","sessionId":"a","interval":10000}"#
            #expect(jwt.authenticateAtOnce(token: token) == .mustWait)
            let joined = try await http.call(.post, "/api/heartbeat", body: alice, headers: bearer)
            #expect(joined.status == 200)
            #expect(jwt.authenticateAtOnce(token: token) != .mustWait)
            try await store.synchronize()
            for _ in 0..<5 {
                let again = try await http.call(.post, "/api/heartbeat", body: alice, headers: bearer)
                #expect(again.status == 200 && again.body == joined.body)
            }
            let asBob = try await http.call(
                .post, "/api/heartbeat", body: #"{"roomId":"room","userId":"bob","sessionId":"b","interval":10000}"#, headers: bearer)
            #expect(asBob.status == 403 && asBob.errorCode == "permission_denied", "\(asBob.body)")
            #expect(try await http.listRoom("room").users.map(\.userId) == ["alice"])
            #expect(try await http.metric("presence_heartbeats_total") == 6)
        }
    }

    /// A call whose answer waits (here a join its authorizer is slow to allow) holds what is
    /// pipelined behind it, Hummingbird's requests and the loop's calls alike; then all are
    /// answered in their order.
    @Test func aCallAnsweredLaterHoldsWhatIsPipelinedBehindIt() async throws {
        let authorizer = JoinGate()
        try await withServer(configure: { $0.authorizer = authorizer }) { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port, handshake: false) }
            let alice = #"{"roomId":"room","userId":"alice","sessionId":"a","interval":10000}"#
            let bob = #"{"roomId":"room","userId":"bob","sessionId":"b","interval":10000}"#
            try socket.write(Array((Self.post("/api/heartbeat", alice) + "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                + Self.post("/api/disconnect", #"{"sessionToken":"unknown"}"#) + Self.post("/api/heartbeat", bob)).utf8))
            // The first join reaches its authorizer (late on a loaded machine), then nothing more.
            let deadline = ContinuousClock.now + .seconds(30)
            while authorizer.joinsAsked == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            try await Task.sleep(for: .milliseconds(300))
            #expect(Self.availableBytes(socket).isEmpty, "an answer came while the join was held")
            #expect(authorizer.joinsAsked == 1, "a request behind the held one was started")
            authorizer.open()
            let answers = try await offThePool { try Self.readResponses(socket, count: 4) }
            #expect(answers.map(\.status) == [200, 200, 200, 200], "\(answers)")
            let first = try JSONObject(parsing: Array(answers[0].body.utf8))
            let last = try JSONObject(parsing: Array(answers[3].body.utf8))
            #expect(answers[1].body == #"{"status":"ok"}"#)
            #expect(answers[2].body == "{}")
            #expect(try first.string("sessionToken") != last.string("sessionToken"))
            #expect(try await http.listRoom("room").users.map(\.userId).sorted() == ["alice", "bob"])
        }
    }

    /// A disconnect is answered on the loop (at once on the memory store, once stored on
    /// SQLite) with the head Hummingbird's route gives the same call (`Connection: close` goes
    /// that way); `sendBeacon`'s bare token and bad bodies get the route's answers too.
    @Test(arguments: ["memory", "sqlite"]) func disconnectsAreAnsweredOnTheLoopAsInFull(store kind: String) async throws {
        let store: any PresenceStore = kind == "memory" ? MemoryStore() : try SQLiteStore(directory: temporaryDirectory())
        try await withServer(store: store, configure: { $0.allowedOrigins = ["https://app.example"] }) { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port, handshake: false) }
            let a = try await http.heartbeat(user: "alice", session: "a")
            let b = try await http.heartbeat(user: "alice", session: "b")
            let c = try await http.heartbeat(user: "bob", session: "c")
            let origin = "Origin: https://app.example\r\n"
            try socket.write(Array((
                Self.post("/api/disconnect", #"{"sessionToken":"\#(a.sessionToken)"}"#, headers: "Content-Type: application/json\r\n" + origin)
                    + Self.post("/api/disconnect", b.sessionToken, headers: "Content-Type: text/plain\r\n" + origin)
                    + Self.post("/api/disconnect", #"{"sessionToken":"#, headers: "Content-Type: application/json\r\n" + origin)
                    + Self.post("/api/disconnect", "", headers: origin)).utf8))
            let onLoop = try await offThePool { try Self.readAnswers(socket, count: 4) }
            #expect(onLoop.map(\.status) == [200, 200, 400, 400], "\(onLoop)")
            #expect(onLoop[0].body == "{}" && onLoop[1].body == "{}")
            #expect(try await http.listRoom("room").users.filter(\.online).map(\.userId) == ["bob"])
            // The same call through Hummingbird's route.
            let closing = try await offThePool { try RawWebSocket(port: http.port, handshake: false) }
            try closing.write(Array(Self.post(
                "/api/disconnect", #"{"sessionToken":"\#(c.sessionToken)"}"#,
                headers: "Content-Type: application/json\r\nConnection: close\r\n" + origin).utf8))
            let routed = try await offThePool { try Self.readAnswers(closing, count: 1) }
            #expect(routed.first?.status == 200 && routed.first?.body == "{}")
            #expect(routed.first?.headers.filter { !$0.hasPrefix("connection:") } == onLoop[0].headers, "\(routed) \(onLoop[0])")
            #expect(onLoop[0].headers.contains("access-control-allow-origin:https://app.example"))
            #expect(try await http.listRoom("room").users.filter(\.online).isEmpty)
            #expect(onLoop[2].body.contains(#""code":"invalid_json""#), "\(onLoop[2].body)")
        }
    }

    /// A body over the limit is read to its end and refused with 413; the connection goes on.
    @Test(arguments: [HTTPCalls.heartbeatPath, HTTPCalls.disconnectPath]) func aBodyTooLargeIsRefusedAndTheConnectionGoesOn(path: String) async throws {
        try await withServer { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port, handshake: false) }
            let huge = #"{"sessionToken":""# + String(repeating: "x", count: ProtocolLimits.maxBodyBytes) + #""}"#
            let heartbeat = #"{"roomId":"room","userId":"alice","sessionId":"a","interval":10000}"#
            try socket.write(Array((Self.post(path, huge) + Self.post(HTTPCalls.heartbeatPath, heartbeat)).utf8))
            let answers = try await offThePool { try Self.readResponses(socket, count: 2) }
            #expect(answers.map(\.status) == [413, 200], "\(answers)")
            #expect(answers[0].body.contains("payload_too_large"))
            #expect(try await http.listRoom("room").users.map(\.userId) == ["alice"])
        }
    }

    /// A disconnect is charged once too, on the loop or through the route.
    @Test func theRateLimitCountsEachDisconnectOnce() async throws {
        try await withServer(store: try SQLiteStore(directory: temporaryDirectory()), configure: {
            $0.addressRequestsPerSecond = 0.001
            $0.addressRequestBurst = 4
        }) { http in
            let a = try await http.heartbeat(user: "alice", session: "a")
            let b = try await http.heartbeat(user: "alice", session: "b")
            let socket = try await offThePool { try RawWebSocket(port: http.port, handshake: false) }
            try socket.write(Array(Self.post(HTTPCalls.disconnectPath, #"{"sessionToken":"\#(a.sessionToken)"}"#).utf8))
            #expect(try await offThePool { try Self.readResponses(socket, count: 1) }.map(\.status) == [200])
            try socket.write(Array(Self.post(
                HTTPCalls.disconnectPath, #"{"sessionToken":"\#(b.sessionToken)"}"#,
                headers: "Content-Type: application/json\r\nConnection: close\r\n").utf8))
            #expect(try await offThePool { try Self.readResponses(socket, count: 1) }.map(\.status) == [200])
            let limited = try await http.call(.post, HTTPCalls.disconnectPath, body: #"{"sessionToken":"x"}"#)
            #expect(limited.status == 429 && limited.errorCode == "rate_limited", "\(limited.body)")
            #expect(limited.headers[.retryAfter] == "1")
            #expect(try await http.metric("presence_rate_limited_total") == 1)
        }
    }

    @Test func datesAreIMFFixdates() {
        #expect(HTTPDate.format(epochSeconds: 0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(epochSeconds: 784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")  // RFC 9110's example
        #expect(HTTPDate.format(epochSeconds: 951_782_400) == "Tue, 29 Feb 2000 00:00:00 GMT")
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<1_000 {
            let seconds = Int64.random(in: 0...4_102_444_800, using: &generator)  // to 2100
            #expect(HTTPDate.format(epochSeconds: seconds) == formatter.string(from: Date(timeIntervalSince1970: Double(seconds))))
        }
    }

    private static func withoutDate(_ fields: HTTPFields) -> [String] {
        fields.filter { $0.name != .date }.map { "\($0.name): \($0.value)" }.sorted()
    }

    private static func post(_ path: String, _ body: String, headers: String = "Content-Type: application/json\r\n") -> String {
        "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(headers)Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    /// What the server has sent so far, without waiting.
    private static func availableBytes(_ socket: RawWebSocket) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let count = recv(socket.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        return count > 0 ? Array(buffer[..<count]) : []
    }

    /// Reads `count` whole responses (each with a Content-Length) off the socket.
    private static func readResponses(_ socket: RawWebSocket, count: Int) throws -> [(status: Int, body: String)] {
        try readAnswers(socket, count: count).map { ($0.status, $0.body) }
    }

    /// Reads `count` whole responses (each with a Content-Length) off the socket, with their
    /// header lines (lowercased names, `Date` left out, sorted).
    private static func readAnswers(_ socket: RawWebSocket, count: Int) throws -> [(status: Int, headers: [String], body: String)] {
        var bytes: [UInt8] = []
        var responses: [(status: Int, headers: [String], body: String)] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while responses.count < count {
            if let end = bytes.indices.dropLast(3).first(where: { bytes[$0..<$0 + 4].elementsEqual([13, 10, 13, 10]) }) {
                let head = String(decoding: bytes[..<end], as: UTF8.self)
                let lines = head.split(separator: "\r\n")
                let length = lines.first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                if bytes.count >= end + 4 + length {
                    let status = Int(lines[0].split(separator: " ")[1]) ?? 0
                    let headers = lines.dropFirst().map { line -> String in
                        let parts = line.split(separator: ":", maxSplits: 1)
                        return "\(parts[0].lowercased()):\(parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : "")"
                    }.filter { !$0.hasPrefix("date:") }.sorted()
                    responses.append((status, headers, String(decoding: bytes[(end + 4)..<(end + 4 + length)], as: UTF8.self)))
                    bytes.removeFirst(end + 4 + length)
                    continue
                }
            }
            let received = recv(socket.fd, &buffer, buffer.count, 0)
            guard received > 0 else { throw TestFailure("the connection ended after \(responses.count) responses") }
            bytes += buffer[..<received]
        }
        return responses
    }
}

/// Another authorizer, counting the authentications it is asked for.
final class CountingAuthorizer<Inner: PresenceAuthorizer>: PresenceAuthorizer {
    let inner: Inner
    private let count = Mutex(0)

    init(inner: Inner) { self.inner = inner }

    var authentications: Int { count.withLock { $0 } }

    func authenticate(token: String?) async throws -> Identity? {
        count.withLock { $0 += 1 }
        return try await inner.authenticate(token: token)
    }

    func authorize(_ identity: Identity?, _ action: PresenceAction) async throws {
        try await inner.authorize(identity, action)
    }
}

/// An authorizer that holds every join until `open()`, and lets nothing through at once.
final class JoinGate: PresenceAuthorizer {
    private let asked = Atomic<Int>(0)
    private let gate = Gate()

    var joinsAsked: Int { asked.load(ordering: .relaxed) }

    func authenticate(token: String?) async throws -> Identity? { nil }

    func authorize(_ identity: Identity?, _ action: PresenceAction) async throws {
        guard case .join = action else { return }
        asked.add(1, ordering: .relaxed)
        await gate.wait()
    }

    func open() {
        gate.open()
    }
}
