/// An id (room, user, session) as PROTOCOL.md compares them: by its UTF-8 bytes. Swift's `String`
/// compares and hashes by canonical equivalence, so `"Zoé"` in NFC (4 bytes) and in NFD (5 bytes)
/// are one `String` key but two ids, to the protocol, the JavaScript client and the stores' rows.
/// Every collection keyed by ids keys them by this (`IDDictionary`, `IDSet`).
public struct IDKey: Hashable, Comparable, Sendable {
    public let id: String

    @inlinable public init(_ id: String) { self.id = id }

    @inlinable public static func == (a: IDKey, b: IDKey) -> Bool { a.id.isSameID(as: b.id) }

    @inlinable public func hash(into hasher: inout Hasher) {
        if let hashed: Void = id.utf8.withContiguousStorageIfAvailable({ hasher.combine(bytes: UnsafeRawBufferPointer($0)) }) {
            return hashed
        }
        for byte in id.utf8 { hasher.combine(byte) }
        hasher.combine(0xFF as UInt8)
    }

    /// Code point order, which for UTF-8 is byte order.
    @inlinable public static func < (a: IDKey, b: IDKey) -> Bool { a.id.precedesAsID(b.id) }
}

extension String {
    /// Whether two ids are the same id: the same bytes.
    @inlinable public func isSameID(as other: String) -> Bool {
        let fast = utf8.withContiguousStorageIfAvailable { mine in
            other.utf8.withContiguousStorageIfAvailable { theirs in mine.elementsEqual(theirs) }
        }
        return (fast ?? nil) ?? utf8.elementsEqual(other.utf8)
    }

    /// Whether this id comes before `other` in code point order (PROTOCOL.md's order of ids).
    @inlinable public func precedesAsID(_ other: String) -> Bool {
        utf8.lexicographicallyPrecedes(other.utf8)
    }
}

/// A dictionary keyed by ids as bytes (`IDKey`), used like `[String: Value]`.
public struct IDDictionary<Value>: Sequence, ExpressibleByDictionaryLiteral {
    public typealias Storage = [IDKey: Value]
    @usableFromInline var storage: Storage

    @inlinable public init() { storage = [:] }
    @inlinable public init(minimumCapacity: Int) { storage = Storage(minimumCapacity: minimumCapacity) }
    @inlinable public init(dictionaryLiteral elements: (String, Value)...) {
        storage = Storage(uniqueKeysWithValues: elements.map { (IDKey($0.0), $0.1) })
    }

    @inlinable public subscript(id: String) -> Value? {
        get { storage[IDKey(id)] }
        _modify { yield &storage[IDKey(id)] }
    }

    @inlinable public subscript(id: String, default defaultValue: @autoclosure () -> Value) -> Value {
        get { storage[IDKey(id), default: defaultValue()] }
        _modify { yield &storage[IDKey(id), default: defaultValue()] }
    }

    @inlinable public func index(forKey id: String) -> Storage.Index? { storage.index(forKey: IDKey(id)) }

    @inlinable public var values: Storage.Values {
        get { storage.values }
        _modify { yield &storage.values }
    }

    @inlinable public var keys: LazyMapSequence<Storage.Keys, String> { storage.keys.lazy.map(\.id) }
    @inlinable public var count: Int { storage.count }
    @inlinable public var isEmpty: Bool { storage.isEmpty }

    @inlinable @discardableResult public mutating func removeValue(forKey id: String) -> Value? {
        storage.removeValue(forKey: IDKey(id))
    }

    @inlinable public mutating func removeAll(keepingCapacity: Bool = false) { storage.removeAll(keepingCapacity: keepingCapacity) }

    @inlinable public func mapValues<T>(_ transform: (Value) throws -> T) rethrows -> IDDictionary<T> {
        var mapped = IDDictionary<T>()
        mapped.storage = try storage.mapValues(transform)
        return mapped
    }


    public struct Iterator: IteratorProtocol {
        @usableFromInline var base: Storage.Iterator
        @inlinable init(_ base: Storage.Iterator) { self.base = base }
        @inlinable public mutating func next() -> (key: String, value: Value)? {
            base.next().map { (key: $0.key.id, value: $0.value) }
        }
    }

    @inlinable public func makeIterator() -> Iterator { Iterator(storage.makeIterator()) }
}

extension IDDictionary: Sendable where Value: Sendable {}
extension IDDictionary.Iterator: Sendable where Value: Sendable {}
extension IDDictionary: Equatable where Value: Equatable {}

/// A set of ids as bytes (`IDKey`), used like `Set<String>`.
public struct IDSet: Sequence, Hashable, Sendable, ExpressibleByArrayLiteral {
    @usableFromInline var storage: Set<IDKey>

    @inlinable public init() { storage = [] }
    @inlinable public init(_ ids: some Sequence<String>) { storage = Set(ids.lazy.map(IDKey.init)) }
    @inlinable public init(arrayLiteral ids: String...) { self.init(ids) }

    @inlinable public func contains(_ id: String) -> Bool { storage.contains(IDKey(id)) }
    @inlinable @discardableResult public mutating func insert(_ id: String) -> (inserted: Bool, memberAfterInsert: String) {
        let (inserted, member) = storage.insert(IDKey(id))
        return (inserted, member.id)
    }
    @inlinable @discardableResult public mutating func remove(_ id: String) -> String? { storage.remove(IDKey(id))?.id }
    @inlinable public mutating func formUnion(_ ids: some Sequence<String>) { storage.formUnion(ids.lazy.map(IDKey.init)) }
    @inlinable public func union(_ ids: some Sequence<String>) -> IDSet { var union = self; union.formUnion(ids); return union }
    @inlinable public mutating func subtract(_ ids: some Sequence<String>) { storage.subtract(ids.lazy.map(IDKey.init)) }
    @inlinable public mutating func removeAll(keepingCapacity: Bool = false) { storage.removeAll(keepingCapacity: keepingCapacity) }
    @inlinable public func filter(_ isIncluded: (String) throws -> Bool) rethrows -> IDSet {
        var kept = IDSet()
        kept.storage = try storage.filter { try isIncluded($0.id) }
        return kept
    }
    @inlinable public var count: Int { storage.count }
    @inlinable public var isEmpty: Bool { storage.isEmpty }
    /// In code point order.
    @inlinable public func sorted() -> [String] { storage.sorted().map(\.id) }

    @inlinable public func makeIterator() -> LazyMapSequence<Set<IDKey>, String>.Iterator { storage.lazy.map(\.id).makeIterator() }
}
