import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import PresenceCore

extension Response {
    static let jsonContentType = "application/json; charset=utf-8"

    static func json(_ body: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status,
            headers: [.contentType: jsonContentType, .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func error(_ error: PresenceError) -> Response {
        .json(error.jsonBody, status: .init(code: error.status))
    }
}

/// Maps every failure to PROTOCOL.md's error body, so no client ever sees the framework's own error format.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger
    let metrics: PresenceMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as PresenceError {
            metrics.count(error)
            return .error(error)
        } catch is NIOTooManyBytesError {
            return .error(.payloadTooLarge("the request body must be at most \(ProtocolLimits.maxBodyBytes) bytes"))
        } catch let error as HTTPError {
            switch error.status {
            case .notFound: return .error(.notFound("no such route: \(request.method) \(request.uri.path)"))
            case .contentTooLarge: return .error(.payloadTooLarge("the request body is too large"))
            case .methodNotAllowed: return .error(.methodNotAllowed("\(request.method) is not allowed here"))
            case .unauthorized: return .error(.unauthenticated(error.body ?? "credentials are missing or invalid"))
            default:
                if error.status.code < 500 {
                    return .error(.invalidArgument(error.body ?? "the request is not valid"))
                }
                logger.error("request failed", metadata: ["error": "\(error)"])
                return .error(PresenceError(status: 500, code: "internal", message: "the server failed to answer"))
            }
        } catch {
            logger.error("request failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return .error(PresenceError(status: 500, code: "internal", message: "the server failed to answer"))
        }
    }
}

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

/// Per client address: at most so many requests per second, then 429.
struct AddressRateLimitMiddleware: RouterMiddleware {
    typealias Context = PresenceRequestContext
    let limits: AddressLimits
    let trustedProxies: TrustedProxies
    let clock: any WallClock
    let metrics: PresenceMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // Health checks and scrapes come from the operator's own tools: never limit them.
        if request.uri.path == "/health" || request.uri.path == "/metrics" { return try await next(request, context) }
        let address = trustedProxies.clientAddress(peer: context.channel.remoteAddress, headers: request.headers)
        guard limits.allow(address, now: clock.nowMillis()) else {
            metrics.rateLimited.increment()
            var response = Response.error(.rateLimited("too many requests from this address; slow down"))
            response.headers[.retryAfter] = "1"
            return response
        }
        return try await next(request, context)
    }
}
