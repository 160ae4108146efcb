import Foundation
import JWTKit
import PresenceCore
import Synchronization

/// No user authentication: for demos and trusted networks.
public struct OpenAuthorizer: PresenceAuthorizer {
    public init() {}
    public func authenticate(token: String?) async throws -> Identity? { nil }
    public func authorize(_ identity: Identity?, _ action: PresenceAction) async throws {}
    public func allowsAtOnce(_ identity: Identity?, _ action: PresenceAction) -> Bool { true }
    public func authenticateAtOnce(token: String?) -> AuthenticationAtOnce { .identity(nil) }
}
