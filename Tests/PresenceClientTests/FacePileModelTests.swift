import Testing
import PresenceClient
import PresenceCore

@Suite struct FacePileModelTests {
    let now: Int64 = 1_764_393_600_000

    func users(_ count: Int, online: Bool) -> [UserRecord] {
        (0..<count).map { index in
            online
                ? UserRecord(userId: "u\(index)", online: true, lastDisconnected: 0, onlineSince: now - Int64(index))
                : UserRecord(userId: "u\(index)", online: false, lastDisconnected: now - Int64(index + 1) * 3_600_000, onlineSince: 0)
        }
    }

    @Test(arguments: [(0, 0, 0, 0), (1, 1, 0, 0), (5, 5, 0, 0), (6, 5, 1, 1), (20, 5, 15, 10)])
    func visibleAndOverflow(count: Int, visible: Int, overflowCount: Int, overflowListed: Int) {
        for online in [true, false] {
            let pile = FacePileModel(users: users(count, online: online), nowMillis: now)
            #expect(pile.visible.count == visible)
            #expect(pile.overflowCount == overflowCount)
            #expect(pile.overflow.count == overflowListed)
            #expect(pile.visible.map(\.userId) == (0..<visible).map { "u\($0)" })
            #expect(pile.overflow.map(\.userId) == (visible..<(visible + overflowListed)).map { "u\($0)" })
            #expect(pile.visible.allSatisfy { $0.online == online })
        }
    }

    @Test func statusStrings() {
        #expect(FacePileModel.lastSeen(now - 10_000, nowMillis: now) == "Last seen just now")
        #expect(FacePileModel.lastSeen(now - 5 * 60_000, nowMillis: now) == "Last seen 5 min ago")
        #expect(FacePileModel.lastSeen(now - 59 * 60_000, nowMillis: now) == "Last seen 59 min ago")
        #expect(FacePileModel.lastSeen(now - 60 * 60_000, nowMillis: now) == "Last seen 1 hour ago")
        #expect(FacePileModel.lastSeen(now - 2 * 3_600_000, nowMillis: now) == "Last seen 2 hours ago")
        #expect(FacePileModel.lastSeen(now - 24 * 3_600_000, nowMillis: now) == "Last seen 1 day ago")
        #expect(FacePileModel.lastSeen(now - 3 * 86_400_000, nowMillis: now) == "Last seen 3 days ago")
        let online = FacePileModel(users: users(1, online: true), nowMillis: now)
        #expect(online.visible[0].status == "Online now")
        let offline = FacePileModel(users: users(2, online: false), nowMillis: now)
        #expect(offline.visible.map(\.status) == ["Last seen 1 hour ago", "Last seen 2 hours ago"])
    }

    @Test func titlesEmojisAndDataRows() {
        let alice = UserRecord(
            userId: "alice", online: true, lastDisconnected: 0, onlineSince: now,
            data: .object(["typing": .bool(true), "doc": .string("intro"), "cursor": .object(["line": .integer(3)])]),
            name: "Alice", image: "https://example.com/a.png")
        let bob = UserRecord(userId: "bob", online: true, lastDisconnected: 0, onlineSince: now + 1, data: .integer(7))
        let pile = FacePileModel(users: [alice, bob], nowMillis: now)
        #expect(pile.visible[0].title == "Alice")
        #expect(pile.visible[1].title == "bob")
        #expect(pile.visible[0].imageURL == "https://example.com/a.png")
        #expect(pile.visible[0].dataRows.map { "\($0.key): \($0.value)" } == ["cursor: {\"line\":3}", "doc: intro", "typing: true"])
        #expect(pile.visible[1].dataRows.map { "\($0.key): \($0.value)" } == ["data: 7"])
        // Stable per user id, and spread over the set.
        #expect(FacePileModel.emoji(for: "alice") == FacePileModel.emoji(for: "alice"))
        #expect(Set((0..<100).map { FacePileModel.emoji(for: "user\($0)") }).count > 8)
        // FNV-1a of "alice" is 0x872213e7 (a fixed value the browser client must agree with).
        #expect(FacePileModel.emoji(for: "alice") == FacePileModel.emojis[Int(UInt32(0x8722_13E7) % 16)])
    }
}
