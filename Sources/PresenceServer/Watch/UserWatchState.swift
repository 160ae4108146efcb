import DequeModule
import NIOCore
import PresenceStore

/// The watch hub's state machine: who watches whom, what each was last sent, and the reads of
/// statuses, with no socket or store of its own. Each event changes the state and queues actions
/// (`takeActions()`) that `UserWatchHub` carries out.
///
/// One read of statuses is in flight at a time, and it covers everything that waits: the users of
/// the watches at the head of their sockets' queues, and the watched users whose events came.
/// Reads therefore finish in the order they started, so a status never goes back to an older one,
/// and the hub keeps taking commands while a read runs. Each socket's commands keep their order:
/// an `unwatch` sent after a `watch` is answered after it.
struct UserWatchState<Watcher: HubSubscriber> {
    enum Action {
        /// Enqueue the frame in each watcher's outbox.
        case send(ByteBuffer, to: [Watcher])
        /// Read these users' statuses and report them with `statusesRead`.
        case read([String])
        /// Note committed events of these users from now on (before the read that answers a watch).
        case follow([String])
        /// Stop noting events of these users: nobody watches them.
        case unfollow([String])
        /// A read failed: note these users as changed again, to be read with the next change.
        case retryLater([String])
        /// A read failed.
        case readFailed(PresenceError)
    }

    private enum SocketCommand {
        case watch(userIds: [String], requestId: JSONValue?)
        case unwatch(userIds: [String], requestId: JSONValue?)
    }

    /// One socket's commands not yet answered, oldest first; the head waits for a read when it is a watch.
    private struct SocketQueue {
        let watcher: Watcher
        var commands = Deque<SocketCommand>()
        /// The head watch is part of the read in flight or of the next one.
        var headRequested = false
    }

    let maximumPerSocket: Int
    // Keyed by user ids as bytes (IDKey), as the protocol compares them.
    private(set) var watchersByUser: IDDictionary<[Int: Watcher]> = [:]
    private(set) var watchedBySocket: [Int: IDSet] = [:]
    /// The status each watched user's watchers were last sent.
    private(set) var known: IDDictionary<UserStatus> = [:]
    private var queues: [Int: SocketQueue] = [:]
    /// Sockets whose head watch waits for the next read.
    private var watchesToRead: [Int] = []
    /// Watched users whose events came since they were last read.
    private var changedToRead = IDSet()
    /// Users named by watches waiting for their read, each with how many such watches name them.
    private var awaited: IDDictionary<Int> = [:]
    /// What the read in flight covers: the sockets whose head watch it answers, and the changed users.
    private var reading: (sockets: [Int], changed: IDSet)?
    private var actions: [Action] = []

    init(maximumPerSocket: Int) {
        self.maximumPerSocket = maximumPerSocket
    }

    var isReading: Bool { reading != nil }

    mutating func takeActions() -> [Action] {
        defer { actions.removeAll(keepingCapacity: true) }
        return actions
    }

    // MARK: - Events

    mutating func watch(_ watcher: Watcher, userIds: [String], requestId: JSONValue?) {
        enqueue(.watch(userIds: userIds, requestId: requestId), for: watcher)
    }

    mutating func unwatch(_ watcher: Watcher, userIds: [String], requestId: JSONValue?) {
        enqueue(.unwatch(userIds: userIds, requestId: requestId), for: watcher)
    }

    mutating func removeWatcher(_ watcherId: Int) {
        if let queue = queues.removeValue(forKey: watcherId), queue.headRequested,
            case .watch(let userIds, _) = queue.commands.first
        {
            stopAwaiting(userIds)
        }
        watchesToRead.removeAll { $0 == watcherId }
        for userId in watchedBySocket[watcherId] ?? [] { forget(userId, of: watcherId) }
        watchedBySocket.removeValue(forKey: watcherId)
    }

    /// Events of these users were committed (the watched ones among them are read).
    mutating func usersChanged(_ userIds: IDSet) {
        // A user whose watch is being read counts too: the event may have come after the read's look.
        for userId in userIds where watchersByUser[userId] != nil || awaited[userId] != nil { changedToRead.insert(userId) }
        startReadIfIdle()
    }

    /// The store replaced its state without events: every watched user may have changed.
    mutating func storeReloaded() {
        usersChanged(IDSet(watchersByUser.keys))
    }

    /// The read asked for with `.read` finished. `nowMillis` decides whose user token has expired.
    mutating func statusesRead(_ result: Result<[UserStatus], PresenceError>, nowMillis: Int64) {
        guard let finished = reading else { return }
        reading = nil
        switch result {
        case .failure(let error):
            actions.append(.readFailed(error))
            if !finished.changed.isEmpty { actions.append(.retryLater(Array(finished.changed))) }
            for socketId in finished.sockets {
                guard var queue = queues[socketId], case .watch(let userIds, let requestId) = queue.commands.first else { continue }
                queue.commands.removeFirst()
                queue.headRequested = false
                queues[socketId] = queue
                stopAwaiting(userIds)
                let unwatched = userIds.filter { watchersByUser[$0] == nil && awaited[$0] == nil }
                if !unwatched.isEmpty { actions.append(.unfollow(unwatched)) }
                actions.append(.send(ServerFrame.error(id: requestId, error), to: [queue.watcher]))
                drain(socketId)
            }
        case .success(let statuses):
            var byUser: IDDictionary<UserStatus> = [:]
            for status in statuses { byUser[status.userId] = status }
            // Watchers already following a user hear of its newer status, whoever's read fetched it.
            broadcast(statuses.filter { status in known[status.userId].map { $0 != status } ?? false }, nowMillis: nowMillis)
            for socketId in finished.sockets {
                guard var queue = queues[socketId], case .watch(let userIds, let requestId) = queue.commands.first else { continue }
                queue.commands.removeFirst()
                queue.headRequested = false
                queues[socketId] = queue
                stopAwaiting(userIds)
                let answer = userIds.compactMap { byUser[$0] }
                actions.append(.send(ServerFrame.users(type: "users", id: requestId, answer), to: [queue.watcher]))
                watchedBySocket[socketId, default: []].formUnion(userIds)
                for status in answer {
                    watchersByUser[status.userId, default: [:]][socketId] = queue.watcher
                    known[status.userId] = status
                }
                drain(socketId)
            }
        }
        startReadIfIdle()
    }

    // MARK: - Socket queues

    private mutating func enqueue(_ command: SocketCommand, for watcher: Watcher) {
        queues[watcher.id, default: SocketQueue(watcher: watcher)].commands.append(command)
        drain(watcher.id)
        startReadIfIdle()
    }

    /// Answers the socket's commands from the head until one needs a read.
    private mutating func drain(_ socketId: Int) {
        guard var queue = queues[socketId] else { return }
        defer { queues[socketId] = queue.commands.isEmpty ? nil : queue }
        while let head = queue.commands.first {
            switch head {
            case .unwatch(let userIds, let requestId):
                queue.commands.removeFirst()
                for userId in userIds { forget(userId, of: socketId) }
                actions.append(.send(ServerFrame.reply(type: "unwatched", id: requestId), to: [queue.watcher]))
            case .watch(let userIds, let requestId):
                if queue.headRequested { return }
                let total = (watchedBySocket[socketId] ?? []).union(userIds).count
                guard total <= maximumPerSocket else {
                    queue.commands.removeFirst()
                    let error = PresenceError.invalidArgument("a socket may watch at most \(maximumPerSocket) users; this would make \(total)")
                    actions.append(.send(ServerFrame.error(id: requestId, error), to: [queue.watcher]))
                    continue
                }
                // Followed before the read: an event committed after it is noted, one before it is in what it reads.
                actions.append(.follow(userIds))
                for userId in userIds { awaited[userId, default: 0] += 1 }
                queue.headRequested = true
                watchesToRead.append(socketId)
                return
            }
        }
    }

    private mutating func startReadIfIdle() {
        guard reading == nil, !watchesToRead.isEmpty || !changedToRead.isEmpty else { return }
        var userIds = changedToRead
        for socketId in watchesToRead {
            if case .watch(let watched, _) = queues[socketId]?.commands.first { userIds.formUnion(watched) }
        }
        reading = (watchesToRead, changedToRead)
        watchesToRead.removeAll()
        changedToRead.removeAll()
        actions.append(.read(userIds.sorted { $0.precedesAsID($1) }))
    }

    // MARK: - Watchers

    /// One `usersChanged` per socket with every changed user it watches. Sockets that get the same
    /// users share one encoded message.
    private mutating func broadcast(_ statuses: [UserStatus], nowMillis: Int64) {
        guard !statuses.isEmpty else { return }
        var bySocket: [Int: (watcher: Watcher, statuses: [UserStatus])] = [:]
        for status in statuses.sorted(by: { $0.userId.precedesAsID($1.userId) }) {
            known[status.userId] = status
            for (socketId, watcher) in watchersByUser[status.userId] ?? [:] {
                bySocket[socketId, default: (watcher, [])].statuses.append(status)
            }
        }
        var byUsers: [[String]: (statuses: [UserStatus], watchers: [Watcher])] = [:]
        for entry in bySocket.values {
            // A socket whose user token has expired hears no more (PROTOCOL.md): its watches end.
            if entry.watcher.tokenExpired(at: nowMillis) {
                let userIds = (watchedBySocket[entry.watcher.id] ?? []).sorted()
                for userId in userIds { forget(userId, of: entry.watcher.id) }
                watchedBySocket.removeValue(forKey: entry.watcher.id)
                actions.append(.send(ServerFrame.unwatched(userIds: userIds, reason: "token_expired"), to: [entry.watcher]))
                continue
            }
            byUsers[entry.statuses.map(\.userId), default: (entry.statuses, [])].watchers.append(entry.watcher)
        }
        for group in byUsers.values {
            actions.append(.send(ServerFrame.users(type: "usersChanged", id: nil, group.statuses), to: group.watchers))
        }
    }

    private mutating func forget(_ userId: String, of socketId: Int) {
        watchedBySocket[socketId]?.remove(userId)
        watchersByUser[userId]?.removeValue(forKey: socketId)
        if watchersByUser[userId]?.isEmpty == true {
            watchersByUser.removeValue(forKey: userId)
            known.removeValue(forKey: userId)
            // A watch waiting for its read still needs the user's events noted.
            if awaited[userId] == nil { actions.append(.unfollow([userId])) }
        }
    }

    private mutating func stopAwaiting(_ userIds: [String]) {
        for userId in userIds {
            if let count = awaited[userId], count > 1 { awaited[userId] = count - 1 } else { awaited.removeValue(forKey: userId) }
        }
    }
}
