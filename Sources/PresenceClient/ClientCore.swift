import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import PresenceCore

/// The client's state and its one socket. An actor: every message in or out, every
/// timer tick and every call from a room handle is handled one at a time.
actor ClientCore {
    struct RoomState {
        let key: RoomKey
        let interval: Int64
        let name: String?
        let image: String?
        var listener: AsyncStream<[UserRecord]>.Continuation
        var countsListener: AsyncStream<RoomCounts>.Continuation
        var roomToken: String?
        var sessionToken: String?
        /// The token subscribed to on the current socket, and the version of its last snapshot or diff.
        var subscribedToken: String?
        var version: UInt64 = 0
        var users: [UserRecord] = []
        var counts: RoomCounts?
        var heartbeatInFlight = false
        /// Sent with every heartbeat, so a session the server had to start anew keeps its state.
        var away = false
        var ticker: Task<Void, Never>?
        var joined: CheckedContinuation<Void, any Error>?
    }

    enum Pending {
        case heartbeat(RoomKey)
        case subscribe(RoomKey, token: String)
        case watch(watcherId: Int)
        case reply(CheckedContinuation<Void, any Error>)
    }

    /// One `watch(userIds:)`: its users' statuses, in the order asked.
    struct Watcher {
        let userIds: [String]
        var statuses: IDDictionary<UserStatus> = [:]
        let listener: AsyncStream<[UserStatus]>.Continuation
        var ready: CheckedContinuation<Void, any Error>?

        var list: [UserStatus] { userIds.compactMap { statuses[$0] } }
    }

    let url: String
    let configuration: PresenceClient.Configuration
    private var rooms: [RoomKey: RoomState] = [:]
    private var watchers: [Int: Watcher] = [:]
    private var pending: [Int: Pending] = [:]
    private var nextId = 0
    private var outgoing: AsyncStream<String>.Continuation?
    private var connectionTask: Task<Void, Never>?
    private var reauthenticating = false

    init(url: String, configuration: PresenceClient.Configuration) {
        self.url = url
        self.configuration = configuration
    }

    private func makeId() -> Int {
        nextId += 1
        return nextId
    }

    // MARK: - Calls from handles

    /// The socket stays up while a room is joined or users are watched.
    private var hasWork: Bool { !rooms.isEmpty || !watchers.isEmpty }

    func join(
        _ key: RoomKey, interval: Int64, name: String?, image: String?, listener: AsyncStream<[UserRecord]>.Continuation,
        countsListener: AsyncStream<RoomCounts>.Continuation
    ) async throws {
        guard rooms[key] == nil else {
            throw PresenceClientError(code: "already_joined", message: "this session has already joined \(key.roomId)")
        }
        try await withCheckedThrowingContinuation { (joined: CheckedContinuation<Void, any Error>) in
            var room = RoomState(
                key: key, interval: interval, name: name, image: image, listener: listener, countsListener: countsListener)
            room.joined = joined
            room.ticker = Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(interval))
                    await self?.sendHeartbeat(key)
                }
            }
            rooms[key] = room
            if outgoing != nil { sendHeartbeat(key) }
            ensureConnection()
        }
    }

    func update(_ key: RoomKey, rawData: String) async throws {
        guard let sessionToken = rooms[key]?.sessionToken else { throw PresenceClientError.left }
        guard let outgoing else { throw PresenceClientError.notConnected }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let id = makeId()
            pending[id] = .reply(continuation)
            outgoing.yield(OutgoingMessage.request(type: "update", id: id) { object in
                object.field("sessionToken", sessionToken)
                object.field("data") { $0.raw(rawData) }
            })
        }
    }

    func leave(_ key: RoomKey) async {
        guard let room = rooms.removeValue(forKey: key) else { return }
        room.ticker?.cancel()
        room.joined?.resume(throwing: PresenceClientError.left)
        room.listener.finish()
        room.countsListener.finish()
        if let sessionToken = room.sessionToken, let outgoing {
            try? await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let id = makeId()
                pending[id] = .reply(continuation)
                outgoing.yield(OutgoingMessage.request(type: "disconnect", id: id) { $0.field("sessionToken", sessionToken) })
            }
        }
        if !hasWork { stopConnection() }
    }

    /// Watches users across rooms; returns once the server has sent their statuses.
    func watch(_ watcherId: Int, userIds: [String], listener: AsyncStream<[UserStatus]>.Continuation) async throws {
        try await withCheckedThrowingContinuation { (ready: CheckedContinuation<Void, any Error>) in
            watchers[watcherId] = Watcher(userIds: userIds, listener: listener, ready: ready)
            sendWatch(watcherId)
            ensureConnection()
        }
    }

    /// Stops one watcher; the server stops sending users no other watcher follows.
    func unwatch(_ watcherId: Int) {
        guard let watcher = watchers.removeValue(forKey: watcherId) else { return }
        watcher.ready?.resume(throwing: PresenceClientError.left)
        watcher.listener.finish()
        let stillWatched = Set(watchers.values.flatMap(\.userIds))
        let dropped = watcher.userIds.filter { !stillWatched.contains($0) }
        if !dropped.isEmpty, let outgoing {
            outgoing.yield(OutgoingMessage.users(type: "unwatchUsers", id: makeId(), dropped))
        }
        if !hasWork { stopConnection() }
    }

    private func sendWatch(_ watcherId: Int) {
        guard let watcher = watchers[watcherId], let outgoing else { return }
        let id = makeId()
        pending[id] = .watch(watcherId: watcherId)
        outgoing.yield(OutgoingMessage.users(type: "watchUsers", id: id, watcher.userIds))
    }

    func currentCounts(_ key: RoomKey) -> RoomCounts? {
        rooms[key]?.counts
    }

    func currentList(_ key: RoomKey) -> [UserRecord] {
        rooms[key].map { $0.users.youFirst($0.key.userId) } ?? []
    }

    func abandon() {
        for room in rooms.values {
            room.ticker?.cancel()
            room.joined?.resume(throwing: PresenceClientError.left)
            room.listener.finish()
            room.countsListener.finish()
        }
        rooms.removeAll()
        for watcher in watchers.values {
            watcher.ready?.resume(throwing: PresenceClientError.left)
            watcher.listener.finish()
        }
        watchers.removeAll()
        stopConnection()
    }

    // MARK: - Connection

    private func ensureConnection() {
        guard connectionTask == nil else { return }
        connectionTask = Task { [weak self] in await self?.maintainConnection() }
    }

    private func stopConnection() {
        connectionTask?.cancel()
        connectionTask = nil
        outgoing?.finish()
        outgoing = nil
    }

    /// Connects, and reconnects with exponential backoff and jitter, until no room is joined and no user watched.
    private func maintainConnection() async {
        var backoff = configuration.initialBackoff
        while !Task.isCancelled, hasWork {
            var headers = HTTPFields()
            if let tokenProvider = configuration.token, let token = try? await tokenProvider() {
                headers[.authorization] = "Bearer \(token)"
            }
            let (stream, continuation) = AsyncStream<String>.makeStream()
            var logger = configuration.logger
            logger[metadataKey: "url"] = "\(url)"
            let connected = ConnectedFlag()
            do {
                try await WebSocketClient.connect(
                    url: url,
                    configuration: .init(maxFrameSize: 1 << 24, additionalHeaders: headers, autoPing: .disabled),
                    logger: logger
                ) { inbound, outbound, _ in
                    await self.connected(continuation)
                    connected.set()
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for await text in stream { try await outbound.write(.text(text)) }
                        }
                        group.addTask {
                            for try await message in inbound.messages(maxSize: 1 << 24) {
                                if case .text(let text) = message { await self.received(text) }
                            }
                        }
                        _ = try await group.next()
                        group.cancelAll()
                    }
                }
            } catch {
                configuration.logger.debug("presence connection ended", metadata: ["error": "\(error)"])
            }
            disconnected()
            if connected.value {
                backoff = configuration.initialBackoff
            } else {
                // A join waiting for a server that cannot be reached (or refuses the token) fails
                // instead of waiting forever; rooms already joined keep retrying.
                let error = PresenceClientError(
                    code: "connection_failed", message: "could not connect to \(url): the server is down or refused the token")
                for key in rooms.keys where rooms[key]!.joined != nil { failJoin(key, error) }
                for watcherId in watchers.keys where watchers[watcherId]!.ready != nil { failWatch(watcherId, error) }
            }
            guard !Task.isCancelled, hasWork else { break }
            let jittered = backoff * Double.random(in: 0.5...1.0)
            try? await Task.sleep(for: jittered)
            backoff = min(backoff * 2, configuration.maximumBackoff)
        }
    }

    private func connected(_ continuation: AsyncStream<String>.Continuation) {
        outgoing = continuation
        for key in rooms.keys {
            rooms[key]!.heartbeatInFlight = false
            rooms[key]!.subscribedToken = nil
            sendHeartbeat(key)
        }
        for watcherId in watchers.keys { sendWatch(watcherId) }
    }

    private func disconnected() {
        outgoing?.finish()
        outgoing = nil
        for (id, request) in pending {
            if case .reply(let continuation) = request { continuation.resume(throwing: PresenceClientError.notConnected) }
            pending.removeValue(forKey: id)
        }
        for key in rooms.keys {
            rooms[key]!.subscribedToken = nil
            rooms[key]!.heartbeatInFlight = false
        }
    }

    // MARK: - Messages

    /// One heartbeat at a time, unless `now` asks for one at once (a change of away must not wait).
    private func sendHeartbeat(_ key: RoomKey, now: Bool = false) {
        guard let room = rooms[key], !room.heartbeatInFlight || now, let outgoing else { return }
        let id = makeId()
        pending[id] = .heartbeat(key)
        rooms[key]!.heartbeatInFlight = true
        outgoing.yield(
            OutgoingMessage.heartbeat(id: id, room: key, interval: room.interval, name: room.name, image: room.image, away: room.away))
    }

    func setAway(_ key: RoomKey, _ away: Bool) throws {
        guard rooms[key] != nil else { throw PresenceClientError.left }
        guard rooms[key]!.away != away else { return }
        rooms[key]!.away = away
        sendHeartbeat(key, now: true)
    }

    private func subscribe(_ key: RoomKey, token: String) {
        guard let outgoing else { return }
        let id = makeId()
        pending[id] = .subscribe(key, token: token)
        rooms[key]!.subscribedToken = token
        outgoing.yield(OutgoingMessage.request(type: "subscribe", id: id) { object in
            object.field("roomToken", token)
            object.field("limit", Int64(configuration.limit))
        })
    }

    private func received(_ text: String) {
        guard let message = try? JSONDecoder().decode(IncomingMessage.self, from: Data(text.utf8)) else {
            configuration.logger.warning("unreadable message from the server")
            return
        }
        let request = message.requestId.flatMap { pending.removeValue(forKey: $0) }
        switch (message.type, request) {
        case ("error", let request?):
            let error = PresenceClientError(code: message.error?.code ?? "unknown", message: message.error?.message ?? "")
            failed(request, error)
        case ("heartbeat", .heartbeat(let key)?):
            guard rooms[key] != nil, let roomToken = message.roomToken else { return }
            rooms[key]!.heartbeatInFlight = false
            rooms[key]!.sessionToken = message.sessionToken
            rooms[key]!.roomToken = roomToken
            rooms[key]!.joined?.resume()
            rooms[key]!.joined = nil
            // Always follow the room token of the latest heartbeat (it changes when the room's token rotates).
            if rooms[key]!.subscribedToken != roomToken { subscribe(key, token: roomToken) }
        case ("snapshot", .subscribe(let key, let token)?):
            guard rooms[key]?.subscribedToken == token, let version = message.roomVersion else { return }
            rooms[key]!.version = version
            rooms[key]!.users = message.users ?? []
            publish(key, listChanged: true, counts: message.counts)
        case ("diff", _):
            guard let token = message.roomToken, let from = message.from, let version = message.roomVersion else { return }
            for key in rooms.keys where rooms[key]!.subscribedToken == token {
                guard rooms[key]!.version == from else {
                    // Missed something: start over from a new snapshot.
                    subscribe(key, token: token)
                    continue
                }
                let diff = RoomDiff(upsert: message.upsert ?? [], remove: message.remove ?? [])
                rooms[key]!.users = diff.applied(to: rooms[key]!.users)
                rooms[key]!.version = version
                publish(key, listChanged: !diff.isEmpty, counts: message.counts)
            }
        case ("users", .watch(let watcherId)?):
            guard watchers[watcherId] != nil else { return }
            for status in message.statuses ?? [] { watchers[watcherId]!.statuses[status.userId] = status }
            watchers[watcherId]!.ready?.resume()
            watchers[watcherId]!.ready = nil
            watchers[watcherId]!.listener.yield(watchers[watcherId]!.list)
        case ("usersChanged", nil):
            let changed = message.statuses ?? []
            for watcherId in watchers.keys {
                var touched = false
                for status in changed where watchers[watcherId]!.statuses[status.userId] != nil {
                    watchers[watcherId]!.statuses[status.userId] = status
                    touched = true
                }
                if touched { watchers[watcherId]!.listener.yield(watchers[watcherId]!.list) }
            }
        case ("unsubscribed", nil):
            // The server ended a subscription (room removed, token rotated, user token expired): heartbeat
            // for the current token; an expired user token makes that heartbeat fetch a fresh one first.
            guard let token = message.roomToken else { return }
            for key in rooms.keys where rooms[key]!.subscribedToken == token {
                rooms[key]!.subscribedToken = nil
                sendHeartbeat(key)
            }
        case ("unwatched", nil):
            // The server ended this socket's watches itself (the user token expired): authenticate
            // with a fresh token and watch again.
            guard message.reason != nil, let provider = configuration.token, !reauthenticating else { return }
            reauthenticating = true
            Task { await self.reauthenticate(provider, retrying: nil, rewatch: true) }
        case (_, .reply(let continuation)?):
            continuation.resume()
        default:
            break
        }
    }

    private func failed(_ request: Pending, _ error: PresenceClientError) {
        switch request {
        case .reply(let continuation):
            continuation.resume(throwing: error)
        case .heartbeat(let key):
            rooms[key]?.heartbeatInFlight = false
            if error.code == "unauthenticated", let provider = configuration.token, !reauthenticating {
                // The token expired (or was never sent): authenticate with a fresh one and try again.
                reauthenticating = true
                Task { await self.reauthenticate(provider, retrying: key, rewatch: false) }
            } else if rooms[key]?.joined != nil {
                failJoin(key, error)
            } else {
                configuration.logger.warning("heartbeat refused", metadata: ["error": "\(error)"])
            }
        case .subscribe(let key, _):
            rooms[key]?.subscribedToken = nil
            configuration.logger.warning("subscribe refused", metadata: ["error": "\(error)"])
        case .watch(let watcherId):
            if watchers[watcherId]?.ready != nil {
                failWatch(watcherId, error)
            } else {
                configuration.logger.warning("watching users refused", metadata: ["error": "\(error)"])
            }
        }
    }

    private func failWatch(_ watcherId: Int, _ error: PresenceClientError) {
        guard let watcher = watchers.removeValue(forKey: watcherId) else { return }
        watcher.ready?.resume(throwing: error)
        watcher.listener.finish()
        if !hasWork { stopConnection() }
    }

    private func failJoin(_ key: RoomKey, _ error: PresenceClientError) {
        guard let room = rooms.removeValue(forKey: key) else { return }
        room.joined?.resume(throwing: error)
        room.ticker?.cancel()
        room.listener.finish()
        room.countsListener.finish()
        if !hasWork { stopConnection() }
    }

    /// Sends `auth` with a fresh token, then heartbeats every room (and watches every watcher's
    /// users again when `rewatch`); a join that waits (`key`) fails when that cannot be done.
    private func reauthenticate(_ provider: @Sendable () async throws -> String?, retrying key: RoomKey?, rewatch: Bool) async {
        defer { reauthenticating = false }
        do {
            guard let token = try await provider(), let outgoing else { throw PresenceClientError.notConnected }
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let id = makeId()
                pending[id] = .reply(continuation)
                outgoing.yield(OutgoingMessage.request(type: "auth", id: id) { $0.field("token", token) })
            }
            for key in rooms.keys { sendHeartbeat(key) }
            if rewatch { for watcherId in watchers.keys { sendWatch(watcherId) } }
        } catch {
            let failure = error as? PresenceClientError ?? PresenceClientError(code: "unauthenticated", message: "\(error)")
            if let key, rooms[key]?.joined != nil { failJoin(key, failure) }
            configuration.logger.warning("authentication failed", metadata: ["error": "\(failure)"])
        }
    }

    /// Yields the list, and the counts when they changed; servers before 1.1 send no counts, so
    /// the list's own stand in.
    private func publish(_ key: RoomKey, listChanged: Bool, counts: RoomCounts?) {
        guard let room = rooms[key] else { return }
        if listChanged { room.listener.yield(currentList(key)) }
        let latest = counts ?? room.counts ?? RoomCounts(online: room.users.count { $0.online }, users: room.users.count)
        if latest != room.counts {
            rooms[key]!.counts = latest
            room.countsListener.yield(latest)
        }
    }
}

/// Set once the socket is up, so a connection that worked resets the backoff.
final class ConnectedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var isSet = false
    func set() { lock.withLock { isSet = true } }
    var value: Bool { lock.withLock { isSet } }
}
