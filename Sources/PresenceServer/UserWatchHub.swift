import Logging
import PresenceStore
import ServiceLifecycle
import Synchronization

/// Sends watchers of users (`watchUsers`) each change of a watched user's global status.
///
/// Committed events say whose presence may have changed; the hub reads those users' statuses
/// (only the watched ones) and sends `usersChanged` to a socket only for statuses that differ
/// from what it last sent. A heartbeat that changes nothing makes no event, so it reaches
/// nobody; nor does an event that leaves the global status as it was (data, a second room).
///
/// The state lives on one task, so a watcher's `users` answer and the changes after it keep
/// their order in its outbox.
final class UserWatchHub: Service, Sendable {
    enum Command: Sendable {
        case watch(Outbox, userIds: [String], requestId: JSONValue?)
        case unwatch(Outbox, userIds: [String], requestId: JSONValue?)
        case removeWatcher(Outbox)
        /// Users were added to `changedUsers`.
        case usersChanged
        /// The store reloaded its state, skipping the events of what changed meanwhile.
        case storeReloaded
    }

    private let store: any PresenceStore
    private let logger: Logger
    private let commands: AsyncStream<Command>
    private let commandContinuation: AsyncStream<Command>.Continuation
    private let reloads: AsyncStream<Void>
    private let changedUsers = ChangedUsers()
    private let listening: FeedListening
    let maximumPerSocket: Int

    init(store: any PresenceStore, logger: Logger, maximumPerSocket: Int = UserIdsRequest.maximum) {
        self.store = store
        self.logger = logger
        self.maximumPerSocket = maximumPerSocket
        (commands, commandContinuation) = AsyncStream<Command>.makeStream()
        // Listen from construction on, so no event committed before `run` starts is missed.
        listening = store.listenToCommittedEvents { [changedUsers, commandContinuation] event in
            if changedUsers.note(event.userId) { commandContinuation.yield(.usersChanged) }
        }
        reloads = store.reloads()
    }

    func submit(_ command: Command) {
        commandContinuation.yield(command)
    }

    struct State {
        // Keyed by user ids as bytes (IDKey), as the protocol compares them.
        var watchersByUser: IDDictionary<[Int: Outbox]> = [:]
        var watchedBySocket: [Int: IDSet] = [:]
        /// The status each watched user's watchers were last sent.
        var known: IDDictionary<UserStatus> = [:]
    }

    func run() async throws {
        var state = State()
        await withDiscardingTaskGroup { group in
            group.addTask { [reloads, commandContinuation] in
                for await _ in reloads { commandContinuation.yield(.storeReloaded) }
            }
            group.addTask { [commandContinuation] in
                try? await gracefulShutdown()
                commandContinuation.finish()
            }
            for await command in commands.cancelOnGracefulShutdown() {
                await process(command, state: &state)
            }
            group.cancelAll()
        }
    }

    private func process(_ command: Command, state: inout State) async {
        switch command {
        case .watch(let outbox, let userIds, let requestId):
            let already = state.watchedBySocket[outbox.id] ?? []
            let total = already.union(userIds).count
            guard total <= maximumPerSocket else {
                outbox.send(ServerFrame.error(
                    id: requestId, .invalidArgument("a socket may watch at most \(maximumPerSocket) users; this would make \(total)")))
                return
            }
            // Watched before the read: an event committed after it is noted, one before it is in what it reads.
            changedUsers.watch(userIds)
            let statuses: [UserStatus]
            do {
                statuses = try await store.userStatuses(userIds: userIds)
            } catch {
                changedUsers.unwatch(userIds.filter { state.watchersByUser[$0] == nil })
                outbox.send(ServerFrame.error(id: requestId, error as? PresenceError ?? .unavailable("the statuses could not be read")))
                return
            }
            outbox.send(ServerFrame.users(type: "users", id: requestId, statuses))
            // Others watching the same users may hold an older status: they hear of the newer one too.
            let known = state.known
            broadcast(statuses.filter { status in known[status.userId].map { $0 != status } ?? false }, state: &state)
            state.watchedBySocket[outbox.id, default: []].formUnion(userIds)
            for status in statuses {
                state.watchersByUser[status.userId, default: [:]][outbox.id] = outbox
                state.known[status.userId] = status
            }
        case .unwatch(let outbox, let userIds, let requestId):
            for userId in userIds { forget(userId, of: outbox.id, state: &state) }
            outbox.send(ServerFrame.reply(type: "unwatched", id: requestId))
        case .removeWatcher(let outbox):
            for userId in state.watchedBySocket[outbox.id] ?? [] { forget(userId, of: outbox.id, state: &state) }
            state.watchedBySocket.removeValue(forKey: outbox.id)
        case .storeReloaded:
            // Every watched user may have changed: read them all, send what differs.
            changedUsers.mark(state.watchersByUser.keys)
            await process(.usersChanged, state: &state)
        case .usersChanged:
            let changed = changedUsers.take()
            let watched = changed.filter { state.watchersByUser[$0] != nil }
            guard !watched.isEmpty else { return }
            do {
                let statuses = try await store.userStatuses(userIds: Array(watched))
                broadcast(statuses.filter { state.known[$0.userId] != $0 }, state: &state)
            } catch {
                // Try again with the next change; the users stay marked.
                changedUsers.mark(watched)
                logger.warning("could not read watched users' statuses", metadata: ["error": "\(error)"])
            }
        }
    }

    /// One `usersChanged` per socket with every changed user it watches. Sockets that get the same
    /// users share one encoded message.
    private func broadcast(_ statuses: [UserStatus], state: inout State) {
        guard !statuses.isEmpty else { return }
        var bySocket: [Int: (outbox: Outbox, statuses: [UserStatus])] = [:]
        for status in statuses.sorted(by: { $0.userId.precedesAsID($1.userId) }) {
            state.known[status.userId] = status
            for (socketId, outbox) in state.watchersByUser[status.userId] ?? [:] {
                bySocket[socketId, default: (outbox, [])].statuses.append(status)
            }
        }
        var byUsers: [[String]: (statuses: [UserStatus], outboxes: [Outbox])] = [:]
        let now = store.clock.nowMillis()
        for entry in bySocket.values {
            // A socket whose user token has expired hears no more (PROTOCOL.md): its watches end.
            if entry.outbox.tokenExpired(at: now) {
                let userIds = (state.watchedBySocket[entry.outbox.id] ?? []).sorted()
                for userId in userIds { forget(userId, of: entry.outbox.id, state: &state) }
                state.watchedBySocket.removeValue(forKey: entry.outbox.id)
                entry.outbox.send(ServerFrame.unwatched(userIds: userIds, reason: "token_expired"))
                continue
            }
            byUsers[entry.statuses.map(\.userId), default: (entry.statuses, [])].outboxes.append(entry.outbox)
        }
        for group in byUsers.values {
            // A watcher whose outbox is full is being closed (1013) by its outbox: nothing to do here.
            _ = Outbox.send(ServerFrame.users(type: "usersChanged", id: nil, group.statuses), to: group.outboxes)
        }
    }

    private func forget(_ userId: String, of socketId: Int, state: inout State) {
        state.watchedBySocket[socketId]?.remove(userId)
        state.watchersByUser[userId]?.removeValue(forKey: socketId)
        if state.watchersByUser[userId]?.isEmpty == true {
            state.watchersByUser.removeValue(forKey: userId)
            state.known.removeValue(forKey: userId)
            changedUsers.unwatch([userId])
        }
    }

    /// Users whose events came since the hub last looked, one entry per user however many
    /// events, among the users someone watches: an event of a user nobody watches is dropped
    /// where it is committed, and wakes nothing.
    final class ChangedUsers: Sendable {
        private struct State {
            var watched = IDSet()
            var changed = IDSet()
            /// A wake-up is on its way to the hub, which will `take` everything noted until then.
            var wakeQueued = false
        }
        private let state = Mutex(State())

        /// True for the first change since the last `take`: the hub needs waking.
        func note(_ userId: String) -> Bool {
            state.withLock { state in
                guard state.watched.contains(userId) else { return false }
                state.changed.insert(userId)
                defer { state.wakeQueued = true }
                return !state.wakeQueued
            }
        }

        /// Marks users changed without an event: a reload, or a read to try again with the next event.
        func mark(_ userIds: some Sequence<String>) {
            state.withLock { $0.changed.formUnion(userIds) }
        }

        func take() -> IDSet {
            state.withLock { state in
                state.wakeQueued = false
                defer { state.changed.removeAll(keepingCapacity: true) }
                return state.changed
            }
        }

        func watch(_ userIds: some Sequence<String>) {
            state.withLock { $0.watched.formUnion(userIds) }
        }

        func unwatch(_ userIds: some Sequence<String>) {
            state.withLock { $0.watched.subtract(userIds) }
        }
    }
}
