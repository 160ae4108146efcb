import Testing
import PresenceTestSupport
@testable import PresenceCore

@Suite struct OrderAndDiffTests {
    func online(_ id: String, since: Int64) -> UserRecord {
        UserRecord(userId: id, online: true, lastDisconnected: 0, onlineSince: since)
    }
    func offline(_ id: String, at: Int64) -> UserRecord {
        UserRecord(userId: id, online: false, lastDisconnected: at, onlineSince: 0)
    }

    @Test func onlineFirstBySinceThenOfflineByMostRecentThenUserId() {
        let records = [
            offline("old", at: 10), online("late", since: 50), offline("recent", at: 90),
            online("early", since: 20), online("b-tie", since: 30), online("a-tie", since: 30), offline("z", at: 90),
        ]
        let sorted = records.sorted(by: UserRecord.precedes).map(\.userId)
        #expect(sorted == ["early", "a-tie", "b-tie", "late", "recent", "z", "old"])
    }

    @Test func topKSelectionMatchesAFullSort() {
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<50 {
            let count = Int(generator.next() % 300) + 1
            let records = (0..<count).map { index -> UserRecord in
                let isOnline = generator.next() % 2 == 0
                let time = Int64(generator.next() % 40)  // many ties
                return isOnline ? online("u\(index)", since: time) : offline("u\(index)", at: time + 1)
            }
            let limit = Int(generator.next() % 20) + 1
            var first = PresenceState.FirstRecords(limit: limit)
            for record in records { first.offer(record) }
            #expect(first.sorted == Array(records.sorted(by: UserRecord.precedes).prefix(limit)))
        }
    }

    @Test func diffOfEqualListsIsEmpty() {
        let list = [online("a", since: 1), offline("b", at: 2)]
        #expect(RoomDiff(from: list, to: list).isEmpty)
    }

    @Test func diffReportsJoinsLeavesAndChanges() {
        var changed = online("a", since: 1)
        changed.data = .object(["typing": .bool(true)])
        let diff = RoomDiff(from: [online("a", since: 1), online("b", since: 2)], to: [changed, online("c", since: 3)])
        #expect(diff.upsert.map(\.userId) == ["a", "c"])
        #expect(diff.remove == ["b"])
    }

    /// The contract subscribers rely on: old list + diff, sorted, is exactly the new list.
    @Test func applyingADiffGivesTheNewListForRandomLists() {
        var generator = SeededGenerator(seed: 42)
        func randomList() -> [UserRecord] {
            var records: [UserRecord] = []
            for index in 0..<20 where generator.next() % 3 != 0 {
                let time = Int64(generator.next() % 10)
                var record = generator.next() % 2 == 0 ? online("u\(index)", since: time) : offline("u\(index)", at: time + 1)
                if generator.next() % 4 == 0 { record.data = .integer(Int64(generator.next() % 3)) }
                records.append(record)
            }
            return records.sorted(by: UserRecord.precedes)
        }
        for _ in 0..<500 {
            let old = randomList()
            let new = randomList()
            #expect(RoomDiff(from: old, to: new).applied(to: old) == new)
        }
    }
}

