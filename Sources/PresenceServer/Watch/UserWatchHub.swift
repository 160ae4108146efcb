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
/// The state (`UserWatchState`) lives on one task, so a watcher's `users` answer and the changes
/// after it keep their order in its outbox; the task never waits for the store: reads run beside it.
final class UserWatchHub: Service, Sendable {
    enum Command: Sendable {
        case watch(Outbox, userIds: [String], requestId: JSONValue?)
        case unwatch(Outbox, userIds: [String], requestId: JSONValue?)
        case removeWatcher(Outbox)
        /// Users were added to `changedUsers`.
        case usersChanged
        /// The store reloaded its state, skipping the events of what changed meanwhile.
        case storeReloaded
        /// The read the state machine asked for finished.
        case statusesRead(Result<[UserStatus], PresenceError>)
    }

    private let store: any PresenceStore
    private let logger: Logger
    private let commands: AsyncStream<Command>
    private let commandContinuation: AsyncStream<Command>.Continuation
    private let changedUsers = ChangedUsers()
    private let listening: FeedListening
    let maximumPerSocket: Int

    init(store: any PresenceStore, logger: Logger, maximumPerSocket: Int = UserIdsRequest.maximum) {
        self.store = store
        self.logger = logger
        self.maximumPerSocket = maximumPerSocket
        (commands, commandContinuation) = AsyncStream<Command>.makeStream()
        // Listen from construction on, so no event committed before `run` starts is missed.
        listening = store.listenToCommits { [changedUsers, commandContinuation] batch in
            if changedUsers.note(batch.events.lazy.map(\.userId)) { commandContinuation.yield(.usersChanged) }
            if batch.reloaded { commandContinuation.yield(.storeReloaded) }
        }
    }

    func submit(_ command: Command) {
        commandContinuation.yield(command)
    }

    func run() async throws {
        var state = UserWatchState<Outbox>(maximumPerSocket: maximumPerSocket)
        await withDiscardingTaskGroup { group in
            group.addTask { [commandContinuation] in
                try? await gracefulShutdown()
                commandContinuation.finish()
            }
            // Not `cancelOnGracefulShutdown()`: the task above ends the stream, and that wrapper merges
            // the stream with another, which takes a second thread wake-up for every command.
            for await command in commands {
                switch command {
                case .watch(let outbox, let userIds, let requestId):
                    state.watch(outbox, userIds: userIds, requestId: requestId)
                case .unwatch(let outbox, let userIds, let requestId):
                    state.unwatch(outbox, userIds: userIds, requestId: requestId)
                case .removeWatcher(let outbox):
                    state.removeWatcher(outbox.id)
                case .usersChanged:
                    state.usersChanged(changedUsers.take())
                case .storeReloaded:
                    state.storeReloaded()
                case .statusesRead(let result):
                    state.statusesRead(result, nowMillis: store.clock.nowMillis())
                }
                carryOut(state.takeActions(), group: &group)
            }
            group.cancelAll()
        }
    }

    /// Carries out what the state machine asked for; a read runs beside the hub and comes back as a command.
    private func carryOut(_ actions: [UserWatchState<Outbox>.Action], group: inout DiscardingTaskGroup) {
        for action in actions {
            switch action {
            case .send(let message, let outboxes):
                // A watcher whose outbox is full is being closed (1013) by its outbox: nothing to do here.
                _ = Outbox.send(message, to: outboxes)
            case .read(let userIds):
                group.addTask { [store, commandContinuation] in
                    let result: Result<[UserStatus], PresenceError>
                    do {
                        result = .success(try await store.userStatuses(userIds: userIds))
                    } catch {
                        result = .failure(error as? PresenceError ?? .unavailable("the statuses could not be read"))
                    }
                    commandContinuation.yield(.statusesRead(result))
                }
            case .follow(let userIds):
                changedUsers.watch(userIds)
            case .unfollow(let userIds):
                changedUsers.unwatch(userIds)
            case .retryLater(let userIds):
                // Read again with the next change; the users stay marked.
                changedUsers.mark(userIds)
            case .readFailed(let error):
                logger.warning("could not read watched users' statuses", metadata: ["error": "\(error)"])
            }
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

        /// True for the first change of a watched user since the last `take`: the hub needs waking.
        func note(_ userIds: some Collection<String>) -> Bool {
            // Most batches name no one anybody watches: no copy, and no lock when there are no events.
            guard !userIds.isEmpty else { return false }
            return state.withLock { state in
                var noted = false
                for userId in userIds where state.watched.contains(userId) {
                    state.changed.insert(userId)
                    noted = true
                }
                guard noted else { return false }
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
