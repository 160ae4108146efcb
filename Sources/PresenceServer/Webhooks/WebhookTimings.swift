import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PresenceStore
import ServiceLifecycle
import Synchronization

/// Timings of deliveries; tests shorten them.
public struct WebhookTimings: Sendable {
    /// No answer within this is a failed attempt.
    public var requestTimeout: Duration = .seconds(10)
    public var firstRetry: Duration = .seconds(1)
    public var maximumRetry: Duration = .seconds(300)
    /// How often an idle loop looks for events it was not woken for (another process's, a lease).
    public var idlePoll: Duration = .seconds(1)
    public init() {}
}
