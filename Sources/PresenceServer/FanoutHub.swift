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
        listening = store.listenToRoomChanges { [pendingChanges, commandContinuation] change in
            if pendingChanges.add(change) { commandContinuation.yield(.roomsChanged) }
        }
    }

    func submit(_ command: Command) {
        commandContinuation.yield(command)
    }

    func run() async throws {
        var state = State(merging: merging)
        defer { listening.cancel() }
        await withDiscardingTaskGroup { group in
            group.addTask { [commandContinuation] in
                // Stop with the service group: end the command stream so the loop below returns.
                try? await gracefulShutdown()
                commandContinuation.finish()
            }
            for await command in commands.cancelOnGracefulShutdown() {
                process(command, state: &state)
                // A read the store answers at once is handled in this step; it may ask for another.
                var reads = state.takeReadsToStart()
                var next = 0
                while next < reads.count {
                    let read = reads[next]
                    next += 1
                    if let snapshot = store.snapshotAtOnce(roomToken: read.roomToken, limit: read.limit) {
                        roomRead(read.roomToken, limit: read.limit, result: .success(snapshot), state: &state)
                        reads += state.takeReadsToStart()
                        continue
                    }
                    group.addTask { [store, commandContinuation] in
                        let result: Result<RoomSnapshot, any Error>
                        do {
                            result = .success(try await store.snapshot(roomToken: read.roomToken, limit: read.limit))
                        } catch {
                            result = .failure(error)
                        }
                        commandContinuation.yield(.roomRead(roomToken: read.roomToken, limit: read.limit, result: result))
                    }
                }
                for timer in state.takeMergeTimersToStart() {
                    group.addTask { [commandContinuation] in
                        try? await Task.sleep(until: timer.deadline)
                        commandContinuation.yield(.mergeWindowEnded(roomToken: timer.roomToken))
                    }
                }
                metrics.subscribers.record(state.subscriptionCount)
                metrics.fanoutRoomsWaiting.record(state.roomsWaitingForRead)
            }
            group.cancelAll()
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

        /// True when this is the first entry since the last `take`: the hub needs waking.
        func add(_ change: RoomChange) -> Bool {
            entries.withLock { entries in
                let wasEmpty = entries.isEmpty
                if let existing = entries[change.roomToken] {
                    entries[change.roomToken] = Entry(change: change, since: existing.since)
                } else {
                    entries[change.roomToken] = Entry(change: change, since: .now)
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

    // MARK: - State

    struct View {
        var version: UInt64
        var users: [UserRecord]
        var counts: ServerFrame.Counts
        var subscribers: [Int: Outbox] = [:]

        /// What the view shows, without its subscribers: a value to hold while the room's own view
        /// changes in place (one holding the subscribers would share them, and the change copy them all).
        var shown: View { View(version: version, users: users, counts: counts) }
    }

    struct Waiting {
        let outbox: Outbox
        let limit: Int
        let requestId: JSONValue?
    }

    /// Everything the hub knows of one room token.
    struct Room {
        var views: [Int: View] = [:]
        /// The room version the views were last computed at: older changes are skipped.
        var computedVersion: UInt64 = 0
        /// Subscribers whose snapshot waits for the next read.
        var waiting: [Waiting] = []
        var readInFlight = false
        var readAgain = false
        var queuedForRead = false
        /// When the last read started for a change (not for a new subscriber): the merge window runs from there.
        var lastChangeReadAt: ContinuousClock.Instant?
        /// A read waits for the merge window to end.
        var mergeTimerSet = false
        /// When the oldest change not yet covered by a started read arrived, and the same for the
        /// read in flight: the fan-out lag is measured from there to the diffs being enqueued.
        var changedSince: ContinuousClock.Instant?
        var readCoversChangeSince: ContinuousClock.Instant?
        /// Set when the token ended (room removed, token rotated) while subscribers still waited.
        var endedReason: String?

        var isUnused: Bool { views.isEmpty && waiting.isEmpty && !readInFlight && !queuedForRead }

        // Called through `rooms[token]?.…`, so the room changes in place: through a copy of it, each
        // change copied every subscriber of the view, n² for a room's n subscriptions.

        /// Makes `outbox` a member of the view of `limit`; a view starts as what its first member was shown.
        mutating func add(_ outbox: Outbox, limit: Int, shown: View) {
            views[limit, default: shown].subscribers[outbox.id] = outbox
            computedVersion = max(computedVersion, shown.version)
        }

        /// Drops a subscriber from its view (and the view once empty) and from the waiting.
        mutating func remove(_ subscriberId: Int, limit: Int) {
            views[limit]?.subscribers.removeValue(forKey: subscriberId)
            if views[limit]?.subscribers.isEmpty == true { views.removeValue(forKey: limit) }
            waiting.removeAll { $0.outbox.id == subscriberId }
        }

        var subscriberCount: Int { views.values.reduce(0) { $0 + $1.subscribers.count } }
        var largestLimit: Int { max(views.keys.max() ?? 0, waiting.map(\.limit).max() ?? 0) }
    }

    struct ReadRequest {
        let roomToken: String
        let limit: Int
    }

    struct MergeTimer {
        let roomToken: String
        let deadline: ContinuousClock.Instant
    }

    struct State {
        let merging: DiffMerging
        var rooms: [String: Room] = [:]
        /// For each subscriber: the limit of each token it follows or waits for.
        var subscriptions: [Int: [String: Int]] = [:]
        var subscriptionCount = 0
        var readsInFlight = 0
        var readQueue = Deque<String>()
        var readsToStart: [ReadRequest] = []
        var mergeTimersToStart: [MergeTimer] = []

        init(merging: DiffMerging) {
            self.merging = merging
        }

        var roomsWaitingForRead: Int { readsInFlight + readQueue.count }

        mutating func takeReadsToStart() -> [ReadRequest] {
            defer { readsToStart.removeAll(keepingCapacity: true) }
            return readsToStart
        }

        mutating func takeMergeTimersToStart() -> [MergeTimer] {
            defer { mergeTimersToStart.removeAll(keepingCapacity: true) }
            return mergeTimersToStart
        }

        /// Reads the room now if a read slot is free, later otherwise; once more after the current
        /// read if one is in flight (it may have started before the change). A read for changes
        /// alone waits for the room's merge window; one that subscribers wait for never does.
        mutating func requestRead(of roomToken: String, now: ContinuousClock.Instant = .now) {
            guard var room = rooms[roomToken] else { return }
            defer { rooms[roomToken] = room }
            if room.readInFlight {
                room.readAgain = true
            } else if room.waiting.isEmpty,
                let deadline = merging.deadline(lastChangeRead: room.lastChangeReadAt, subscribers: room.subscriberCount, now: now)
            {
                if !room.mergeTimerSet {
                    room.mergeTimerSet = true
                    mergeTimersToStart.append(MergeTimer(roomToken: roomToken, deadline: deadline))
                }
            } else if readsInFlight < FanoutHub.maxConcurrentReads {
                startRead(of: roomToken, room: &room)
            } else if !room.queuedForRead {
                room.queuedForRead = true
                readQueue.append(roomToken)
            }
        }

        private mutating func startRead(of roomToken: String, room: inout Room) {
            room.readInFlight = true
            room.readAgain = false
            if room.changedSince != nil { room.lastChangeReadAt = .now }
            room.readCoversChangeSince = room.changedSince
            room.changedSince = nil
            readsInFlight += 1
            readsToStart.append(ReadRequest(roomToken: roomToken, limit: room.largestLimit))
        }

        /// Gives freed read slots to queued rooms, oldest first.
        mutating func startQueuedReads() {
            while readsInFlight < FanoutHub.maxConcurrentReads, !readQueue.isEmpty {
                let roomToken = readQueue.removeFirst()
                guard var room = rooms[roomToken] else { continue }
                room.queuedForRead = false
                if !room.views.isEmpty || !room.waiting.isEmpty { startRead(of: roomToken, room: &room) }
                rooms[roomToken] = room
                forgetIfUnused(roomToken)
            }
        }

        mutating func detach(_ subscriberId: Int, from roomToken: String) {
            guard let limit = subscriptions[subscriberId]?.removeValue(forKey: roomToken) else { return }
            if subscriptions[subscriberId]?.isEmpty == true { subscriptions.removeValue(forKey: subscriberId) }
            subscriptionCount -= 1
            guard rooms[roomToken] != nil else { return }
            rooms[roomToken]?.remove(subscriberId, limit: limit)
            forgetIfUnused(roomToken)
        }

        mutating func detachEverywhere(_ subscriberId: Int) {
            for roomToken in subscriptions[subscriberId]?.keys.map({ $0 }) ?? [] {
                detach(subscriberId, from: roomToken)
            }
        }

        mutating func forgetIfUnused(_ roomToken: String) {
            if rooms[roomToken]?.isUnused == true { rooms.removeValue(forKey: roomToken) }
        }
    }

    // MARK: - Processing

    private func process(_ command: Command, state: inout State) {
        switch command {
        case .subscribe(let outbox, let roomToken, let limit, let requestId):
            subscribe(outbox, roomToken: roomToken, limit: limit, requestId: requestId, state: &state)
        case .unsubscribe(let outbox, let roomToken, let requestId):
            state.detach(outbox.id, from: roomToken)
            deliver(ServerFrame.unsubscribed(id: requestId, roomToken: roomToken), to: outbox, state: &state)
        case .removeSubscriber(let outbox):
            state.detachEverywhere(outbox.id)
        case .roomsChanged:
            for (roomToken, entry) in pendingChanges.take() {
                roomChanged(roomToken, entry.change, since: entry.since, state: &state)
            }
        case .roomRead(let roomToken, let limit, let result):
            roomRead(roomToken, limit: limit, result: result, state: &state)
        case .mergeWindowEnded(let roomToken):
            guard state.rooms[roomToken]?.mergeTimerSet == true else { return }
            state.rooms[roomToken]?.mergeTimerSet = false
            // A subscriber's read may have covered the changes meanwhile.
            if state.rooms[roomToken]?.changedSince != nil { state.requestRead(of: roomToken) }
        }
    }

    private func subscribe(_ outbox: Outbox, roomToken: String, limit: Int, requestId: JSONValue?, state: inout State) {
        state.detach(outbox.id, from: roomToken)
        if state.subscriptions[outbox.id, default: [:]].count >= subscriptionsPerSocket {
            metrics.rateLimited.increment()
            let error = PresenceError.rateLimited("a socket may follow at most \(subscriptionsPerSocket) rooms")
            deliver(ServerFrame.error(id: requestId, error), to: outbox, state: &state)
            return
        }
        state.subscriptions[outbox.id, default: [:]][roomToken] = limit
        state.subscriptionCount += 1
        // The room's collections are changed in place, never through a copy of the room or the view:
        // a copy would share the subscribers' storage, and adding to it would copy all of them, which
        // made a room's n subscriptions cost n² (0.4 s of the hub's time for 10,000 subscribers).
        let current = state.rooms[roomToken].flatMap { $0.endedReason == nil ? $0.views[limit]?.shown : nil }
        if let current {
            // The view's snapshot and the diffs it will get form one unbroken chain, even while a read runs.
            let snapshot = ServerFrame.snapshot(
                id: requestId, roomToken: roomToken, version: current.version, users: current.users, counts: current.counts)
            guard deliver(snapshot, to: outbox, state: &state) else { return }
            state.rooms[roomToken]?.views[limit]?.subscribers[outbox.id] = outbox
            return
        }
        state.rooms[roomToken, default: Room()].waiting.append(Waiting(outbox: outbox, limit: limit, requestId: requestId))
        state.requestRead(of: roomToken)
    }

    private func roomChanged(_ roomToken: String, _ change: RoomChange, since: ContinuousClock.Instant, state: inout State) {
        guard var room = state.rooms[roomToken] else { return }
        switch change.kind {
        case .tokenRotated:
            // The old token reads nothing any more: its subscribers heartbeat for the new one.
            room.endedReason = "token_rotated"
            state.rooms[roomToken] = room
            let ended = ServerFrame.unsubscribed(id: nil, roomToken: roomToken, reason: "token_rotated")
            for view in room.views.values {
                for subscriber in view.subscribers.values {
                    deliver(ended, to: subscriber, state: &state)
                    state.detach(subscriber.id, from: roomToken)
                }
            }
        case .removed:
            // Older events were already covered by a read at a newer version.
            guard change.roomVersion > room.computedVersion else { return }
            room.endedReason = "room_removed"
            room.computedVersion = change.roomVersion
            state.rooms[roomToken] = room
            let ended = ServerFrame.unsubscribed(id: nil, roomToken: roomToken, reason: "room_removed")
            for view in room.views.values {
                let diff = RoomDiff(from: view.users, to: [])
                let final = ServerFrame.diff(roomToken: roomToken, from: view.version, to: change.roomVersion, diff: diff)
                for subscriber in view.subscribers.values {
                    if !diff.isEmpty { deliver(final, to: subscriber, state: &state) }
                    deliver(ended, to: subscriber, state: &state)
                    state.detach(subscriber.id, from: roomToken)
                }
            }
        case .updated:
            guard change.roomVersion > room.computedVersion else { return }
            room.changedSince = min(room.changedSince ?? since, since)
            state.rooms[roomToken] = room
            state.requestRead(of: roomToken)
        }
    }

    private func roomRead(_ roomToken: String, limit: Int, result: Result<RoomSnapshot, any Error>, state: inout State) {
        state.readsInFlight -= 1
        defer { state.startQueuedReads() }
        guard var room = state.rooms[roomToken] else { return }
        room.readInFlight = false
        let lagSince = room.readCoversChangeSince
        room.readCoversChangeSince = nil
        // Subscribers asking for more than this read fetched wait for the next one.
        let served = room.waiting.filter { $0.limit <= limit }
        room.waiting.removeAll { $0.limit <= limit }
        if !room.waiting.isEmpty { room.readAgain = true }
        state.rooms[roomToken] = room

        switch result {
        case .failure(let error):
            logger.error("could not read a room for its subscribers", metadata: ["error": "\(error)"])
            for waiting in served {
                state.detach(waiting.outbox.id, from: roomToken)
                deliver(ServerFrame.error(id: waiting.requestId, .unavailable("the store could not be read")), to: waiting.outbox, state: &state)
            }
        case .success(let snapshot):
            refreshViews(of: roomToken, with: snapshot, state: &state)
            if let lagSince { metrics.fanoutLag.recordNanoseconds((ContinuousClock.now - lagSince).nanoseconds) }
            for waiting in served {
                serve(waiting, roomToken: roomToken, snapshot: snapshot, state: &state)
            }
        }
        if state.rooms[roomToken]?.readAgain == true { state.requestRead(of: roomToken) }
        state.forgetIfUnused(roomToken)
    }

    /// Sends a waiting subscriber its snapshot and makes it a member of its view.
    private func serve(_ waiting: Waiting, roomToken: String, snapshot: RoomSnapshot, state: inout State) {
        // Read what is needed into plain values first: the room is then changed in place, as in `subscribe`.
        guard let (existing, endedReason) = state.rooms[roomToken].map({ ($0.views[waiting.limit]?.shown, $0.endedReason) }) else { return }
        let shown = existing ?? View(
            version: snapshot.roomVersion, users: Array(snapshot.users.prefix(waiting.limit)),
            counts: ServerFrame.Counts(online: snapshot.onlineCount, users: snapshot.userCount))
        let frame = ServerFrame.snapshot(
            id: waiting.requestId, roomToken: roomToken, version: shown.version, users: shown.users, counts: shown.counts)
        guard deliver(frame, to: waiting.outbox, state: &state) else { return }
        // An unknown token (version 0) stays empty forever: tokens are never reissued, so nothing to follow.
        if let endedReason {
            deliver(ServerFrame.unsubscribed(id: nil, roomToken: roomToken, reason: endedReason), to: waiting.outbox, state: &state)
            state.detach(waiting.outbox.id, from: roomToken)
            return
        }
        guard shown.version > 0, state.rooms[roomToken] != nil else {
            state.detach(waiting.outbox.id, from: roomToken)
            return
        }
        state.rooms[roomToken]?.add(waiting.outbox, limit: waiting.limit, shown: shown)
    }

    /// Sends each view of the token the diff from what it last sent to `snapshot` (read at the largest limit).
    private func refreshViews(of roomToken: String, with snapshot: RoomSnapshot, state: inout State) {
        guard var room = state.rooms[roomToken], snapshot.roomVersion > room.computedVersion else { return }
        room.computedVersion = snapshot.roomVersion
        var deliveries: [(ByteBuffer, [Outbox])] = []
        let counts = ServerFrame.Counts(online: snapshot.onlineCount, users: snapshot.userCount)
        for (limit, var view) in room.views where snapshot.roomVersion > view.version {
            let shown = Array(snapshot.users.prefix(limit))
            let diff = RoomDiff(from: view.users, to: shown)
            // A change outside this view's window that leaves the counts as they were sends nothing;
            // the view's version trails the room's. A change of the counts alone is an empty diff.
            let countsChanged = counts != view.counts
            guard !diff.isEmpty || countsChanged else { continue }
            let frame = ServerFrame.diff(
                roomToken: roomToken, from: view.version, to: snapshot.roomVersion, diff: diff, counts: countsChanged ? counts : nil)
            deliveries.append((frame, Array(view.subscribers.values)))
            view.version = snapshot.roomVersion
            view.users = shown
            view.counts = counts
            room.views[limit] = view
        }
        state.rooms[roomToken] = room
        let now = store.clock.nowMillis()
        for (message, subscribers) in deliveries {
            var current = subscribers
            // A socket whose user token has expired gets no more diffs (PROTOCOL.md): each of its
            // subscriptions ends with its room's next change.
            if subscribers.contains(where: { $0.tokenExpired(at: now) }) {
                current = subscribers.filter { !$0.tokenExpired(at: now) }
                for expired in subscribers where expired.tokenExpired(at: now) {
                    state.detach(expired.id, from: roomToken)
                    deliver(ServerFrame.unsubscribed(id: nil, roomToken: roomToken, reason: "token_expired"), to: expired, state: &state)
                }
            }
            for refused in Outbox.send(message, to: current) { dropRefused(refused, state: &state) }
        }
    }

    /// Enqueues one frame; a subscriber whose outbox is full is dropped from every view.
    @discardableResult
    private func deliver(_ message: ByteBuffer, to outbox: Outbox, state: inout State) -> Bool {
        if outbox.send(message) { return true }
        dropRefused(outbox, state: &state)
        return false
    }

    private func dropRefused(_ outbox: Outbox, state: inout State) {
        if outbox.overflowed { metrics.slowSubscribersDropped.increment() }
        state.detachEverywhere(outbox.id)
    }
}

/// How long a busy room's changes wait to be merged into one diff: `perSubscriber` for each of
/// its subscribers, at most `maximum`. A diff costs the server a write per subscriber, so this
/// bounds a room's frames per second (1 / `perSubscriber`) whatever its size, while a room with a
/// few subscribers merges within microseconds, which is no merging at all.
public struct DiffMerging: Sendable, Hashable {
    public var maximum: Duration
    public var perSubscriber: Duration

    public init(maximum: Duration, perSubscriber: Duration) {
        self.maximum = maximum
        self.perSubscriber = perSubscriber
    }

    /// One diff per change, at once.
    public static let off = DiffMerging(maximum: .zero, perSubscriber: .zero)

    /// The window of a room with this many subscribers.
    func window(subscribers: Int) -> Duration {
        min(maximum, perSubscriber * subscribers)
    }

    /// When the next read for changes may start, or nil for at once: a room whose last read for
    /// changes started within its window waits for the window's end.
    func deadline(lastChangeRead: ContinuousClock.Instant?, subscribers: Int, now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        let window = window(subscribers: subscribers)
        guard window > .zero, let lastChangeRead else { return nil }
        let end = lastChangeRead + window
        return end > now ? end : nil
    }
}
