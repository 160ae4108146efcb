import Testing
@testable import PresenceServer
import PresenceStore

@Suite struct FlapFilterTests {
    private func event(_ sequence: UInt64, _ user: String, _ kind: PresenceEvent.Kind, at: Int64, room: String = "room") -> PresenceEvent {
        PresenceEvent(sequence: sequence, roomId: room, userId: user, kind: kind, at: at, roomVersion: sequence)
    }

    @Test func aLeaveAndAQuickJoinAreBothDropped() {
        let page = [
            event(1, "alice", .leave, at: 1_000), event(2, "bob", .join, at: 1_100), event(3, "alice", .join, at: 1_500),
            event(4, "alice", .data, at: 1_600),
        ]
        let selection = FlapFilter.select(page, window: 1_000, now: 1_700, batchSize: 100, pageIsComplete: true)
        #expect(selection.events.map(\.sequence) == [2, 4])
        #expect(selection.through == 4)
        #expect(selection.holdUntil == nil)
    }

    @Test func aLeaveWhoseWindowIsOpenHoldsItselfAndWhatFollows() {
        let page = [event(1, "bob", .join, at: 900), event(2, "alice", .leave, at: 1_000), event(3, "carol", .join, at: 1_100)]
        let early = FlapFilter.select(page, window: 1_000, now: 1_500, batchSize: 100, pageIsComplete: true)
        #expect(early.events.map(\.sequence) == [1])
        #expect(early.through == 1 && early.holdUntil == 2_000)
        // Once the window has passed without a join, the leave goes out, in order.
        let late = FlapFilter.select(page, window: 1_000, now: 2_000, batchSize: 100, pageIsComplete: true)
        #expect(late.events.map(\.sequence) == [1, 2, 3])
    }

    @Test func aJoinAfterTheWindowOrInAnotherRoomCancelsNothing() {
        let page = [
            event(1, "alice", .leave, at: 1_000), event(2, "alice", .join, at: 1_500, room: "other"),
            event(3, "alice", .join, at: 2_500),
        ]
        let selection = FlapFilter.select(page, window: 1_000, now: 3_000, batchSize: 100, pageIsComplete: true)
        #expect(selection.events.map(\.sequence) == [1, 2, 3])
    }

    @Test func aRemovalIsNeverHiddenAndNoWindowSendsEverything() {
        let page = [event(1, "alice", .leave, at: 1_000), event(2, "alice", .removed, at: 1_001), event(3, "alice", .join, at: 1_002)]
        #expect(FlapFilter.select(page, window: 1_000, now: 1_003, batchSize: 100, pageIsComplete: true).events.map(\.sequence) == [1, 2, 3])
        #expect(FlapFilter.select(page, window: 0, now: 1_003, batchSize: 100, pageIsComplete: true).events.count == 3)
    }

    @Test func batchesStopAtTheirSizeAndAnUnsureLeaveIsReadAgain() {
        let page = (1...10).map { event(UInt64($0), "u\($0)", .join, at: 1_000) }
        let batch = FlapFilter.select(page, window: 0, now: 2_000, batchSize: 4, pageIsComplete: false)
        #expect(batch.events.count == 4 && batch.through == 4)
        // A leave past its window, near the end of a page that is not the whole log: its join may
        // be on the next read, so the batch ends before it.
        let unsure = [event(1, "bob", .join, at: 1_000), event(2, "alice", .leave, at: 1_000), event(3, "carol", .join, at: 1_200)]
        let cut = FlapFilter.select(unsure, window: 1_000, now: 5_000, batchSize: 100, pageIsComplete: false)
        #expect(cut.events.map(\.sequence) == [1] && cut.through == 1 && cut.holdUntil == nil)
    }
}
