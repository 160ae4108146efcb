import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import PresenceCore

/// The configured CORS origins (or `*` for any), for the middleware, the heartbeats answered
/// before it and the WebSocket upgrade's `Origin` check.
struct CORSOrigins: Sendable {
    let allowed: [String]
    let allowsAny: Bool
    private let origins: Set<WebOrigin>

    init(allowed: [String]) {
        self.allowed = allowed
        allowsAny = allowed.contains("*")
        origins = Set(allowed.compactMap(WebOrigin.init))
    }

    /// Whether `origin` (an `Origin` header) is one of the configured origins.
    func lists(_ origin: String) -> Bool {
        allowsAny || WebOrigin(origin).map(origins.contains) == true
    }

    /// The request's `Origin` when CORS lets it read the answer; nil otherwise.
    func allowedOrigin(in headers: HTTPFields) -> String? {
        guard !allowed.isEmpty, let origin = headers[.origin], lists(origin) else { return nil }
        return origin
    }

    /// Browsers do not apply CORS to WebSockets, so the server checks `Origin` itself: with
    /// configured origins only they pass; without, only the server's own (same host). `null`
    /// (sandboxed frames, `file:` pages), extensions' origins and any other opaque or unlisted one
    /// never pass unless `*` is configured.
    ///
    /// Clients that send no `Origin`, or a `ws:`/`wss:` one, are not browsers: browsers send the
    /// page's origin, never a WebSocket URL's, while other clients (this project's Swift client,
    /// built on Hummingbird's, sends `ws://host`) can send any header they like, so checking it
    /// would keep out no one.
    func mayOpenWebSocket(origin: String?, host: String?) -> Bool {
        guard let origin else { return true }
        let parsed = WebOrigin(origin)
        if let parsed, parsed.scheme == "ws" || parsed.scheme == "wss" { return true }
        if !allowed.isEmpty { return lists(origin) }
        guard let host, let parsed, parsed.scheme == "http" || parsed.scheme == "https" else { return false }
        return WebOrigin("\(parsed.scheme)://\(host)") == parsed
    }

    /// Lets `origin` read an answer.
    static func grant(_ origin: String, in headers: inout HTTPFields) {
        headers[.accessControlAllowOrigin] = origin
        headers[.vary] = "Origin"
    }
}

/// CORS for the configured origins. Preflight requests are answered here.
struct CORSOriginsMiddleware<Context: RequestContext>: RouterMiddleware {
    let origins: CORSOrigins

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = origins.allowedOrigin(in: request.headers) else {
            return try await next(request, context)
        }
        if request.method == .options {
            return Response(
                status: .noContent,
                headers: [
                    .accessControlAllowOrigin: origin,
                    .accessControlAllowMethods: "GET, POST, PUT, DELETE, OPTIONS",
                    .accessControlAllowHeaders: "Authorization, Content-Type",
                    .accessControlMaxAge: "600",
                    .vary: "Origin",
                ])
        }
        var response = try await next(request, context)
        CORSOrigins.grant(origin, in: &response.headers)
        return response
    }
}
