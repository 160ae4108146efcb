import Foundation
import JWTKit
import PresenceCore
import Synchronization

/// Who is calling, once their credentials checked out.
public struct Identity: Sendable, Hashable {
    public var userId: String
    /// Display profile from the identity provider; overrides what a client sends.
    public var name: String?
    public var image: String?
    /// When the credentials stop being honoured (milliseconds since the epoch); nil for never.
    public var expiresAt: Int64?
    /// Whose presence across rooms the caller may read and watch besides their own.
    public var mayWatch: WatchScope

    public init(
        userId: String, name: String? = nil, image: String? = nil, expiresAt: Int64? = nil, mayWatch: WatchScope = .users([])
    ) {
        self.userId = userId
        self.name = name
        self.image = image
        self.expiresAt = expiresAt
        self.mayWatch = mayWatch
    }
}
