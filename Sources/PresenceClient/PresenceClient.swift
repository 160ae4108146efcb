import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import PresenceCore
import Synchronization

/// A connection to a `presence-server`: one WebSocket for every room you join,
/// kept open with reconnects (exponential backoff with jitter) while any room is joined.
///
/// ```swift
/// let client = PresenceClient(url: "ws://127.0.0.1:8080/api/ws")
/// let room = try await client.join(room: "doc-42", user: "alice", name: "Alice")
/// for await users in room.users {        // the current user first, then the room's order
///     print(users.map(\.userId))
/// }                                      // cancelling this task leaves the room
/// ```
public final class PresenceClient: Sendable {
    /// How the client connects; every field has a default.
    public struct Configuration: Sendable {
        /// Returns an identity token for servers that require user authentication (sent as a bearer token).
        public var token: (@Sendable () async throws -> String?)?
        /// How many users each room's list holds.
        public var limit: Int = ProtocolLimits.defaultLimit
        /// The first reconnect waits about this long; each failure doubles it, up to `maximumBackoff`.
        public var initialBackoff: Duration = .milliseconds(250)
        public var maximumBackoff: Duration = .seconds(30)
        public var logger = Logger(label: "presence.client")

        public init() {}
    }

    let core: ClientCore

    public init(url: String, configuration: Configuration = Configuration()) {
        core = ClientCore(url: url, configuration: configuration)
    }

    /// Joins `room` as `user` over a new session, heartbeating every `interval`, and returns once
    /// the server has accepted the first heartbeat.
    ///
    /// - Parameters:
    ///   - session: the session id (one per tab or device); a random one by default. It belongs to
    ///     `user`: other users' ids never clash with it; reusing it in another room while it is
    ///     alive there is a `session_conflict`.
    ///   - interval: heartbeat interval, 1 to 300 seconds; the session expires 2.5 × this after the last heartbeat.
    public func join(
        room: String, user: String, session: String = UUID().uuidString, interval: Duration = .seconds(10),
        name: String? = nil, image: String? = nil
    ) async throws -> RoomPresence {
        let milliseconds = interval.milliseconds
        do {
            _ = try HeartbeatRequest(roomId: room, userId: user, sessionId: session, interval: milliseconds, name: name, image: image)
        } catch {
            throw PresenceClientError(code: error.code, message: error.message)
        }
        let key = RoomKey(roomId: room, userId: user, sessionId: session)
        let (stream, continuation) = AsyncStream<[UserRecord]>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let (counts, countsContinuation) = AsyncStream<RoomCounts>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let handle = RoomPresence(key: key, users: stream, counts: counts, core: core)
        continuation.onTermination = { [core] termination in
            // The task that owned the handle was cancelled (or dropped the stream): leave the room.
            if case .cancelled = termination { Task { await core.leave(key) } }
        }
        try await core.join(
            key, interval: milliseconds, name: name, image: image, listener: continuation, countsListener: countsContinuation)
        return handle
    }

    /// Follows users across every room (a friends list, a team sidebar): yields their global
    /// statuses, in the order asked, now and whenever one changes. Returns once the server has
    /// answered; throws when it refuses (at most 1,000 users; a token must allow watching them).
    ///
    /// ```swift
    /// let friends = try await client.watch(userIds: ["alice", "bob"])
    /// for await statuses in friends {           // cancelling this task stops watching
    ///     for status in statuses { print(status.userId, status.online ? "online" : "last seen \(status.lastDisconnected)") }
    /// }
    /// ```
    public func watch(userIds: [String]) async throws -> AsyncStream<[UserStatus]> {
        var unique: [String] = []
        var seen = IDSet()
        for userId in userIds where seen.insert(userId).inserted { unique.append(userId) }
        guard unique.count <= UserIdsRequest.maximum else {
            throw PresenceClientError(code: "invalid_argument", message: "at most \(UserIdsRequest.maximum) userIds, got \(unique.count)")
        }
        let watcherId = Self.watcherIds.wrappingAdd(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream<[UserStatus]>.makeStream(bufferingPolicy: .bufferingNewest(1))
        continuation.onTermination = { [core] _ in Task { await core.unwatch(watcherId) } }
        try await core.watch(watcherId, userIds: unique, listener: continuation)
        return stream
    }

    private static let watcherIds = Atomic<Int>(0)

    /// Closes the socket without leaving any room, as a crashed app would: the server
    /// shows the users offline once their sessions time out.
    public func abandon() async {
        await core.abandon()
    }
}

/// One joined room. Its `users` sequence yields the room's list (the current user first)
/// whenever it changes; `update(data:)` sets the user's data; `leave()` ends the session.
///
/// The handle owns the session: when the task iterating `users` is cancelled, or the last
/// reference to the handle goes away, the client leaves the room.
public final class RoomPresence: Sendable {
    public let roomId: String
    public let userId: String
    public let sessionId: String
    /// The room's list, current user first, newest only: a slow reader skips intermediate lists.
    public let users: AsyncStream<[UserRecord]>
    /// The whole room's counts, whatever the list's limit, whenever they change: a big room's
    /// "1,204 online" without its whole list. Pass `users` to `FacePileModel(userCount:)` for its "+N".
    public let counts: AsyncStream<RoomCounts>
    let key: RoomKey
    let core: ClientCore

    init(key: RoomKey, users: AsyncStream<[UserRecord]>, counts: AsyncStream<RoomCounts>, core: ClientCore) {
        self.key = key
        self.roomId = key.roomId
        self.userId = key.userId
        self.sessionId = key.sessionId
        self.users = users
        self.counts = counts
        self.core = core
    }

    /// The latest counts; nil before the first snapshot.
    public var currentCounts: RoomCounts? {
        get async { await core.currentCounts(key) }
    }

    /// The latest list, current user first.
    public var current: [UserRecord] {
        get async { await core.currentList(key) }
    }

    /// Sets this user's `data` in the room (any `Encodable`, at most 4 KiB as JSON); `nil` clears it.
    ///
    /// ```swift
    /// struct Status: Codable { var typing: Bool }
    /// try await room.update(data: Status(typing: true))
    /// ```
    public func update<Data: Encodable & Sendable>(data: Data?) async throws {
        let raw: String
        if let data {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            guard let encoded = try? encoder.encode(data) else {
                throw PresenceClientError(code: "encoding_failed", message: "data could not be encoded as JSON")
            }
            raw = String(decoding: encoded, as: UTF8.self)
        } else {
            raw = "null"
        }
        try await core.update(key, rawData: raw)
    }

    /// Marks this session away (the app is in the background, the user is idle) or back. Others see
    /// the user away once every session of theirs in the room is; one heartbeat goes out at once.
    ///
    /// ```swift
    /// try await room.setAway(true)   // scene went to the background
    /// ```
    public func setAway(_ away: Bool) async throws {
        try await core.setAway(key, away)
    }

    /// Ends the session at once: others see the user offline (if this was their last session).
    public func leave() async {
        await core.leave(key)
    }
}
