import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle

/// Turns stored room changes into diffs for subscribers.
///
/// Subscribers of the same room token and `limit` share a *view*. Per change, the
/// hub reads the room's list once (at the largest limit any view needs), diffs it
/// against what each view last sent, encodes that diff once, and enqueues the same
/// bytes in every subscriber's outbox. A heartbeat of an online user produces no
/// room change, so it never reaches the hub.
///
/// All commands run one after another on one task, so a new subscriber's snapshot
/// and the diffs that follow it can never interleave wrongly.
final class FanoutHub: Service, Sendable {
    enum Command: Sendable {
        case subscribe(Outbox, roomToken: String, limit: Int, requestId: JSONValue?)
        case unsubscribe(Outbox, roomToken: String, requestId: JSONValue?)
        case removeSubscriber(Outbox)
        case roomChanged(RoomChange)
    }

    private let store: any PresenceStore
    private let metrics: PresenceMetrics
    private let logger: Logger
    private let commands: AsyncStream<Command>
    private let commandContinuation: AsyncStream<Command>.Continuation
    private let changes: AsyncStream<RoomChange>
    private let subscriptionsPerSocket: Int

    init(store: any PresenceStore, metrics: PresenceMetrics, logger: Logger, subscriptionsPerSocket: Int = .max) {
        self.store = store
        self.subscriptionsPerSocket = subscriptionsPerSocket
        self.metrics = metrics
        self.logger = logger
        (commands, commandContinuation) = AsyncStream<Command>.makeStream()
        // Listen from construction on, so no change stored before `run` starts is missed.
        changes = store.roomChanges()
    }

    func submit(_ command: Command) {
        commandContinuation.yield(command)
    }

    func run() async throws {
        var state = State()
        await withDiscardingTaskGroup { group in
            group.addTask { [changes, commandContinuation] in
                for await change in changes { commandContinuation.yield(.roomChanged(change)) }
            }
            group.addTask { [commandContinuation] in
                // Stop with the service group: end the command stream so the loop below returns.
                try? await gracefulShutdown()
                commandContinuation.finish()
            }
            for await command in commands.cancelOnGracefulShutdown() {
                await process(command, state: &state)
            }
            group.cancelAll()
        }
    }

    // MARK: - State

    struct ViewKey: Hashable {
        let roomToken: String
        let limit: Int
    }

    struct View {
        var version: UInt64
        var users: [UserRecord]
        var subscribers: [Int: Outbox] = [:]
    }

    struct State {
        var views: [ViewKey: View] = [:]
        var limitsByToken: [String: Set<Int>] = [:]
        /// The newest room version each token's views were computed at: older change events are skipped.
        var computedVersionByToken: [String: UInt64] = [:]
        /// For each subscriber: the limit of each token it follows.
        var subscriptions: [Int: [String: Int]] = [:]
        var subscriptionCount = 0

        mutating func detach(_ subscriberId: Int, from roomToken: String) {
            guard let limit = subscriptions[subscriberId]?.removeValue(forKey: roomToken) else { return }
            if subscriptions[subscriberId]?.isEmpty == true { subscriptions.removeValue(forKey: subscriberId) }
            subscriptionCount -= 1
            let key = ViewKey(roomToken: roomToken, limit: limit)
            views[key]?.subscribers.removeValue(forKey: subscriberId)
            if views[key]?.subscribers.isEmpty == true {
                views.removeValue(forKey: key)
                limitsByToken[roomToken]?.remove(limit)
                if limitsByToken[roomToken]?.isEmpty == true {
                    limitsByToken.removeValue(forKey: roomToken)
                    computedVersionByToken.removeValue(forKey: roomToken)
                }
            }
        }
    }

    // MARK: - Processing

    private func process(_ command: Command, state: inout State) async {
        switch command {
        case .subscribe(let outbox, let roomToken, let limit, let requestId):
            await subscribe(outbox, roomToken: roomToken, limit: limit, requestId: requestId, state: &state)
        case .unsubscribe(let outbox, let roomToken, let requestId):
            state.detach(outbox.id, from: roomToken)
            deliver(ServerFrame.unsubscribed(id: requestId, roomToken: roomToken), to: outbox, state: &state)
        case .removeSubscriber(let outbox):
            for roomToken in state.subscriptions[outbox.id]?.keys.map({ $0 }) ?? [] {
                state.detach(outbox.id, from: roomToken)
            }
        case .roomChanged(let change):
            await roomChanged(change, state: &state)
        }
        metrics.subscribers.record(state.subscriptionCount)
    }

    private func subscribe(_ outbox: Outbox, roomToken: String, limit: Int, requestId: JSONValue?, state: inout State) async {
        state.detach(outbox.id, from: roomToken)
        if state.subscriptions[outbox.id, default: [:]].count >= subscriptionsPerSocket {
            metrics.rateLimited.increment()
            let error = PresenceError.rateLimited("a socket may follow at most \(subscriptionsPerSocket) rooms")
            deliver(ServerFrame.error(id: requestId, error), to: outbox, state: &state)
            return
        }
        let key = ViewKey(roomToken: roomToken, limit: limit)
        let view: View
        if let existing = state.views[key] {
            view = existing
        } else {
            // Read at the largest limit of this token and bring its other views to the same version,
            // so every view of a token always stands at one computed version.
            let readLimit = max(limit, state.limitsByToken[roomToken]?.max() ?? 0)
            let snapshot: RoomSnapshot
            do {
                snapshot = try await store.snapshot(roomToken: roomToken, limit: readLimit)
            } catch {
                logger.error("subscribe could not read the room", metadata: ["error": "\(error)"])
                deliver(ServerFrame.error(id: requestId, .unavailable("the store could not be read")), to: outbox, state: &state)
                return
            }
            refreshViews(of: roomToken, with: snapshot, state: &state)
            view = View(version: snapshot.roomVersion, users: Array(snapshot.users.prefix(limit)))
        }
        let message = ServerFrame.snapshot(id: requestId, roomToken: roomToken, version: view.version, users: view.users)
        guard deliver(message, to: outbox, state: &state) else { return }
        // An unknown token (version 0) stays empty forever: tokens are never reissued, so nothing to follow.
        guard view.version > 0 else { return }
        var registered = view
        registered.subscribers[outbox.id] = outbox
        state.views[key] = registered
        state.limitsByToken[roomToken, default: []].insert(limit)
        state.computedVersionByToken[roomToken] = max(state.computedVersionByToken[roomToken] ?? 0, view.version)
        state.subscriptions[outbox.id, default: [:]][roomToken] = limit
        state.subscriptionCount += 1
    }

    private func roomChanged(_ change: RoomChange, state: inout State) async {
        guard let limits = state.limitsByToken[change.roomToken], let maxLimit = limits.max() else { return }
        if change.kind == .tokenRotated {
            // The old token reads nothing any more: its subscribers heartbeat for the new one.
            let ended = ServerFrame.unsubscribed(id: nil, roomToken: change.roomToken, reason: "token_rotated")
            for limit in limits {
                for subscriber in state.views[ViewKey(roomToken: change.roomToken, limit: limit)]?.subscribers.values ?? [:].values {
                    deliver(ended, to: subscriber, state: &state)
                    state.detach(subscriber.id, from: change.roomToken)
                }
            }
            return
        }
        // Older events were already covered by a read at a newer version.
        guard change.roomVersion > state.computedVersionByToken[change.roomToken] ?? 0 else { return }

        if change.kind == .removed {
            for limit in limits {
                let key = ViewKey(roomToken: change.roomToken, limit: limit)
                guard let view = state.views[key] else { continue }
                let diff = RoomDiff(from: view.users, to: [])
                let final = ServerFrame.diff(roomToken: change.roomToken, from: view.version, to: change.roomVersion, diff: diff)
                let ended = ServerFrame.unsubscribed(id: nil, roomToken: change.roomToken, reason: "room_removed")
                for subscriber in view.subscribers.values {
                    if !diff.isEmpty { deliver(final, to: subscriber, state: &state) }
                    deliver(ended, to: subscriber, state: &state)
                    state.detach(subscriber.id, from: change.roomToken)
                }
            }
            return
        }

        let snapshot: RoomSnapshot
        do {
            snapshot = try await store.snapshot(roomToken: change.roomToken, limit: maxLimit)
        } catch {
            logger.error("could not read a changed room", metadata: ["error": "\(error)"])
            return
        }
        refreshViews(of: change.roomToken, with: snapshot, state: &state)
    }

    /// Sends each view of the token the diff from what it last sent to `snapshot` (read at the largest limit).
    private func refreshViews(of roomToken: String, with snapshot: RoomSnapshot, state: inout State) {
        guard let limits = state.limitsByToken[roomToken] else { return }
        state.computedVersionByToken[roomToken] = snapshot.roomVersion
        for limit in limits {
            let key = ViewKey(roomToken: roomToken, limit: limit)
            guard var view = state.views[key], snapshot.roomVersion > view.version else { continue }
            let shown = Array(snapshot.users.prefix(limit))
            let diff = RoomDiff(from: view.users, to: shown)
            // A change outside this view's window sends nothing; the view's version trails the room's.
            guard !diff.isEmpty else { continue }
            let message = ServerFrame.diff(roomToken: roomToken, from: view.version, to: snapshot.roomVersion, diff: diff)
            view.version = snapshot.roomVersion
            view.users = shown
            state.views[key] = view
            for subscriber in view.subscribers.values {
                deliver(message, to: subscriber, state: &state)
            }
        }
    }

    /// Enqueues one frame; a subscriber whose outbox is full is dropped from every view.
    @discardableResult
    private func deliver(_ message: ByteBuffer, to outbox: Outbox, state: inout State) -> Bool {
        if outbox.send(message) { return true }
        if outbox.overflowed { metrics.slowSubscribersDropped.increment() }
        for roomToken in state.subscriptions[outbox.id]?.keys.map({ $0 }) ?? [] {
            state.detach(outbox.id, from: roomToken)
        }
        return false
    }
}
