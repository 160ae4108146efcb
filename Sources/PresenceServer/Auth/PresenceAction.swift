import Foundation
import JWTKit
import PresenceCore
import Synchronization

/// The users an identity may watch: any, or those listed (the JWT claim `presence_watch`).
public enum WatchScope: Sendable, Hashable {
    case anyone
    /// Compared as ids are, by their bytes.
    case users(IDSet)

    public func allows(_ userId: String) -> Bool {
        switch self {
        case .anyone: true
        case .users(let userIds): userIds.contains(userId)
        }
    }
}

/// What a client asks to do.
public enum PresenceAction: Sendable, Hashable {
    /// Heartbeat as `userId` in `roomId`.
    case join(roomId: String, userId: String)
    /// Read a room's list (`list`, `subscribe`).
    case read(roomId: String)
    /// Set the data of `userId` in `roomId`.
    case update(roomId: String, userId: String)
    /// Read or watch these users' presence across all rooms (`POST /api/users/status`, `watchUsers`).
    case watch(userIds: [String])
}
