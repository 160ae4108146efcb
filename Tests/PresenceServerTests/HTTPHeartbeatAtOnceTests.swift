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

/// `POST /api/heartbeat` of a live session, answered on the event loop before Hummingbird.
@Suite struct HTTPHeartbeatAtOnceTests {
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

    private static func post(_ path: String, _ body: String) -> String {
        "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    /// What the server has sent so far, without waiting.
    private static func availableBytes(_ socket: RawWebSocket) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let count = recv(socket.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        return count > 0 ? Array(buffer[..<count]) : []
    }

    /// Reads `count` whole responses (each with a Content-Length) off the socket.
    private static func readResponses(_ socket: RawWebSocket, count: Int) throws -> [(status: Int, body: String)] {
        var bytes: [UInt8] = []
        var responses: [(status: Int, body: String)] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while responses.count < count {
            if let end = bytes.indices.dropLast(3).first(where: { bytes[$0..<$0 + 4].elementsEqual([13, 10, 13, 10]) }) {
                let head = String(decoding: bytes[..<end], as: UTF8.self)
                let lines = head.split(separator: "\r\n")
                let length = lines.first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                if bytes.count >= end + 4 + length {
                    let status = Int(lines[0].split(separator: " ")[1]) ?? 0
                    responses.append((status, String(decoding: bytes[(end + 4)..<(end + 4 + length)], as: UTF8.self)))
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
