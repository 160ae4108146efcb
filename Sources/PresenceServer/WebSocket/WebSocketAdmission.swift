import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import PresenceStore
import ServiceLifecycle
import Synchronization

/// What a WebSocket upgrade must pass: an allowed `Origin`, and where its token comes from.
enum WebSocketAdmission {
    /// See `CORSOrigins.mayOpenWebSocket`.
    static func checkOrigin(_ request: Request, origins: CORSOrigins) throws(PresenceError) {
        let origin = request.headers[.origin]
        guard origins.mayOpenWebSocket(origin: origin, host: request.head.authority) else {
            throw .permissionDenied("origin \(origin ?? "") may not open a WebSocket here")
        }
    }

    /// The user token: `Authorization: Bearer …`, or `access_token` in the query (browsers cannot
    /// set headers on a WebSocket).
    static func token(_ request: Request) -> String? {
        request.bearerToken ?? request.uri.queryParameters.get("access_token")
    }
}
