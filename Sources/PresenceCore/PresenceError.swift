/// An error a caller can act on: an HTTP status, a stable snake_case code and
/// a message for a person. Every failure the server reports is one of these.
///
/// ```swift
/// throw PresenceError.invalidArgument("interval must be between 1000 and 300000")
/// ```
public struct PresenceError: Error, Sendable, Hashable, CustomStringConvertible {
    public let status: Int
    public let code: String
    public let message: String

    public init(status: Int, code: String, message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    public static func invalidArgument(_ message: String) -> PresenceError {
        .init(status: 400, code: "invalid_argument", message: message)
    }
    public static func invalidJSON(_ message: String) -> PresenceError {
        .init(status: 400, code: "invalid_json", message: message)
    }
    public static func unauthenticated(_ message: String) -> PresenceError {
        .init(status: 401, code: "unauthenticated", message: message)
    }
    public static func permissionDenied(_ message: String) -> PresenceError {
        .init(status: 403, code: "permission_denied", message: message)
    }
    public static func notFound(_ message: String) -> PresenceError {
        .init(status: 404, code: "not_found", message: message)
    }
    public static func methodNotAllowed(_ message: String) -> PresenceError {
        .init(status: 405, code: "method_not_allowed", message: message)
    }
    public static func sessionConflict(_ message: String) -> PresenceError {
        .init(status: 409, code: "session_conflict", message: message)
    }
    public static func eventsExpired(_ message: String) -> PresenceError {
        .init(status: 410, code: "events_expired", message: message)
    }
    public static func dataTooLarge(_ message: String) -> PresenceError {
        .init(status: 413, code: "data_too_large", message: message)
    }
    public static func payloadTooLarge(_ message: String) -> PresenceError {
        .init(status: 413, code: "payload_too_large", message: message)
    }
    public static func rateLimited(_ message: String) -> PresenceError {
        .init(status: 429, code: "rate_limited", message: message)
    }
    public static func unavailable(_ message: String) -> PresenceError {
        .init(status: 503, code: "unavailable", message: message)
    }

    /// The body PROTOCOL.md gives every error: `{"error":{"code":…,"message":…}}`.
    public var jsonBody: String {
        var writer = JSONWriter()
        writer.object { $0.field("error") { writeErrorObject(into: &$0) } }
        return writer.output
    }

    public func writeErrorObject(into writer: inout JSONWriter) {
        writer.object { object in
            object.field("code", code)
            object.field("message", message)
        }
    }
}
