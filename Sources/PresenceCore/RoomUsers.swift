extension PresenceState {
    /// A room's users by id, and their ids in protocol order (`UserRecord.precedes`), kept as
    /// records change. Every change of a room is read for its subscribers as its first `limit`
    /// users, and a room keeps its offline users for their last seen: with the order kept here
    /// that read is O(limit), where choosing from every user made it O(users in the room).
    ///
    /// Changed through its subscript like a dictionary; the order follows by itself.
    struct RoomUsers: Sendable, Sequence {
        private var byId: IDDictionary<RoomUser> = [:]
        private var order = RoomOrder()

        subscript(userId: String) -> RoomUser? {
            get { byId[userId] }
            set {
                let before = byId[userId].map { RoomOrder.Key($0.record) }
                byId[userId] = newValue
                let after = newValue.map { RoomOrder.Key($0.record) }
                guard before != after else { return }
                if let before { order.remove(before) }
                if let after { order.insert(after) }
            }
        }

        @discardableResult
        mutating func removeValue(forKey userId: String) -> RoomUser? {
            guard let removed = byId.removeValue(forKey: userId) else { return nil }
            order.remove(RoomOrder.Key(removed.record))
            return removed
        }

        func makeIterator() -> IDDictionary<RoomUser>.Iterator { byId.makeIterator() }
        var values: IDDictionary<RoomUser>.Storage.Values { byId.values }
        var keys: LazyMapSequence<IDDictionary<RoomUser>.Storage.Keys, String> { byId.keys }
        var count: Int { byId.count }
        var isEmpty: Bool { byId.isEmpty }
        var onlineCount: Int { order.onlineCount }

        /// Up to `limit` offline users who left before `cutoff`, those gone longest first.
        func offline(leftBefore cutoff: Int64, limit: Int) -> [String] {
            order.offline(leftBefore: cutoff, limit: limit)
        }

        /// The first `limit` records in protocol order, online ones only if asked.
        func first(_ limit: Int, onlineOnly: Bool) -> [UserRecord] {
            order.first(limit, onlineOnly: onlineOnly).map { byId[$0]!.record }
        }
    }

    /// User ids in protocol order: online users by the time they came (oldest first), then
    /// offline users by the time they left (newest first), each then by id. Both lists are
    /// stored so that the usual change is an append: a user who comes online came last, and one
    /// who goes offline left last, so the offline list is stored last-first.
    struct RoomOrder: Sendable {
        struct Key: Hashable, Sendable {
            let online: Bool
            /// `onlineSince` when online, `lastDisconnected` when not.
            let time: Int64
            let userId: String

            init(_ record: UserRecord) {
                online = record.online
                time = record.online ? record.onlineSince : record.lastDisconnected
                userId = record.userId
            }

            static func == (a: Key, b: Key) -> Bool { a.online == b.online && a.time == b.time && a.userId.isSameID(as: b.userId) }

            func hash(into hasher: inout Hasher) {
                hasher.combine(online)
                hasher.combine(time)
                hasher.combine(IDKey(userId))
            }
        }

        /// In protocol order.
        private var online: [Key] = []
        /// In reverse protocol order.
        private var offline: [Key] = []

        var onlineCount: Int { online.count }

        mutating func insert(_ key: Key) {
            if key.online {
                online.insert(key, at: Self.index(of: key, in: online, by: Self.onlineOrder))
            } else {
                offline.insert(key, at: Self.index(of: key, in: offline, by: Self.storedOfflineOrder))
            }
        }

        mutating func remove(_ key: Key) {
            if key.online {
                Self.remove(key, from: &online, by: Self.onlineOrder)
            } else {
                Self.remove(key, from: &offline, by: Self.storedOfflineOrder)
            }
        }

        /// The offline list is stored last-first, so those gone longest lead it.
        func offline(leftBefore cutoff: Int64, limit: Int) -> [String] {
            offline.prefix(limit).prefix { $0.time < cutoff }.map(\.userId)
        }

        func first(_ limit: Int, onlineOnly: Bool) -> [String] {
            var ids = online.prefix(limit).map(\.userId)
            if !onlineOnly, ids.count < limit { ids += offline.reversed().prefix(limit - ids.count).lazy.map(\.userId) }
            return ids
        }

        private static func onlineOrder(_ a: Key, _ b: Key) -> Bool {
            a.time != b.time ? a.time < b.time : a.userId.precedesAsID(b.userId)
        }

        /// The reverse of offline users' protocol order (newest first, then by id).
        private static func storedOfflineOrder(_ a: Key, _ b: Key) -> Bool {
            a.time != b.time ? a.time < b.time : b.userId.precedesAsID(a.userId)
        }

        /// The first index whose key does not come before `key`; usually the end.
        private static func index(of key: Key, in keys: [Key], by comesBefore: (Key, Key) -> Bool) -> Int {
            if let last = keys.last, comesBefore(last, key) { return keys.count }
            var low = 0
            var high = keys.count
            while low < high {
                let middle = (low + high) / 2
                if comesBefore(keys[middle], key) { low = middle + 1 } else { high = middle }
            }
            return low
        }

        private static func remove(_ key: Key, from keys: inout [Key], by comesBefore: (Key, Key) -> Bool) {
            let index = index(of: key, in: keys, by: comesBefore)
            if index < keys.count, keys[index] == key {
                keys.remove(at: index)
                return
            }
            // Unreachable while every change goes through `RoomUsers`; a slower way than a crash if not.
            assertionFailure("a room's order lost user \(key.userId)")
            keys.removeAll { $0 == key }
        }
    }
}
