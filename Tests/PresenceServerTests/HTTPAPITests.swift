import Foundation
import HTTPTypes
import Testing
import PresenceServer
import PresenceStore

/// Every HTTP endpoint and error code of PROTOCOL.md, over real sockets.
@Suite struct HTTPAPITests {
    @Test func heartbeatListAndDisconnect() async throws {
        try await withServer { http in
            let alice = try await http.heartbeat(user: "alice", session: "a1", extra: #","name":"Alice","image":"https://example.com/a.png""#)
            let bob = try await http.heartbeat(user: "bob", session: "b1")
            #expect(alice.roomToken == bob.roomToken)
            var listing = try await http.list(alice.roomToken)
            #expect(listing.users.map(\.userId) == ["alice", "bob"])
            #expect(listing.users[0].name == "Alice")
            #expect(listing.users[0].image == "https://example.com/a.png")
            #expect(listing.users.allSatisfy { $0.online && $0.lastDisconnected == 0 && $0.onlineSince > 0 })
            #expect(try await http.list(alice.roomToken, limit: 1).users.map(\.userId) == ["alice"])

            let reply = try await http.call(.post, "/api/disconnect", body: #"{"sessionToken":"\#(bob.sessionToken)"}"#)
            #expect(reply.status == 200)
            #expect(reply.body == "{}")
            listing = try await http.list(alice.roomToken)
            #expect(listing.users[1].userId == "bob")
            #expect(listing.users[1].online == false)
            #expect(listing.users[1].lastDisconnected > 0)
            #expect(listing.users[1].onlineSince == 0)
        }
    }

    @Test func disconnectAcceptsSendBeaconBodies() async throws {
        try await withServer { http in
            let one = try await http.heartbeat(user: "one", session: "1")
            let two = try await http.heartbeat(user: "two", session: "2")
            let plain: HTTPFields = [.contentType: "text/plain;charset=UTF-8"]
            #expect(try await http.call(.post, "/api/disconnect", body: one.sessionToken, headers: plain).status == 200)
            #expect(try await http.call(.post, "/api/disconnect", body: #"{"sessionToken":"\#(two.sessionToken)"}"#, headers: plain).status == 200)
            #expect(try await http.list(one.roomToken).users.allSatisfy { !$0.online })
            // Unknown tokens are a no-op, also 200.
            #expect(try await http.call(.post, "/api/disconnect", body: "s_unknown", headers: plain).status == 200)
            #expect(try await http.call(.post, "/api/disconnect", body: #"{"sessionToken":"nope"}"#).status == 200)
        }
    }

    @Test func unknownRoomTokenListsAnEmptyRoom() async throws {
        try await withServer { http in
            _ = try await http.heartbeat(user: "alice", session: "a1")
            let reply = try await http.call(.get, "/api/list?roomToken=r_doesnotexist")
            #expect(reply.status == 200)
            #expect(reply.body == #"{"roomVersion":0,"users":[],"onlineCount":0,"userCount":0}"#)
        }
    }

    @Test func updateOwnDataAndUpdateRoomUser() async throws {
        try await withServer { http in
            let alice = try await http.heartbeat(user: "alice", session: "a1")
            let before = try await http.list(alice.roomToken).roomVersion
            var reply = try await http.call(.post, "/api/update", body: #"{"sessionToken":"\#(alice.sessionToken)","data":{"typing":true,"n":12345678901234}}"#)
            #expect(reply.status == 200)
            var listing = try await http.list(alice.roomToken)
            #expect(listing.users[0].data == .object(["typing": .bool(true), "n": .integer(12_345_678_901_234)]))
            #expect(listing.roomVersion > before)

            reply = try await http.call(.put, "/api/rooms/room/users/alice/data", body: #"["admin", 1.5]"#, admin: true)
            #expect(reply.status == 200)
            listing = try await http.list(alice.roomToken)
            #expect(listing.users[0].data == .array([.string("admin"), .double(1.5)]))

            reply = try await http.call(.post, "/api/update", body: #"{"sessionToken":"\#(alice.sessionToken)","data":null}"#)
            #expect(reply.status == 200)
            #expect(try await http.list(alice.roomToken).users[0].data == nil)
            #expect(!(try await http.call(.get, "/api/list?roomToken=\(alice.roomToken)").body.contains("\"data\"")))

            reply = try await http.call(.post, "/api/update", body: #"{"sessionToken":"s_unknown","data":1}"#)
            #expect(reply.status == 404)
            #expect(reply.errorCode == "not_found")
            reply = try await http.call(.put, "/api/rooms/room/users/ghost/data", body: "1", admin: true)
            #expect(reply.status == 404)
            #expect(reply.errorCode == "not_found")
        }
    }

    @Test func adminListsAndRemovals() async throws {
        try await withServer { http in
            let alice = try await http.heartbeat(room: "a", user: "alice", session: "1")
            let left = try await http.heartbeat(room: "b", user: "alice", session: "2")
            _ = try await http.heartbeat(room: "a", user: "bob", session: "3")
            _ = try await http.call(.post, "/api/disconnect", body: #"{"sessionToken":"\#(left.sessionToken)"}"#)

            var reply = try await http.call(.get, "/api/rooms/a/users?onlineOnly=true&limit=1", admin: true)
            #expect(reply.status == 200)
            #expect(try reply.json.decode(RoomListing.self).users.map(\.userId) == ["alice"])

            reply = try await http.call(.get, "/api/users/alice/rooms", admin: true)
            #expect(reply.status == 200)
            let rooms = try reply.json["rooms"]!.decode([UserRoomStatus].self)
            #expect(rooms.map(\.roomId) == ["a", "b"])
            #expect(rooms[0].online && !rooms[1].online && rooms[1].lastDisconnected > 0)
            reply = try await http.call(.get, "/api/users/alice/rooms?onlineOnly=true", admin: true)
            #expect(try reply.json["rooms"]!.decode([UserRoomStatus].self).map(\.roomId) == ["a"])

            reply = try await http.call(.delete, "/api/rooms/a/users/alice", admin: true)
            #expect(reply.status == 200)
            #expect(try await http.list(alice.roomToken).users.map(\.userId) == ["bob"])
            #expect(try await http.call(.post, "/api/update", body: #"{"sessionToken":"\#(alice.sessionToken)","data":1}"#).status == 404)
            #expect(try await http.call(.delete, "/api/rooms/a/users/nobody", admin: true).status == 200)

            reply = try await http.call(.delete, "/api/rooms/a", admin: true)
            #expect(reply.status == 200)
            #expect(try await http.list(alice.roomToken) == RoomListing(roomVersion: 0, users: [], onlineCount: 0, userCount: 0))
            #expect(try await http.listRoom("a") == RoomListing(roomVersion: 0, users: [], onlineCount: 0, userCount: 0))
            #expect(try await http.call(.delete, "/api/rooms/a", admin: true).status == 200)
        }
    }

    @Test func pathSegmentsArePercentDecoded() async throws {
        try await withServer { http in
            let room = "a room/with ünïcode?"
            let tokens = try await http.heartbeat(room: room, user: "alice", session: "1")
            let encoded = room.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            let reply = try await http.call(.get, "/api/rooms/\(encoded)/users", admin: true)
            #expect(reply.status == 200)
            #expect(try reply.json.decode(RoomListing.self).users.map(\.userId) == ["alice"])
            #expect(try await http.call(.delete, "/api/rooms/\(encoded)", admin: true).status == 200)
            #expect(try await http.list(tokens.roomToken).users.isEmpty)
            #expect(try await http.call(.get, "/api/rooms/bad%ZZ/users", admin: true).errorCode == "invalid_argument")
        }
    }

    /// A query value is decoded once: `roomId=a%2541` is the room "a%41", not "aA", and a room
    /// with a "%" in its id can be asked for.
    @Test func theEventsRoomFilterIsDecodedOnce() async throws {
        try await withServer { http in
            for room in ["a%41", "aA", "50%off"] { _ = try await http.heartbeat(room: room, user: "u", session: "s-\(room)") }
            func rooms(_ query: String) async throws -> [String] {
                let reply = try await http.call(.get, "/api/events?roomId=\(query)", admin: true)
                guard reply.status == 200, case .array(let events)? = reply.json["events"] else { throw TestFailure("events: \(reply.body)") }
                return events.compactMap { $0["roomId"]?.string }
            }
            #expect(try await rooms("a%2541") == ["a%41"])
            #expect(try await rooms("aA") == ["aA"])
            #expect(try await rooms("50%25off") == ["50%off"])
        }
    }

    @Test func adminCallsNeedTheAdminKey() async throws {
        try await withServer { http in
            _ = try await http.heartbeat(user: "alice", session: "1")
            let calls: [(HTTPRequest.Method, String, String?)] = [
                (.get, "/api/rooms/room/users", nil), (.get, "/api/users/alice/rooms", nil),
                (.put, "/api/rooms/room/users/alice/data", "1"), (.delete, "/api/rooms/room/users/alice", nil),
                (.delete, "/api/rooms/room", nil),
            ]
            for (method, path, body) in calls {
                for headers: HTTPFields in [[:], [.authorization: "Bearer wrong"], [.authorization: adminKey]] {
                    let reply = try await http.call(method, path, body: body, headers: headers)
                    #expect(reply.status == 401, "\(method) \(path)")
                    #expect(reply.errorCode == "unauthenticated")
                }
            }
            let listing = try await http.listRoom("room")
            #expect(listing.users.map(\.userId) == ["alice"])
            #expect(listing.users[0].data == nil)
        }
    }

    @Test func badInputGetsTheProtocolErrorAndChangesNothing() async throws {
        try await withServer { http in
            let alice = try await http.heartbeat(user: "alice", session: "a1")
            let before = try await http.listRoom("room")
            let cases: [(HTTPRequest.Method, String, String?, Int, String)] = [
                (.post, "/api/heartbeat", "{not json", 400, "invalid_json"),
                (.post, "/api/heartbeat", "[1,2]", 400, "invalid_argument"),
                (.post, "/api/heartbeat", #"{"roomId":"room","userId":"bob"}"#, 400, "invalid_argument"),
                (.post, "/api/heartbeat", #"{"roomId":1,"userId":"bob","sessionId":"b"}"#, 400, "invalid_argument"),
                (.post, "/api/heartbeat", #"{"roomId":"room","userId":"","sessionId":"b"}"#, 400, "invalid_argument"),
                (.post, "/api/heartbeat", #"{"roomId":"room","userId":"bob","sessionId":"b","interval":999}"#, 400, "invalid_argument"),
                (.post, "/api/heartbeat", #"{"roomId":"room","userId":"bob","sessionId":"b","interval":"10"}"#, 400, "invalid_argument"),
                (.post, "/api/heartbeat", #"{"roomId":"room","userId":"bob","sessionId":"b","image":"ftp://x"}"#, 400, "invalid_argument"),
                (.post, "/api/heartbeat", #"{"roomId":"room","userId":"bob\u0000","sessionId":"b"}"#, 400, "invalid_argument"),
                (.post, "/api/heartbeat", #"{"roomId":"elsewhere","userId":"alice","sessionId":"a1"}"#, 409, "session_conflict"),
                (.post, "/api/heartbeat", String(repeating: " ", count: 70_000) + "{}", 413, "payload_too_large"),
                (.post, "/api/update", #"{"sessionToken":"\#(alice.sessionToken)"}"#, 400, "invalid_argument"),
                (.post, "/api/update", #"{"sessionToken":"\#(alice.sessionToken)","data":"\#(String(repeating: "x", count: 5_000))"}"#, 413, "data_too_large"),
                (.put, "/api/rooms/room/users/alice/data", "{oops", 400, "invalid_json"),
                (.get, "/api/list", nil, 400, "invalid_argument"),
                (.get, "/api/list?roomToken=\(alice.roomToken)&limit=0", nil, 400, "invalid_argument"),
                (.get, "/api/list?roomToken=\(alice.roomToken)&limit=abc", nil, 400, "invalid_argument"),
                (.get, "/api/rooms/room/users?onlineOnly=maybe", nil, 400, "invalid_argument"),
                (.get, "/api/nothing-here", nil, 404, "not_found"),
                (.delete, "/api/heartbeat", nil, 405, "method_not_allowed"),
                (.get, "/api/update", nil, 405, "method_not_allowed"),
                (.post, "/health", "{}", 405, "method_not_allowed"),
                (.get, "/api/ws", nil, 400, "invalid_argument"),
            ]
            for (method, path, body, status, code) in cases {
                let reply = try await http.call(method, path, body: body, admin: path.hasPrefix("/api/rooms"))
                #expect(reply.status == status, "\(method) \(path.prefix(80))")
                #expect(reply.errorCode == code, "\(method) \(path.prefix(80)): \(reply.body.prefix(200))")
                #expect(reply.json["error"]?["message"]?.string?.isEmpty == false)
            }
            #expect(try await http.listRoom("room") == before)
            #expect(try await http.call(.get, "/health").status == 200)
        }
    }

    @Test func healthAndMetrics() async throws {
        try await withServer { http in
            let health = try await http.call(.get, "/health")
            #expect(health.status == 200)
            _ = try await http.heartbeat(user: "alice", session: "a1")
            _ = try await http.heartbeat(user: "alice", session: "a1")
            let metrics = try await http.call(.get, "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.headers[.contentType]?.hasPrefix("text/plain") == true)
            for line in [
                "presence_heartbeats_total 2", "presence_sessions 1", "presence_online_users 1", "presence_rooms 1",
                "presence_expired_sessions_total 0", "presence_ws_messages_sent_total 0",
            ] {
                #expect(metrics.body.contains(line + "\n") || metrics.body.contains(line + ".0\n"), "\(line)")
            }
        }
    }

    @Test func corsAllowsOnlyConfiguredOrigins() async throws {
        try await withServer(configure: { $0.allowedOrigins = ["https://app.example"] }) { http in
            let preflight = try await http.call(
                .options, "/api/heartbeat",
                headers: [.origin: "https://app.example", .accessControlRequestMethod: "POST"])
            #expect(preflight.status == 204)
            #expect(preflight.headers[.accessControlAllowOrigin] == "https://app.example")
            let allowed = try await http.call(.get, "/health", headers: [.origin: "https://app.example"])
            #expect(allowed.headers[.accessControlAllowOrigin] == "https://app.example")
            let denied = try await http.call(.get, "/health", headers: [.origin: "https://evil.example"])
            #expect(denied.headers[.accessControlAllowOrigin] == nil)
        }
    }

    @Test func retentionForgetsLongOfflineUsers() async throws {
        let clock = ManualWallClock()
        try await withServer(store: MemoryStore(clock: clock), configure: {
            $0.retention = .seconds(3_600)
            $0.retentionSweepInterval = .seconds(60)
        }) { http in
            let gone = try await http.heartbeat(user: "gone", session: "g")
            _ = try await http.heartbeat(user: "stays", session: "s", interval: 300_000)
            _ = try await http.call(.post, "/api/disconnect", body: gone.sessionToken, headers: [.contentType: "text/plain"])
            // Move time in sweep-sized steps (keeping "stays" alive) until a sweep has run past the retention.
            // Generous: each step is three calls, and a loaded machine makes a step take a while.
            let deadline = ContinuousClock.now + .seconds(60)
            var users = try await http.listRoom("room").users.map(\.userId)
            while users.contains("gone"), ContinuousClock.now < deadline {
                clock.advance(by: 60_000)
                _ = try await http.heartbeat(user: "stays", session: "s", interval: 300_000)
                try await Task.sleep(for: .milliseconds(10))
                users = try await http.listRoom("room").users.map(\.userId)
            }
            #expect(users == ["stays"])
            #expect(clock.nowMillis() - ManualWallClock().nowMillis() > 3_600_000, "not before the retention period")
        }
    }
}
