import Foundation
import Synchronization
import Testing
import PresenceClient
import PresenceCore
import PresenceTestSupport

// README:begin
func watchRoom(url: String, show: @escaping @Sendable ([FacePileModel.Face], Int) -> Void) async throws {
    let client = PresenceClient(url: url)
    let room = try await client.join(room: "doc-42", user: "alice", name: "Alice")
    try await room.update(data: ["typing": true])
    for await users in room.users {  // cancelling this task leaves the room
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let pile = FacePileModel(users: users, nowMillis: now)
        show(pile.visible, pile.overflowCount)  // redraw your UI here
    }
}
// README:end

/// The README's Swift example is this file's code, and it works against a real server.
@Suite struct ReadmeExampleTests {
    static let sourceFile = URL(fileURLWithPath: #filePath)
    static let readme = sourceFile.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("README.md")

    @Test func theReadmeShowsExactlyTheTestedExample() throws {
        let source = try String(contentsOf: Self.sourceFile, encoding: .utf8)
        let begin = source.range(of: "// README:begin\n")!.upperBound
        let end = source.range(of: "// README:end")!.lowerBound
        let example = String(source[begin..<end])
        let readme = try String(contentsOf: Self.readme, encoding: .utf8)
        #expect(readme.contains(example), "README.md must contain the example exactly as tested")
    }

    @Test func theReadmeExampleShowsALiveRoom() async throws {
        let server = try ServerProcess(arguments: ["--port", "0", "--store", "memory"])
        try await server.waitUntilListening()
        let url = "ws://127.0.0.1:\(server.port)/api/ws"
        let shown = Mutex<[[FacePileModel.Face]]>([])
        let watcher = Task { try await watchRoom(url: url) { faces, _ in shown.withLock { $0.append(faces) } } }
        let bob = try await PresenceClient(url: url).join(room: "doc-42", user: "bob")
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let last = shown.withLock { $0.last } ?? []
            if last.map(\.userId) == ["alice", "bob"], last[0].dataRows.map(\.value) == ["true"] { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        let last = shown.withLock { $0.last } ?? []
        #expect(last.map(\.title) == ["Alice", "bob"])
        #expect(last.first?.dataRows == [FacePileModel.DataRow(key: "typing", value: "true")])
        watcher.cancel()
        // Cancelling the watching task left the room.
        let started = ContinuousClock.now
        while await bob.current.last?.online != false, ContinuousClock.now - started < .seconds(5) {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(await bob.current.last?.online == false)
        await bob.leave()
        kill(server.process.processIdentifier, SIGTERM)
        _ = try await server.waitForExit()
    }
}
