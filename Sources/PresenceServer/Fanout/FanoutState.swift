import DequeModule
import NIOCore
import PresenceStore

/// What the hubs send to: a socket's outbox, or a test's stand-in.
protocol HubSubscriber: AnyObject, Sendable {
    var id: Int { get }
    /// Whether the socket's user token expired by `nowMillis` (PROTOCOL.md: it hears no more).
    func tokenExpired(at nowMillis: Int64) -> Bool
}

extension Outbox: HubSubscriber {}

/// The fan-out's state machine: subscriptions, views, reads and merge windows, with no socket,
/// store or clock of its own. Each event (a subscription, a change, a finished read, a timer)
/// changes the state and queues actions (`takeActions()`) that `FanoutHub` carries out: frames
/// to enqueue, reads to start, timers to set, figures to record.
///
/// Subscribers of the same room token and `limit` share a *view*. Per change, the room's list is
/// read once (at the largest limit any view needs), diffed against what each view last sent, and
/// the diff encoded once for all of the view's subscribers.
struct FanoutState<Subscriber: HubSubscriber> {
    enum Action {
        /// Enqueue the frame in each subscriber's outbox; one that refuses it (full) is reported
        /// back with `subscriberRefused`.
        case send(ByteBuffer, to: [Subscriber])
        /// Read the room (`snapshot(roomToken:limit:)`) and report it with `roomRead`.
        case read(roomToken: String, limit: Int)
        /// Report `mergeWindowEnded` at `deadline`.
        case mergeTimer(roomToken: String, deadline: ContinuousClock.Instant)
        /// A change reached its subscribers this long after it was stored.
        case lag(Duration)
        /// A subscription was refused for the per-socket limit.
        case subscriptionRefused
        /// A read failed; its waiting subscribers were told.
        case readFailed(any Error)
    }

    struct View {
        var version: UInt64
        var users: [UserRecord]
        var counts: ServerFrame.Counts
        var subscribers: [Int: Subscriber] = [:]

        /// What the view shows, without its subscribers: a value to hold while the room's own view
        /// changes in place (one holding the subscribers would share them, and the change copy them all).
        var shown: View { View(version: version, users: users, counts: counts) }
    }

    struct Waiting {
        let subscriber: Subscriber
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

        /// Makes `subscriber` a member of the view of `limit`; a view starts as what its first member was shown.
        mutating func add(_ subscriber: Subscriber, limit: Int, shown: View) {
            views[limit, default: shown].subscribers[subscriber.id] = subscriber
            computedVersion = max(computedVersion, shown.version)
        }

        /// Drops a subscriber from its view (and the view once empty) and from the waiting.
        mutating func remove(_ subscriberId: Int, limit: Int) {
            views[limit]?.subscribers.removeValue(forKey: subscriberId)
            if views[limit]?.subscribers.isEmpty == true { views.removeValue(forKey: limit) }
            waiting.removeAll { $0.subscriber.id == subscriberId }
        }

        var subscriberCount: Int { views.values.reduce(0) { $0 + $1.subscribers.count } }
        var largestLimit: Int { max(views.keys.max() ?? 0, waiting.map(\.limit).max() ?? 0) }
    }

    let merging: DiffMerging
    let subscriptionsPerSocket: Int
    let maxConcurrentReads: Int
    private(set) var rooms: [String: Room] = [:]
    /// For each subscriber: the limit of each token it follows or waits for.
    private(set) var subscriptions: [Int: [String: Int]] = [:]
    private(set) var subscriptionCount = 0
    private(set) var readsInFlight = 0
    private var readQueue = Deque<String>()
    private var actions: [Action] = []

    init(merging: DiffMerging, subscriptionsPerSocket: Int = .max, maxConcurrentReads: Int = 16) {
        self.merging = merging
        self.subscriptionsPerSocket = subscriptionsPerSocket
        self.maxConcurrentReads = maxConcurrentReads
    }

    var roomsWaitingForRead: Int { readsInFlight + readQueue.count }

    mutating func takeActions() -> [Action] {
        defer { actions.removeAll(keepingCapacity: true) }
        return actions
    }

    // MARK: - Events

    mutating func subscribe(
        _ subscriber: Subscriber, roomToken: String, limit: Int, requestId: JSONValue?, now: ContinuousClock.Instant
    ) {
        detach(subscriber.id, from: roomToken)
        if subscriptions[subscriber.id, default: [:]].count >= subscriptionsPerSocket {
            actions.append(.subscriptionRefused)
            let error = PresenceError.rateLimited("a socket may follow at most \(subscriptionsPerSocket) rooms")
            actions.append(.send(ServerFrame.error(id: requestId, error), to: [subscriber]))
            return
        }
        subscriptions[subscriber.id, default: [:]][roomToken] = limit
        subscriptionCount += 1
        // The room's collections are changed in place, never through a copy of the room or the view:
        // a copy would share the subscribers' storage, and adding to it would copy all of them, which
        // made a room's n subscriptions cost n² (0.4 s of the hub's time for 10,000 subscribers).
        let current = rooms[roomToken].flatMap { $0.endedReason == nil ? $0.views[limit]?.shown : nil }
        if let current {
            // The view's snapshot and the diffs it will get form one unbroken chain, even while a read runs.
            let snapshot = ServerFrame.snapshot(
                id: requestId, roomToken: roomToken, version: current.version, users: current.users, counts: current.counts)
            actions.append(.send(snapshot, to: [subscriber]))
            rooms[roomToken]?.views[limit]?.subscribers[subscriber.id] = subscriber
            return
        }
        rooms[roomToken, default: Room()].waiting.append(Waiting(subscriber: subscriber, limit: limit, requestId: requestId))
        requestRead(of: roomToken, now: now)
    }

    mutating func unsubscribe(_ subscriber: Subscriber, roomToken: String, requestId: JSONValue?) {
        detach(subscriber.id, from: roomToken)
        actions.append(.send(ServerFrame.unsubscribed(id: requestId, roomToken: roomToken), to: [subscriber]))
    }

    mutating func removeSubscriber(_ subscriberId: Int) {
        detachEverywhere(subscriberId)
    }

    /// A subscriber's outbox refused a frame (full, or its socket closing): it follows nothing more.
    mutating func subscriberRefused(_ subscriberId: Int) {
        detachEverywhere(subscriberId)
    }

    /// A stored change of a room (the newest of those that came since the hub last looked).
    mutating func roomChanged(_ roomToken: String, _ change: RoomChange, since: ContinuousClock.Instant, now: ContinuousClock.Instant) {
        guard var room = rooms[roomToken] else { return }
        switch change.kind {
        case .tokenRotated:
            // The old token reads nothing any more: its subscribers heartbeat for the new one.
            room.endedReason = "token_rotated"
            rooms[roomToken] = room
            let ended = ServerFrame.unsubscribed(id: nil, roomToken: roomToken, reason: "token_rotated")
            for view in room.views.values {
                actions.append(.send(ended, to: Array(view.subscribers.values)))
                for subscriber in view.subscribers.values { detach(subscriber.id, from: roomToken) }
            }
        case .removed:
            // Older events were already covered by a read at a newer version.
            guard change.roomVersion > room.computedVersion else { return }
            room.endedReason = "room_removed"
            room.computedVersion = change.roomVersion
            rooms[roomToken] = room
            let ended = ServerFrame.unsubscribed(id: nil, roomToken: roomToken, reason: "room_removed")
            for view in room.views.values {
                let diff = RoomDiff(from: view.users, to: [])
                let subscribers = Array(view.subscribers.values)
                if !diff.isEmpty {
                    let final = ServerFrame.diff(roomToken: roomToken, from: view.version, to: change.roomVersion, diff: diff)
                    actions.append(.send(final, to: subscribers))
                }
                actions.append(.send(ended, to: subscribers))
                for subscriber in subscribers { detach(subscriber.id, from: roomToken) }
            }
        case .updated:
            guard change.roomVersion > room.computedVersion else { return }
            room.changedSince = min(room.changedSince ?? since, since)
            rooms[roomToken] = room
            requestRead(of: roomToken, now: now)
        }
    }

    /// A read asked for with `.read` finished. `nowMillis` decides whose user token has expired.
    mutating func roomRead(
        _ roomToken: String, limit: Int, result: Result<RoomSnapshot, any Error>, now: ContinuousClock.Instant, nowMillis: Int64
    ) {
        readsInFlight -= 1
        defer { startQueuedReads(now: now) }
        guard var room = rooms[roomToken] else { return }
        room.readInFlight = false
        let lagSince = room.readCoversChangeSince
        room.readCoversChangeSince = nil
        // Subscribers asking for more than this read fetched wait for the next one.
        let served = room.waiting.filter { $0.limit <= limit }
        room.waiting.removeAll { $0.limit <= limit }
        if !room.waiting.isEmpty { room.readAgain = true }
        rooms[roomToken] = room

        switch result {
        case .failure(let error):
            actions.append(.readFailed(error))
            for waiting in served {
                detach(waiting.subscriber.id, from: roomToken)
                actions.append(.send(ServerFrame.error(id: waiting.requestId, .unavailable("the store could not be read")), to: [waiting.subscriber]))
            }
        case .success(let snapshot):
            refreshViews(of: roomToken, with: snapshot, nowMillis: nowMillis)
            if let lagSince { actions.append(.lag(now - lagSince)) }
            for waiting in served {
                serve(waiting, roomToken: roomToken, snapshot: snapshot)
            }
        }
        if rooms[roomToken]?.readAgain == true { requestRead(of: roomToken, now: now) }
        forgetIfUnused(roomToken)
    }

    /// A merge timer set with `.mergeTimer` rang.
    mutating func mergeWindowEnded(_ roomToken: String, now: ContinuousClock.Instant) {
        guard rooms[roomToken]?.mergeTimerSet == true else { return }
        rooms[roomToken]?.mergeTimerSet = false
        // A subscriber's read may have covered the changes meanwhile.
        if rooms[roomToken]?.changedSince != nil { requestRead(of: roomToken, now: now) }
    }

    // MARK: - Reads

    /// Reads the room now if a read slot is free, later otherwise; once more after the current
    /// read if one is in flight (it may have started before the change). A read for changes
    /// alone waits for the room's merge window; one that subscribers wait for never does.
    private mutating func requestRead(of roomToken: String, now: ContinuousClock.Instant) {
        guard var room = rooms[roomToken] else { return }
        defer { rooms[roomToken] = room }
        if room.readInFlight {
            room.readAgain = true
        } else if room.waiting.isEmpty,
            let deadline = merging.deadline(lastChangeRead: room.lastChangeReadAt, subscribers: room.subscriberCount, now: now)
        {
            if !room.mergeTimerSet {
                room.mergeTimerSet = true
                actions.append(.mergeTimer(roomToken: roomToken, deadline: deadline))
            }
        } else if readsInFlight < maxConcurrentReads {
            startRead(of: roomToken, room: &room, now: now)
        } else if !room.queuedForRead {
            room.queuedForRead = true
            readQueue.append(roomToken)
        }
    }

    private mutating func startRead(of roomToken: String, room: inout Room, now: ContinuousClock.Instant) {
        room.readInFlight = true
        room.readAgain = false
        if room.changedSince != nil { room.lastChangeReadAt = now }
        room.readCoversChangeSince = room.changedSince
        room.changedSince = nil
        readsInFlight += 1
        actions.append(.read(roomToken: roomToken, limit: room.largestLimit))
    }

    /// Gives freed read slots to queued rooms, oldest first.
    private mutating func startQueuedReads(now: ContinuousClock.Instant) {
        while readsInFlight < maxConcurrentReads, !readQueue.isEmpty {
            let roomToken = readQueue.removeFirst()
            guard var room = rooms[roomToken] else { continue }
            room.queuedForRead = false
            if !room.views.isEmpty || !room.waiting.isEmpty { startRead(of: roomToken, room: &room, now: now) }
            rooms[roomToken] = room
            forgetIfUnused(roomToken)
        }
    }

    // MARK: - Views

    /// Sends a waiting subscriber its snapshot and makes it a member of its view.
    private mutating func serve(_ waiting: Waiting, roomToken: String, snapshot: RoomSnapshot) {
        // Read what is needed into plain values first: the room is then changed in place, as in `subscribe`.
        guard let (existing, endedReason) = rooms[roomToken].map({ ($0.views[waiting.limit]?.shown, $0.endedReason) }) else { return }
        let shown = existing ?? View(
            version: snapshot.roomVersion, users: Array(snapshot.users.prefix(waiting.limit)),
            counts: ServerFrame.Counts(online: snapshot.onlineCount, users: snapshot.userCount))
        let frame = ServerFrame.snapshot(
            id: waiting.requestId, roomToken: roomToken, version: shown.version, users: shown.users, counts: shown.counts)
        actions.append(.send(frame, to: [waiting.subscriber]))
        // An unknown token (version 0) stays empty forever: tokens are never reissued, so nothing to follow.
        if let endedReason {
            actions.append(.send(ServerFrame.unsubscribed(id: nil, roomToken: roomToken, reason: endedReason), to: [waiting.subscriber]))
            detach(waiting.subscriber.id, from: roomToken)
            return
        }
        guard shown.version > 0, rooms[roomToken] != nil else {
            detach(waiting.subscriber.id, from: roomToken)
            return
        }
        rooms[roomToken]?.add(waiting.subscriber, limit: waiting.limit, shown: shown)
    }

    /// Sends each view of the token the diff from what it last sent to `snapshot` (read at the largest limit).
    private mutating func refreshViews(of roomToken: String, with snapshot: RoomSnapshot, nowMillis: Int64) {
        guard var room = rooms[roomToken], snapshot.roomVersion > room.computedVersion else { return }
        room.computedVersion = snapshot.roomVersion
        var deliveries: [(ByteBuffer, [Subscriber])] = []
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
        rooms[roomToken] = room
        for (message, subscribers) in deliveries {
            var current = subscribers
            // A socket whose user token has expired gets no more diffs (PROTOCOL.md): each of its
            // subscriptions ends with its room's next change.
            if subscribers.contains(where: { $0.tokenExpired(at: nowMillis) }) {
                current = subscribers.filter { !$0.tokenExpired(at: nowMillis) }
                for expired in subscribers where expired.tokenExpired(at: nowMillis) {
                    detach(expired.id, from: roomToken)
                    actions.append(.send(ServerFrame.unsubscribed(id: nil, roomToken: roomToken, reason: "token_expired"), to: [expired]))
                }
            }
            actions.append(.send(message, to: current))
        }
    }

    // MARK: - Subscriptions

    private mutating func detach(_ subscriberId: Int, from roomToken: String) {
        guard let limit = subscriptions[subscriberId]?.removeValue(forKey: roomToken) else { return }
        if subscriptions[subscriberId]?.isEmpty == true { subscriptions.removeValue(forKey: subscriberId) }
        subscriptionCount -= 1
        guard rooms[roomToken] != nil else { return }
        rooms[roomToken]?.remove(subscriberId, limit: limit)
        forgetIfUnused(roomToken)
    }

    private mutating func detachEverywhere(_ subscriberId: Int) {
        for roomToken in subscriptions[subscriberId]?.keys.map({ $0 }) ?? [] {
            detach(subscriberId, from: roomToken)
        }
    }

    private mutating func forgetIfUnused(_ roomToken: String) {
        if rooms[roomToken]?.isUnused == true { rooms.removeValue(forKey: roomToken) }
    }
}
