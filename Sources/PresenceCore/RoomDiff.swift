/// The change between two ordered lists of a room: what to drop and what to
/// replace or add. Applying it to the old list and sorting gives the new one.
///
/// ```swift
/// let diff = RoomDiff(from: shownBefore, to: shownNow)
/// if !diff.isEmpty { send(diff) }
/// ```
public struct RoomDiff: Sendable, Hashable {
    public var upsert: [UserRecord]
    public var remove: [String]

    public init(upsert: [UserRecord] = [], remove: [String] = []) {
        self.upsert = upsert
        self.remove = remove
    }

    public init(from old: [UserRecord], to new: [UserRecord]) {
        var oldByUser = IDDictionary<UserRecord>(minimumCapacity: old.count)
        for record in old { oldByUser[record.userId] = record }
        var upsert: [UserRecord] = []
        for record in new {
            if let previous = oldByUser.removeValue(forKey: record.userId) {
                if previous != record { upsert.append(record) }
            } else {
                upsert.append(record)
            }
        }
        // What is left was shown before and is not shown now, in the old order for readable diffs.
        let remove = old.lazy.map(\.userId).filter { oldByUser[$0] != nil }
        self.init(upsert: upsert, remove: Array(remove))
    }

    public var isEmpty: Bool { upsert.isEmpty && remove.isEmpty }

    /// The list a client holds after applying this diff to `list`.
    public func applied(to list: [UserRecord]) -> [UserRecord] {
        let dropped = IDSet(remove).union(upsert.map(\.userId))
        var result = list.filter { !dropped.contains($0.userId) }
        result.append(contentsOf: upsert)
        result.sort(by: UserRecord.precedes)
        return result
    }
}
