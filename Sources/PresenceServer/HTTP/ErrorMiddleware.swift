import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import PresenceCore

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
