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

    /// A room's users keep their protocol order as they come, go, change and are removed, in
    /// any order of times (ties too, and clocks that step back): the first `limit` read from it
    /// equal a full sort of the records, and its online count is the records'.
    @Test func aRoomsOrderFollowsEveryChangeOfItsUsers() {
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<20 {
            var users = PresenceState.RoomUsers()
            for _ in 0..<400 {
                let userId = "u\(generator.next() % 60)"
                let time = Int64(generator.next() % 40)  // many ties
                switch generator.next() % 6 {
                case 0:
                    users.removeValue(forKey: userId)
                case 1:
                    // A change that leaves the order as it was.
                    users[userId]?.record.name = "n\(time)"
                case 2, 3:
                    users[userId] = PresenceState.RoomUser(record: online(userId, since: time))
                default:
                    if users[userId] == nil {
                        users[userId] = PresenceState.RoomUser(record: offline(userId, at: time))
                    } else {
                        users[userId]!.record.online = false
                        users[userId]!.record.onlineSince = 0
                        users[userId]!.record.lastDisconnected = time
                    }
                }
                let records = users.values.map(\.record).sorted(by: UserRecord.precedes)
                let limit = Int(generator.next() % 70) + 1
                #expect(users.first(limit, onlineOnly: false) == Array(records.prefix(limit)))
                #expect(users.first(limit, onlineOnly: true) == Array(records.filter(\.online).prefix(limit)))
                #expect(users.onlineCount == records.filter(\.online).count)
            }
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

