import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// The request context of every route: Hummingbird's, plus the connection's channel, whose
/// peer address the per-address limits count.
public struct PresenceRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
