import Foundation
import Testing
import PresenceServer
import PresenceStore

/// `watchUsers` over a WebSocket: a snapshot, then `usersChanged` only when a watched user's
/// global status changes.
@Suite struct WatchUsersTests {
    func statuses(_ message: JSONValue) throws -> [UserStatus] {
        guard case .object(let fields) = message, let users = fields["users"] else { throw TestFailure("no users in \(message)") }
        return try users.decode([UserStatus].self)
    }

    @Test func aWatcherGetsASnapshotThenOnlyRealChanges() async throws {
        try await withServer { http in
            _ = try await http.heartbeat(room: "a", user: "alice", session: "a1")
            let socket = TestSocket(port: http.port)
            socket.send(#"{"type":"watchUsers","id":7,"userIds":["alice","bob"]}"#)
            let snapshot = try await socket.receive(type: "users")
            #expect(snapshot["id"] == .integer(7))
            #expect(try statuses(snapshot).map(\.userId) == ["alice", "bob"])
            #expect(try statuses(snapshot)[0].online && !(try statuses(snapshot)[1].online))

            // A heartbeat that changes nothing, data, and a second room: alice's status stays, so nothing comes.
            _ = try await http.heartbeat(room: "a", user: "alice", session: "a1")
            _ = try await http.call(.put, "/api/rooms/a/users/alice/data", body: "1", admin: true)
            #expect(await socket.nextRaw(timeout: .milliseconds(300)) == nil)
            _ = try await http.heartbeat(room: "b", user: "alice", session: "a2")
            let rooms = try statuses(try await socket.receive(type: "usersChanged"))
            #expect(rooms == [UserStatus(userId: "alice", online: true, away: false, lastDisconnected: 0, rooms: 2)])

            // Bob joins, then leaves.
            let bob = try await http.heartbeat(room: "a", user: "bob", session: "b1")
            #expect(try statuses(try await socket.receive(type: "usersChanged")).map(\.online) == [true])
            _ = try await http.call(.post, "/api/disconnect", body: #"{"sessionToken":"\#(bob.sessionToken)"}"#)
            let left = try statuses(try await socket.receive(type: "usersChanged"))
            #expect(left.first?.userId == "bob" && left.first?.online == false && (left.first?.lastDisconnected ?? 0) > 0)

            // Unwatched: bob's return reaches nobody.
            socket.send(#"{"type":"unwatchUsers","id":8,"userIds":["bob"]}"#)
            #expect(try await socket.receive(type: "unwatched")["id"] == .integer(8))
            _ = try await http.heartbeat(room: "a", user: "bob", session: "b2")
            #expect(await socket.nextRaw(timeout: .milliseconds(300)) == nil)
        }
    }

    @Test func aSocketWatchesAtMostAThousandUsers() async throws {
        try await withServer { http in
            let socket = TestSocket(port: http.port)
            let first = (0..<600).map { "\"u\($0)\"" }.joined(separator: ",")
            socket.send(#"{"type":"watchUsers","id":1,"userIds":[\#(first)]}"#)
            #expect(try statuses(try await socket.receive(type: "users")).count == 600)
            let second = (600..<1_100).map { "\"u\($0)\"" }.joined(separator: ",")
            socket.send(#"{"type":"watchUsers","id":2,"userIds":[\#(second)]}"#)
            let refused = try await socket.receive(type: "error")
            #expect(refused["id"] == .integer(2) && refused["error"]?["code"] == .string("invalid_argument"))
            let tooMany = (0...1_000).map { "\"v\($0)\"" }.joined(separator: ",")
            socket.send(#"{"type":"watchUsers","id":3,"userIds":[\#(tooMany)]}"#)
            #expect(try await socket.receive(type: "error")["id"] == .integer(3))
        }
    }

    /// The property: `usersChanged` applied to the snapshot equals `POST /api/users/status`, at
    /// every point of a random run.
    @Test func changesAppliedToTheSnapshotEqualTheStatusRead() async throws {
        try await withServer { http in
            let users = (0..<5).map { "u\($0)" }
            let socket = TestSocket(port: http.port)
            socket.send(#"{"type":"watchUsers","id":1,"userIds":[\#(users.map { "\"\($0)\"" }.joined(separator: ","))]}"#)
            var shown = Dictionary(uniqueKeysWithValues: try statuses(try await socket.receive(type: "users")).map { ($0.userId, $0) })
            var generator = SeededGenerator(seed: 5)
            var tokens: [String] = []
            for step in 0..<80 {
                let user = users.randomElement(using: &generator)!
                let room = "r\(Int.random(in: 0..<3, using: &generator))"
                switch Int.random(in: 0..<4, using: &generator) {
                case 0, 1:
                    let away = Bool.random(using: &generator)
                    tokens.append(try await http.heartbeat(room: room, user: user, session: "\(user)-\(room)", extra: #","away":\#(away)"#).sessionToken)
                case 2:
                    if let token = tokens.randomElement(using: &generator) {
                        _ = try await http.call(.post, "/api/disconnect", body: #"{"sessionToken":"\#(token)"}"#)
                    }
                default:
                    _ = try await http.call(.delete, "/api/rooms/\(room)/users/\(user)", admin: true)
                }
                let body = #"{"userIds":[\#(users.map { "\"\($0)\"" }.joined(separator: ","))]}"#
                let truth = try (try await http.call(.post, "/api/users/status", body: body)).json["users"]!.decode([UserStatus].self)
                // Take what arrived until the view matches, or give up after a generous wait.
                let deadline = ContinuousClock.now + .seconds(5)
                while users.map({ shown[$0]! }) != truth, ContinuousClock.now < deadline {
                    guard let text = await socket.nextRaw(timeout: .milliseconds(200)) else { continue }
                    let message = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
                    #expect(message["type"] == .string("usersChanged"), "\(text)")
                    for status in try statuses(message) { shown[status.userId] = status }
                }
                #expect(users.map { shown[$0]! } == truth, "step \(step)")
            }
        }
    }
}
