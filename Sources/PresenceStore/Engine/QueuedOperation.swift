import Synchronization

/// One mutation queued for a durable store's writer: applied under the store's lock in the
/// batch that takes it, and answered once that batch is stored (or failed). The caller awaits
/// `result`, which no cancellation interrupts: a queued operation is committed whatever happens
/// to its caller, and the caller learns how it went.
public final class QueuedOperation: Sendable {
    /// An expiry: a journal with stored deadlines (PostgreSQL) reads those of the due sessions
    /// first and passes the ids still due to `apply`; the others pass nil.
    public let expiryLimit: Int?
    private let applyBody: @Sendable (inout PresenceState, Int64, [String]?) -> [RoomChange]
    private let finishBody: @Sendable ((any Error)?) -> Void

    private init(
        expiryLimit: Int?, apply: @escaping @Sendable (inout PresenceState, Int64, [String]?) -> [RoomChange],
        finish: @escaping @Sendable ((any Error)?) -> Void
    ) {
        self.expiryLimit = expiryLimit
        applyBody = apply
        finishBody = finish
    }

    /// Runs the mutation on the batch's state; a `PresenceError` it throws is its caller's
    /// answer and changes nothing. Returns the room changes to publish once stored.
    public func apply(_ state: inout PresenceState, now: Int64, due: [String]?) -> [RoomChange] {
        applyBody(&state, now, due)
    }

    /// Answers the caller: with the mutation's result, or with `storeError` when the batch was not stored.
    public func finish(_ storeError: (any Error)?) {
        finishBody(storeError)
    }

    /// An operation for `body` and the result its caller awaits.
    public static func make<Value: Sendable>(
        expiryLimit: Int? = nil,
        _ body: @escaping @Sendable (inout PresenceState, Int64, [String]?) throws(PresenceError) -> (Value, [RoomChange])
    ) -> (operation: QueuedOperation, result: Promise<Result<Value, any Error>>) {
        let promise = Promise<Result<Value, any Error>>()
        let outcome = Mutex<Result<Value, any Error>?>(nil)
        let operation = QueuedOperation(
            expiryLimit: expiryLimit,
            apply: { state, now, due in
                do throws(PresenceError) {
                    let (value, changes) = try body(&state, now, due)
                    outcome.withLock { $0 = .success(value) }
                    return changes
                } catch {
                    outcome.withLock { $0 = .failure(error) }
                    return []
                }
            },
            finish: { storeError in
                if let storeError {
                    promise.fulfil(.failure(storeError))
                } else {
                    promise.fulfil(outcome.withLock { $0 } ?? .failure(PresenceError.unavailable("operation was not applied")))
                }
            })
        return (operation, promise)
    }
}
