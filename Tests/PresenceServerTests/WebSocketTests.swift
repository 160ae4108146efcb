import Foundation
import Testing
import PresenceServer
import PresenceStore

/// The WebSocket API over real sockets: replies, snapshots, diffs, errors and closes.
@Suite struct WebSocketTests {
    @Test func heartbeatSubscribeAndDiffs() async throws {
        try await withServer { http in
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            socket.send(#"{"type":"heartbeat","id":7,"roomId":"room","userId":"alice","sessionId":"a1","name":"Alice"}"#)
            let reply = try await socket.receive(type: "heartbeat")
            #expect(reply["id"] == .integer(7))
            let alice = try reply.decode(SessionTokens.self)

            socket.send(#"{"type":"subscribe","id":"s","roomToken":"\#(alice.roomToken)","limit":10}"#)
            let snapshotMessage = try await socket.receive(type: "snapshot")
            #expect(snapshotMessage["id"] == .string("s"))
            let snapshot = try snapshotMessage.decode(Snapshot.self)
            #expect(snapshot.roomToken == alice.roomToken)
            #expect(snapshot.users.map(\.userId) == ["alice"])
            #expect(snapshot.users[0].name == "Alice")

            // Someone joins over HTTP: a diff with just them.
            let bob = try await http.heartbeat(user: "bob", session: "b1")
            var diff = try await socket.receive(type: "diff").decode(DiffMessage.self)
            #expect(diff.from == snapshot.roomVersion)
            #expect(diff.upsert.map(\.userId) == ["bob"])
            #expect(diff.remove.isEmpty)

            // Data change over the socket: the reply and the diff, in either order (the reply comes
            // from the socket's reader, the diff from the fan-out, and neither waits for the other).
            socket.send(#"{"type":"update","id":1,"sessionToken":"\#(alice.sessionToken)","data":{"typing":true}}"#)
            let (updated, dataDiffMessage) = try await socket.receiveInEitherOrder("updated", "diff")
            #expect(updated["id"] == .integer(1))
            let dataDiff = try dataDiffMessage.decode(DiffMessage.self)
            #expect(dataDiff.from == diff.roomVersion)
            #expect(dataDiff.upsert.map(\.userId) == ["alice"])
            #expect(dataDiff.upsert[0].data == .object(["typing": .bool(true)]))
            diff = dataDiff

            // Bob leaves: he is shown offline.
            _ = try await http.call(.post, "/api/disconnect", body: bob.sessionToken, headers: [.contentType: "text/plain"])
            let leave = try await socket.receive(type: "diff").decode(DiffMessage.self)
            #expect(leave.from == diff.roomVersion)
            #expect(leave.upsert.count == 1)
            #expect(leave.upsert[0].userId == "bob")
            #expect(leave.upsert[0].online == false)

            // Disconnect over the socket.
            socket.send(#"{"type":"disconnect","sessionToken":"\#(alice.sessionToken)"}"#)
            let (disconnected, aliceLeftMessage) = try await socket.receiveInEitherOrder("disconnected", "diff")
            #expect(disconnected["id"] == nil)
            let aliceLeft = try aliceLeftMessage.decode(DiffMessage.self)
            #expect(aliceLeft.upsert.map(\.userId) == ["alice"])

            // Unsubscribe: the reply, then nothing more for this room.
            socket.send(#"{"type":"unsubscribe","roomToken":"\#(alice.roomToken)"}"#)
            #expect(try await socket.receive(type: "unsubscribed")["roomToken"]?.string == alice.roomToken)
            _ = try await http.heartbeat(user: "carol", session: "c1")
            #expect(await socket.nextRaw(timeout: .milliseconds(300)) == nil)
        }
    }

    @Test func unknownTokenGetsAnEmptySnapshot() async throws {
        try await withServer { http in
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            let snapshot = try await socket.subscribe("r_unknown")
            #expect(snapshot.roomVersion == 0)
            #expect(snapshot.users.isEmpty)
            socket.send(#"{"type":"unsubscribe","roomToken":"never-subscribed"}"#)
            #expect(try await socket.receive(type: "unsubscribed")["roomToken"]?.string == "never-subscribed")
        }
    }

    @Test func subscribingAgainReplacesTheSubscription() async throws {
        try await withServer { http in
            let tokens = try await http.heartbeat(user: "alice", session: "a1")
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            _ = try await socket.subscribe(tokens.roomToken, limit: 1)
            let again = try await socket.subscribe(tokens.roomToken, limit: 5)
            #expect(again.users.map(\.userId) == ["alice"])
            _ = try await http.heartbeat(user: "bob", session: "b1")
            // Only the limit-5 subscription is live: one diff, not two.
            let diff = try await socket.receive(type: "diff").decode(DiffMessage.self)
            #expect(diff.upsert.map(\.userId) == ["bob"])
            #expect(await socket.nextRaw(timeout: .milliseconds(300)) == nil)
        }
    }

    @Test func aChangeOutsideTheWindowSendsOnlyTheCounts() async throws {
        try await withServer { http in
            let first = try await http.heartbeat(user: "first", session: "1")
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            let snapshot = try await socket.subscribe(first.roomToken, limit: 1)
            #expect(snapshot.users.map(\.userId) == ["first"])
            #expect(snapshot.onlineCount == 1 && snapshot.userCount == 1)
            // A join outside the window changes the counts: an empty diff carries them.
            let second = try await http.heartbeat(user: "second", session: "2")
            let counted = try await socket.receive(type: "diff").decode(DiffMessage.self)
            #expect(counted.upsert.isEmpty && counted.remove.isEmpty)
            #expect(counted.onlineCount == 2 && counted.userCount == 2)
            #expect(counted.from == snapshot.roomVersion)
            // A data change outside the window changes neither the window nor the counts: nothing.
            _ = try await http.call(.post, "/api/update", body: #"{"sessionToken":"\#(second.sessionToken)","data":1}"#)
            #expect(await socket.nextRaw(timeout: .milliseconds(300)) == nil)
            // The first user leaving moves the window: second (online) now leads.
            _ = try await http.call(.post, "/api/disconnect", body: first.sessionToken, headers: [.contentType: "text/plain"])
            let diff = try await socket.receive(type: "diff").decode(DiffMessage.self)
            #expect(diff.from == counted.roomVersion, "the subscription's version trailed the room's")
            #expect(diff.upsert.map(\.userId) == ["second"])
            #expect(diff.remove == ["first"])
            #expect(diff.onlineCount == 1 && diff.userCount == 2)
        }
    }

    @Test func heartbeatsOfOnlineUsersReachNoSubscriber() async throws {
        try await withServer { http in
            let alice = try await http.heartbeat(user: "alice", session: "a1")
            let sockets = (0..<3).map { _ in TestSocket(port: http.port) }
            defer { sockets.forEach { $0.close() } }
            for (index, socket) in sockets.enumerated() {
                _ = try await socket.subscribe(alice.roomToken, limit: [nil, 2, 5][index])
            }
            let heartbeater = TestSocket(port: http.port)
            defer { heartbeater.close() }
            _ = try await heartbeater.heartbeat(user: "bob", session: "b1")
            for socket in sockets { _ = try await socket.receive(type: "diff") }
            let sentBefore = try await http.metric("presence_ws_messages_sent_total")
            for _ in 0..<30 {
                _ = try await http.heartbeat(user: "alice", session: "a1")
                _ = try await heartbeater.heartbeat(user: "bob", session: "b1")
            }
            for socket in sockets {
                #expect(await socket.nextRaw(timeout: .milliseconds(200)) == nil)
            }
            // Only the heartbeater's own 30 replies were sent in the meantime.
            #expect(try await http.metric("presence_ws_messages_sent_total") - sentBefore == 30)
        }
    }

    @Test func badMessagesGetErrorsAndTheSocketStaysOpen() async throws {
        try await withServer { http in
            let alice = try await http.heartbeat(user: "alice", session: "a1")
            let before = try await http.listRoom("room")
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            let cases: [(String, String)] = [
                ("{not json", "invalid_json"),
                (#"{"type":"teleport","id":3}"#, "invalid_argument"),
                (#"{"id":4}"#, "invalid_argument"),
                (#"[1,2,3]"#, "invalid_argument"),
                (#"{"type":"heartbeat","roomId":"elsewhere","userId":"alice","sessionId":"a1"}"#, "session_conflict"),
                (#"{"type":"heartbeat","roomId":"room","userId":"x","sessionId":"y","interval":5}"#, "invalid_argument"),
                (#"{"type":"subscribe","roomToken":"\#(alice.roomToken)","limit":5000}"#, "invalid_argument"),
                (#"{"type":"update","sessionToken":"s_nope","data":1}"#, "not_found"),
                (#"{"type":"update","sessionToken":"\#(alice.sessionToken)"}"#, "invalid_argument"),
                (#"{"type":"update","sessionToken":"\#(alice.sessionToken)","data":"\#(String(repeating: "x", count: 5_000))"}"#, "data_too_large"),
                (#"{"type":"disconnect"}"#, "invalid_argument"),
            ]
            for (text, code) in cases {
                socket.send(text)
                let error = try await socket.receive(type: "error")
                #expect(error["error"]?["code"]?.string == code, "\(text.prefix(60))")
                #expect(error["error"]?["message"]?.string?.isEmpty == false)
            }
            socket.send(#"{"type":"teleport","id":"keep-me"}"#)
            #expect(try await socket.receive(type: "error")["id"] == .string("keep-me"))
            // Still usable, and nothing changed.
            _ = try await socket.subscribe(alice.roomToken)
            #expect(try await http.listRoom("room") == before)
        }
    }

    /// A message may come in fragments (RFC 6455 §5.4), with a ping between them; the server
    /// answers the ping at once and the whole message once it is complete. A binary message is
    /// refused with an error and the socket stays.
    static let heartbeatText = #"{"type":"heartbeat","id":"parts","roomId":"room","userId":"u","sessionId":"s","interval":10000}"#

    @Test func fragmentedMessagesAreReassembled() async throws {
        try await withServer { http in
            let socket = try await offThePool { try RawWebSocket(port: http.port) }
            let message = Array(Self.heartbeatText.utf8)
            try socket.sendFrame(opcode: 1, payload: Array(message[..<20]), fin: false)
            try socket.sendFrame(opcode: 9, payload: Array("are you there".utf8))
            try socket.sendFrame(opcode: 0, payload: Array(message[20..<50]), fin: false)
            try socket.sendFrame(opcode: 0, payload: Array(message[50...]))
            let pong = try #require(try await offThePool { socket.readFrame() })
            #expect(pong.opcode == 0xA && pong.payload == Array("are you there".utf8))
            let reply = try #require(try await offThePool { socket.readFrame() })
            #expect(reply.opcode == 1)
            #expect(String(decoding: reply.payload, as: UTF8.self).contains(#""type":"heartbeat","id":"parts""#))
            try socket.sendFrame(opcode: 2, payload: [1, 2, 3])
            let refusal = try #require(try await offThePool { socket.readFrame() })
            #expect(String(decoding: refusal.payload, as: UTF8.self).contains(#""type":"error""#))
            #expect(try await http.listRoom("room").users.map(\.userId) == ["u"])
        }
    }

    /// RFC 6455 §5.1: an unmasked frame from a client closes the socket with 1002 and is not
    /// answered; a fragment continuing nothing does too.
    @Test func unmaskedFramesAndStrayFragmentsAreClosedWith1002() async throws {
        try await withServer { http in
            let unmasked = try await offThePool { try RawWebSocket(port: http.port) }
            try unmasked.sendFrame(opcode: 1, payload: Array(Self.heartbeatText.utf8), masked: false)
            let frames = RawWebSocket.frames(in: try await offThePool { unmasked.readToEnd() })
            #expect(frames.map(\.opcode) == [8])
            #expect(frames.first?.closeCode == 1002)

            let stray = try await offThePool { try RawWebSocket(port: http.port) }
            try stray.sendFrame(opcode: 0, payload: Array(Self.heartbeatText.utf8))
            let strayFrames = RawWebSocket.frames(in: try await offThePool { stray.readToEnd() })
            #expect(strayFrames.map(\.opcode) == [8])
            #expect(strayFrames.first?.closeCode == 1002)
            #expect(try await http.listRoom("room").users.isEmpty)
        }
    }

    /// RFC 6455 §7.4: a close code that says what no frame may carry (1005 "no code") is not
    /// echoed; the socket is closed with 1002. A valid one is echoed.
    @Test func aCloseCodeNoPeerMaySendIsAnsweredWith1002() async throws {
        try await withServer { http in
            let bad = try await offThePool { try RawWebSocket(port: http.port) }
            try bad.sendFrame(opcode: 8, payload: [0x03, 0xED])
            let badFrames = RawWebSocket.frames(in: try await offThePool { bad.readToEnd() })
            #expect(badFrames.map(\.opcode) == [8])
            #expect(badFrames.first?.closeCode == 1002)

            let good = try await offThePool { try RawWebSocket(port: http.port) }
            try good.sendFrame(opcode: 8, payload: [0x0F, 0xA0])
            let goodFrames = RawWebSocket.frames(in: try await offThePool { good.readToEnd() })
            #expect(goodFrames.map(\.opcode) == [8])
            #expect(goodFrames.first?.closeCode == 4000)
        }
    }

    @Test func oversizedMessagesAreClosedWith1009() async throws {
        try await withServer { http in
            let socket = TestSocket(port: http.port)
            socket.send(#"{"type":"heartbeat","pad":""# + String(repeating: "x", count: 70_000) + #""}"#)
            let frame = try await socket.closeFrame()
            #expect(frame?.closeCode == .messageTooLarge)
            #expect(try await http.call(.get, "/health").status == 200)
            #expect(try await http.call(.get, "/api/rooms/room/users", admin: true).body.contains("\"users\":[]"))
        }
    }

    @Test func floodingClientsAreClosedWith1008() async throws {
        try await withServer(configure: {
            $0.socketMessagesPerSecond = 5
            $0.socketMessageBurst = 10
        }) { http in
            let socket = TestSocket(port: http.port)
            for index in 0..<50 {
                socket.send(#"{"type":"unsubscribe","roomToken":"t\#(index)"}"#)
            }
            let frame = try await socket.closeFrame()
            #expect(frame?.closeCode == .policyViolation)
            #expect(try await http.call(.get, "/metrics").body.contains("presence_flooding_sockets_closed_total 1"))
        }
    }

    @Test func removingARoomSendsAFinalDiffAndEndsTheSubscription() async throws {
        try await withServer { http in
            let alice = try await http.heartbeat(user: "alice", session: "a1")
            _ = try await http.heartbeat(user: "bob", session: "b1")
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            let snapshot = try await socket.subscribe(alice.roomToken)
            #expect(try await http.call(.delete, "/api/rooms/room", admin: true).status == 200)
            let final = try await socket.receive(type: "diff").decode(DiffMessage.self)
            #expect(final.from == snapshot.roomVersion)
            #expect(final.roomVersion > snapshot.roomVersion)
            #expect(Set(final.remove) == ["alice", "bob"])
            #expect(final.upsert.isEmpty)
            let ended = try await socket.receive(type: "unsubscribed")
            #expect(ended["reason"]?.string == "room_removed")
            #expect(ended["roomToken"]?.string == alice.roomToken)
        }
    }

    @Test func closingASocketLeavesItsSessionsAlive() async throws {
        try await withServer { http in
            let socket = TestSocket(port: http.port)
            let tokens = try await socket.heartbeat(user: "alice", session: "a1")
            socket.close()
            _ = try await socket.closeFrame()
            // Only once the server is done with the socket would a wrong disconnect have happened.
            try await http.waitForMetric("presence_ws_connections", toBe: 0)
            #expect(try await http.list(tokens.roomToken).users.first?.online == true)
        }
    }

    @Test func sessionsExpireInRealTimeAndSubscribersSeeIt() async throws {
        try await withServer { http in
            let watcher = TestSocket(port: http.port)
            defer { watcher.close() }
            let keeper = try await http.heartbeat(user: "keeper", session: "k", interval: 60_000)
            _ = try await watcher.subscribe(keeper.roomToken)
            let started = ContinuousClock.now
            _ = try await http.heartbeat(user: "quick", session: "q", interval: 1_000)
            _ = try await watcher.receive(type: "diff")
            let offline = try await watcher.receive(type: "diff", timeout: .seconds(15)).decode(DiffMessage.self)
            let elapsed = ContinuousClock.now - started
            #expect(offline.upsert.map(\.userId) == ["quick"])
            #expect(offline.upsert[0].online == false)
            // Deadline is 2.5 s after the heartbeat; generous upper bound for a loaded machine.
            #expect(elapsed >= .milliseconds(2_400))
            #expect(elapsed < .seconds(10))
        }
    }
}
