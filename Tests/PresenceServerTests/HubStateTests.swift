import Foundation
import NIOCore
import Synchronization
import Testing
@testable import PresenceServer
import PresenceStore

/// A socket as the hubs see it, without a socket: an id and when its user token expires.
final class StandInSubscriber: HubSubscriber {
    let id: Int
    let expiresAt: Int64
    init(_ id: Int, expiresAt: Int64 = .max) {
        self.id = id
        self.expiresAt = expiresAt
    }
    func tokenExpired(at nowMillis: Int64) -> Bool { nowMillis >= expiresAt }
}

/// A frame an action sends, decoded, with who it goes to.
struct SentFrame {
    let json: [String: Any]
    let to: [Int]
    var type: String { json["type"] as? String ?? "" }

    init(_ buffer: ByteBuffer, to subscribers: [StandInSubscriber]) {
        json = (try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView))) as? [String: Any] ?? [:]
        to = subscribers.map(\.id).sorted()
    }
}

func online(_ userId: String, since: Int64) -> UserRecord {
    UserRecord(userId: userId, online: true, lastDisconnected: 0, onlineSince: since)
}

@Suite struct FanoutStateTests {
    typealias State = FanoutState<StandInSubscriber>
    let start = ContinuousClock.now

    func sent(_ actions: [State.Action]) -> [SentFrame] {
        actions.compactMap { if case .send(let buffer, let to) = $0 { SentFrame(buffer, to: to) } else { nil } }
    }

    func reads(_ actions: [State.Action]) -> [String] {
        actions.compactMap { if case .read(let token, _) = $0 { token } else { nil } }
    }

    func updated(_ token: String, _ version: UInt64) -> RoomChange {
        RoomChange(roomId: "doc", roomToken: token, roomVersion: version, kind: .updated)
    }

    @Test func aSubscriberGetsASnapshotThenDiffsEncodedOncePerView() {
        var state = State(merging: .off)
        let alice = StandInSubscriber(1), bob = StandInSubscriber(2)
        state.subscribe(alice, roomToken: "r", limit: 10, requestId: .integer(1), now: start)
        #expect(reads(state.takeActions()) == ["r"], "an unknown room is read for its first subscriber")
        state.roomRead("r", limit: 10, result: .success(RoomSnapshot(roomVersion: 3, users: [online("ann", since: 1)])), now: start, nowMillis: 0)
        let snapshot = sent(state.takeActions())
        #expect(snapshot.map(\.type) == ["snapshot"] && snapshot[0].to == [1] && snapshot[0].json["roomVersion"] as? Int == 3)

        // A second subscriber of the same view is answered from it, without a read.
        state.subscribe(bob, roomToken: "r", limit: 10, requestId: nil, now: start)
        let second = state.takeActions()
        #expect(reads(second).isEmpty && sent(second).map(\.type) == ["snapshot"])

        state.roomChanged("r", updated("r", 4), since: start, now: start)
        #expect(reads(state.takeActions()) == ["r"])
        let users = [online("ann", since: 1), online("ben", since: 2)]
        state.roomRead("r", limit: 10, result: .success(RoomSnapshot(roomVersion: 4, users: users)), now: start + .milliseconds(5), nowMillis: 0)
        let actions = state.takeActions()
        let diffs = sent(actions)
        #expect(diffs.count == 1, "one frame for the view, whoever is in it")
        #expect(diffs.first?.to == [1, 2] && diffs.first?.type == "diff")
        #expect(diffs.first?.json["from"] as? Int == 3 && diffs.first?.json["roomVersion"] as? Int == 4)
        #expect(actions.contains { if case .lag(let lag) = $0 { lag == .milliseconds(5) } else { false } })

        // A change older than what the views show is skipped.
        state.roomChanged("r", updated("r", 4), since: start, now: start)
        #expect(state.takeActions().isEmpty)
    }

    @Test func changesDuringAReadCostOneMoreReadAndBusyRoomsWaitForTheirWindow() {
        var state = State(merging: DiffMerging(maximum: .seconds(1), perSubscriber: .seconds(1)))
        let alice = StandInSubscriber(1)
        state.subscribe(alice, roomToken: "r", limit: 10, requestId: nil, now: start)
        _ = state.takeActions()
        state.roomRead("r", limit: 10, result: .success(RoomSnapshot(roomVersion: 1, users: [])), now: start, nowMillis: 0)
        _ = state.takeActions()

        state.roomChanged("r", updated("r", 2), since: start, now: start)
        #expect(reads(state.takeActions()) == ["r"], "a quiet room's change is read at once")
        for version in 3...9 { state.roomChanged("r", updated("r", UInt64(version)), since: start, now: start) }
        #expect(state.takeActions().isEmpty, "changes during a read are folded into one more")
        state.roomRead("r", limit: 10, result: .success(RoomSnapshot(roomVersion: 2, users: [online("a", since: 1)])), now: start, nowMillis: 0)
        let after = state.takeActions()
        #expect(sent(after).map(\.type) == ["diff"])
        // The read again falls within the window of the read before: it waits for a timer.
        let timers = after.compactMap { if case .mergeTimer(_, let deadline) = $0 { deadline } else { nil } }
        #expect(timers == [start + .seconds(1)] && reads(after).isEmpty)
        state.mergeWindowEnded("r", now: start + .seconds(1))
        #expect(reads(state.takeActions()) == ["r"])
    }

    @Test func expiredTokensEndRefusedSubscribersLeaveAndFailedReadsAnswer() {
        var state = State(merging: .off, subscriptionsPerSocket: 1, maxConcurrentReads: 1)
        let fresh = StandInSubscriber(1), stale = StandInSubscriber(2, expiresAt: 100), other = StandInSubscriber(3)
        state.subscribe(fresh, roomToken: "r", limit: 5, requestId: nil, now: start)
        state.subscribe(stale, roomToken: "r", limit: 5, requestId: nil, now: start)
        state.subscribe(other, roomToken: "s", limit: 5, requestId: .integer(7), now: start)
        #expect(reads(state.takeActions()) == ["r"], "one read slot: the other room queues")
        state.subscribe(fresh, roomToken: "t", limit: 5, requestId: .integer(8), now: start)
        let refused = state.takeActions()
        #expect(refused.contains { if case .subscriptionRefused = $0 { true } else { false } })
        #expect(sent(refused).first?.json["error"] != nil, "over the per-socket limit")

        state.roomRead("r", limit: 5, result: .success(RoomSnapshot(roomVersion: 1, users: [])), now: start, nowMillis: 0)
        let served = state.takeActions()
        // The second subscriber came during the read: the room is read once more, before the queued one.
        #expect(sent(served).map(\.to) == [[1], [2]] && reads(served) == ["r"])
        state.roomRead("r", limit: 5, result: .success(RoomSnapshot(roomVersion: 1, users: [])), now: start, nowMillis: 0)
        #expect(reads(state.takeActions()) == ["s"], "the queued room gets the freed slot")
        state.roomRead("s", limit: 5, result: .failure(PresenceError.unavailable("gone")), now: start, nowMillis: 0)
        let failed = sent(state.takeActions())
        #expect(failed.map(\.to) == [[3]] && failed.first?.type == "error" && failed.first?.json["id"] as? Int == 7)

        state.roomChanged("r", updated("r", 2), since: start, now: start)
        _ = state.takeActions()
        state.roomRead("r", limit: 5, result: .success(RoomSnapshot(roomVersion: 2, users: [online("a", since: 1)])), now: start, nowMillis: 500)
        let frames = sent(state.takeActions())
        #expect(frames.map(\.type) == ["unsubscribed", "diff"])
        #expect(frames.first?.to == [2] && frames.first?.json["reason"] as? String == "token_expired")
        #expect(frames.last?.to == [1])
        #expect(state.subscriptionCount == 1)
        state.subscriberRefused(fresh.id)
        #expect(state.subscriptionCount == 0 && state.rooms.isEmpty, "a refused subscriber follows nothing more")
    }

    @Test func aRemovedRoomSendsItsLastDiffAndEnds() {
        var state = State(merging: .off)
        let alice = StandInSubscriber(1)
        state.subscribe(alice, roomToken: "r", limit: 5, requestId: nil, now: start)
        _ = state.takeActions()
        state.roomRead("r", limit: 5, result: .success(RoomSnapshot(roomVersion: 1, users: [online("a", since: 1)])), now: start, nowMillis: 0)
        _ = state.takeActions()
        state.roomChanged("r", RoomChange(roomId: "doc", roomToken: "r", roomVersion: 2, kind: .removed), since: start, now: start)
        let frames = sent(state.takeActions())
        #expect(frames.map(\.type) == ["diff", "unsubscribed"])
        #expect(frames.last?.json["reason"] as? String == "room_removed")
        #expect(state.subscriptionCount == 0)
    }
}

@Suite struct UserWatchStateTests {
    typealias State = UserWatchState<StandInSubscriber>

    func sent(_ actions: [State.Action]) -> [SentFrame] {
        actions.compactMap { if case .send(let buffer, let to) = $0 { SentFrame(buffer, to: to) } else { nil } }
    }

    func reads(_ actions: [State.Action]) -> [[String]] {
        actions.compactMap { if case .read(let userIds) = $0 { userIds } else { nil } }
    }

    func status(_ userId: String, online: Bool) -> UserStatus {
        UserStatus(userId: userId, online: online, away: false, lastDisconnected: online ? 0 : 5, rooms: online ? 1 : 0)
    }

    @Test func oneReadAtATimeCoversEverythingThatWaitsAndCommandsGoOnMeanwhile() {
        var state = State(maximumPerSocket: 10)
        let alice = StandInSubscriber(1), bob = StandInSubscriber(2)
        state.watch(alice, userIds: ["u1"], requestId: .integer(1))
        let first = state.takeActions()
        #expect(reads(first) == [["u1"]])
        #expect(first.contains { if case .follow(let ids) = $0 { ids == ["u1"] } else { false } }, "followed before the read")

        // While the read runs: another watch waits for the next read, and other commands are answered.
        state.watch(bob, userIds: ["u2"], requestId: .integer(2))
        state.usersChanged(["u1", "nobody"])
        #expect(reads(state.takeActions()).isEmpty, "no second read while one is in flight")
        state.unwatch(bob, userIds: ["u9"], requestId: .integer(3))
        #expect(sent(state.takeActions()).isEmpty, "bob's unwatch waits behind bob's watch")

        state.statusesRead(.success([status("u1", online: true)]), nowMillis: 0)
        let answered = state.takeActions()
        #expect(sent(answered).map(\.type) == ["users"] && sent(answered).first?.to == [1])
        // u1's event came while its watch was read, perhaps after the read looked: it is read again.
        #expect(reads(answered) == [["u1", "u2"]], "bob's watch and u1's change share the next read")

        state.usersChanged(["u1"])
        #expect(state.takeActions().isEmpty)
        state.statusesRead(.success([status("u1", online: true), status("u2", online: false)]), nowMillis: 0)
        let second = sent(state.takeActions())
        #expect(second.map(\.type) == ["users", "unwatched"], "bob's answers keep the order he asked in")
        #expect(second.allSatisfy { $0.to == [2] })
        #expect(reads(state.takeActions()).isEmpty)
    }

    @Test func changesReachTheirWatchersOnceAndOnlyWhenTheStatusDiffers() {
        var state = State(maximumPerSocket: 10)
        let alice = StandInSubscriber(1), bob = StandInSubscriber(2), late = StandInSubscriber(3, expiresAt: 100)
        state.watch(alice, userIds: ["u1", "u2"], requestId: nil)
        state.watch(bob, userIds: ["u1"], requestId: nil)
        state.watch(late, userIds: ["u2"], requestId: nil)
        #expect(reads(state.takeActions()) == [["u1", "u2"]], "alice's read starts at once")
        state.statusesRead(.success([status("u1", online: true), status("u2", online: true)]), nowMillis: 0)
        let first = state.takeActions()
        #expect(sent(first).map(\.to) == [[1]])
        #expect(reads(first) == [["u1", "u2"]], "bob's and the late socket's watches share the next read")
        state.statusesRead(.success([status("u1", online: true), status("u2", online: true)]), nowMillis: 0)
        #expect(sent(state.takeActions()).map(\.to) == [[2], [3]], "answers only: nothing changed for alice")

        state.usersChanged(["u1", "u2"])
        #expect(reads(state.takeActions()) == [["u1", "u2"]])
        state.statusesRead(.success([status("u1", online: false), status("u2", online: true)]), nowMillis: 500)
        let frames = sent(state.takeActions())
        let changed = frames.filter { $0.type == "usersChanged" }
        #expect(changed.count == 1 && changed.first?.to == [1, 2], "alice and bob share one frame for u1 alone")
        #expect(frames.contains { $0.type == "unwatched" && $0.to == [3] } == false, "u2 did not change: the expired socket hears nothing")

        state.usersChanged(["u2"])
        _ = state.takeActions()
        state.statusesRead(.success([status("u2", online: false)]), nowMillis: 500)
        let ended = sent(state.takeActions())
        #expect(ended.contains { $0.type == "unwatched" && $0.to == [3] && $0.json["reason"] as? String == "token_expired" })
        #expect(ended.contains { $0.type == "usersChanged" && $0.to == [1] })
        #expect(state.watchersByUser["u2"]?.keys.sorted() == [1])
    }

    @Test func failuresLimitsAndRemovalAnswerAndForget() {
        var state = State(maximumPerSocket: 2)
        let alice = StandInSubscriber(1), bob = StandInSubscriber(2)
        state.watch(alice, userIds: ["u1", "u2", "u3"], requestId: .integer(1))
        let refused = state.takeActions()
        #expect(reads(refused).isEmpty && sent(refused).first?.type == "error", "over the limit: no read")

        state.watch(alice, userIds: ["u1"], requestId: .integer(2))
        _ = state.takeActions()
        state.statusesRead(.failure(.unavailable("gone")), nowMillis: 0)
        let failed = state.takeActions()
        #expect(sent(failed).first?.type == "error" && sent(failed).first?.json["id"] as? Int == 2)
        #expect(failed.contains { if case .unfollow(let ids) = $0 { ids == ["u1"] } else { false } })

        state.watch(bob, userIds: ["u1"], requestId: nil)
        _ = state.takeActions()
        state.statusesRead(.success([status("u1", online: true)]), nowMillis: 0)
        _ = state.takeActions()
        state.usersChanged(["u1"])
        _ = state.takeActions()
        state.statusesRead(.failure(.unavailable("gone")), nowMillis: 0)
        #expect(state.takeActions().contains { if case .retryLater(let ids) = $0 { ids == ["u1"] } else { false } })

        state.removeWatcher(bob.id)
        #expect(state.takeActions().contains { if case .unfollow(let ids) = $0 { ids == ["u1"] } else { false } })
        #expect(state.watchersByUser.isEmpty && state.known.isEmpty)
    }
}
