import Foundation
import PresenceServer
import PresenceSQLite
import PresenceStore
import Testing

/// Away over the wire: HTTP and WebSocket heartbeats carry it, lists and diffs show it, a
/// heartbeat that changes nothing reaches nobody, and bad input changes nothing.
@Suite struct AwayTests {
    @Test(arguments: ["memory", "sqlite"])
    func awayReachesSubscribersAsADiffAndShowsInEveryRead(store kind: String) async throws {
        let store: any PresenceStore = kind == "memory" ? MemoryStore() : try SQLiteStore(directory: temporaryDirectory())
        try await withServer(store: store) { http in
            let tab = TestSocket(port: http.port)
            let watcher = TestSocket(port: http.port)
            defer { tab.close(); watcher.close() }
            let alice = try await tab.heartbeat(user: "alice", session: "a1")
            let snapshot = try await watcher.subscribe(alice.roomToken)
            #expect(snapshot.users.first?.away == false)

            tab.send(#"{"type":"heartbeat","roomId":"room","userId":"alice","sessionId":"a1","interval":10000,"away":true}"#)
            _ = try await tab.receive(type: "heartbeat")
            let away = try await watcher.receive(type: "diff").decode(DiffMessage.self)
            #expect(away.from == snapshot.roomVersion)
            #expect(away.upsert.map(\.userId) == ["alice"])
            #expect(away.upsert.first?.away == true && away.upsert.first?.online == true)
            let since = try #require(away.upsert.first?.awaySince)
            #expect(since > 0)

            // The same state again, over either transport, reaches nobody.
            let sentBefore = try await http.metric("presence_ws_messages_sent_total")
            for _ in 0..<5 {
                _ = try await http.call(.post, "/api/heartbeat", body: #"{"roomId":"room","userId":"alice","sessionId":"a1","away":true}"#)
                tab.send(#"{"type":"heartbeat","roomId":"room","userId":"alice","sessionId":"a1","interval":10000}"#)
                _ = try await tab.receive(type: "heartbeat")
            }
            #expect(await watcher.nextRaw(timeout: .milliseconds(200)) == nil)
            #expect(try await http.metric("presence_ws_messages_sent_total") - sentBefore == 5, "only the heartbeat replies")

            // Every read shows it: the client list and the admin list.
            #expect(try await http.list(alice.roomToken).users.first?.awaySince == since)
            #expect(try await http.listRoom("room").users.first?.away == true)

            // Back over HTTP.
            _ = try await http.call(.post, "/api/heartbeat", body: #"{"roomId":"room","userId":"alice","sessionId":"a1","away":false}"#)
            let back = try await watcher.receive(type: "diff").decode(DiffMessage.self)
            #expect(back.upsert.first?.away == false && back.upsert.first?.awaySince == 0)
        }
    }

    @Test func aBadAwayValueIsRefusedAndChangesNothing() async throws {
        try await withServer { http in
            let alice = try await http.heartbeat(user: "alice", session: "a1")
            let before = try await http.list(alice.roomToken)
            for bad in [#""yes""#, "1", "null"] {
                let reply = try await http.call(
                    .post, "/api/heartbeat", body: #"{"roomId":"room","userId":"alice","sessionId":"a1","away":\#(bad)}"#)
                if bad == "null" {
                    #expect(reply.status == 200, "null is the same as leaving it out")
                } else {
                    #expect(reply.status == 400)
                    #expect(reply.errorCode == "invalid_argument")
                    #expect(reply.body.contains("away must be true or false"))
                }
            }
            #expect(try await http.list(alice.roomToken) == before)
        }
    }
}
