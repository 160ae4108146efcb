import Logging
import PresenceStore

/// A user (or, in the open mode, anyone) whose credentials the authorizer checked.
/// Only `PresenceOperations` makes one, so no call reaches the store unauthenticated.
struct UserCaller: Sendable {
    let identity: Identity?
    fileprivate init(identity: Identity?) { self.identity = identity }
}

/// A caller who presented the admin key.
struct AdminCaller: Sendable {
    fileprivate init() {}
}

/// Every call of PROTOCOL.md, transport-free: authenticate, authorize, call the store, and
/// report failures as `PresenceError`. The HTTP routes and the WebSocket messages are thin
/// codecs over these methods, so each call is authorized in exactly this one place.
struct PresenceOperations: Sendable {
    let store: any PresenceStore
    let authorizer: any PresenceAuthorizer
    let adminKey: String?
    let metrics: PresenceMetrics
    let logger: Logger
    let webhooks: WebhookRegistry

    // MARK: - Authentication

    /// A user token (nil when the client sent none): the authorizer decides whether that will do.
    func authenticateUser(token: String?) async throws(PresenceError) -> UserCaller {
        UserCaller(identity: try await checked { try await authorizer.authenticate(token: token) })
    }

    /// The identity a socket authenticated with, while it is valid; after its token expires,
    /// none (so the JWT mode refuses until a fresh `auth` message).
    func authenticateSocket(identity: Identity?) async throws(PresenceError) -> UserCaller {
        if let identity = Self.unexpired(identity, now: store.clock.nowMillis()) { return UserCaller(identity: identity) }
        return try await authenticateUser(token: nil)
    }

    private static func unexpired(_ identity: Identity?, now: Int64) -> Identity? {
        guard let identity, identity.expiresAt.map({ now < $0 }) ?? true else { return nil }
        return identity
    }

    func authenticateAdmin(key: String?) throws(PresenceError) -> AdminCaller {
        guard let adminKey else {
            throw .unauthenticated("admin calls are disabled: the server has no admin key")
        }
        guard let key else {
            throw .unauthenticated("admin calls need Authorization: Bearer <admin key>")
        }
        guard Tokens.constantTimeEquals(key, adminKey) else {
            throw .unauthenticated("the admin key is not valid")
        }
        return AdminCaller()
    }

    // MARK: - Client calls
    // Reads first `synchronize()`: with several processes, a list shows every change any of them
    // acknowledged before it was asked for.

    /// A heartbeat the full way: authorized, then the store's (which still moves a live session's
    /// deadline in memory when it can). Callers that can answer at once try `heartbeatAtOnce` first.
    func heartbeat(_ request: HeartbeatRequest, by caller: UserCaller) async throws(PresenceError) -> SessionTokens {
        try await authorize(caller, .join(roomId: request.roomId, userId: request.userId))
        let vouched = request.withProfile(name: caller.identity?.name, image: caller.identity?.image)
        let tokens = try await checked { try await store.heartbeat(vouched) }
        metrics.heartbeats.increment()
        return tokens
    }

    /// The same heartbeat for a caller who authenticated as `identity` (nil: none; a socket's
    /// identity may have expired since), answered without waiting when both the authorizer and
    /// the store can (`allowsAtOnce`, `heartbeatAtOnce`); nil sends it the full way,
    /// `heartbeat(_:by:)`, which reports any error.
    func heartbeatAtOnce(_ request: HeartbeatRequest, as identity: Identity?) -> SessionTokens? {
        let caller = Self.unexpired(identity, now: store.clock.nowMillis())
        guard authorizer.allowsAtOnce(caller, .join(roomId: request.roomId, userId: request.userId)) else { return nil }
        guard let tokens = store.heartbeatAtOnce(request.withProfile(name: caller?.name, image: caller?.image)) else { return nil }
        metrics.heartbeats.increment()
        return tokens
    }

    func list(_ request: ListRequest, by caller: UserCaller) async throws(PresenceError) -> RoomSnapshot {
        // An unknown token reads as an empty room, so the answer never tells whether a room exists.
        guard try await authorizeRead(roomToken: request.roomToken, by: caller) else { return .empty }
        return try await checked {
            try await store.synchronize()
            return try await store.snapshot(roomToken: request.roomToken, limit: request.limit)
        }
    }

    /// Whether `caller` may follow the room; the hub sends the snapshot (empty for an unknown token).
    func authorizeSubscription(_ request: ListRequest, by caller: UserCaller) async throws(PresenceError) {
        _ = try await authorizeRead(roomToken: request.roomToken, by: caller)
    }

    func update(_ request: UpdateRequest, by caller: UserCaller) async throws(PresenceError) {
        guard let owner = try await checked({ try await store.sessionOwner(sessionToken: request.sessionToken) }) else {
            throw .notFound("no live session has this session token")
        }
        try await authorize(caller, .update(roomId: owner.roomId, userId: owner.userId))
        try await checked { try await store.update(sessionToken: request.sessionToken, data: request.data) }
    }

    /// The session token is the credential (PROTOCOL.md): `sendBeacon` cannot send another.
    func disconnect(sessionToken: String) async throws(PresenceError) {
        try await checked { try await store.disconnect(sessionToken: sessionToken) }
    }

    /// The same disconnect done without waiting, when the store can (`disconnectAtOnce`); false
    /// sends it the full way, `disconnect(sessionToken:)`.
    func disconnectAtOnce(sessionToken: String) -> Bool {
        store.disconnectAtOnce(sessionToken: sessionToken)
    }

    /// Presence across rooms: the admin key reads anyone; a user what the authorizer allows.
    func userStatuses(_ request: UserIdsRequest, by caller: UserCaller) async throws(PresenceError) -> [UserStatus] {
        try await authorizeWatch(request, by: caller)
        return try await userStatuses(request)
    }

    func authorizeWatch(_ request: UserIdsRequest, by caller: UserCaller) async throws(PresenceError) {
        try await authorize(caller, .watch(userIds: request.userIds))
    }

    func userStatuses(_ request: UserIdsRequest, by _: AdminCaller) async throws(PresenceError) -> [UserStatus] {
        try await userStatuses(request)
    }

    private func userStatuses(_ request: UserIdsRequest) async throws(PresenceError) -> [UserStatus] {
        try await checked {
            try await store.synchronize()
            return try await store.userStatuses(userIds: request.userIds)
        }
    }

    // MARK: - Admin calls

    func setRoomUserData(roomId: String, userId: String, data: JSONValue?, by _: AdminCaller) async throws(PresenceError) {
        try await checked { try await store.updateRoomUser(roomId: roomId, userId: userId, data: data) }
    }

    func roomUsers(roomId: String, onlineOnly: Bool, limit: Int, by _: AdminCaller) async throws(PresenceError) -> RoomSnapshot {
        try await checked {
            try await store.synchronize()
            return try await store.roomUsers(roomId: roomId, onlineOnly: onlineOnly, limit: limit)
        }
    }

    func userRooms(userId: String, onlineOnly: Bool, limit: Int, by _: AdminCaller) async throws(PresenceError) -> [UserRoomStatus] {
        try await checked {
            try await store.synchronize()
            return try await store.userRooms(userId: userId, onlineOnly: onlineOnly, limit: limit)
        }
    }

    func removeRoomUser(roomId: String, userId: String, by _: AdminCaller) async throws(PresenceError) {
        try await checked { try await store.removeRoomUser(roomId: roomId, userId: userId) }
    }

    func removeRoom(roomId: String, by _: AdminCaller) async throws(PresenceError) {
        try await checked { try await store.removeRoom(roomId: roomId) }
    }

    func rotateRoomToken(roomId: String, by _: AdminCaller) async throws(PresenceError) -> String {
        guard let token = try await checked({ try await store.rotateRoomToken(roomId: roomId) }) else {
            throw .notFound("room \(roomId) does not exist")
        }
        return token
    }

    func events(after: UInt64?, roomId: String?, limit: Int, by _: AdminCaller) async throws(PresenceError) -> EventPage {
        try await checked { try await store.events(after: after, roomId: roomId, limit: limit) }
    }

    func webhookStatuses(by _: AdminCaller) async throws(PresenceError) -> [(endpoint: WebhookEndpoint, cursor: WebhookCursor)] {
        var statuses: [(endpoint: WebhookEndpoint, cursor: WebhookCursor)] = []
        for endpoint in webhooks.endpoints {
            statuses.append((endpoint, try await checked { try await store.webhookCursor(endpoint: endpoint.url) }))
        }
        return statuses
    }

    /// Deliveries to a failed endpoint resume from where they stopped.
    /// `endpoint`: its name, or its URL.
    func enableWebhook(named endpoint: String, by _: AdminCaller) async throws(PresenceError) {
        guard let url = webhooks.endpoints.first(where: { $0.name == endpoint || $0.url == endpoint })?.url else {
            throw .notFound("no webhook endpoint of that name or URL is configured")
        }
        try await checked {
            var cursor = try await store.webhookCursor(endpoint: url)
            cursor.failedAt = nil
            try await store.saveWebhookCursor(cursor, endpoint: url)
        }
        webhooks.update(url) { $0.failedAt = nil }
        webhooks.wakeAll()
    }

    // MARK: - Operator calls

    func statistics() async throws(PresenceError) -> PresenceStatistics {
        try await checked { try await store.statistics() }
    }

    // MARK: - One place for authorization and failures

    /// True when the token names a room and `caller` may read it; false for an unknown token,
    /// without asking the authorizer about a room that does not exist.
    private func authorizeRead(roomToken: String, by caller: UserCaller) async throws(PresenceError) -> Bool {
        guard let roomId = try await checked({ try await store.roomId(forToken: roomToken) }) else { return false }
        try await authorize(caller, .read(roomId: roomId))
        return true
    }

    private func authorize(_ caller: UserCaller, _ action: PresenceAction) async throws(PresenceError) {
        try await checked { try await authorizer.authorize(caller.identity, action) }
    }

    /// Store and authorizer failures that are not a `PresenceError` (a disk, an app's own hook)
    /// are the server's trouble, not the caller's: logged, and reported as 503.
    private func checked<Value>(_ body: () async throws -> Value) async throws(PresenceError) -> Value {
        do {
            return try await body()
        } catch let error as PresenceError {
            throw error
        } catch {
            logger.error("a call failed", metadata: ["error": "\(error)"])
            throw .unavailable("the request could not be completed")
        }
    }
}
