import Foundation
import HTTPTypes
import Testing
import PresenceServer
import PresenceStore

/// `POST /api/users/status`: a user's presence across every room.
@Suite struct UserStatusTests {
    func statuses(_ reply: HTTPClient.Reply) throws -> [UserStatus] {
        guard reply.status == 200, case .object(let fields) = reply.json, let users = fields["users"] else {
            throw TestFailure("users/status: \(reply.status) \(reply.body)")
        }
        return try users.decode([UserStatus].self)
    }

    @Test func statusesAcrossRoomsInTheOrderAsked() async throws {
        try await withServer { http in
            _ = try await http.heartbeat(room: "a", user: "alice", session: "a1")
            _ = try await http.heartbeat(room: "b", user: "alice", session: "a2", extra: #","away":true"#)
            let bob = try await http.heartbeat(room: "a", user: "bob", session: "b1")
            _ = try await http.call(.post, "/api/disconnect", body: #"{"sessionToken":"\#(bob.sessionToken)"}"#)
            let reply = try await http.call(.post, "/api/users/status", body: #"{"userIds":["bob","nobody","alice"]}"#)
            let users = try statuses(reply)
            #expect(users.map(\.userId) == ["bob", "nobody", "alice"])
            #expect(users[0].online == false && users[0].lastDisconnected > 0 && users[0].rooms == 0)
            #expect(users[1] == UserStatus(userId: "nobody", online: false, away: false, lastDisconnected: 0, rooms: 0))
            // Away in one of two rooms is not away.
            #expect(users[2] == UserStatus(userId: "alice", online: true, away: false, lastDisconnected: 0, rooms: 2))
        }
    }

    @Test func badRequestsAreRefused() async throws {
        try await withServer { http in
            let many = (0...1_000).map { "\"u\($0)\"" }.joined(separator: ",")
            for (body, code) in [
                (#"{"userIds":[\#(many)]}"#, "invalid_argument"), (#"{}"#, "invalid_argument"),
                (#"{"userIds":[1]}"#, "invalid_argument"), (#"{"userIds":[""]}"#, "invalid_argument"), ("[", "invalid_json"),
            ] {
                let reply = try await http.call(.post, "/api/users/status", body: body)
                #expect(reply.status == 400 && reply.errorCode == code, "\(body.prefix(40)): \(reply.body)")
            }
        }
    }

    @Test func withJWTsAUserReadsThemselvesAndWhomTheirTokenNames() async throws {
        let authorizer = try await AuthTests.jwtAuthorizer()
        try await withServer(configure: { $0.authorizer = authorizer }) { http in
            func ask(_ ids: [String], token: String?, admin: Bool = false) async throws -> HTTPClient.Reply {
                let body = #"{"userIds":[\#(ids.map { "\"\($0)\"" }.joined(separator: ","))]}"#
                return try await http.call(
                    .post, "/api/users/status", body: body, admin: admin, headers: token.map { [.authorization: "Bearer \($0)"] } ?? [:])
            }
            let plain = try await TestKeys.token("alice")
            let friends = try await TestKeys.token("alice", watch: .array([.string("bob")]))
            let everyone = try await TestKeys.token("alice", watch: .string("*"))
            #expect(try await ask(["alice"], token: plain).status == 200)
            let denied = try await ask(["alice", "bob"], token: plain)
            #expect(denied.status == 403 && denied.errorCode == "permission_denied")
            #expect(try await ask(["alice", "bob"], token: friends).status == 200)
            #expect(try await ask(["carol"], token: friends).status == 403)
            #expect(try await ask(["carol", "dave"], token: everyone).status == 200)
            #expect(try await ask(["carol"], token: nil).status == 401)
            #expect(try await ask(["carol"], token: nil, admin: true).status == 200, "the admin key reads anyone")
        }
    }
}
