import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import PresenceCore

/// Per client address: at most so many requests per second, then 429.
struct AddressRateLimitMiddleware: RouterMiddleware {
    typealias Context = PresenceRequestContext
    let limits: AddressLimits
    let trustedProxies: TrustedProxies
    let clock: any WallClock
    let metrics: PresenceMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // Health checks and scrapes come from the operator's own tools: never limit them. The
        // calls of `HTTPCalls` charge the limit themselves, once, whichever path answers them.
        if request.uri.path == "/health" || request.uri.path == "/metrics" || HTTPCalls.call(request.method, request.uri.path) != nil {
            return try await next(request, context)
        }
        let address = trustedProxies.clientAddress(peer: context.channel.remoteAddress, headers: request.headers)
        guard limits.allow(address, now: clock.nowMillis()) else {
            metrics.count(JSONAnswer.addressRateLimit)
            return .error(JSONAnswer.addressRateLimit)
        }
        return try await next(request, context)
    }
}
