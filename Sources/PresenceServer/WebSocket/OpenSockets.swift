import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// The outboxes of the open WebSockets, so all of them can be closed at once.
final class OpenSockets: Sendable {
    private let outboxes = Mutex<[Int: Outbox]>([:])
    private let lastId = Atomic<Int>(0)

    func nextId() -> Int { lastId.wrappingAdd(1, ordering: .relaxed).newValue }

    func insert(_ outbox: Outbox) { outboxes.withLock { $0[outbox.id] = outbox } }
    func remove(_ outbox: Outbox) { _ = outboxes.withLock { $0.removeValue(forKey: outbox.id) } }
    var all: [Outbox] { outboxes.withLock { Array($0.values) } }
    var isEmpty: Bool { outboxes.withLock { $0.isEmpty } }
}
