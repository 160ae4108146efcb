import Foundation
import Testing
import PresenceTestSupport
@testable import PresenceServer
import PresenceStore

enum ServerConfigurationDefaults {
    static let merging = PresenceServerConfiguration().diffMerging
}

@Suite struct DiffMergingTests {
    @Test func theWindowRunsFromTheLastReadForChanges() {
        let merging = DiffMerging(maximum: .milliseconds(100), perSubscriber: .seconds(1))
        let start = ContinuousClock.now
        #expect(merging.deadline(lastChangeRead: nil, subscribers: 5, now: start) == nil, "a quiet room reads at once")
        #expect(merging.deadline(lastChangeRead: start, subscribers: 5, now: start + .milliseconds(30)) == start + .milliseconds(100))
        #expect(merging.deadline(lastChangeRead: start, subscribers: 5, now: start + .milliseconds(100)) == nil)
        #expect(merging.deadline(lastChangeRead: start, subscribers: 5, now: start + .seconds(5)) == nil)
        #expect(DiffMerging.off.deadline(lastChangeRead: start, subscribers: 5, now: start) == nil, "off sends at once")
    }

    @Test func theWindowGrowsWithTheRoomUpToItsMaximum() {
        let merging = ServerConfigurationDefaults.merging
        #expect(merging.window(subscribers: 0) == .zero)
        #expect(merging.window(subscribers: 4) == .microseconds(100), "a small room merges nothing worth the name")
        #expect(merging.window(subscribers: 1_000) == .milliseconds(25))
        #expect(merging.window(subscribers: 10_000) == .milliseconds(250))
        #expect(merging.window(subscribers: 100_000) == .milliseconds(250), "never above the maximum")
        let start = ContinuousClock.now
        #expect(merging.deadline(lastChangeRead: start, subscribers: 1_000, now: start + .milliseconds(10)) == start + .milliseconds(25))
    }

    /// A long window makes the test independent of the machine's speed: a burst falls inside it,
    /// and a lone change must arrive far sooner than the window would allow.
    @Test func aBurstBecomesOneDiffAndALoneChangeGoesAtOnce() async throws {
        let window = Duration.seconds(3)
        try await withServer(configure: { $0.diffMerging = DiffMerging(maximum: window, perSubscriber: window) }) { http in
            let host = try await http.heartbeat(user: "host", session: "host")
            let socket = TestSocket(port: http.port)
            defer { socket.close() }
            let snapshot = try await socket.subscribe(host.roomToken)
            var users = snapshot.users
            var version = snapshot.roomVersion

            // The first change of a quiet room opens the window and goes out at once.
            let started = ContinuousClock.now
            _ = try await http.heartbeat(user: "first", session: "first")
            var diff = try await socket.receive(type: "diff", timeout: .seconds(10)).decode(DiffMessage.self)
            #expect(ContinuousClock.now - started < window, "the change opening a window waited for it")
            #expect(diff.from == version)
            users = diff.diff.applied(to: users)
            version = diff.roomVersion

            // Everything inside the window arrives as one diff spanning all its versions.
            let burst = 20
            let burstStarted = ContinuousClock.now
            var tokens: [String] = []
            for index in 0..<burst {
                tokens.append(try await http.heartbeat(user: "burst\(index)", session: "burst\(index)").sessionToken)
            }
            for token in tokens.prefix(5) {
                _ = try await http.call(.post, "/api/disconnect", body: token, headers: [.contentType: "text/plain"])
            }
            let expected = try await http.list(host.roomToken)
            // One diff per window at most: the burst's own length says how many windows it spanned.
            let windowsSpanned = Int(((ContinuousClock.now - burstStarted) / window).rounded(.up))
            var diffs = 0
            while users != expected.users {
                diff = try await socket.receive(type: "diff", timeout: .seconds(10)).decode(DiffMessage.self)
                #expect(diff.from == version, "the merged diffs form one chain")
                users = diff.diff.applied(to: users)
                version = diff.roomVersion
                diffs += 1
            }
            // Two when the burst fits one window; a loaded machine stretches it over more.
            #expect(diffs <= max(2, windowsSpanned + 1), "\(burst + 5) changes over \(windowsSpanned) windows of \(window) came as \(diffs) diffs")
            #expect(version == expected.roomVersion)
            #expect(diff.onlineCount == expected.onlineCount && diff.userCount == expected.userCount)
            #expect(await socket.nextRaw(timeout: .milliseconds(300)) == nil)

            // After a quiet window, a lone change goes out at once again.
            try await Task.sleep(for: window + .milliseconds(200))
            let lone = ContinuousClock.now
            _ = try await http.heartbeat(user: "lone", session: "lone")
            diff = try await socket.receive(type: "diff", timeout: .seconds(10)).decode(DiffMessage.self)
            #expect(ContinuousClock.now - lone < window, "a lone change after a quiet spell waited")
            #expect(diff.from == version && diff.upsert.map(\.userId) == ["lone"])
        }
    }

    @Test func aNewSubscriberDoesNotWaitForTheWindow() async throws {
        let window = Duration.seconds(3)
        try await withServer(configure: { $0.diffMerging = DiffMerging(maximum: window, perSubscriber: window) }) { http in
            let host = try await http.heartbeat(user: "host", session: "host")
            let first = TestSocket(port: http.port)
            defer { first.close() }
            _ = try await first.subscribe(host.roomToken)
            _ = try await http.heartbeat(user: "opens", session: "opens")
            _ = try await first.receive(type: "diff")
            // This change waits for the window; a subscriber with a limit no view has yet must not.
            _ = try await http.heartbeat(user: "waits", session: "waits")
            let second = TestSocket(port: http.port)
            defer { second.close() }
            let started = ContinuousClock.now
            let snapshot = try await second.subscribe(host.roomToken, limit: 7)
            #expect(ContinuousClock.now - started < window / 2)
            #expect(snapshot.users.map(\.userId).contains("waits"))
        }
    }
}
