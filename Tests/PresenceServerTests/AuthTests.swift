import Foundation
import HTTPTypes
import JWTKit
import Testing
import PresenceServer
import PresenceStore

/// User authentication and the attacks on it: every one gets its error and changes nothing.
@Suite struct AuthTests {
    static func jwtAuthorizer(clock: any WallClock = SystemWallClock(), keys: (inout JWTAuthorizer.Configuration) -> Void = { _ in })
        async throws -> JWTAuthorizer
    {
        var configuration = JWTAuthorizer.Configuration()
        configuration.hmacSecret = TestKeys.hmacSecret
        configuration.issuer = "presence-tests"
        configuration.audience = "presence"
        configuration.leeway = 0
        keys(&configuration)
        return try await JWTAuthorizer(configuration: configuration, clock: clock)
    }

    func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

    func heartbeatBody(user: String, session: String, name: String? = nil) -> String {
        #"{"roomId":"room","userId":"\#(user)","sessionId":"\#(session)"\#(name.map { #","name":"\#($0)""# } ?? "")}"#
    }

    @Test func heartbeatActsOnlyForTheTokensSubject() async throws {
        let authorizer = try await Self.jwtAuthorizer()
        try await withServer(configure: { $0.authorizer = authorizer }) { http in
            let alice = try await TestKeys.token("alice", name: "Alice Liddell", picture: "https://example.com/alice.png")
            var reply = try await http.call(.post, "/api/heartbeat", body: heartbeatBody(user: "alice", session: "a", name: "Mallory"), headers: bearer(alice))
            #expect(reply.status == 200)
            let tokens = try reply.json.decode(SessionTokens.self)
            // The identity provider's profile wins over what the client sent.
            let record = try await http.listRoom("room").users.first
            #expect(record?.name == "Alice Liddell")
            #expect(record?.image == "https://example.com/alice.png")

            let before = try await http.listRoom("room")
            let now = Date()
            let attacks: [(String, String?, Int, String)] = [
                ("another user's userId", alice, 403, "permission_denied"),
                ("no token", nil, 401, "unauthenticated"),
                ("expired", try await TestKeys.token("bob", now: now, lifetime: -60), 401, "unauthenticated"),
                ("no exp", try await TestKeys.token("bob", withExpiry: false), 401, "unauthenticated"),
                ("not yet valid", try await TestKeys.token("bob", notBefore: now.addingTimeInterval(600)), 401, "unauthenticated"),
                ("wrong audience", try await TestKeys.token("bob", audience: "someone-else"), 401, "unauthenticated"),
                ("wrong issuer", try await TestKeys.token("bob", issuer: "evil"), 401, "unauthenticated"),
                ("alg none", TestKeys.unsignedToken("bob"), 401, "unauthenticated"),
                ("other secret", try await TestKeys.token("bob", signer: .hmac("another-secret-that-is-long-enough-32b")), 401, "unauthenticated"),
                ("RS256 when only HS256 is configured", try await TestKeys.token("bob", signer: .rsa), 401, "unauthenticated"),
                ("garbage", "not.a.jwt", 401, "unauthenticated"),
            ]
            for (attack, token, status, code) in attacks {
                reply = try await http.call(
                    .post, "/api/heartbeat", body: heartbeatBody(user: "bob", session: "b"), headers: token.map(bearer) ?? [:])
                #expect(reply.status == status, "\(attack)")
                #expect(reply.errorCode == code, "\(attack): \(reply.body)")
            }
            #expect(try await http.listRoom("room") == before)

            // list needs a valid user token; update acts only on the token subject's own session.
            #expect(try await http.call(.get, "/api/list?roomToken=\(tokens.roomToken)").status == 401)
            reply = try await http.call(.get, "/api/list?roomToken=\(tokens.roomToken)", headers: bearer(alice))
            #expect(reply.status == 200)
            let bobToken = try await TestKeys.token("bob")
            #expect(try await http.call(.get, "/api/list?roomToken=r_bogus", headers: bearer(bobToken)).body == #"{"roomVersion":0,"users":[],"onlineCount":0,"userCount":0}"#)
            reply = try await http.call(
                .post, "/api/update", body: #"{"sessionToken":"\#(tokens.sessionToken)","data":"hijacked"}"#, headers: bearer(bobToken))
            #expect(reply.status == 403)
            reply = try await http.call(
                .post, "/api/update", body: #"{"sessionToken":"\#(tokens.sessionToken)","data":"mine"}"#, headers: bearer(alice))
            #expect(reply.status == 200)
            // The session token alone still ends its session (what a closing page sends).
            #expect(try await http.call(.post, "/api/disconnect", body: tokens.sessionToken, headers: [.contentType: "text/plain"]).status == 200)
            #expect(try await http.listRoom("room").users.first?.online == false)
        }
    }

    /// A token's times are the signer's numbers: one beyond Int64 milliseconds used to trap the
    /// process (any holder of a token from a shared identity provider could stop the service).
    @Test func claimTimesOutOfRangeAreAnsweredNotTrapped() async throws {
        let authorizer = try await Self.jwtAuthorizer()
        try await withServer(configure: { $0.authorizer = authorizer }) { http in
            let far = Date(timeIntervalSince1970: 9.3e15)
            // (claim, user, token, status)
            let cases: [(String, String, String, Int)] = [
                // A far exp is legal JWT: the token is valid.
                ("exp 9.3e15", "far", try await TestKeys.token("far", now: far, lifetime: 0), 200),
                ("exp 1e300", "huge", try await TestKeys.token("huge", now: Date(timeIntervalSince1970: 1e300), lifetime: 0), 200),
                ("exp -1e19", "past", try await TestKeys.token("past", now: Date(timeIntervalSince1970: -1e19), lifetime: 0), 401),
                ("nbf -1e19", "early", try await TestKeys.token("early", notBefore: Date(timeIntervalSince1970: -1e19)), 401),
                ("nbf 9.3e15", "late", try await TestKeys.token("late", notBefore: far), 401),
            ]
            for (claim, user, token, status) in cases {
                let reply = try await http.call(.post, "/api/heartbeat", body: heartbeatBody(user: user, session: user), headers: bearer(token))
                #expect(reply.status == status, "\(claim): \(reply.body)")
                if status == 401 { #expect(reply.errorCode == "unauthenticated", "\(claim)") }
            }
            #expect(try await http.listRoom("room").users.map(\.userId).sorted() == ["far", "huge"])
            #expect(try await http.call(.get, "/health").status == 200)
        }
    }

    /// A socket whose token expired stops receiving: its subscriptions end with `unsubscribed`
    /// (`token_expired`) and its watches with `unwatched`, at the next change instead of its diff;
    /// a fresh token in an `auth` message lets it subscribe and watch again. They used to keep
    /// streaming while only new subscriptions were refused.
    @Test func anExpiredTokenEndsItsSocketsSubscriptionsAndWatches() async throws {
        let clock = ManualWallClock(nowMillis: Int64(Date().timeIntervalSince1970 * 1000))
        let authorizer = try await Self.jwtAuthorizer(clock: clock)
        try await withServer(store: MemoryStore(clock: clock), configure: { $0.authorizer = authorizer }) { http in
            let now = Date(timeIntervalSince1970: Double(clock.nowMillis()) / 1000)
            func join(_ user: String) async throws -> SessionTokens {
                let token = try await TestKeys.token(user, now: now, lifetime: 3_600)
                let reply = try await http.call(
                    .post, "/api/heartbeat", body: #"{"roomId":"room","userId":"\#(user)","sessionId":"\#(user)","interval":300000}"#,
                    headers: bearer(token))
                return try reply.json.decode(SessionTokens.self)
            }
            let alice = try await join("alice")
            let carol = try await TestKeys.token("carol", now: now, lifetime: 60, watch: .string("*"))
            let socket = TestSocket(port: http.port, path: "/api/ws?access_token=\(carol)")
            defer { socket.close() }
            _ = try await socket.subscribe(alice.roomToken)
            socket.send(#"{"type":"watchUsers","userIds":["bob"]}"#)
            _ = try await socket.receive(type: "users")
            // Still valid: a join reaches the subscriber and the watcher.
            _ = try await join("dave")
            _ = try await socket.receive(type: "diff")

            clock.advance(by: 61_000)
            _ = try await join("bob")
            let (ended, unwatched) = try await socket.receiveInEitherOrder("unsubscribed", "unwatched")
            #expect(ended["reason"]?.string == "token_expired")
            #expect(ended["roomToken"]?.string == alice.roomToken)
            #expect(unwatched["reason"]?.string == "token_expired")
            #expect(unwatched["userIds"] == .array([.string("bob")]))
            let bobLeaves = try await http.call(.post, "/api/disconnect", body: #"{"sessionToken":"\#((try await join("bob")).sessionToken)"}"#)
            #expect(bobLeaves.status == 200)
            #expect(await socket.nextRaw(timeout: .milliseconds(500)) == nil, "a socket with an expired token still hears changes")
            // New subscriptions are refused until a fresh token.
            socket.send(#"{"type":"subscribe","roomToken":"\#(alice.roomToken)"}"#)
            #expect(try await socket.receive(type: "error")["error"]?["code"]?.string == "unauthenticated")
            let fresh = try await TestKeys.token("carol", now: now.addingTimeInterval(61), lifetime: 60, watch: .string("*"))
            socket.send(#"{"type":"auth","token":"\#(fresh)"}"#)
            _ = try await socket.receive(type: "authenticated")
            #expect(try await socket.subscribe(alice.roomToken).users.map(\.userId).sorted() == ["alice", "bob", "dave"])
        }
    }

    /// A session id belongs to its user: one user's "phone" cannot block another's (it used to
    /// get every other user's "phone" a 409), over HTTP and WebSocket alike.
    @Test func oneUsersSessionIdCannotBlockAnothers() async throws {
        let authorizer = try await Self.jwtAuthorizer()
        try await withServer(configure: { $0.authorizer = authorizer }) { http in
            let mallory = try await TestKeys.token("mallory")
            let alice = try await TestKeys.token("alice")
            #expect(try await http.call(.post, "/api/heartbeat", body: heartbeatBody(user: "mallory", session: "phone"), headers: bearer(mallory)).status == 200)
            let reply = try await http.call(.post, "/api/heartbeat", body: heartbeatBody(user: "alice", session: "phone"), headers: bearer(alice))
            #expect(reply.status == 200, "\(reply.body)")
            let socket = TestSocket(port: http.port, path: "/api/ws?access_token=\(try await TestKeys.token("bob"))")
            defer { socket.close() }
            _ = try await socket.heartbeat(user: "bob", session: "phone")
            #expect(try await http.listRoom("room").users.map(\.userId) == ["mallory", "alice", "bob"])
            // The same user's "phone" in another room is still a conflict.
            let elsewhere = #"{"roomId":"elsewhere","userId":"alice","sessionId":"phone"}"#
            let conflict = try await http.call(.post, "/api/heartbeat", body: elsewhere, headers: bearer(alice))
            #expect(conflict.status == 409 && conflict.errorCode == "session_conflict", "\(conflict.body)")
        }
    }

    @Test func publicKeysRefuseAlgorithmConfusion() async throws {
        let authorizer = try await Self.jwtAuthorizer { configuration in
            configuration.hmacSecret = nil
            configuration.publicKeysPEM = [TestKeys.rsaPublic, TestKeys.ecPublic]
        }
        try await withServer(configure: { $0.authorizer = authorizer }) { http in
            for (signer, user) in [(TestKeys.Signer.rsa, "rsa-user"), (.ecdsa, "ec-user")] {
                let token = try await TestKeys.token(user, signer: signer)
                let reply = try await http.call(.post, "/api/heartbeat", body: heartbeatBody(user: user, session: user), headers: bearer(token))
                #expect(reply.status == 200, "\(signer)")
            }
            // The classic confusion: an HS256 token whose "secret" is the server's RSA public key.
            let forged = try await TestKeys.token("mallory", signer: .hmac(TestKeys.rsaPublic))
            let reply = try await http.call(.post, "/api/heartbeat", body: heartbeatBody(user: "mallory", session: "m"), headers: bearer(forged))
            #expect(reply.status == 401)
            #expect(try await http.listRoom("room").users.map(\.userId).sorted() == ["ec-user", "rsa-user"])
        }
    }

    @Test func webSocketTokensFromHeaderQueryOrAuthMessageAndExpiry() async throws {
        let clock = ManualWallClock(nowMillis: Int64(Date().timeIntervalSince1970 * 1000))
        let authorizer = try await Self.jwtAuthorizer(clock: clock)
        try await withServer(store: MemoryStore(clock: clock), configure: { $0.authorizer = authorizer }) { http in
            let now = Date(timeIntervalSince1970: Double(clock.nowMillis()) / 1000)
            // access_token in the query (what browsers use).
            let alice = try await TestKeys.token("alice", now: now, lifetime: 60)
            let viaQuery = TestSocket(port: http.port, path: "/api/ws?access_token=\(alice)")
            defer { viaQuery.close() }
            let tokens = try await viaQuery.heartbeat(user: "alice", session: "a")
            // Another user's id on the same socket is refused.
            viaQuery.send(#"{"type":"heartbeat","roomId":"room","userId":"bob","sessionId":"b"}"#)
            #expect(try await viaQuery.receive(type: "error")["error"]?["code"]?.string == "permission_denied")

            // No token: nothing is allowed until an auth message.
            let anonymous = TestSocket(port: http.port)
            defer { anonymous.close() }
            anonymous.send(#"{"type":"subscribe","roomToken":"\#(tokens.roomToken)"}"#)
            #expect(try await anonymous.receive(type: "error")["error"]?["code"]?.string == "unauthenticated")
            anonymous.send(#"{"type":"auth","token":"\#(try await TestKeys.token("carol", now: now, lifetime: 60))"}"#)
            #expect(try await anonymous.receive(type: "authenticated")["userId"]?.string == "carol")
            #expect(try await anonymous.subscribe(tokens.roomToken).users.map(\.userId) == ["alice"])
            anonymous.send(#"{"type":"auth","token":"\#(TestKeys.unsignedToken("carol"))"}"#)
            #expect(try await anonymous.receive(type: "error")["error"]?["code"]?.string == "unauthenticated")

            // A token that expires while connected stops being honoured at expiry.
            clock.advance(by: 61_000)
            viaQuery.send(#"{"type":"heartbeat","roomId":"room","userId":"alice","sessionId":"a"}"#)
            #expect(try await viaQuery.receive(type: "error")["error"]?["code"]?.string == "unauthenticated")
            viaQuery.send(#"{"type":"auth","token":"\#(try await TestKeys.token("alice", now: now.addingTimeInterval(61), lifetime: 60))"}"#)
            _ = try await viaQuery.receive(type: "authenticated")
            _ = try await viaQuery.heartbeat(user: "alice", session: "a")

            // An invalid token at the upgrade is refused outright.
            let refused = TestSocket(port: http.port, path: "/api/ws?access_token=garbage")
            #expect(await refused.nextRaw(timeout: .seconds(2)) == nil)
            await #expect(throws: (any Error).self) { _ = try await refused.connection.value }
            // With its status and the protocol's error body.
            let refusal = try await RawWebSocket.refusal(port: http.port, target: "/api/ws?access_token=garbage")
            #expect(refusal.status == "401" && refusal.body.contains(#""code":"unauthenticated""#), "\(refusal)")
        }
    }

    @Test func roomTokenRotation() async throws {
        try await withServer { http in
            let alice = try await http.heartbeat(user: "alice", session: "a")
            let watcher = TestSocket(port: http.port)
            defer { watcher.close() }
            _ = try await watcher.subscribe(alice.roomToken)

            #expect(try await http.call(.post, "/api/rooms/room/rotate-token").status == 401)
            #expect(try await http.call(.post, "/api/rooms/nowhere/rotate-token", admin: true).status == 404)
            let reply = try await http.call(.post, "/api/rooms/room/rotate-token", admin: true)
            #expect(reply.status == 200)
            let newToken = try #require(reply.json["roomToken"]?.string)
            #expect(newToken != alice.roomToken)

            let ended = try await watcher.receive(type: "unsubscribed")
            #expect(ended["reason"]?.string == "token_rotated")
            // The old token reads nothing, for lists and subscriptions alike.
            #expect(try await http.list(alice.roomToken) == RoomListing(roomVersion: 0, users: [], onlineCount: 0, userCount: 0))
            #expect(try await watcher.subscribe(alice.roomToken).roomVersion == 0)
            // The next heartbeat hands out the new token, which works.
            #expect(try await http.heartbeat(user: "alice", session: "a").roomToken == newToken)
            #expect(try await http.list(newToken).users.map(\.userId) == ["alice"])
        }
    }

    @Test func guessedSessionTokensDoNothing() async throws {
        try await withServer { http in
            // A long interval: on a machine busy with the rest of the suite, alice must not expire meanwhile.
            _ = try await http.heartbeat(user: "alice", session: "a", interval: 300_000)
            let before = try await http.listRoom("room")
            for _ in 0..<50 {
                let guess = Tokens.make(prefix: "s_")
                #expect(try await http.call(.post, "/api/disconnect", body: guess, headers: [.contentType: "text/plain"]).status == 200)
                #expect(try await http.call(.post, "/api/update", body: #"{"sessionToken":"\#(guess)","data":1}"#).status == 404)
            }
            #expect(try await http.listRoom("room") == before)
        }
    }
}

/// An embedding app's own rule on top of the JWT mode: only members may join or read a room.
struct MembersOnly: PresenceAuthorizer {
    let jwt: JWTAuthorizer
    let members: [String: Set<String>]

    func authenticate(token: String?) async throws -> Identity? {
        try await jwt.authenticate(token: token)
    }

    func authorize(_ identity: Identity?, _ action: PresenceAction) async throws {
        try await jwt.authorize(identity, action)
        let roomId: String
        switch action {
        case .join(let room, _), .read(let room), .update(let room, _): roomId = room
        case .watch: return  // no room to be a member of: the token's presence_watch decides
        }
        guard let identity, members[roomId]?.contains(identity.userId) == true else {
            throw PresenceError.permissionDenied("not a member of \(roomId)")
        }
    }
}

@Suite struct AuthorizerHookTests {
    @Test func anAppSuppliedAuthorizerDecidesWhoMayJoinAndRead() async throws {
        let jwt = try await AuthTests.jwtAuthorizer()
        let authorizer = MembersOnly(jwt: jwt, members: ["team": ["alice"]])
        try await withServer(configure: { $0.authorizer = authorizer }) { http in
            let alice = try await TestKeys.token("alice")
            let bob = try await TestKeys.token("bob")
            let body = { (user: String) in #"{"roomId":"team","userId":"\#(user)","sessionId":"\#(user)"}"# }
            let joined = try await http.call(.post, "/api/heartbeat", body: body("alice"), headers: [.authorization: "Bearer \(alice)"])
            #expect(joined.status == 200)
            let refused = try await http.call(.post, "/api/heartbeat", body: body("bob"), headers: [.authorization: "Bearer \(bob)"])
            #expect(refused.status == 403)
            #expect(refused.json["error"]?["message"]?.string == "not a member of team")
            let roomToken = try joined.json.decode(SessionTokens.self).roomToken
            // A non-member holding the room token still cannot read the room, over HTTP or a socket.
            #expect(try await http.call(.get, "/api/list?roomToken=\(roomToken)", headers: [.authorization: "Bearer \(bob)"]).status == 403)
            let socket = TestSocket(port: http.port, path: "/api/ws?access_token=\(bob)")
            defer { socket.close() }
            socket.send(#"{"type":"subscribe","roomToken":"\#(roomToken)"}"#)
            #expect(try await socket.receive(type: "error")["error"]?["code"]?.string == "permission_denied")
            #expect(try await http.listRoom("team").users.map(\.userId) == ["alice"])
        }
    }
}

@Suite struct JWKSTests {
    @Test func keysFromAJWKSDocument() async throws {
        let key = try ES256PublicKey(pem: TestKeys.ecPublic)
        let parameters = try #require(key.parameters)
        let jwks = #"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"ec-1","x":"\#(parameters.x)","y":"\#(parameters.y)"}]}"#
        let authorizer = try await AuthTests.jwtAuthorizer { configuration in
            configuration.hmacSecret = nil
            configuration.jwks = jwks
        }
        try await withServer(configure: { $0.authorizer = authorizer }) { http in
            let body = #"{"roomId":"room","userId":"dana","sessionId":"d"}"#
            let good = try await TestKeys.token("dana", signer: .ecdsa)
            #expect(try await http.call(.post, "/api/heartbeat", body: body, headers: [.authorization: "Bearer \(good)"]).status == 200)
            // HS256 is not among the JWKS algorithms, whatever secret signed it.
            let forged = try await TestKeys.token("dana", signer: .hmac(TestKeys.ecPublic))
            #expect(try await http.call(.post, "/api/heartbeat", body: body, headers: [.authorization: "Bearer \(forged)"]).status == 401)
        }
    }
}
