import DequeModule
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// Turns stored room changes into diffs for subscribers.
///
/// Subscribers of the same room token and `limit` share a *view*. Per change, the hub reads
/// the room's list once (at the largest limit any view needs), diffs it against what each
/// view last sent, encodes that diff once, and enqueues the same bytes in every subscriber's
/// outbox. A heartbeat of an online user produces no room change, so it never reaches the hub.
///
/// The hub's state lives on one task, so a subscriber's snapshot and the diffs after it never
/// interleave wrongly, but that task never waits for the store. A read the store can answer at once
/// from memory (`snapshotAtOnce`, O(limit) whatever the room's size) is done in the hub's own step;
/// the others (during a commit) run beside it (at most `maxConcurrentReads`, one per room at a
/// time) and come back as commands. A slow read holds back its own room only. Changes that arrive
/// while a room is being read are folded into one more read, and the changes waiting to be looked
/// at are kept as one entry per room, so neither grows with the rate of changes.
///
/// Busy rooms get merged diffs: a change in a room whose last change-driven read started less
/// than its merge window ago waits for that window to end, and everything that changed meanwhile
/// goes out as one diff spanning several versions. The window grows with the room's subscribers
/// (`DiffMerging`), so a big room sends a bounded number of frames per second and a small one
/// stays immediate. A lone change in a quiet room is read at once. A new subscriber's snapshot
/// never waits for the window.
final class FanoutHub: Service, Sendable {
    enum Command: Sendable {
        case subscribe(Outbox, roomToken: String, limit: Int, requestId: JSONValue?)
        case unsubscribe(Outbox, roomToken: String, requestId: JSONValue?)
        case removeSubscriber(Outbox)
        /// Changes were added to `pendingChanges`.
        case roomsChanged
        case roomRead(roomToken: String, limit: Int, result: Result<RoomSnapshot, any Error>)
        case mergeWindowEnded(roomToken: String)
    }

    static let maxConcurrentReads = 16

    private let store: any PresenceStore
    private let metrics: PresenceMetrics
    private let logger: Logger
    private let commands: AsyncStream<Command>
    private let commandContinuation: AsyncStream<Command>.Continuation
    private let pendingChanges = PendingChanges()
    /// Hands each stored change to `pendingChanges` where it is stored: no task wakes for a
    /// change, and the hub wakes once for all the changes that came while it was busy.
    private let listening: FeedListening
    private let subscriptionsPerSocket: Int
    private let merging: DiffMerging

    init(
        store: any PresenceStore, metrics: PresenceMetrics, logger: Logger, subscriptionsPerSocket: Int = .max,
        merging: DiffMerging = .off
    ) {
        self.store = store
        self.subscriptionsPerSocket = subscriptionsPerSocket
        self.merging = merging
        self.metrics = metrics
        self.logger = logger
        (commands, commandContinuation) = AsyncStream<Command>.makeStream()
        // Listen from construction on, so no change stored before `run` starts is missed.
        listening = store.listenToCommits { [pendingChanges, commandContinuation] batch in
            if pendingChanges.add(batch.changes) { commandContinuation.yield(.roomsChanged) }
        }
    }

    func submit(_ command: Command) {
        commandContinuation.yield(command)
    }

    func run() async throws {
        var state = FanoutState<Outbox>(
            merging: merging, subscriptionsPerSocket: subscriptionsPerSocket, maxConcurrentReads: Self.maxConcurrentReads)
        defer { listening.cancel() }
        await withDiscardingTaskGroup { group in
            group.addTask { [commandContinuation] in
                // Stop with the service group: end the command stream so the loop below returns.
                try? await gracefulShutdown()
                commandContinuation.finish()
            }
            // Not `cancelOnGracefulShutdown()`: the task above ends the stream, and that wrapper merges
            // the stream with another, which takes a second thread wake-up for every command.
            for await command in commands {
                let now = ContinuousClock.now
                switch command {
                case .subscribe(let outbox, let roomToken, let limit, let requestId):
                    state.subscribe(outbox, roomToken: roomToken, limit: limit, requestId: requestId, now: now)
                case .unsubscribe(let outbox, let roomToken, let requestId):
                    state.unsubscribe(outbox, roomToken: roomToken, requestId: requestId)
                case .removeSubscriber(let outbox):
                    state.removeSubscriber(outbox.id)
                case .roomsChanged:
                    for (roomToken, entry) in pendingChanges.take() {
                        state.roomChanged(roomToken, entry.change, since: entry.since, now: now)
                    }
                case .roomRead(let roomToken, let limit, let result):
                    state.roomRead(roomToken, limit: limit, result: result, now: now, nowMillis: store.clock.nowMillis())
                case .mergeWindowEnded(let roomToken):
                    state.mergeWindowEnded(roomToken, now: now)
                }
                carryOut(&state, group: &group)
                metrics.subscribers.record(state.subscriptionCount)
                metrics.fanoutRoomsWaiting.record(state.roomsWaitingForRead)
            }
            group.cancelAll()
        }
    }

    /// Carries out what the state machine asked for. A read the store answers at once is fed back
    /// in this step (it may ask for more); the others run beside the hub and come back as commands.
    private func carryOut(_ state: inout FanoutState<Outbox>, group: inout DiscardingTaskGroup) {
        var actions = state.takeActions()
        while !actions.isEmpty {
            for action in actions {
                switch action {
                case .send(let message, let outboxes):
                    for outbox in Outbox.send(message, to: outboxes) {
                        if outbox.overflowed { metrics.slowSubscribersDropped.increment() }
                        state.subscriberRefused(outbox.id)
                    }
                case .read(let roomToken, let limit):
                    if let snapshot = store.snapshotAtOnce(roomToken: roomToken, limit: limit) {
                        state.roomRead(roomToken, limit: limit, result: .success(snapshot), now: .now, nowMillis: store.clock.nowMillis())
                        continue
                    }
                    group.addTask { [store, commandContinuation] in
                        let result: Result<RoomSnapshot, any Error>
                        do {
                            result = .success(try await store.snapshot(roomToken: roomToken, limit: limit))
                        } catch {
                            result = .failure(error)
                        }
                        commandContinuation.yield(.roomRead(roomToken: roomToken, limit: limit, result: result))
                    }
                case .mergeTimer(let roomToken, let deadline):
                    group.addTask { [commandContinuation] in
                        try? await Task.sleep(until: deadline)
                        commandContinuation.yield(.mergeWindowEnded(roomToken: roomToken))
                    }
                case .lag(let lag):
                    metrics.fanoutLag.recordNanoseconds(lag.nanoseconds)
                case .subscriptionRefused:
                    metrics.rateLimited.increment()
                case .readFailed(let error):
                    logger.error("could not read a room for its subscribers", metadata: ["error": "\(error)"])
                }
            }
            actions = state.takeActions()
        }
    }

    // MARK: - Changes waiting to be looked at

    /// The newest change of each room not yet looked at, with when its oldest unseen change came.
    /// The newest is enough: a room's versions only grow, and removal and token rotation are the
    /// last change a token ever has.
    final class PendingChanges: Sendable {
        struct Entry {
            var change: RoomChange
            var since: ContinuousClock.Instant
        }
        private let entries = Mutex<[String: Entry]>([:])

        /// True when these are the first entries since the last `take`: the hub needs waking.
        func add(_ changes: [RoomChange]) -> Bool {
            guard !changes.isEmpty else { return false }
            let now = ContinuousClock.now
            return entries.withLock { entries in
                let wasEmpty = entries.isEmpty
                for change in changes {
                    entries[change.roomToken] = Entry(change: change, since: entries[change.roomToken]?.since ?? now)
                }
                return wasEmpty
            }
        }

        func take() -> [String: Entry] {
            entries.withLock { entries in
                defer { entries.removeAll(keepingCapacity: true) }
                return entries
            }
        }
    }
}
