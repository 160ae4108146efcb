import Foundation
import JWTKit
import PresenceCore
import Synchronization

/// The hook that decides who may do what: the built-in modes (`none`, JWT) are authorizers,
/// and an embedding app supplies its own to check, say, room membership.
///
/// ```swift
/// struct MembersOnly: PresenceAuthorizer {
///     let jwt: JWTAuthorizer
///     func authenticate(token: String?) async throws -> Identity? { try await jwt.authenticate(token: token) }
///     func authorize(_ identity: Identity?, _ action: PresenceAction) async throws {
///         try await jwt.authorize(identity, action)
///         if case .join(let room, let user) = action, !(await isMember(user, of: room)) {
///             throw PresenceError.permissionDenied("not a member of \(room)")
///         }
///     }
/// }
/// ```
public protocol PresenceAuthorizer: Sendable {
    /// Checks a bearer token (nil when the client sent none). Returns nil when the mode needs no
    /// identity; throws `unauthenticated` for missing or invalid credentials.
    func authenticate(token: String?) async throws -> Identity?
    /// Allows the action or throws `permission_denied` (or `unauthenticated`).
    func authorize(_ identity: Identity?, _ action: PresenceAction) async throws
    /// True only when the action is certainly allowed, decided without waiting: for a nil
    /// identity (a caller with no token), as `authenticate(token: nil)` then `authorize` would
    /// decide. False leaves the decision to those two, so an authorizer that must look anything
    /// up returns false (the default). The server answers a WebSocket heartbeat on its event loop,
    /// with no task, when this and the store allow it.
    func allowsAtOnce(_ identity: Identity?, _ action: PresenceAction) -> Bool
    /// What `authenticate(token:)` would return, when that is known without waiting; `.mustWait`
    /// (the default) leaves it to `authenticate`, which also reports a bad token. With
    /// `allowsAtOnce`, this lets the server answer an HTTP heartbeat of a live session on its
    /// event loop.
    func authenticateAtOnce(token: String?) -> AuthenticationAtOnce
}

/// The answer of `PresenceAuthorizer.authenticateAtOnce(token:)`.
public enum AuthenticationAtOnce: Sendable, Hashable {
    /// `authenticate(token:)` would return this identity (nil: the mode needs none).
    case identity(Identity?)
    /// Only `authenticate(token:)` can tell.
    case mustWait
}

extension PresenceAuthorizer {
    public func allowsAtOnce(_ identity: Identity?, _ action: PresenceAction) -> Bool { false }
    public func authenticateAtOnce(token: String?) -> AuthenticationAtOnce { .mustWait }
}
