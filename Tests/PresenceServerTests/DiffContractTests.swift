import Foundation
import Testing
import PresenceTestSupport
import PresenceServer
import PresenceStore

/// PROTOCOL.md's promise to subscribers: snapshot + every diff, applied in order,
/// is exactly what GET /api/list returns with the same limit.
@Suite struct DiffContractTests {
    /// What one subscription holds: its list and the version of the last message.
    struct Follower {
        let socket: TestSocket
        let limit: Int?
        var version: UInt64
        var users: [UserRecord]
        /// `onlineCount` and `userCount` as the subscription last heard them.
        var counts: [Int]

        /// Applies diffs until the list equals `expected`, checking each diff's `from`.
        mutating func catchUp(to expected: RoomListing, step: Int) async throws {
            while users != expected.users || counts != [expected.onlineCount, expected.userCount] {
                let message = try await socket.receive(timeout: .seconds(10))
                guard message["type"]?.string == "diff" else {
                    throw TestFailure("step \(step): expected a diff, got \(message.compactJSON)")
                }
                let diff = try message.decode(DiffMessage.self)
                guard diff.from == version else {
                    throw TestFailure("step \(step), limit \(limit.map(String.init) ?? "default"): diff from \(diff.from), subscriber at \(version)")
                }
                #expect(diff.roomVersion > diff.from)
                #expect(diff.roomVersion <= expected.roomVersion)
                users = diff.diff.applied(to: users)
                version = diff.roomVersion
                #expect((diff.onlineCount == nil) == (diff.userCount == nil), "counts come together")
                if let online = diff.onlineCount, let total = diff.userCount {
                    #expect([online, total] != counts, "step \(step): counts sent that did not change")
                    counts = [online, total]
                }
                #expect(!diff.diff.isEmpty || diff.onlineCount != nil, "step \(step): an empty diff without counts")
            }
        }
    }

    /// With merging off every change is its own diff; with it on, diffs span several versions.
    @Test(arguments: [0, 100])
    func randomJoinsLeavesDataChangesAndRemovals(mergeMilliseconds: Int) async throws {
        let window = Duration.milliseconds(mergeMilliseconds)
        try await withServer(configure: { $0.diffMerging = DiffMerging(maximum: window, perSubscriber: window) }) { http in
            var generator = SeededGenerator(seed: 20_261_129)
            // The longest interval: on a loaded machine the run can outlast a 10 s interval's 25 s
            // session, and an expiry the test did not ask for would be a diff it does not expect.
            let interval = Int(ProtocolLimits.intervalRange.upperBound)
            let founder = try await http.heartbeat(user: "founder", session: "founder-s", interval: interval)
            let roomToken = founder.roomToken
            var followers: [Follower] = []
            for limit in [nil, 1, 3, 8] as [Int?] {
                let socket = TestSocket(port: http.port)
                let snapshot = try await socket.subscribe(roomToken, limit: limit)
                followers.append(Follower(
                    socket: socket, limit: limit, version: snapshot.roomVersion, users: snapshot.users,
                    counts: [snapshot.onlineCount, snapshot.userCount]))
            }
            defer { followers.forEach { $0.socket.close() } }

            var live: [String: String] = ["founder-s": founder.sessionToken]  // sessionId -> sessionToken
            let userIds = (0..<12).map { "user\($0)" }
            for step in 0..<150 {
                let user = userIds[Int(generator.next() % UInt64(userIds.count))]
                let sessionId = "\(user)-tab\(generator.next() % 2)"
                switch generator.next() % 6 {
                case 0, 1:
                    let name = generator.next() % 3 == 0 ? #","name":"N\#(generator.next() % 2)""# : ""
                    live[sessionId] = try await http.heartbeat(user: user, session: sessionId, interval: interval, extra: name).sessionToken
                case 2:
                    if let token = live.removeValue(forKey: sessionId) {
                        _ = try await http.call(.post, "/api/disconnect", body: token, headers: [.contentType: "text/plain"])
                    }
                case 3:
                    if let token = live[sessionId] {
                        let data = generator.next() % 4 == 0 ? "null" : #"{"v":\#(generator.next() % 3)}"#
                        _ = try await http.call(.post, "/api/update", body: #"{"sessionToken":"\#(token)","data":\#(data)}"#)
                    }
                case 4:
                    _ = try await http.call(.put, "/api/rooms/room/users/\(user)/data", body: "\(generator.next() % 3)", admin: true)
                default:
                    _ = try await http.call(.delete, "/api/rooms/room/users/\(user)", admin: true)
                    live = live.filter { !$0.key.hasPrefix(user + "-") }
                }
                for index in followers.indices {
                    let expected = try await http.list(roomToken, limit: followers[index].limit)
                    try await followers[index].catchUp(to: expected, step: step)
                }
            }
            // Nothing else may be pending: every message sent was accounted for.
            for follower in followers {
                #expect(await follower.socket.nextRaw(timeout: .milliseconds(200)) == nil)
            }
        }
    }
}

